// The client's request logic, with no I/O: routing a key to its replicas and
// the quorum state machines of writes and reads. The runtime (client.cc)
// sends what these return and feeds them replies and deadlines; tests drive
// them directly.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dynamo/client_types.h"
#include "dynamo/cluster_map.h"
#include "dynamo/net/call_outcome.h"
#include "dynamo/proto/message.h"
#include "dynamo/version.h"

namespace dynamo::client {

enum class Role { kPrimary, kFallback, kPending };
std::string_view RoleName(Role role);

struct Target {
  NodeId node;
  std::string address;
  Role role = Role::kPrimary;
  std::string hint;  // for a fallback: the primary it stands in for
  // An unhealthy primary kept because no healthy node could stand in for it:
  // still written to, but chosen as coordinator only after the others.
  bool suspect = false;
};

// The nodes an operation on one key talks to.
struct Route {
  PartitionId partition = 0;
  uint64_t epoch = 0;
  // The counted replicas: the first N of the preference list, each unhealthy
  // one replaced by the next healthy node of the extended list (a fallback
  // that keeps the copy as a hint). A primary with no healthy replacement
  // stays: it may answer after all.
  std::vector<Target> replicas;
  // Nodes receiving the partition in a pending change: writes also go to
  // them, uncounted.
  std::vector<Target> pending;
  // Healthy nodes further along the extended list, in order: a replica that
  // fails during an operation is replaced by the next of them, with a hint.
  std::vector<Target> spares;
};

struct Health {
  // Whether to send to `node` now.
  std::function<bool(const NodeId&)> healthy;
  // HOST:PORT of `node`; empty if unknown.
  std::function<std::string(const NodeId&)> address;
};

Route PlanRoute(const ClusterMap& map, std::string_view key, const Health& health);
// The same for a partition (the key's is ring().KeyPartition(key)).
Route PlanRoute(const ClusterMap& map, PartitionId partition, const Health& health);

// A node an operation talks to. Indices stay valid for the op's life:
// replicas first, then pending replicas, then spares as they are used.
struct OpTarget {
  const Target* target;  // in the op's route, or a stand-in the op made
  bool counted = true;   // counts toward R or W
};

// What the runtime must send: to op target `target`, `body`.
struct Send {
  size_t target;
  proto::Body body;
  // The op acts on the answer even past its deadline: a coordinator that
  // applies a write late still has its version sent to the other replicas,
  // rather than leaving it on one node until anti-entropy.
  bool answer_outlives_deadline = false;
};

// How long past its op's deadline an answer that outlives it is awaited:
// longer than a live node's usual stalls (a process pause, a slow disk),
// short enough that calls to a hung node do not pile up (its first timeout
// backs it off, so later writes go elsewhere).
inline constexpr uint64_t kLateAnswerWaitMs = 10000;

// The least a request is awaited (timeout_ms when smaller): one sent just
// before its op's deadline (replica copies after a slow coordinator's
// answer) still gives a live node time to answer, rather than counting its
// usual latency as a timeout against its health.
inline constexpr uint64_t kAnswerWaitMinMs = 100;

// How long a runtime waits for the answer to `send`, made `remaining_ms`
// before its op's deadline (0: past it, or the outcome already reported) by
// an op whose timeout is `timeout_ms`: until the deadline and at least
// kAnswerWaitMinMs, and kLateAnswerWaitMs more for an answer that outlives
// the deadline; a request sent past the deadline gets `timeout_ms` of its
// own. At the deadline the runtime counts a still awaited answer as a
// timeout for its node's health (awaited_past_deadline()).
uint64_t AnswerWaitMs(const Send& send, uint64_t remaining_ms, uint64_t timeout_ms);
// The `remaining_ms` of AnswerWaitMs at `now_ms`: 0 once `deadline_ms` passed.
inline uint64_t RemainingMs(uint64_t deadline_ms, uint64_t now_ms) {
  return deadline_ms > now_ms ? deadline_ms - now_ms : 0;
}

// The outcome of a request to one target: the reply, or why there is none,
// and whether the request may have reached the node (net/call_outcome.h).
using Reply = net::CallOutcome;

// What a reply tells about its node's health: nothing (refused by this
// client before it left, e.g. Busy from a full write queue), that the node
// serves (it answered, an ErrorReply too), or that it cannot serve now (no
// answer in time, no connection, or an answer that its storage failed:
// after a failed sync a node takes no more writes until it restarts).
enum class NodeSignal { kNone, kServing, kFailed };
NodeSignal SignalOf(const Reply& reply);
// What a runtime observes at an op's deadline for the node whose answer is
// still awaited past it (a timeout).
Reply DeadlineReply();

struct WriteRequest {
  std::string key;
  std::string value;
  bool tombstone = false;
  VersionVector context;
  // The node that answered the previous read of this key fastest.
  std::string preferred_coordinator;
  // Nonzero: coordinate through the key's healthy primary that ranks first
  // in this salt's order of node ids (rendezvous hashing), whatever
  // preferred_coordinator says, so one client's writes share a node's log
  // syncs (ClientOptions::coordinator). Primaries in `reached` rank before
  // the others.
  uint64_t coordinator_rank_salt = 0;
  // The primaries that answered the read, or acknowledged the write, that
  // the context came from (they were reachable then and hold what the
  // context covers), and those the client heard from just now.
  std::vector<std::string> reached;
  // Random per write: a coordinator that sees it twice writes once.
  uint64_t op_id = 0;
  int w = 2;
  bool lww = false;
  Dot lww_dot;  // LWW: (client id, timestamp in microseconds)
  uint64_t wall_ms = 0;
  // Acknowledged only with a synced copy: the coordinator's (causal) or
  // every replica's (LWW). False: no node syncs for this write.
  bool durable = true;
};

// The coordinator_rank_salt of the client with id `client_id`: nonzero, and
// different for each client, so clients rank the nodes differently.
uint64_t CoordinatorRankSalt(uint64_t client_id);

// A write. Causal: CoordPut to one replica, then the coordinator's sibling
// set to the other replicas; the next replica is tried as coordinator only
// when the last certainly did not apply the request (a refused connection,
// this client's own full write queue to it, or an error the node did not
// flag in doubt; a write applied twice would make two versions), up to
// every replica of the key, otherwise the write fails in doubt; a node's
// Busy or an invalid request ends it, not in doubt. A replica that fails
// or sheds load (Busy) is replaced by a hinted stand-in; one that refuses as
// no replica of the key's partition in a map newer than the route's (the
// partition moved) by a replica that map names. LWW: the client's
// version to every replica at once. Done at W acknowledgements (the
// coordinator's included), or when W can no longer be reached, or at the
// deadline.
class WriteOp {
 public:
  // The route may be shared with other ops (the runtime plans one per
  // partition); it must not change while they run.
  WriteOp(std::shared_ptr<const Route> route, WriteRequest request);
  WriteOp(Route route, WriteRequest request);
  // Targets point into the op's own stand-ins: not copyable.
  WriteOp(const WriteOp&) = delete;
  WriteOp& operator=(const WriteOp&) = delete;

  std::vector<Send> Start();
  std::vector<Send> OnReply(size_t target, Reply reply);
  // The deadline passed: decides the outcome if it was still open.
  void OnDeadline();
  // The coordinator whose answer is still awaited (Send::answer_outlives_deadline).
  std::optional<size_t> awaited_past_deadline() const;

  bool done() const { return outcome_.has_value(); }
  // Every request answered or given up; later replies change nothing.
  bool settled() const { return done() && outstanding_ == 0; }
  const Target& target(size_t i) const { return *targets_[i].target; }
  // OK, or Unavailable/Timeout with in_doubt telling whether the write may
  // have been applied. Precondition: done().
  const Status& status() const { return *outcome_; }
  const std::string& key() const { return req_.key; }
  // The resulting version vector (the write's context for what follows).
  const VersionVector& clock() const { return clock_; }
  // The dot the coordinator gave the new version; none before it answered
  // (and for LWW writes). clock() leaves it out when it would also claim a
  // concurrent sibling the same node coordinated with a lower counter.
  const std::optional<Dot>& written() const { return written_; }
  // What the write did so far (built on demand: most callers never ask).
  Receipt receipt() const;
  // The primaries that acknowledged so far, the coordinator first.
  std::vector<std::string> reached() const;
  // Copies stored as hints so far.
  size_t hints() const { return receipt_.hints; }
  // Receipt::redirects so far.
  size_t redirects() const { return receipt_.redirects; }
  // Replies carried newer epochs than the route's; the view should refresh.
  uint64_t highest_epoch() const { return highest_epoch_; }

 private:
  std::vector<Send> Replicate();
  std::vector<Send> TryCoordinator();
  // Replaces failed counted target `i` with the next spare; the ReplicaPut
  // for it when replication is under way.
  std::vector<Send> Substitute(size_t i);
  // Replaces counted target `i`, refused by a node that no longer
  // replicates the partition, with the first of `replicas` (the refuser's
  // map) the op does not count yet: a pending target of that node counts
  // from now on, any other becomes a new primary target, sent its
  // ReplicaPut when replication is under way; either is a coordinator
  // candidate from then on. A node
  // a counted stand-in keeps a hint for is taken as written already (its
  // place counts once). The stale route's spares would keep hints for the
  // refuser instead.
  std::vector<Send> Reroute(size_t i, const std::vector<proto::NodeAddress>& replicas);
  // Whether `node` is one of the op's targets, in any role.
  bool Targets(const NodeId& node) const;
  // Makes target `i` a coordinator candidate, after those already listed.
  void AddCoordinator(size_t i);
  void CheckDone();
  void Finish(Status status);
  void NoteAck(size_t target, bool coordinator);
  // The nodes that acknowledged so far, for error messages.
  std::string AckedNodes() const;

  std::shared_ptr<const Route> route_;
  std::vector<OpTarget> targets_;
  // Spares with the hint of what they replace (a list: addresses stay put,
  // and an empty one allocates nothing).
  std::list<Target> stand_ins_;
  size_t next_spare_ = 0;
  SiblingSet replicate_;  // what the other replicas get, once known
  bool replicating_ = false;
  WriteRequest req_;
  std::vector<size_t> coordinators_;  // candidates, in order
  size_t next_coordinator_ = 0;
  std::optional<size_t> coordinator_;
  bool coordinator_acked_ = false;
  // A node not counted in acks_ may hold the write: a coordinator or LWW
  // replica that failed in doubt, or a pending replica that acknowledged.
  bool maybe_applied_ = false;
  std::vector<uint8_t> state_;  // per target: 0 idle, 1 sent, 2 acked, 3 failed, 4 replaced
  size_t acks_ = 0;             // counted acknowledgements
  size_t outstanding_ = 0;
  std::optional<Status> outcome_;
  VersionVector clock_;
  std::optional<Dot> written_;
  Receipt receipt_;  // acks are kept in acked_ until receipt() is asked for
  std::vector<std::pair<size_t, bool>> acked_;  // (target, as coordinator)
  uint64_t highest_epoch_ = 0;
  Status last_error_;
};

struct ReadRequest {
  std::string key;
  int r = 2;
};

// A read: Get to every counted replica, answered at R replies with the merge
// of what they returned. A replica that fails is replaced by a spare (which
// answers with its hints for it), but a spare's answer counts toward R only
// once every replica of the route has answered or failed, or at the
// deadline: a replica that refuses reads while it syncs (a catch-up, a
// partition it just took over) still takes writes, so a spare's empty
// answer in its place could hide a write the others hold. A replica that
// refuses as no replica in a newer map is replaced at once by one that map
// names, whose answer counts as a replica's. The op then keeps
// collecting until every replica answered or the repair window ends
// (Finish), and returns the repair writes for replicas that answered stale
// or missing.
class ReadOp {
 public:
  ReadOp(std::shared_ptr<const Route> route, ReadRequest request);
  ReadOp(Route route, ReadRequest request);
  ReadOp(const ReadOp&) = delete;
  ReadOp& operator=(const ReadOp&) = delete;

  std::vector<Send> Start();
  // May return a Get to a spare standing in for a replica that failed.
  std::vector<Send> OnReply(size_t target, Reply reply);
  // The deadline passed before R replies.
  void OnDeadline();
  // No read's answer outlives its deadline (see WriteOp's).
  std::optional<size_t> awaited_past_deadline() const { return std::nullopt; }
  // Ends the repair phase; returns ReplicaPuts of the merged set to every
  // replica that answered with less.
  std::vector<Send> Repair();

  bool answered() const { return outcome_.has_value(); }
  // Every request replied or failed.
  bool all_in() const { return outstanding_ == 0; }
  const Status& status() const { return *outcome_; }
  const std::string& key() const { return req_.key; }
  // The merged sibling set at the time of the answer (precondition: answered OK).
  const SiblingSet& siblings() const { return answer_; }
  // The primary that answered first (the next write's coordinator with
  // Coordinator::kFastestReplica); empty if none has.
  std::string fastest() const;
  // The primaries that answered so far, fastest first.
  std::vector<std::string> reached() const;
  // What the read did so far (built on demand).
  Receipt receipt() const;
  uint64_t highest_epoch() const { return highest_epoch_; }
  size_t repairs_sent() const { return repairs_sent_; }
  // Receipt::redirects so far.
  size_t redirects() const { return receipt_.redirects; }
  const Target& target(size_t i) const { return *targets_[i]; }

 private:
  // Decides the read OK with the merge of every answer so far.
  void Answer();
  // Asks `target` (in stand_ins_) too; `planned`: a replica of the key (one
  // a refusal named), whose answer counts as the route's replicas' do.
  Send Add(const Target& target, bool planned);
  // Whether the read asks `node`, in any role.
  bool Asks(const NodeId& node) const;
  // Whether a planned stand-in that has not failed holds `node`'s place
  // (its hints): that place counts once, so a redirect does not add `node`.
  bool StoodIn(const NodeId& node) const;

  std::shared_ptr<const Route> route_;
  ReadRequest req_;
  std::vector<const Target*> targets_;  // in route_ or stand_ins_
  std::vector<bool> planned_;           // per target: a replica, not a spare
  std::vector<bool> failed_;            // per target: answered with an error
  std::list<Target> stand_ins_;
  size_t next_spare_ = 0;
  std::vector<std::optional<SiblingSet>> replies_;
  size_t ok_ = 0;
  size_t outstanding_ = 0;
  size_t planned_ok_ = 0;           // answers from the route's replicas
  size_t planned_outstanding_ = 0;  // the route's replicas not yet answered or failed
  std::optional<Status> outcome_;
  SiblingSet answer_;
  Receipt receipt_;  // acks are kept in acked_ until receipt() is asked for
  std::vector<size_t> acked_;
  uint64_t highest_epoch_ = 0;
  size_t repairs_sent_ = 0;
  bool repaired_ = false;
  bool all_timeouts_ = true;  // every failure so far was a timeout
  bool busy_ = false;         // some node, or this client's queue, shed the read
  Status last_error_;
};

// The opaque context handed to applications: the version vector a write
// must supersede, the node that answered the read fastest (empty after a
// write), the primaries the read or write reached (at most kMaxReplicas) and
// ContextKeyHash of the key read or written, so that a context is not used
// for another key (its clock would supersede versions that key's writers
// never saw: one counter per node serves all keys).
std::string EncodeContext(const VersionVector& clock, const std::string& fastest,
                          const std::vector<std::string>& reached,
                          std::optional<uint64_t> key_hash);
struct DecodedContext {
  VersionVector clock;
  std::string fastest;
  std::vector<std::string> reached;  // empty in contexts from before it was kept
  std::optional<uint64_t> key_hash;  // none in contexts from before it was kept
};
uint64_t ContextKeyHash(std::string_view key);
// InvalidArgument when `bytes` is not a context this client produced.
Result<DecodedContext> DecodeContext(std::string_view bytes);
// "{actor:counter, ...}" with actors in hex.
std::string ClockString(const VersionVector& clock);

}  // namespace dynamo::client
