// A node's view of the cluster's members: gossiped records plus local
// liveness judgements.
//
// Each member's record (address, status, actor id) is versioned by
// (incarnation, heartbeat). A node owns its record: it raises its heartbeat
// every gossip round and its incarnation whenever it changes its status or
// restarts. An admin operation may change another node's status (leaving,
// removed) by raising that record's incarnation; the node adopts it when it
// hears. A node that hears a higher incarnation of its own record with its
// own status refutes it by raising its incarnation above (SWIM).
//
// Liveness is local: a member is down when its heartbeats stop (phi accrual)
// or when this node's last attempt to reach it failed after its last sign of
// life. Removed members stay listed, so gossip cannot resurrect them.
//
// Gossip targets go round-robin through a shuffled list of the other members,
// so every member, live or down, is contacted at least once per cycle.
//
// Thread-safety: none. Time comes in as arguments.
#pragma once

#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "dynamo/node/failure_detector.h"
#include "dynamo/proto/message.h"

namespace dynamo::node {

using proto::Member;
using proto::MemberStatus;

// How far past the id's known incarnation a join from a new life (a new data
// directory under a known id) starts, and how far past a record of an earlier
// life a node refutes it: the old directory, back, raises its own by one a
// start and does not overtake it (NodeCore exits the one of lower
// incarnation). 2^38 such steps fit under proto::kMemberCounterMax.
inline constexpr uint64_t kNewLifeIncarnationStep = uint64_t{1} << 24;

// Member records at which a seed refuses a join under a new id: below
// proto::kMaxMembers by room for joins other seeds take meanwhile, so that
// Merge does not skip a record (nodes would then disagree on the members).
inline constexpr size_t kMaxMembersForJoins = proto::kMaxMembers - 64;

class Membership {
 public:
  Membership(Member self, FailureDetectorOptions options);

  const NodeId& self_id() const { return self_id_; }
  const Member& self() const { return records_.at(self_id_); }

  // Raises the own heartbeat (once per gossip round).
  void Beat();
  // Changes the own status, raising the incarnation.
  void SetSelfStatus(MemberStatus status);
  // Changes the own actor id; the next heartbeat carries it to the others.
  void SetSelfActor(ActorId actor);
  // Sets another member's status on an admin's behalf, raising its
  // incarnation. NotFound for unknown members.
  Status SetStatusOf(const NodeId& id, MemberStatus status, uint64_t now_ms);
  // Records a node that asked to join (status kJoining) with an incarnation
  // above any record of that id seen so far; returns the record.
  Member AddJoiner(Member joiner, uint64_t now_ms);

  // Merges a peer's records. Returns true when a record changed in a way
  // other than its heartbeat (a new member, status, address, actor). Records
  // of ids not known here are skipped once proto::kMaxMembers are held (so
  // every message carrying them still decodes).
  bool Merge(const std::vector<Member>& theirs, uint64_t now_ms);
  // Raises this node's incarnation kNewLifeIncarnationStep past every record
  // in `theirs` of its id under another life: it takes the id over from an
  // earlier directory, as a join from a new life does.
  void OutrankEarlierLives(const std::vector<Member>& theirs);
  // Direct evidence: an exchange with `id` succeeded or failed at now_ms.
  void Contact(const NodeId& id, bool ok, uint64_t now_ms);

  bool IsAlive(const NodeId& id, uint64_t now_ms) const;
  // No heartbeat heard through anyone and no direct reply within the failure
  // detector's threshold: down for the cluster, not merely unreachable from
  // here (which IsAlive also reports). Unknown and removed members are silent.
  bool IsSilent(const NodeId& id, uint64_t now_ms) const;
  // Some other member is not silent: this node hears the cluster, so a
  // silent member is down, not this node cut off from everyone.
  bool HearsOthers(uint64_t now_ms) const;
  double Phi(const NodeId& id, uint64_t now_ms) const;
  std::optional<Member> Find(const NodeId& id) const;
  // Records held, removed members' included.
  size_t size() const { return records_.size(); }
  // Records with `alive` set to this node's judgement, ordered by id.
  std::vector<Member> View(uint64_t now_ms) const;
  // Ids of members that should own partitions (joining or normal), sorted.
  std::vector<NodeId> RingMembers() const;
  // Whether `actor` is the actor id of a member not removed (its clock
  // entries are live). O(members).
  bool IsLiveActor(ActorId actor) const;
  // The next member to gossip with, or nullopt when alone.
  std::optional<NodeId> NextGossipTarget(std::mt19937_64& rng);

 private:
  struct Liveness {
    explicit Liveness(const FailureDetectorOptions& o) : detector(o) {}
    PhiAccrual detector;
    uint64_t last_ok_ms = 0;
    uint64_t last_failure_ms = 0;
  };
  Liveness& LivenessOf(const NodeId& id);

  NodeId self_id_;
  FailureDetectorOptions options_;
  std::map<NodeId, Member> records_;
  std::map<NodeId, Liveness> liveness_;
  std::vector<NodeId> gossip_order_;
  size_t gossip_next_ = 0;
};

}  // namespace dynamo::node
