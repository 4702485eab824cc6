#include "core/quorum.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <tuple>

#include "dynamo/msgpack_io.h"
#include "dynamo/placement.h"

namespace dynamo::client {
namespace {

constexpr uint64_t kContextFormat = 1;
constexpr uint64_t kContextKeyHashSeed = 0x636f6e7465787431;  // "context1"
// Most clock entries a context carries. A read's clock joins every
// sibling's context and dot, which can name more actors; the oldest go
// (the next write then leaves the versions they covered as siblings,
// rather than the context being refused as not from a read).
constexpr size_t kContextClockEntriesMax = 256;

// The context a writer holds after writing the version `written` of `set`
// (the coordinator's set after the write): what it had seen and its own
// write. A version vector cannot leave out an earlier dot of the
// coordinator's actor, so when `set` keeps such a version the writer never
// saw (a concurrent blind write through the same node), that context would
// drop it from every replica at the writer's next write. The writer then
// gets only what it had seen: its next write stands beside this one as a
// sibling, to be resolved by a reader, and nothing is lost.
// `seen` is the write's request context, for a write already superseded
// (a repeated write id answered with the key's later set).
VersionVector ContextAfterWrite(const SiblingSet& set, const Dot& written,
                                const VersionVector& seen) {
  auto mine =
      std::find_if(set.begin(), set.end(), [&](const Version& v) { return v.dot == written; });
  if (mine == set.end()) return seen;
  VersionVector after = mine->context;
  after.Add(mine->dot, mine->timestamp_ms);
  for (const Version& v : set) {
    if (v.dot != written && after.Covers(v.dot) && !mine->context.Covers(v.dot)) {
      return mine->context;
    }
  }
  return after;
}

uint64_t EpochOf(const proto::Message& m) {
  return std::visit(
      [](const auto& b) -> uint64_t {
        if constexpr (requires { b.epoch; }) {
          return b.epoch;
        } else {
          return 0;
        }
      },
      m.body);
}

// The Status a reply stands for: transport errors and ErrorReply alike.
Status StatusOf(const Reply& reply) {
  if (!reply.message.ok()) return reply.message.status();
  if (const auto* err = std::get_if<proto::ErrorReply>(&reply.message->body)) {
    return proto::ToStatus(*err);
  }
  return Status::OK();
}

// The replicas named by a node's refusal of a request for a partition it
// does not replicate, when its map is newer than the route's (one from an
// older map names no better replicas than the route); null otherwise.
const std::vector<proto::NodeAddress>* Redirect(const Reply& reply, uint64_t route_epoch) {
  if (!reply.message.ok()) return nullptr;
  const auto* e = std::get_if<proto::ErrorReply>(&reply.message->body);
  if (e == nullptr || e->replicas.empty() || e->epoch <= route_epoch) return nullptr;
  return &e->replicas;
}

// A request no node would take as it is.
bool Invalid(const Status& s) {
  return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kProtocolError;
}

// Errors after which the operation ends, with nothing applied: an invalid
// request, or a node refusing to shed load (Busy: the client backs off
// rather than moving the load, and a coordinator's Busy may be the key's
// sibling limit, which another coordinator must not get around). Busy from
// this client's own full write queue to one node is not one of them: the
// request never left, and another node may well take it.
bool Definitive(const Status& s, const Reply& reply) {
  if (s.code() == StatusCode::kBusy) return reply.message.ok() || reply.maybe_delivered;
  // As the node answered it: a reply this client could not read, or one the
  // node could not send (flagged in doubt), may follow an applied request.
  return Invalid(s) && reply.message.ok() && !s.in_doubt();
}

// Whether the node that failed a request may have applied it: it may have
// got it, and did not answer that it failed before applying (a node flags
// an error after its storage write began as in doubt).
bool MaybeApplied(const Reply& reply, const Status& s) {
  if (!reply.maybe_delivered) return false;
  if (reply.message.ok() && std::holds_alternative<proto::ErrorReply>(reply.message->body)) {
    return s.in_doubt();
  }
  return true;
}

Receipt::Ack AckOf(const Target& t, bool coordinator) {
  if (coordinator) return Receipt::Ack{t.node, "coordinator", ""};
  return Receipt::Ack{t.node, std::string(RoleName(t.role)), t.hint};
}

// A spare standing in for `failed`, with the hint of the primary it replaces.
Target StandIn(const Target& spare, const Target& failed) {
  Target t = spare;
  t.hint = failed.role == Role::kFallback ? failed.hint : failed.node;
  return t;
}

}  // namespace

NodeSignal SignalOf(const Reply& reply) {
  if (!reply.message.ok()) {
    const StatusCode code = reply.message.status().code();
    if (code == StatusCode::kUnavailable || code == StatusCode::kTimeout) {
      return NodeSignal::kFailed;
    }
    return reply.maybe_delivered ? NodeSignal::kServing : NodeSignal::kNone;
  }
  const auto* e = std::get_if<proto::ErrorReply>(&reply.message->body);
  const bool failed = e != nullptr && proto::ToStatus(*e).code() == StatusCode::kIOError;
  return failed ? NodeSignal::kFailed : NodeSignal::kServing;
}

Reply DeadlineReply() {
  return Reply{Status::Timeout("no answer by the operation's deadline"), true};
}

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kPrimary: return "primary";
    case Role::kFallback: return "fallback";
    case Role::kPending: return "pending";
  }
  return "?";
}

Route PlanRoute(const ClusterMap& map, std::string_view key, const Health& health) {
  return PlanRoute(map, map.ring().KeyPartition(key), health);
}

Route PlanRoute(const ClusterMap& map, PartitionId partition, const Health& health) {
  const Ring& ring = map.ring();
  Route route;
  route.epoch = map.epoch();
  route.partition = partition;
  const std::vector<NodeId> pref = ring.PreferenceList(route.partition);
  const std::vector<NodeId> ext = ring.ExtendedList(route.partition);
  std::set<NodeId> used(pref.begin(), pref.end());
  size_t cursor = pref.size();
  for (const NodeId& node : pref) {
    if (health.healthy(node)) {
      route.replicas.push_back(Target{node, health.address(node), Role::kPrimary, ""});
      continue;
    }
    std::optional<NodeId> stand_in;
    while (cursor < ext.size()) {
      const NodeId& candidate = ext[cursor++];
      if (!used.count(candidate) && health.healthy(candidate)) {
        stand_in = candidate;
        break;
      }
    }
    if (stand_in) {
      used.insert(*stand_in);
      route.replicas.push_back(Target{*stand_in, health.address(*stand_in), Role::kFallback, node});
    } else {
      route.replicas.push_back(Target{node, health.address(node), Role::kPrimary, "", true});
    }
  }
  for (const NodeId& node : map.PendingReplicas(route.partition)) {
    if (!used.count(node)) {
      used.insert(node);
      route.pending.push_back(Target{node, health.address(node), Role::kPending, ""});
    }
  }
  for (; cursor < ext.size(); ++cursor) {
    const NodeId& node = ext[cursor];
    if (!used.count(node) && health.healthy(node)) {
      route.spares.push_back(Target{node, health.address(node), Role::kFallback, ""});
    }
  }
  return route;
}

// ------------------------------------------------------------------ writes

uint64_t CoordinatorRankSalt(uint64_t client_id) { return Mix64(client_id) | 1; }

uint64_t AnswerWaitMs(const Send& send, uint64_t remaining_ms, uint64_t timeout_ms) {
  if (remaining_ms == 0) return timeout_ms;
  const uint64_t wait = std::max(remaining_ms, std::min(timeout_ms, kAnswerWaitMinMs));
  return send.answer_outlives_deadline ? wait + kLateAnswerWaitMs : wait;
}

WriteOp::WriteOp(Route route, WriteRequest request)
    : WriteOp(std::make_shared<const Route>(std::move(route)), std::move(request)) {}

WriteOp::WriteOp(std::shared_ptr<const Route> route, WriteRequest request)
    : route_(std::move(route)), req_(std::move(request)) {
  targets_.reserve(route_->replicas.size() + route_->pending.size());
  for (const Target& t : route_->replicas) targets_.push_back(OpTarget{&t, true});
  for (const Target& t : route_->pending) targets_.push_back(OpTarget{&t, false});
  state_.assign(targets_.size(), 0);
  acked_.reserve(targets_.size());
  receipt_.epoch = route_->epoch;
  if (req_.lww) return;
  auto add = [&](size_t i) { AddCoordinator(i); };
  const size_t n = route_->replicas.size();
  auto primary = [&](size_t i) {
    return targets_[i].target->role == Role::kPrimary && !targets_[i].target->suspect;
  };
  if (req_.coordinator_rank_salt != 0) {
    // (reached, rank, target), highest first
    std::vector<std::tuple<bool, uint64_t, size_t>> ranked;
    for (size_t i = 0; i < n; ++i) {
      if (!primary(i)) continue;
      const NodeId& node = targets_[i].target->node;
      const bool reached =
          std::find(req_.reached.begin(), req_.reached.end(), node) != req_.reached.end();
      ranked.emplace_back(reached, Hash64(node, req_.coordinator_rank_salt), i);
    }
    std::sort(ranked.begin(), ranked.end(), std::greater<>());
    for (const auto& [reached, rank, i] : ranked) add(i);
  } else {
    for (size_t i = 0; i < n; ++i) {
      if (targets_[i].target->node == req_.preferred_coordinator && primary(i)) add(i);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (primary(i)) add(i);
  }
  for (size_t i = 0; i < n; ++i) {
    if (!targets_[i].target->suspect) add(i);
  }
  for (size_t i = 0; i < n; ++i) add(i);
}

void WriteOp::AddCoordinator(size_t i) {
  if (std::find(coordinators_.begin(), coordinators_.end(), i) == coordinators_.end()) {
    coordinators_.push_back(i);
  }
}

std::vector<Send> WriteOp::Start() {
  if (route_->replicas.empty()) {
    Finish(Status::Unavailable("no replica known for the key"));
    return {};
  }
  if (!req_.lww) return TryCoordinator();
  Version v;
  v.dot = req_.lww_dot;
  v.lww = true;
  v.tombstone = req_.tombstone;
  v.timestamp_ms = req_.wall_ms;
  // LWW writes never send the request's value again: replicate_ has it.
  if (!req_.tombstone) v.value = std::move(req_.value);
  replicate_.push_back(std::move(v));
  return Replicate();
}

std::vector<Send> WriteOp::TryCoordinator() {
  while (next_coordinator_ < coordinators_.size() && state_[coordinators_[next_coordinator_]] != 0) {
    ++next_coordinator_;
  }
  if (next_coordinator_ >= coordinators_.size()) {
    const std::string why = "no coordinator accepted the write: " + last_error_.ToString();
    const Status s =
        last_error_.code() == StatusCode::kBusy ? Status::Busy(why) : Status::Unavailable(why);
    Finish(s.WithInDoubt(maybe_applied_));
    return {};
  }
  const size_t i = coordinators_[next_coordinator_++];
  coordinator_ = i;
  state_[i] = 1;
  ++outstanding_;
  return {Send{
      i,
      proto::CoordPutRequest{req_.key, req_.context, req_.tombstone ? "" : req_.value,
                             req_.tombstone, req_.op_id, !req_.durable, targets_[i].target->hint},
      true}};
}

std::vector<Send> WriteOp::Replicate() {
  replicating_ = true;
  std::vector<Send> out;
  out.reserve(targets_.size());
  for (size_t i = 0; i < targets_.size(); ++i) {
    if (state_[i] != 0) continue;
    state_[i] = 1;
    ++outstanding_;
    out.push_back(Send{i, proto::ReplicaPutRequest{req_.key, replicate_, targets_[i].target->hint,
                                                   req_.lww && req_.durable}});
  }
  return out;
}

bool WriteOp::Targets(const NodeId& node) const {
  return std::any_of(targets_.begin(), targets_.end(),
                     [&](const OpTarget& t) { return t.target->node == node; });
}

std::vector<Send> WriteOp::Substitute(size_t i) {
  // A spare the op already writes (a replica a refusal named) is no stand-in.
  while (next_spare_ < route_->spares.size() && Targets(route_->spares[next_spare_].node)) {
    ++next_spare_;
  }
  if (!targets_[i].counted || next_spare_ >= route_->spares.size()) return {};
  const Target& spare =
      stand_ins_.emplace_back(StandIn(route_->spares[next_spare_++], *targets_[i].target));
  state_[i] = 4;
  targets_.push_back(OpTarget{&spare, true});
  state_.push_back(0);
  if (!replicating_) return {};
  const size_t j = targets_.size() - 1;
  state_[j] = 1;
  ++outstanding_;
  return {Send{
      j, proto::ReplicaPutRequest{req_.key, replicate_, spare.hint, req_.lww && req_.durable}}};
}

std::vector<Send> WriteOp::Reroute(size_t i, const std::vector<proto::NodeAddress>& replicas) {
  if (!targets_[i].counted) return {};
  state_[i] = 4;
  for (const proto::NodeAddress& r : replicas) {
    auto known = std::find_if(targets_.begin(), targets_.end(),
                              [&](const OpTarget& t) { return t.target->node == r.node; });
    if (known != targets_.end()) {
      const size_t k = static_cast<size_t>(known - targets_.begin());
      if (known->counted || state_[k] >= 3) continue;
      known->counted = true;
      ++receipt_.redirects;
      if (!req_.lww) AddCoordinator(k);
      if (state_[k] == 2) NoteAck(k, false);
      return {};
    }
    // A counted stand-in keeps the copy meant for it: its place counts once.
    bool stood_in = false;
    for (size_t k = 0; k < targets_.size(); ++k) {
      stood_in |= targets_[k].counted && state_[k] < 3 && targets_[k].target->hint == r.node;
    }
    if (stood_in) continue;
    ++receipt_.redirects;
    const Target& primary = stand_ins_.emplace_back(Target{r.node, r.address, Role::kPrimary, ""});
    targets_.push_back(OpTarget{&primary, true});
    state_.push_back(0);
    const size_t j = targets_.size() - 1;
    if (!req_.lww) AddCoordinator(j);
    if (!replicating_) return {};
    state_[j] = 1;
    ++outstanding_;
    return {Send{j, proto::ReplicaPutRequest{req_.key, replicate_, "", req_.lww && req_.durable}}};
  }
  return {};
}

std::vector<Send> WriteOp::OnReply(size_t target, Reply reply) {
  if (target >= state_.size() || state_[target] != 1) return {};
  --outstanding_;
  if (reply.message.ok()) highest_epoch_ = std::max(highest_epoch_, EpochOf(*reply.message));
  const Status status = StatusOf(reply);
  const Target& t = *targets_[target].target;
  const bool counted = targets_[target].counted;

  if (!req_.lww && coordinator_ && target == *coordinator_ && !coordinator_acked_) {
    const auto* put = status.ok() ? std::get_if<proto::CoordPutReply>(&reply.message->body) : nullptr;
    if (put != nullptr) {
      coordinator_acked_ = true;
      state_[target] = 2;
      NoteAck(target, true);
      clock_ = ContextAfterWrite(put->siblings, put->dot, req_.context);
      written_ = put->dot;
      replicate_ = put->siblings;
      CheckDone();
      // Every replica gets its copy, also once W is met (W=1) or the op has
      // ended at its deadline: W sets how many the client waits for, not
      // how many nodes keep the write.
      return Replicate();
    }
    state_[target] = 3;
    // A reply of another type: the node got the request, and may have applied it.
    last_error_ = status.ok()
                      ? Status::ProtocolError("unexpected reply to CoordPut").WithInDoubt(true)
                      : status;
    if (Definitive(last_error_, reply)) {
      Finish(last_error_.Annotate("write refused by " + t.node));
      return {};
    }
    if (MaybeApplied(reply, last_error_)) {
      // It may have been written: another coordinator would make a second version.
      maybe_applied_ = true;
      Finish(Status::Unavailable("the coordinator " + t.node + " failed after the write was sent: " +
                                 last_error_.ToString() + "; it may have been applied anyway")
                 .WithInDoubt(true));
      return {};
    }
    if (done()) return {};
    ++receipt_.coordinator_retries;
    if (const auto* replicas = Redirect(reply, route_->epoch)) {
      Reroute(target, *replicas);
    } else {
      Substitute(target);
    }
    return TryCoordinator();
  }

  std::vector<Send> out;
  if (status.ok() && std::holds_alternative<proto::Ack>(reply.message->body)) {
    state_[target] = 2;
    if (counted) {
      NoteAck(target, false);
      if (t.role == Role::kFallback) ++receipt_.hints;
    } else {
      // A pending replica keeps the copy, and replicates it once its join ends.
      maybe_applied_ = true;
    }
  } else {
    state_[target] = 3;
    last_error_ = status.ok()
                      ? Status::ProtocolError("unexpected reply to ReplicaPut").WithInDoubt(true)
                      : status;
    if (req_.lww && Invalid(last_error_)) {
      // Sent to every replica at once: the others may have applied it.
      const bool elsewhere = acks_ > 0 || outstanding_ > 0 || maybe_applied_;
      Finish(last_error_.Annotate("write refused by " + t.node)
                 .WithInDoubt(elsewhere || last_error_.in_doubt()));
      return {};
    }
    if (req_.lww) maybe_applied_ |= MaybeApplied(reply, last_error_);
    // Also once W is met, and for a replica shedding load: the stand-in
    // keeps the N-th copy as a hint, which otherwise would wait for
    // anti-entropy.
    if (const auto* replicas = Redirect(reply, route_->epoch)) {
      out = Reroute(target, *replicas);
    } else if (!Invalid(last_error_)) {
      out = Substitute(target);
    }
  }
  CheckDone();
  return out;
}

void WriteOp::CheckDone() {
  if (done()) return;
  const size_t w = static_cast<size_t>(std::max(req_.w, 1));
  if (acks_ >= w) {
    Finish(Status::OK());
    return;
  }
  if (!req_.lww && !coordinator_acked_) return;
  size_t possible = acks_;
  for (size_t i = 0; i < targets_.size(); ++i) {
    if (targets_[i].counted && (state_[i] == 0 || state_[i] == 1)) ++possible;
  }
  if (possible < w) {
    // An LWW write still out to a replica may yet be applied there.
    const bool applied =
        coordinator_acked_ || acks_ > 0 || maybe_applied_ || (req_.lww && outstanding_ > 0);
    Finish(Status::Unavailable("write acknowledged by " + std::to_string(acks_) + " of W=" +
                               std::to_string(w) + " required replicas (" + AckedNodes() +
                               "); last error: " + last_error_.ToString() +
                               (applied ? "; it may have been applied anyway" : ""))
               .WithInDoubt(applied));
  }
}

void WriteOp::OnDeadline() {
  if (done()) return;
  const size_t w = static_cast<size_t>(std::max(req_.w, 1));
  if (!req_.lww && !coordinator_acked_) {
    Finish(Status::Timeout("no coordinator acknowledged the write before the deadline; it may "
                           "have been applied anyway")
               .WithInDoubt(true));
    return;
  }
  bool sent_any = false;
  for (uint8_t s : state_) sent_any |= s != 0;
  const bool applied = coordinator_acked_ || acks_ > 0 || (req_.lww && sent_any);
  Finish(Status::Unavailable("write acknowledged by " + std::to_string(acks_) + " of W=" +
                             std::to_string(w) + " required replicas (" + AckedNodes() +
                             ") before the deadline" +
                             (applied ? "; it may have been applied anyway" : ""))
             .WithInDoubt(applied));
}

std::optional<size_t> WriteOp::awaited_past_deadline() const {
  if (req_.lww || !coordinator_ || coordinator_acked_ || state_[*coordinator_] != 1)
    return std::nullopt;
  return coordinator_;
}

void WriteOp::Finish(Status status) {
  if (done()) return;
  outcome_ = std::move(status);
}

void WriteOp::NoteAck(size_t target, bool coordinator) {
  ++acks_;
  acked_.emplace_back(target, coordinator);
}

std::string WriteOp::AckedNodes() const {
  std::string out;
  for (const auto& [target, coordinator] : acked_) {
    if (!out.empty()) out += ", ";
    out += targets_[target].target->node;
  }
  return out.empty() ? "none" : out;
}

std::vector<std::string> WriteOp::reached() const {
  std::vector<std::string> out;
  for (const auto& [target, coordinator] : acked_) {
    const Target& t = *targets_[target].target;
    if (t.role == Role::kPrimary) out.push_back(t.node);
  }
  return out;
}

Receipt WriteOp::receipt() const {
  Receipt r = receipt_;
  for (const auto& [target, coordinator] : acked_) {
    r.acks.push_back(AckOf(*targets_[target].target, coordinator));
  }
  r.version_vector = ClockString(clock_);
  return r;
}

// ------------------------------------------------------------------ reads

ReadOp::ReadOp(Route route, ReadRequest request)
    : ReadOp(std::make_shared<const Route>(std::move(route)), std::move(request)) {}

ReadOp::ReadOp(std::shared_ptr<const Route> route, ReadRequest request)
    : route_(std::move(route)), req_(std::move(request)) {
  targets_.reserve(route_->replicas.size());
  for (const Target& t : route_->replicas) targets_.push_back(&t);
  planned_.assign(targets_.size(), true);
  failed_.assign(targets_.size(), false);
  replies_.resize(targets_.size());
  acked_.reserve(targets_.size());
  receipt_.epoch = route_->epoch;
}

std::vector<Send> ReadOp::Start() {
  std::vector<Send> out;
  out.reserve(targets_.size());
  for (size_t i = 0; i < targets_.size(); ++i) {
    out.push_back(Send{i, proto::GetRequest{req_.key, targets_[i]->hint}});
    ++outstanding_;
  }
  planned_outstanding_ = outstanding_;
  if (out.empty()) outcome_ = Status::Unavailable("no replica known for the key");
  return out;
}

std::vector<Send> ReadOp::OnReply(size_t target, Reply reply) {
  std::vector<Send> out;
  if (target >= replies_.size() || outstanding_ == 0) return out;
  --outstanding_;
  if (reply.message.ok()) highest_epoch_ = std::max(highest_epoch_, EpochOf(*reply.message));
  const Status status = StatusOf(reply);
  const auto* get = status.ok() ? std::get_if<proto::GetReply>(&reply.message->body) : nullptr;
  const Target& t = *targets_[target];
  const bool planned = planned_[target];
  if (planned) --planned_outstanding_;
  const std::vector<proto::NodeAddress>* redirect = nullptr;
  if (get != nullptr) {
    replies_[target] = Canonicalize(get->siblings);
    ++ok_;
    if (planned) ++planned_ok_;
    acked_.push_back(target);
  } else {
    failed_[target] = true;
    last_error_ = status.ok() ? Status::ProtocolError("unexpected reply to Get") : status;
    if (!reply.message.ok() && last_error_.code() == StatusCode::kInvalidArgument) {
      // An answer this client could not decode: the replica may hold a
      // version the read cannot return, and spares' answers would hide it.
      outcome_ = last_error_.Annotate("the answer of " + t.node + " could not be read");
      return out;
    }
    all_timeouts_ &= last_error_.IsTimeout();
    busy_ |= last_error_.code() == StatusCode::kBusy;
    if (planned) redirect = Redirect(reply, route_->epoch);
  }
  if (redirect != nullptr) {
    // Asked before the answer is decided: the replica that took the
    // refuser's place may hold writes the others lack.
    for (const proto::NodeAddress& n : *redirect) {
      if (Asks(n.node) || StoodIn(n.node)) continue;
      ++receipt_.redirects;
      out.push_back(
          Add(stand_ins_.emplace_back(Target{n.node, n.address, Role::kPrimary, ""}), true));
      break;
    }
  }
  if (answered()) return out;
  const size_t r = static_cast<size_t>(std::max(req_.r, 1));
  if (planned_ok_ >= r || (ok_ >= r && planned_outstanding_ == 0)) {
    Answer();
    return out;
  }
  if (get == nullptr && redirect == nullptr && !Definitive(last_error_, reply)) {
    // A spare the read already asks (a replica a refusal named) is no stand-in.
    while (next_spare_ < route_->spares.size() && Asks(route_->spares[next_spare_].node)) {
      ++next_spare_;
    }
    if (next_spare_ < route_->spares.size()) {
      out.push_back(Add(stand_ins_.emplace_back(StandIn(route_->spares[next_spare_++], t)), false));
    }
  }
  if (ok_ + outstanding_ < r) {
    if (ok_ == 0 && all_timeouts_) {
      outcome_ = Status::Timeout("no replica answered the read before the deadline");
    } else {
      // Shed load is worth a retry after a back-off, as for writes.
      const std::string why = "read answered by " + std::to_string(ok_) +
                              " of R=" + std::to_string(r) +
                              " required replicas; last error: " + last_error_.ToString();
      outcome_ = busy_ ? Status::Busy(why) : Status::Unavailable(why);
    }
  }
  return out;
}

bool ReadOp::StoodIn(const NodeId& node) const {
  for (size_t k = 0; k < targets_.size(); ++k) {
    if (planned_[k] && !failed_[k] && targets_[k]->hint == node) return true;
  }
  return false;
}

bool ReadOp::Asks(const NodeId& node) const {
  return std::any_of(targets_.begin(), targets_.end(),
                     [&](const Target* t) { return t->node == node; });
}

Send ReadOp::Add(const Target& target, bool planned) {
  targets_.push_back(&target);
  planned_.push_back(planned);
  failed_.push_back(false);
  replies_.emplace_back();
  ++outstanding_;
  if (planned) ++planned_outstanding_;
  return Send{targets_.size() - 1, proto::GetRequest{req_.key, target.hint}};
}

void ReadOp::Answer() {
  for (const auto& s : replies_) {
    if (s) answer_ = MergeSiblings(answer_, *s);
  }
  for (const auto& s : replies_) {
    if (s && *s != answer_) ++receipt_.read_repairs;
  }
  outcome_ = Status::OK();
}

void ReadOp::OnDeadline() {
  if (answered()) return;
  const size_t r = static_cast<size_t>(std::max(req_.r, 1));
  if (ok_ >= r) {
    Answer();  // stand-ins' answers, with a planned replica still silent
  } else if (ok_ == 0 && !busy_) {
    outcome_ = Status::Timeout("no replica answered the read before the deadline");
  } else {
    // A read some replica shed is worth a retry after a back-off.
    const std::string why = "read answered by " + std::to_string(ok_) +
                            " of R=" + std::to_string(r) +
                            " required replicas before the deadline" +
                            (busy_ ? "; last error: " + last_error_.ToString() : "");
    outcome_ = busy_ ? Status::Busy(why) : Status::Unavailable(why);
  }
}

std::string ReadOp::fastest() const {
  for (size_t target : acked_) {
    if (targets_[target]->role == Role::kPrimary) return targets_[target]->node;
  }
  return "";
}

std::vector<std::string> ReadOp::reached() const {
  std::vector<std::string> out;
  for (size_t target : acked_) {
    if (targets_[target]->role == Role::kPrimary) out.push_back(targets_[target]->node);
  }
  return out;
}

Receipt ReadOp::receipt() const {
  Receipt r = receipt_;
  for (size_t target : acked_) r.acks.push_back(AckOf(*targets_[target], false));
  if (answered() && status().ok()) r.version_vector = ClockString(ContextOf(answer_));
  return r;
}

std::vector<Send> ReadOp::Repair() {
  std::vector<Send> out;
  if (repaired_ || !answered() || !status().ok()) return out;
  repaired_ = true;
  SiblingSet all;
  for (const auto& s : replies_) {
    if (s) all = MergeSiblings(all, *s);
  }
  if (all.empty()) return out;
  for (size_t i = 0; i < replies_.size(); ++i) {
    if (replies_[i] && *replies_[i] != all) {
      out.push_back(Send{i, proto::ReplicaPutRequest{req_.key, all, targets_[i]->hint}});
    }
  }
  repairs_sent_ = out.size();
  return out;
}

// ------------------------------------------------------------------ contexts

uint64_t ContextKeyHash(std::string_view key) { return Hash64(key, kContextKeyHashSeed); }

std::string EncodeContext(const VersionVector& clock, const std::string& fastest,
                          const std::vector<std::string>& reached,
                          std::optional<uint64_t> key_hash) {
  VersionVector carried = clock;
  if (carried.size() > kContextClockEntriesMax) carried.Truncate(kContextClockEntriesMax);
  std::string out;
  MsgpackWriter w(&out);
  w.Array(key_hash ? 5 : 4);
  w.Uint(kContextFormat);
  w.Array(static_cast<uint32_t>(carried.size() * 3));
  for (const ClockEntry& e : carried.entries()) {
    w.Uint(e.actor);
    w.Uint(e.counter);
    w.Uint(e.timestamp_ms);
  }
  w.Str(fastest);
  const size_t kept = std::min<size_t>(reached.size(), kMaxReplicas);
  w.Array(static_cast<uint32_t>(kept));
  for (size_t i = 0; i < kept; ++i) w.Str(reached[i]);
  if (key_hash) w.Uint(*key_hash);
  return out;
}

Result<DecodedContext> DecodeContext(std::string_view bytes) {
  MsgpackLimits limits;
  limits.depth_max = 2;
  limits.items_max = 3 * kContextClockEntriesMax;
  limits.bytes_max = 256;
  MsgpackReader r(bytes, limits);
  uint32_t fields = 0, n = 0;
  uint64_t format = 0;
  std::vector<ClockEntry> entries;
  std::string_view fastest;
  Status s = r.ReadArray(&fields);
  if (s.ok() && fields < 3) s = Status::ProtocolError("too few fields");
  if (s.ok()) s = r.ReadUint(&format);
  if (s.ok() && format != kContextFormat) s = Status::ProtocolError("unknown context format");
  if (s.ok()) s = r.ReadArray(&n);
  if (s.ok() && n % 3 != 0) s = Status::ProtocolError("bad clock");
  for (uint32_t i = 0; s.ok() && i < n / 3; ++i) {
    ClockEntry e;
    s = r.ReadUint(&e.actor);
    if (s.ok()) s = r.ReadUint(&e.counter);
    if (s.ok()) s = r.ReadUint(&e.timestamp_ms);
    entries.push_back(e);
  }
  if (s.ok()) s = r.ReadStr(&fastest, kMaxNodeIdBytes);
  std::vector<std::string> reached;
  uint32_t reached_n = 0;
  if (s.ok() && fields > 3) s = r.ReadArray(&reached_n, kMaxReplicas);
  for (uint32_t i = 0; s.ok() && i < reached_n; ++i) {
    std::string_view node;
    s = r.ReadStr(&node, kMaxNodeIdBytes);
    if (s.ok()) reached.emplace_back(node);
  }
  std::optional<uint64_t> key_hash;
  if (s.ok() && fields > 4) {
    uint64_t h = 0;
    s = r.ReadUint(&h);
    key_hash = h;
  }
  if (s.ok()) s = r.SkipN(fields - std::min<uint32_t>(fields, 5));
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return Status::InvalidArgument("not a context from a dynamo read: " + s.ToString());
  Result<VersionVector> clock = VersionVector::FromEntries(std::move(entries));
  if (!clock.ok()) return Status::InvalidArgument("not a context from a dynamo read: " + clock.status().ToString());
  return DecodedContext{std::move(*clock), std::string(fastest), std::move(reached), key_hash};
}

std::string ClockString(const VersionVector& clock) {
  std::string out = "{";
  for (const ClockEntry& e : clock.entries()) {
    if (out.size() > 1) out += ", ";
    char buf[48];
    std::snprintf(buf, sizeof(buf), "%016llx:%llu", static_cast<unsigned long long>(e.actor),
                  static_cast<unsigned long long>(e.counter));
    out += buf;
  }
  return out + "}";
}

}  // namespace dynamo::client
