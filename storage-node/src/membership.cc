#include "dynamo/node/membership.h"

#include <algorithm>
#include <tuple>

namespace dynamo::node {

namespace {

// Where a status stands in a node's life, which only moves forward through
// joining, normal, leaving and removed.
int Stage(MemberStatus status) {
  switch (status) {
    case MemberStatus::kJoining:
      return 0;
    case MemberStatus::kNormal:
      return 1;
    case MemberStatus::kLeaving:
      return 2;
    case MemberStatus::kRemoved:
      return 3;
  }
  return 0;
}

// The incarnation that outranks `known`: one more, or, for another life of
// the id, kNewLifeIncarnationStep more; never past what peers decode.
uint64_t NextIncarnation(uint64_t known, bool other_life) {
  const uint64_t step = other_life ? kNewLifeIncarnationStep : 1;
  return std::min(known + step, proto::kMemberCounterMax);
}

// `rec` is a leave or a removal (an admin's, or the node's own) that is
// further on in the same life of its node than `known`.
bool Advances(const Member& rec, const Member& known) {
  return rec.life == known.life && Stage(rec.status) >= Stage(MemberStatus::kLeaving) &&
         Stage(rec.status) > Stage(known.status);
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
  if (it != records_.end()) {
    // A new life starts far past the old one, so that the old directory's
    // restarts (each raises its incarnation) cannot take the id back.
    joiner.incarnation =
        std::max(joiner.incarnation,
                 NextIncarnation(it->second.incarnation, joiner.life != it->second.life));
  }
  joiner.status = MemberStatus::kJoining;
  records_[joiner.id] = joiner;
  Liveness& l = LivenessOf(joiner.id);
  l.detector.Heartbeat(now_ms);
  l.last_ok_ms = now_ms;
  return joiner;
}

void Membership::OutrankEarlierLives(const std::vector<Member>& theirs) {
  Member& me = records_.at(self_id_);
  for (const Member& m : theirs) {
    if (m.id == self_id_ && m.life != me.life) {
      me.incarnation = std::max(me.incarnation, NextIncarnation(m.incarnation, true));
    }
  }
}

bool Membership::Merge(const std::vector<Member>& theirs, uint64_t now_ms) {
  bool changed = false;
  for (const Member& m : theirs) {
    if (m.id == self_id_) {
      Member& me = records_.at(self_id_);
      // A leave or removal of this life holds whatever its incarnation: the
      // admin's node may have set it on a record older than ours, and a
      // restart raises ours past it.
      if (Advances(m, me)) {
        me.status = m.status;
        me.incarnation = std::max(me.incarnation, m.incarnation);
        changed = true;
      } else if (m.incarnation > me.incarnation ||
                 (m.life != me.life && m.incarnation == me.incarnation)) {
        // Refute a stale record of ourselves; one of an earlier life (a wiped
        // directory under this id) far past it, as a join from a new life
        // starts, so that no peer's view of that life overtakes ours.
        me.incarnation = NextIncarnation(m.incarnation, m.life != me.life);
        changed = true;
      }
      continue;
    }
    auto it = records_.find(m.id);
    if (it == records_.end()) {
      if (records_.size() >= proto::kMaxMembers) continue;
      records_.emplace(m.id, m);
      LivenessOf(m.id).detector.Heartbeat(now_ms);
      changed = true;
      continue;
    }
    Member& cur = it->second;
    // The same here: a leave or removal wins over the earlier stages of its
    // life whatever the incarnations, and a record of an earlier stage that
    // comes later brings its incarnation and heartbeat but not its status,
    // until the node has taken the leave or removal on. A node that joins
    // afresh under the id (a new life) is held to neither.
    const bool advances = Advances(m, cur);
    const bool newer =
        std::tie(m.incarnation, m.heartbeat) > std::tie(cur.incarnation, cur.heartbeat);
    if (!newer && !advances) continue;
    // An older record that advances brings its status only: its address and
    // actor may be of an earlier run.
    Member next = newer ? m : cur;
    if (!newer) next.status = m.status;
    if (Advances(cur, m)) next.status = cur.status;
    const bool meaningful = next.incarnation != cur.incarnation || next.status != cur.status ||
                            next.address != cur.address || next.actor != cur.actor ||
                            next.life != cur.life;
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

bool Membership::IsSilent(const NodeId& id, uint64_t now_ms) const {
  if (id == self_id_) return false;
  auto rec = records_.find(id);
  if (rec == records_.end() || rec->second.status == MemberStatus::kRemoved) return true;
  auto it = liveness_.find(id);
  return it != liveness_.end() && Phi(id, now_ms) > it->second.detector.threshold();
}

bool Membership::HearsOthers(uint64_t now_ms) const {
  for (const auto& [id, rec] : records_) {
    if (id != self_id_ && !IsSilent(id, now_ms)) return true;
  }
  return false;
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
