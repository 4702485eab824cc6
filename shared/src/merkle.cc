#include "dynamo/merkle.h"

#include <algorithm>

#include "dynamo/placement.h"

namespace dynamo {
namespace {

constexpr uint64_t kKeyHashSeed = 0x6d65726b6c650001ULL;  // "merkle", v1

// The L-bit prefix of a 64-bit hash.
inline uint64_t Prefix(uint64_t hash, uint32_t level) {
  return level == 0 ? 0 : hash >> (kMerkleHashBits - level);
}

inline uint64_t Contribution(uint64_t key_hash, uint64_t digest) {
  return Mix64(key_hash ^ Mix64(digest ^ 0xa0761d6478bd642fULL));
}

bool ValidNode(const MerkleNodeId& node) {
  return node.level <= kMerkleHashBits &&
         (node.level == kMerkleHashBits || node.index < (uint64_t{1} << node.level));
}

}  // namespace

MerkleTree::MerkleTree(uint32_t depth) : depth_(depth) {
  DYNAMO_CHECK(depth <= kMaxMerkleDepth);
  Clear();
}

uint64_t MerkleTree::KeyHash(std::string_view key) { return Hash64(key, kKeyHashSeed); }

size_t MerkleTree::EmptyBytes(uint32_t depth) {
  return ((size_t{2} << depth) - 1) * sizeof(MerkleSummary) +
         (size_t{1} << depth) * sizeof(uint32_t);
}

void MerkleTree::Clear() {
  static_assert(kNoEntry == HashedTable<Entry>::kNone, "positions and links share the sentinel");
  levels_.assign((size_t{2} << depth_) - 1, MerkleSummary{});
  entries_.Clear();
  leaf_heads_.assign(size_t{1} << depth_, kNoEntry);
}

void MerkleTree::Apply(uint64_t leaf, uint64_t hash_delta, int64_t count_delta) {
  for (uint32_t l = depth_ + 1; l-- > 0;) {
    MerkleSummary& s = levels_[LevelStart(l) + (leaf >> (depth_ - l))];
    s.hash ^= hash_delta;
    s.count = static_cast<uint64_t>(static_cast<int64_t>(s.count) + count_delta);
  }
}

uint32_t MerkleTree::PositionOf(std::string_view key, uint64_t key_hash) const {
  return entries_.Find(key_hash, [&](const Entry& e) { return e.key == key; });
}

void MerkleTree::Prefetch(std::string_view key) const {
  const uint64_t kh = KeyHash(key);
  entries_.PrefetchSlot(kh);
  const uint64_t leaf = Prefix(kh, depth_);
  for (uint32_t l = 0; l <= depth_; ++l) {
    __builtin_prefetch(&levels_[LevelStart(l) + (leaf >> (depth_ - l))]);
  }
}

void MerkleTree::PrefetchEntry(std::string_view key) const {
  // An entry may straddle two cache lines.
  if (const Entry* e = entries_.PrefetchEntry(KeyHash(key)); e != nullptr) {
    __builtin_prefetch(reinterpret_cast<const char*>(e + 1) - 1);
  }
}

void MerkleTree::Put(std::string_view key, uint64_t digest) {
  uint64_t kh = KeyHash(key);
  uint64_t leaf = Prefix(kh, depth_);
  uint32_t pos = PositionOf(key, kh);
  if (pos == kNoEntry) {
    uint32_t head = leaf_heads_[leaf];
    pos = entries_.Add(kh, Entry{std::string(key), digest, kNoEntry, head});
    if (head != kNoEntry) entries_.at(head).prev = pos;
    leaf_heads_[leaf] = pos;
    Apply(leaf, Contribution(kh, digest), +1);
    return;
  }
  Entry& e = entries_.at(pos);
  if (e.digest != digest) {
    Apply(leaf, Contribution(kh, e.digest) ^ Contribution(kh, digest), 0);
    e.digest = digest;
  }
}

bool MerkleTree::Remove(std::string_view key) {
  uint64_t kh = KeyHash(key);
  uint64_t leaf = Prefix(kh, depth_);
  uint32_t pos = PositionOf(key, kh);
  if (pos == kNoEntry) return false;
  const Entry& e = entries_.at(pos);
  Apply(leaf, Contribution(kh, e.digest), -1);
  if (e.prev != kNoEntry) {
    entries_.at(e.prev).next = e.next;
  } else {
    leaf_heads_[leaf] = e.next;
  }
  if (e.next != kNoEntry) entries_.at(e.next).prev = e.prev;
  entries_.Erase(pos);
  return true;
}

std::optional<uint64_t> MerkleTree::Get(std::string_view key) const {
  uint32_t pos = PositionOf(key, KeyHash(key));
  if (pos == kNoEntry) return std::nullopt;
  return entries_.at(pos).digest;
}

template <typename Fn>
void MerkleTree::ForEachUnder(const MerkleNodeId& node, Fn&& fn) const {
  auto each_in_leaf = [&](uint64_t leaf, auto&& filter) {
    for (uint32_t pos = leaf_heads_[leaf]; pos != kNoEntry; pos = entries_.at(pos).next) {
      const uint64_t kh = entries_.hash(pos);
      if (filter(kh)) fn(entries_.at(pos).key, kh, entries_.at(pos).digest);
    }
  };
  if (node.level <= depth_) {
    uint64_t first = node.index << (depth_ - node.level);
    uint64_t last = (node.index + 1) << (depth_ - node.level);
    for (uint64_t leaf = first; leaf < last; ++leaf)
      each_in_leaf(leaf, [](uint64_t) { return true; });
  } else {
    uint32_t shift = node.level - depth_;
    uint64_t leaf = shift >= kMerkleHashBits ? 0 : node.index >> shift;
    each_in_leaf(leaf, [&](uint64_t kh) { return Prefix(kh, node.level) == node.index; });
  }
}

Result<MerkleSummary> MerkleTree::Summary(const MerkleNodeId& node) const {
  if (!ValidNode(node)) return Status::InvalidArgument("invalid Merkle node");
  if (node.level <= depth_) return levels_[LevelStart(node.level) + node.index];
  MerkleSummary s;
  ForEachUnder(node, [&](const std::string&, uint64_t kh, uint64_t digest) {
    s.hash ^= Contribution(kh, digest);
    ++s.count;
  });
  return s;
}

Result<std::vector<MerkleSummary>> MerkleTree::Expand(const MerkleNodeId& node,
                                                      uint32_t levels) const {
  if (!ValidNode(node)) return Status::InvalidArgument("invalid Merkle node");
  if (levels > kMaxMerkleExpandLevels || node.level + levels > kMerkleHashBits) {
    return Status::InvalidArgument("Merkle expand too deep");
  }
  const uint32_t child_level = node.level + levels;
  const uint64_t base = node.index << levels;
  std::vector<MerkleSummary> out(size_t{1} << levels);
  if (child_level <= depth_) {
    std::copy_n(levels_.begin() + static_cast<std::ptrdiff_t>(LevelStart(child_level) + base),
                out.size(), out.begin());
    return out;
  }
  ForEachUnder(node, [&](const std::string&, uint64_t kh, uint64_t digest) {
    MerkleSummary& s = out[Prefix(kh, child_level) - base];
    s.hash ^= Contribution(kh, digest);
    ++s.count;
  });
  return out;
}

Result<std::vector<MerkleKey>> MerkleTree::KeysUnder(const MerkleNodeId& node) const {
  if (!ValidNode(node)) return Status::InvalidArgument("invalid Merkle node");
  std::vector<MerkleKey> out;
  ForEachUnder(node, [&](const std::string& key, uint64_t, uint64_t digest) {
    out.push_back(MerkleKey{key, digest});
  });
  std::sort(out.begin(), out.end(),
            [](const MerkleKey& a, const MerkleKey& b) { return a.key < b.key; });
  return out;
}

Result<MerkleReply> MerkleTree::Answer(const MerkleRequest& request) const {
  MerkleReply reply;
  if (!request.expand.empty()) {
    reply.summaries.reserve(request.expand.size() << request.levels);
  }
  for (const MerkleNodeId& node : request.expand) {
    Result<std::vector<MerkleSummary>> s = Expand(node, request.levels);
    if (!s.ok()) return s.status();
    reply.summaries.insert(reply.summaries.end(), s->begin(), s->end());
  }
  for (const MerkleNodeId& node : request.fetch) {
    Result<std::vector<MerkleKey>> keys = KeysUnder(node);
    if (!keys.ok()) return keys.status();
    reply.keys.push_back(std::move(*keys));
  }
  return reply;
}

MerkleComparison::MerkleComparison(const MerkleTree* local, MerkleComparisonOptions options)
    : local_(local), options_(options) {
  options_.levels_per_round =
      std::clamp<uint32_t>(options_.levels_per_round, 1, kMaxMerkleExpandLevels);
  options_.nodes_per_request_max =
      std::clamp<size_t>(options_.nodes_per_request_max, 1, kMerkleRequestNodesMax);
  expand_.push_back(MerkleNodeId{0, 0});
}

std::optional<MerkleRequest> MerkleComparison::NextRequest() {
  if (outstanding_ || done()) return std::nullopt;
  MerkleRequest req;
  uint64_t fetch_keys = 0;
  while (
      !fetch_.empty() && req.fetch.size() < options_.nodes_per_request_max &&
      (req.fetch.empty() || fetch_keys + fetch_.front().remote_count <= options_.fetch_keys_max)) {
    fetch_keys += fetch_.front().remote_count;
    req.fetch.push_back(fetch_.front().node);
    fetch_.pop_front();
  }
  if (!expand_.empty()) {
    const uint32_t level = expand_.front().level;
    // The first round asks for the root's own summary.
    req.levels = rounds_ == 0 ? 0 : std::min(options_.levels_per_round, kMerkleHashBits - level);
    while (!expand_.empty() && expand_.front().level == level &&
           req.expand.size() < options_.nodes_per_request_max) {
      req.expand.push_back(expand_.front());
      expand_.pop_front();
    }
  }
  ++rounds_;
  outstanding_ = req;
  return req;
}

void MerkleComparison::AddLocalKeys(const MerkleNodeId& node) {
  Result<std::vector<MerkleKey>> keys = local_->KeysUnder(node);
  DYNAMO_CHECK(keys.ok());
  for (MerkleKey& k : *keys) differing_.push_back(std::move(k.key));
}

void MerkleComparison::Classify(const MerkleNodeId& node, const MerkleSummary& local,
                                const MerkleSummary& remote) {
  if (local == remote) return;
  if (remote.count == 0) {
    AddLocalKeys(node);
  } else if ((local.count == 0 && remote.count <= options_.fetch_keys_max) ||
             remote.count <= options_.bucket_keys_max || node.level == kMerkleHashBits) {
    fetch_.push_back(Fetch{node, remote.count});
  } else {
    expand_.push_back(node);
  }
}

Status MerkleComparison::HandleReply(const MerkleReply& reply) {
  if (!outstanding_) return Status::ProtocolError("Merkle reply without a request");
  MerkleRequest req = std::move(*outstanding_);
  outstanding_.reset();
  auto fail = [this](std::string_view why) {
    expand_.clear();
    fetch_.clear();
    return Status::ProtocolError(std::string("Merkle reply: ") + std::string(why));
  };
  const size_t fan = size_t{1} << req.levels;
  if (reply.summaries.size() != req.expand.size() * fan) return fail("wrong summary count");
  if (reply.keys.size() != req.fetch.size()) return fail("wrong key list count");
  for (size_t i = 0; i < req.fetch.size(); ++i) {
    const std::vector<MerkleKey>& theirs = reply.keys[i];
    for (size_t k = 0; k < theirs.size(); ++k) {
      if (k > 0 && !(theirs[k - 1].key < theirs[k].key)) return fail("keys not sorted");
      if (Prefix(MerkleTree::KeyHash(theirs[k].key), req.fetch[i].level) != req.fetch[i].index)
        return fail("a key outside the node it was fetched under");
    }
  }

  for (size_t i = 0; i < req.expand.size(); ++i) {
    Result<std::vector<MerkleSummary>> mine = local_->Expand(req.expand[i], req.levels);
    if (!mine.ok()) return fail(mine.status().message());
    for (size_t j = 0; j < fan; ++j) {
      MerkleNodeId child{req.expand[i].level + req.levels, (req.expand[i].index << req.levels) + j};
      Classify(child, (*mine)[j], reply.summaries[i * fan + j]);
    }
  }
  for (size_t i = 0; i < req.fetch.size(); ++i) {
    const std::vector<MerkleKey>& theirs = reply.keys[i];
    Result<std::vector<MerkleKey>> mine = local_->KeysUnder(req.fetch[i]);
    if (!mine.ok()) return fail(mine.status().message());
    size_t a = 0, b = 0;
    while (a < mine->size() || b < theirs.size()) {
      if (b == theirs.size() || (a < mine->size() && (*mine)[a].key < theirs[b].key)) {
        differing_.push_back((*mine)[a++].key);
      } else if (a == mine->size() || theirs[b].key < (*mine)[a].key) {
        differing_.push_back(theirs[b++].key);
      } else {
        if ((*mine)[a].digest != theirs[b].digest) differing_.push_back((*mine)[a].key);
        ++a;
        ++b;
      }
    }
  }
  return Status::OK();
}

std::vector<std::string> MerkleComparison::DifferingKeys() const {
  std::vector<std::string> out = differing_;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace dynamo
