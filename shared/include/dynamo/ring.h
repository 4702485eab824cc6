// The ring: Q equal partitions of the 128-bit hash space, each owned by one
// node (the paper's partitioning strategy 3), with an epoch that grows with
// every change.
//
// A key's partition is fixed by its hash (placement.h). The partition's
// preference list is found by walking the ring clockwise from that partition
// and taking the first N distinct nodes; the extended list continues the walk
// until every node has been seen, and supplies fallbacks for sloppy quorums.
//
// Changes are deterministic functions of the ring and their argument, so every
// node that applies the same change to the same ring gets the same result:
//  - Create assigns partitions round-robin over the sorted node list.
//  - WithNode hands the new node floor(Q/(S+1)) partitions, taken one at a
//    time from the most loaded node; no other partition moves.
//  - WithoutNode gives each of the leaving node's partitions to the least
//    loaded remaining node; no other partition moves.
// Both keep every node at floor(Q/S) or ceil(Q/S) partitions and, where they
// can, avoid placing a node within N-1 partitions of another of its own, so
// preference lists stay spread over distinct nodes.
//
// Ring is an immutable value; copies are independent. Thread-safety: const
// methods may be called concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dynamo/placement.h"
#include "dynamo/status.h"

namespace dynamo {

using NodeId = std::string;
using NodeIndex = uint16_t;

inline constexpr uint32_t kDefaultReplicas = 3;
inline constexpr uint32_t kMaxReplicas = 16;
inline constexpr size_t kMaxRingNodes = 1024;
inline constexpr size_t kMaxNodeIdBytes = 64;

// A node id is 1 to kMaxNodeIdBytes characters of [A-Za-z0-9._-].
bool IsValidNodeId(std::string_view id);

// How one partition's placement differs between two rings.
struct PartitionChange {
  PartitionId partition = 0;
  NodeId old_owner;
  NodeId new_owner;
  std::vector<NodeId> old_replicas;  // preference list in the old ring
  std::vector<NodeId> new_replicas;  // preference list in the new ring
  std::vector<NodeId> gained;        // in new_replicas, not in old_replicas: they need the data
  std::vector<NodeId> lost;          // in old_replicas, not in new_replicas
};

class Ring {
 public:
  // A ring over `nodes` (any order, no duplicates, 1 to min(Q, kMaxRingNodes)
  // valid ids) with `partitions` partitions (a power of two) and `replicas`
  // copies of each key (1 to kMaxReplicas).
  static Result<Ring> Create(std::vector<NodeId> nodes, uint32_t partitions = kDefaultPartitions,
                             uint32_t replicas = kDefaultReplicas, uint64_t epoch = 1);

  // This ring plus `node`, at epoch + 1. InvalidArgument if the node is
  // already a member, its id is invalid, or the ring is full.
  Result<Ring> WithNode(const NodeId& node) const;
  // This ring without `node`, at epoch + 1. InvalidArgument if it is not a
  // member or is the last one.
  Result<Ring> WithoutNode(const NodeId& node) const;
  // The same placement at another epoch.
  Ring WithEpoch(uint64_t epoch) const;

  uint64_t epoch() const { return epoch_; }
  uint32_t partition_count() const { return static_cast<uint32_t>(owner_.size()); }
  // N, the number of copies of each key the cluster keeps.
  uint32_t replicas() const { return replicas_; }
  // Members, sorted by id. NodeIndex values index this list.
  const std::vector<NodeId>& nodes() const { return nodes_; }
  std::optional<NodeIndex> IndexOf(std::string_view node) const;
  bool Contains(std::string_view node) const { return IndexOf(node).has_value(); }

  PartitionId KeyPartition(std::string_view key) const {
    return dynamo::KeyPartition(key, partition_count());
  }
  // Precondition for the partition arguments below: partition < partition_count().
  const NodeId& Owner(PartitionId partition) const { return nodes_[owner_[partition]]; }
  // The first min(N, S) distinct nodes clockwise from `partition`.
  std::span<const NodeIndex> PreferenceIndices(PartitionId partition) const;
  std::vector<NodeId> PreferenceList(PartitionId partition) const;
  // Every member, in the order met walking clockwise from `partition`; starts
  // with the preference list.
  std::vector<NodeId> ExtendedList(PartitionId partition) const;
  std::vector<NodeIndex> ExtendedIndices(PartitionId partition) const;
  // Partitions `node` owns, ascending.
  std::vector<PartitionId> PartitionsOwnedBy(std::string_view node) const;
  // Partitions whose preference list holds `node`, ascending.
  std::vector<PartitionId> PartitionsReplicatedBy(std::string_view node) const;

  // msgpack: [format, epoch, Q, N, [node ids], bin(owner index per partition,
  // u16 big-endian)].
  std::string Serialize() const;
  // Parses and validates a serialized ring; Corruption on any inconsistency.
  static Result<Ring> Deserialize(std::string_view bytes);
  // A hash of the placement (Q, N, members, owners), epoch excluded: two
  // rings with equal hashes place every key alike.
  uint64_t ContentHash() const { return content_hash_; }

  // True when both rings place every key alike (epochs may differ).
  bool SamePlacement(const Ring& other) const {
    return replicas_ == other.replicas_ && nodes_ == other.nodes_ && owner_ == other.owner_;
  }

  friend bool operator==(const Ring& a, const Ring& b) {
    return a.epoch_ == b.epoch_ && a.replicas_ == b.replicas_ && a.nodes_ == b.nodes_ &&
           a.owner_ == b.owner_;
  }

 private:
  Ring(uint64_t epoch, uint32_t replicas, std::vector<NodeId> nodes, std::vector<NodeIndex> owner);
  std::string Encode(uint64_t epoch) const;
  void BuildPreferenceLists();

  uint64_t epoch_ = 0;
  uint32_t replicas_ = 0;
  std::vector<NodeId> nodes_;
  std::vector<NodeIndex> owner_;        // per partition
  uint32_t width_ = 0;                  // min(N, S)
  std::vector<NodeIndex> preference_;   // width_ entries per partition
  uint64_t content_hash_ = 0;
};

// How placement changes from `from` to `to`: every partition whose owner or
// preference list differs. InvalidArgument if the partition counts differ.
Result<std::vector<PartitionChange>> DiffRings(const Ring& from, const Ring& to);

}  // namespace dynamo
