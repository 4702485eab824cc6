#include "dynamo/node/membership.h"

#include <algorithm>
#include <tuple>

namespace dynamo::node {

namespace {

// `rec` has its node a member (normal, or joining in the same life as
// `known`: a node that joins afresh, with a new data directory, comes with a
// new actor).
bool ClaimsMembership(const Member& rec, const Member& known) {
  return rec.status == MemberStatus::kNormal ||
         (rec.status == MemberStatus::kJoining && rec.actor == known.actor);
}

// `rec` is of the same life of its node as `known` and has the node not
// removed.
bool SameLifeNotRemoved(const Member& rec, const Member& known) {
  return rec.actor == known.actor && rec.status != MemberStatus::kRemoved;
}

}  // namespace

Membership::Membership(Member self, FailureDetectorOptions options)
    : self_id_(self.id), options_(options) {
  records_.emplace(self.id, std::move(self));
}

Membership::Liveness& Membership::LivenessOf(const NodeId& id) {
  auto it = liveness_.find(id);
  if (it == liveness_.end()) it = liveness_.emplace(id, Liveness(options_)).first;
  return it->second;
}

void Membership::Beat() { ++records_.at(self_id_).heartbeat; }

void Membership::SetSelfStatus(MemberStatus status) {
  Member& me = records_.at(self_id_);
  if (me.status == status) return;
  me.status = status;
  ++me.incarnation;
}

void Membership::SetSelfActor(ActorId actor) { records_.at(self_id_).actor = actor; }

Status Membership::SetStatusOf(const NodeId& id, MemberStatus status, uint64_t now_ms) {
  (void)now_ms;
  if (id == self_id_) {
    SetSelfStatus(status);
    return Status::OK();
  }
  auto it = records_.find(id);
  if (it == records_.end()) return Status::NotFound("no member '" + id + "'");
  if (it->second.status != status) {
    it->second.status = status;
    ++it->second.incarnation;
  }
  return Status::OK();
}

Member Membership::AddJoiner(Member joiner, uint64_t now_ms) {
  auto it = records_.find(joiner.id);
  if (it != records_.end()) joiner.incarnation = std::max(joiner.incarnation, it->second.incarnation + 1);
  joiner.status = MemberStatus::kJoining;
  records_[joiner.id] = joiner;
  Liveness& l = LivenessOf(joiner.id);
  l.detector.Heartbeat(now_ms);
  l.last_ok_ms = now_ms;
  return joiner;
}

bool Membership::Merge(const std::vector<Member>& theirs, uint64_t now_ms) {
  bool changed = false;
  for (const Member& m : theirs) {
    if (m.id == self_id_) {
      Member& me = records_.at(self_id_);
      // An admin's leave or remove wins even at our own incarnation: a node
      // restarted after its removal may have reached the same number.
      const bool decided_by_admin =
          (m.status == MemberStatus::kLeaving || m.status == MemberStatus::kRemoved) &&
          me.status != MemberStatus::kRemoved && m.status != me.status &&
          m.incarnation >= me.incarnation;
      if (decided_by_admin) {
        me.status = m.status;
        me.incarnation = m.incarnation;
        changed = true;
      } else if (m.incarnation > me.incarnation) {
        me.incarnation = m.incarnation + 1;  // refute a stale record of ourselves
        changed = true;
      }
      continue;
    }
    auto it = records_.find(m.id);
    if (it == records_.end()) {
      records_.emplace(m.id, m);
      LivenessOf(m.id).detector.Heartbeat(now_ms);
      changed = true;
      continue;
    }
    Member& cur = it->second;
    // An admin's leave or remove is set on a record that may lag the node's
    // own: it wins at the same incarnation, as the node itself takes it
    // (above), and the records that come later and say otherwise raise its
    // incarnation instead of undoing it, until the node has taken it on. A
    // leave yields only to a removal and to a node joining afresh; a removal
    // only to a node joining afresh.
    const bool admin_over_claim =
        m.incarnation >= cur.incarnation &&
        ((m.status == MemberStatus::kLeaving && ClaimsMembership(cur, m)) ||
         (m.status == MemberStatus::kRemoved && SameLifeNotRemoved(cur, m)));
    const bool newer =
        std::tie(m.incarnation, m.heartbeat) > std::tie(cur.incarnation, cur.heartbeat);
    if (!newer && !admin_over_claim) continue;
    Member next = m;
    if (!newer) next.heartbeat = cur.heartbeat;
    if (cur.status == MemberStatus::kRemoved && SameLifeNotRemoved(m, cur)) {
      next.status = MemberStatus::kRemoved;
    } else if (cur.status == MemberStatus::kLeaving && ClaimsMembership(m, cur)) {
      next.status = MemberStatus::kLeaving;
    }
    const bool meaningful = next.incarnation != cur.incarnation || next.status != cur.status ||
                            next.address != cur.address || next.actor != cur.actor;
    cur = std::move(next);
    if (newer) LivenessOf(m.id).detector.Heartbeat(now_ms);
    changed |= meaningful;
  }
  return changed;
}

void Membership::Contact(const NodeId& id, bool ok, uint64_t now_ms) {
  if (id == self_id_ || !records_.count(id)) return;
  Liveness& l = LivenessOf(id);
  (ok ? l.last_ok_ms : l.last_failure_ms) = now_ms;
}

double Membership::Phi(const NodeId& id, uint64_t now_ms) const {
  auto it = liveness_.find(id);
  if (it == liveness_.end()) return 0;
  const Liveness& l = it->second;
  return l.detector.PhiSince(std::max(l.detector.last_heartbeat_ms(), l.last_ok_ms), now_ms);
}

bool Membership::IsAlive(const NodeId& id, uint64_t now_ms) const {
  if (id == self_id_) return true;
  auto rec = records_.find(id);
  if (rec == records_.end() || rec->second.status == MemberStatus::kRemoved) return false;
  auto it = liveness_.find(id);
  if (it == liveness_.end()) return true;
  const Liveness& l = it->second;
  const uint64_t last_sign = std::max(l.detector.last_heartbeat_ms(), l.last_ok_ms);
  if (l.last_failure_ms > last_sign) return false;
  return Phi(id, now_ms) <= l.detector.threshold();
}

std::optional<Member> Membership::Find(const NodeId& id) const {
  auto it = records_.find(id);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

std::vector<Member> Membership::View(uint64_t now_ms) const {
  std::vector<Member> out;
  out.reserve(records_.size());
  for (const auto& [id, m] : records_) {
    out.push_back(m);
    out.back().alive = IsAlive(id, now_ms);
  }
  return out;
}

std::vector<NodeId> Membership::RingMembers() const {
  std::vector<NodeId> out;
  for (const auto& [id, m] : records_) {
    if (m.status == MemberStatus::kJoining || m.status == MemberStatus::kNormal) out.push_back(id);
  }
  return out;
}

bool Membership::IsLiveActor(ActorId actor) const {
  for (const auto& [id, m] : records_) {
    if (m.actor == actor && m.status != MemberStatus::kRemoved) return true;
  }
  return false;
}

std::optional<NodeId> Membership::NextGossipTarget(std::mt19937_64& rng) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    while (gossip_next_ < gossip_order_.size()) {
      const NodeId& id = gossip_order_[gossip_next_++];
      auto it = records_.find(id);
      if (it != records_.end() && it->second.status != MemberStatus::kRemoved) return id;
    }
    gossip_order_.clear();
    gossip_next_ = 0;
    for (const auto& [id, m] : records_) {
      if (id != self_id_ && m.status != MemberStatus::kRemoved) gossip_order_.push_back(id);
    }
    std::shuffle(gossip_order_.begin(), gossip_order_.end(), rng);
  }
  return std::nullopt;
}

}  // namespace dynamo::node
