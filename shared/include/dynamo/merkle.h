// Merkle trees for anti-entropy, one per partition replica.
//
// The tree indexes a set of (key, digest) pairs, where the digest summarises
// the key's sibling set (SiblingDigest). Keys are placed by a stable 64-bit
// hash: the node at level L and index i holds every key whose hash starts with
// the L-bit prefix i, so level 0 is the root and level 64 is a single hash
// value. A node's summary is the XOR of its keys' contributions (a mix of key
// hash and digest) and their count; XOR makes every update an O(depth) delta
// along one path.
//
// Levels 0..depth are kept in memory, with the keys in per-leaf maps; deeper
// levels are computed on demand from one leaf. So the comparison can descend
// until a bucket holds a handful of keys however many keys the tree holds,
// and what it exchanges grows with the number of differences (times the log of
// the key count), not with the number of keys.
//
// Comparison protocol. The initiator runs MerkleComparison against its own
// tree; each request it produces is answered by the other replica's tree
// (MerkleTree::Answer), over whatever transport. Requests ask for the
// summaries of a node's descendants a few levels down ("expand") or for the
// keys and digests under a node ("fetch"). Only differing branches are
// expanded; a bucket with few keys on the remote side, or none on one side,
// is fetched and compared key by key. The result is the set of keys whose
// digests differ or that one side lacks. Trees may change between rounds;
// the result then reflects a mix of states, and the next round fixes it.
//
// Thread-safety: none; guard a tree and its comparisons with one owner.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dynamo/hash_index.h"
#include "dynamo/status.h"

namespace dynamo {

inline constexpr uint32_t kMerkleHashBits = 64;
inline constexpr uint32_t kDefaultMerkleDepth = 8;
inline constexpr uint32_t kMaxMerkleDepth = 16;
// Most levels one expand request may descend (2^8 summaries per node).
inline constexpr uint32_t kMaxMerkleExpandLevels = 8;
// Most keys, by the remote tree's counts, one comparison request fetches.
inline constexpr size_t kMerkleFetchKeysMax = 4096;
// Most nodes one comparison request names to expand, and to fetch.
inline constexpr size_t kMerkleRequestNodesMax = 1024;

struct MerkleNodeId {
  uint32_t level = 0;  // 0 (root) .. 64
  uint64_t index = 0;  // < 2^level
  friend bool operator==(const MerkleNodeId&, const MerkleNodeId&) = default;
};

struct MerkleSummary {
  uint64_t hash = 0;   // XOR of contributions; 0 when empty
  uint64_t count = 0;  // keys under the node
  friend bool operator==(const MerkleSummary&, const MerkleSummary&) = default;
};

struct MerkleKey {
  std::string key;
  uint64_t digest = 0;
  friend bool operator==(const MerkleKey&, const MerkleKey&) = default;
};

struct MerkleRequest {
  std::vector<MerkleNodeId> expand;  // all at one level
  uint32_t levels = 0;               // how far below each expand node to summarise
  std::vector<MerkleNodeId> fetch;
};

struct MerkleReply {
  // For each expand node in order, its 2^levels descendants in index order.
  std::vector<MerkleSummary> summaries;
  // For each fetch node in order, its keys sorted by key.
  std::vector<std::vector<MerkleKey>> keys;
};

class MerkleTree {
 public:
  // `depth` levels are kept in memory: 2^depth leaves. Precondition: depth
  // <= kMaxMerkleDepth.
  explicit MerkleTree(uint32_t depth = kDefaultMerkleDepth);
  // What a tree of `depth` takes in memory before any key: its summaries
  // and leaf heads (about 36 bytes per leaf; 2.3 MiB at depth 16).
  static size_t EmptyBytes(uint32_t depth);

  // Inserts `key` or replaces its digest. O(depth + log keys-per-leaf).
  void Put(std::string_view key, uint64_t digest);
  // Removes `key`; returns whether it was present.
  bool Remove(std::string_view key);
  std::optional<uint64_t> Get(std::string_view key) const;
  void Clear();

  // Hints that `key` is about to be put or removed, in two steps for a
  // caller that interleaves many keys: Prefetch starts loading its index
  // slot and its path of summaries; PrefetchEntry, once the slot is in, the
  // entry that slot names.
  void Prefetch(std::string_view key) const;
  void PrefetchEntry(std::string_view key) const;

  MerkleSummary Root() const { return levels_[0]; }
  size_t size() const { return levels_[0].count; }
  uint32_t depth() const { return depth_; }

  // The summary of any node, computed from a leaf below the kept depth.
  // InvalidArgument for an invalid node id.
  Result<MerkleSummary> Summary(const MerkleNodeId& node) const;
  // The 2^levels descendants of `node` at level node.level + levels, in index
  // order. InvalidArgument if levels > kMaxMerkleExpandLevels or the result
  // would lie below level 64.
  Result<std::vector<MerkleSummary>> Expand(const MerkleNodeId& node, uint32_t levels) const;
  // Every key under `node` with its digest, sorted by key.
  Result<std::vector<MerkleKey>> KeysUnder(const MerkleNodeId& node) const;
  // The answer this tree gives to a comparison request.
  Result<MerkleReply> Answer(const MerkleRequest& request) const;

  // The bucket hash of a key (the top bits pick its node at each level).
  static uint64_t KeyHash(std::string_view key);

 private:
  static constexpr uint32_t kNoEntry = UINT32_MAX;  // HashedTable<Entry>::kNone too
  // A key's entry; its table position also links it into its leaf's list.
  struct Entry {
    std::string key;
    uint64_t digest = 0;
    uint32_t prev = kNoEntry;
    uint32_t next = kNoEntry;
  };

  uint32_t PositionOf(std::string_view key, uint64_t key_hash) const;
  void Apply(uint64_t leaf, uint64_t hash_delta, int64_t count_delta);
  // Calls fn(key, key_hash, digest) for every key under `node`.
  template <typename Fn>
  void ForEachUnder(const MerkleNodeId& node, Fn&& fn) const;

  uint32_t depth_;
  // Level L's 2^L nodes start at LevelStart(L): the root, then each level.
  static size_t LevelStart(uint32_t level) { return (size_t{1} << level) - 1; }
  std::vector<MerkleSummary> levels_;
  HashedTable<Entry> entries_;                      // by KeyHash
  std::vector<uint32_t> leaf_heads_;                // first entry of each leaf
};

struct MerkleComparisonOptions {
  // A differing bucket with at most this many keys on the remote side is
  // fetched rather than expanded. Default: 16.
  size_t bucket_keys_max = 16;
  // Levels one expand request descends. Default: 4 (16 summaries per node).
  uint32_t levels_per_round = 4;
  // Nodes per request (expand and fetch each), 1..kMerkleRequestNodesMax.
  // Default: 64.
  size_t nodes_per_request_max = 64;
  // Remote keys one request fetches at most, summed over its fetch nodes by
  // the counts the remote reported: a differing bucket holding more is
  // expanded, also when this side holds none of it (a request's first fetch
  // node goes in whatever its count, so a level-64 bucket is fetched too).
  // Default: kMerkleFetchKeysMax.
  size_t fetch_keys_max = kMerkleFetchKeysMax;
};

// The initiator's side of one comparison. `local` must outlive it.
class MerkleComparison {
 public:
  explicit MerkleComparison(const MerkleTree* local, MerkleComparisonOptions options = {});

  // The next request to send, or nullopt when a reply is awaited or the
  // comparison is done.
  std::optional<MerkleRequest> NextRequest();
  // Takes the remote tree's reply to the last request. ProtocolError when it
  // does not match the request; the comparison is then done.
  Status HandleReply(const MerkleReply& reply);

  bool done() const { return !outstanding_ && expand_.empty() && fetch_.empty(); }
  // Keys that differ, sorted and unique. Complete once done().
  std::vector<std::string> DifferingKeys() const;
  size_t rounds() const { return rounds_; }

 private:
  void Classify(const MerkleNodeId& node, const MerkleSummary& local, const MerkleSummary& remote);
  void AddLocalKeys(const MerkleNodeId& node);

  const MerkleTree* local_;
  MerkleComparisonOptions options_;
  std::deque<MerkleNodeId> expand_;
  struct Fetch {
    MerkleNodeId node;
    uint64_t remote_count;
  };
  std::deque<Fetch> fetch_;
  std::optional<MerkleRequest> outstanding_;
  std::vector<std::string> differing_;
  size_t rounds_ = 0;
};

}  // namespace dynamo
