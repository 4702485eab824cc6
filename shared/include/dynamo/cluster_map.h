// The cluster map: where data lives now, and where it is moving.
//
// `ring()` routes requests. While a membership change is under way, `next()`
// is the ring the cluster is moving to, and every node that `next` adds to a
// partition's preference list must receive that partition's data before the
// switch (a *transfer*). Until then the old replicas keep serving reads, and
// writers also send each write to the pending replicas (PendingReplicas), so
// a pending replica that finished its transfer misses nothing. When every
// transfer is done the map switches: `ring` becomes `next`.
//
// Every node derives changes the same way, so maps converge:
//  - Reconcile(members) moves `next` toward the ring those members should
//    form (adding missing members in id order, removing the others), using
//    the deterministic Ring changes.
//  - MarkDone records a finished transfer; when none is owed, the map
//    switches.
//  - Merge keeps the greater of two maps by (ring's epoch, epoch, content
//    hash), and unions finished transfers when both describe the same
//    change (the same epoch and content); the lesser map's finished
//    transfers are not carried into a greater one, which may follow a change
//    that stopped owing them meanwhile. A map whose ring is older never replaces one whose ring is
//    newer (a switch is never undone by a change made from the ring before
//    it); the newer one moves its epoch past the older's instead, so epochs
//    order maps the same way once they met. A switch takes next's epoch +
//    kSwitchEpochStep, an undo or change epoch + 1, so a switch wins over
//    what a node that has not heard of it does from the ring before. Two
//    changes made apart from one ring switch to rings of one epoch; the
//    merge keeps one by hash, and a node takes the replacement as a switch.
//
// epoch() grows with every change a client must know about: a new or changed
// `next`, and the switch. Recording finished transfers does not change it.
// Maps of another cluster (another id, drawn when its first node created it)
// or of another partition count or replica count are never merged; a map
// without an id (from before clusters had ids) takes the other's.
//
// ClusterMap is a value. Thread-safety: const methods may run concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dynamo/ring.h"
#include "dynamo/status.h"

namespace dynamo {

// Larger epochs are refused as corrupt, so that no epoch step wraps.
inline constexpr uint64_t kMapEpochMax = uint64_t{1} << 62;
// Largest epoch of a map taken from a peer (FromPeer): the steps a node
// makes from it (one per change, kSwitchEpochStep per switch, 2^41 switches)
// stay within kMapEpochMax, so no node makes a map it and its peers refuse.
inline constexpr uint64_t kMapEpochFromPeerMax = kMapEpochMax / 2;
// A switch takes next's epoch plus this: past whatever changes or undo of
// the pending change a node that has not heard of the switch yet makes from
// the old ring (each adds one).
inline constexpr uint64_t kSwitchEpochStep = uint64_t{1} << 20;

struct Transfer {
  PartitionId partition = 0;
  NodeId node;  // the node that must receive the partition
  friend auto operator<=>(const Transfer&, const Transfer&) = default;
};

class ClusterMap {
 public:
  // `cluster_id` names the cluster (random, drawn once by the node that
  // creates it); 0: none yet.
  explicit ClusterMap(Ring ring, uint64_t cluster_id = 0);

  const Ring& ring() const { return ring_; }
  uint64_t cluster_id() const { return cluster_id_; }
  // The same partition and replica counts.
  bool SameShape(const ClusterMap& other) const {
    return other.ring_.partition_count() == ring_.partition_count() &&
           other.ring_.replicas() == ring_.replicas();
  }
  // Whether Merge would take `other` into account: the same shape, and the
  // same cluster id (or one without any).
  bool SameCluster(const ClusterMap& other) const;
  const std::optional<Ring>& next() const { return next_; }
  // next's epoch while a change is pending, else ring's.
  uint64_t epoch() const { return next_ ? next_->epoch() : ring_.epoch(); }

  // Transfers the pending change needs, done or not, in (partition, node) order.
  const std::vector<Transfer>& Transfers() const { return transfers_; }
  // Transfers not yet done.
  std::vector<Transfer> Awaiting() const;
  bool IsDone(const Transfer& t) const { return done_.count(t) > 0; }
  // Nodes in next's preference list for `partition` that are not in ring's.
  std::vector<NodeId> PendingReplicas(PartitionId partition) const;

  // Moves toward a ring over exactly `members` (ids of nodes that should own
  // partitions). No-op when `members` is empty. Returns whether the map changed.
  bool Reconcile(const std::vector<NodeId>& members);
  // Records a finished transfer of the pending change; switches when none is
  // owed. Returns whether the map changed. Ignored when `t` is not a transfer
  // of the pending change.
  bool MarkDone(const Transfer& t);
  // Merges a peer's map into this one (see above; a map of another cluster
  // is ignored). Returns whether this map changed.
  bool Merge(const ClusterMap& other);

  // msgpack: [format, ring, next or nil, [partition, node, ...] done,
  // cluster id]; maps without the id read as id 0.
  std::string Serialize() const;
  static Result<ClusterMap> Deserialize(std::string_view bytes);
  // Deserialize, for a map another node sent: also refuses one whose epoch
  // is past kMapEpochFromPeerMax.
  static Result<ClusterMap> FromPeer(std::string_view bytes);
  // Hash of ring and next (epochs included), not of the done set.
  uint64_t ContentHash() const;

  friend bool operator==(const ClusterMap& a, const ClusterMap& b) {
    return a.ring_ == b.ring_ && a.next_ == b.next_ && a.done_ == b.done_ &&
           a.cluster_id_ == b.cluster_id_;
  }

 private:
  bool MergeSameCluster(const ClusterMap& other);
  void SwitchIfComplete();
  void SetNext(std::optional<Ring> next);

  Ring ring_;
  std::optional<Ring> next_;
  std::vector<Transfer> transfers_;  // of next_, sorted
  std::set<Transfer> done_;          // a subset of transfers_
  uint64_t cluster_id_ = 0;
};

}  // namespace dynamo
