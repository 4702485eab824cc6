// The client's quorum logic without sockets.
#include "core/quorum.h"

#include <gtest/gtest.h>

#include <set>

#include "dynamo/msgpack_io.h"
#include "dynamo/placement.h"

namespace dynamo::client {
namespace {

std::vector<NodeId> Names(int n) {
  std::vector<NodeId> out;
  for (int i = 1; i <= n; ++i) out.push_back("n" + std::to_string(i));
  return out;
}

Health AllHealthyExcept(std::set<NodeId> down) {
  return Health{[down](const NodeId& n) { return !down.count(n); },
                [](const NodeId& n) { return n + ":7000"; }};
}

// A key whose preference list in a 5-node ring starts with n1 or whatever it is.
struct Fixture {
  ClusterMap map{*Ring::Create(Names(5), 64, 3)};
  std::string key = "cart:alice";
  std::vector<NodeId> pref() const { return map.ring().PreferenceList(map.ring().KeyPartition(key)); }
};

Reply Ok(proto::Body body) { return Reply{proto::Message{1, std::move(body)}, true}; }
Reply Refused() { return Reply{Status::Unavailable("connect refused"), false}; }
Reply TimedOut() { return Reply{Status::Timeout("no reply"), true}; }

SiblingSet OneVersion(const std::string& value) {
  return CoordinatorUpdate({}, 42, 7, WriteIntent{{}, value, false, 1})->siblings;
}

proto::CoordPutReply CoordReply(const std::string& value, uint64_t epoch = 5) {
  SiblingSet s = OneVersion(value);
  return proto::CoordPutReply{epoch, s[0].dot, s};
}

TEST(RouteTest, HealthyPrimariesAndFallbacksWithHints) {
  Fixture f;
  std::vector<NodeId> pref = f.pref();
  Route all = PlanRoute(f.map, f.key, AllHealthyExcept({}));
  ASSERT_EQ(all.replicas.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(all.replicas[i].node, pref[i]);
    EXPECT_EQ(all.replicas[i].role, Role::kPrimary);
    EXPECT_TRUE(all.replicas[i].hint.empty());
    EXPECT_EQ(all.replicas[i].address, pref[i] + ":7000");
  }
  EXPECT_EQ(all.spares.size(), 2u);
  EXPECT_TRUE(all.pending.empty());

  Route sloppy = PlanRoute(f.map, f.key, AllHealthyExcept({pref[1]}));
  std::vector<NodeId> ext = f.map.ring().ExtendedList(f.map.ring().KeyPartition(f.key));
  EXPECT_EQ(sloppy.replicas[1].node, ext[3]);
  EXPECT_EQ(sloppy.replicas[1].role, Role::kFallback);
  EXPECT_EQ(sloppy.replicas[1].hint, pref[1]);
  EXPECT_EQ(sloppy.spares.size(), 1u);

  // No healthy stand-in left: the primary stays in place.
  Route dark = PlanRoute(f.map, f.key, AllHealthyExcept({pref[0], ext[3], ext[4]}));
  EXPECT_EQ(dark.replicas[0].node, pref[0]);
  EXPECT_EQ(dark.replicas[0].role, Role::kPrimary);
  EXPECT_TRUE(dark.replicas[0].suspect);
  EXPECT_FALSE(dark.replicas[1].suspect);
}

// A primary kept only because nothing could stand in for it (a 3-node
// cluster with one node failing) is written to, but coordinates last.
TEST(WriteOpTest, SuspectPrimaryIsTheLastCoordinatorChoice) {
  ClusterMap map(*Ring::Create(Names(3), 64, 3));
  const std::string key = "k";
  const std::vector<NodeId> pref = map.ring().PreferenceList(map.ring().KeyPartition(key));
  WriteRequest req;
  req.key = key;
  req.value = "v";
  req.w = 2;
  req.preferred_coordinator = pref[0];
  WriteOp op(PlanRoute(map, key, AllHealthyExcept({pref[0]})), req);
  std::vector<Send> first = op.Start();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(op.target(first[0].target).node, pref[1]);
  std::vector<Send> rest = op.OnReply(first[0].target, Ok(CoordReply("v")));
  ASSERT_EQ(rest.size(), 2u);  // the suspect primary still gets the write
}

// The node a write with `salt` sends its CoordPut to.
NodeId CoordinatorOf(const ClusterMap& map, const std::string& key, uint64_t salt,
                     const std::set<NodeId>& down = {}, const std::string& preferred = "",
                     const std::vector<std::string>& reached = {}) {
  WriteRequest req;
  req.key = key;
  req.value = "v";
  req.coordinator_rank_salt = salt;
  req.preferred_coordinator = preferred;
  req.reached = reached;
  WriteOp op(PlanRoute(map, key, AllHealthyExcept(down)), req);
  std::vector<Send> first = op.Start();
  EXPECT_EQ(first.size(), 1u);
  return first.empty() ? "" : op.target(first[0].target).node;
}

// A client that ranks nodes coordinates through the key's primary it ranks
// first, whatever the context's fastest replica: in a 3-node cluster that
// is one node for every key, so its writes share that node's syncs; other
// clients rank the nodes otherwise.
TEST(WriteOpTest, ARankedClientCoordinatesThroughItsFirstRankedPrimary) {
  ClusterMap three(*Ring::Create(Names(3), 64, 3));
  std::set<NodeId> tops;
  for (uint64_t salt = 1; salt < 64; salt += 2) {
    const NodeId top = CoordinatorOf(three, "k0", salt);
    tops.insert(top);
    for (int k = 1; k < 40; ++k) {
      const std::string key = "k" + std::to_string(k);
      const std::vector<NodeId> pref = three.ring().PreferenceList(three.ring().KeyPartition(key));
      const NodeId other = pref[0] == top ? pref[1] : pref[0];
      EXPECT_EQ(CoordinatorOf(three, key, salt, {}, other), top) << key << " salt " << salt;
    }
  }
  EXPECT_EQ(tops.size(), 3u);  // clients spread over the nodes

  // In a larger ring, the first-ranked node among the key's own primaries.
  Fixture f;
  for (uint64_t salt = 1; salt < 20; salt += 2) {
    const std::vector<NodeId> pref = f.pref();
    NodeId best = pref[0];
    for (const NodeId& n : pref) {
      if (Hash64(n, salt) > Hash64(best, salt)) best = n;
    }
    EXPECT_EQ(CoordinatorOf(f.map, f.key, salt), best);
  }
}

// The first-ranked node, when failing, gives way to the next one; without a
// salt the context's fastest replica coordinates, as before.
TEST(WriteOpTest, ARankedCoordinatorThatFailsGivesWayToTheNextRanked) {
  ClusterMap three(*Ring::Create(Names(3), 64, 3));
  const uint64_t salt = 7;
  const NodeId top = CoordinatorOf(three, "k", salt);
  const NodeId second = CoordinatorOf(three, "k", salt, {top});
  EXPECT_NE(second, top);
  NodeId third;
  for (const NodeId& n : Names(3)) {
    if (n != top && n != second) third = n;
  }
  EXPECT_EQ(CoordinatorOf(three, "k", salt, {top, second}), third);  // the one healthy node
  const std::vector<NodeId> pref = three.ring().PreferenceList(three.ring().KeyPartition("k"));
  EXPECT_EQ(CoordinatorOf(three, "k", 0, {}, pref[2]), pref[2]);
}

// A write after a read or write prefers the primaries that answered it: a
// first-ranked node the last call did not reach (cut off, say) is passed
// over before a write is sent to it and left in doubt.
TEST(WriteOpTest, ARankedClientPrefersThePrimariesItsContextReached) {
  ClusterMap three(*Ring::Create(Names(3), 64, 3));
  for (uint64_t salt = 1; salt < 16; salt += 2) {
    const NodeId top = CoordinatorOf(three, "k", salt);
    const NodeId second = CoordinatorOf(three, "k", salt, {top});
    std::vector<std::string> others;
    for (const NodeId& n : Names(3)) {
      if (n != top) others.push_back(n);
    }
    EXPECT_EQ(CoordinatorOf(three, "k", salt, {}, "", others), second) << salt;
    EXPECT_EQ(CoordinatorOf(three, "k", salt, {}, "", {others[0]}), others[0]) << salt;
    EXPECT_EQ(CoordinatorOf(three, "k", salt, {}, "", {others[1], top}), top) << salt;
    // Nodes that are no primary of the key (fallbacks, departed nodes) do not count.
    EXPECT_EQ(CoordinatorOf(three, "k", salt, {}, "", {"n9"}), top) << salt;
  }
}

// The first key "k<i>" whose partition gets a pending replica in `map`.
std::string KeyWithAPendingReplica(const ClusterMap& map) {
  for (int i = 0;; ++i) {
    std::string k = "k" + std::to_string(i);
    if (!map.PendingReplicas(map.ring().KeyPartition(k)).empty()) return k;
  }
}

TEST(RouteTest, PendingReplicasGetWritesUncounted) {
  ClusterMap map(*Ring::Create(Names(3), 64, 3));
  map.Reconcile(Names(4));
  const std::string key = KeyWithAPendingReplica(map);
  Route r = PlanRoute(map, key, AllHealthyExcept({}));
  ASSERT_EQ(r.pending.size(), 1u);
  EXPECT_EQ(r.pending[0].node, "n4");
  WriteRequest req;
  req.key = key;
  req.value = "v";
  req.w = 3;
  WriteOp op(r, req);
  std::vector<Send> first = op.Start();
  ASSERT_EQ(first.size(), 1u);
  std::vector<Send> rest = op.OnReply(first[0].target, Ok(CoordReply("v")));
  EXPECT_EQ(rest.size(), 3u);  // two replicas and the pending one
  for (const Send& s : rest) {
    if (op.target(s.target).node == "n4") {
      op.OnReply(s.target, Ok(proto::Ack{5, 1}));
      EXPECT_FALSE(op.done());  // the pending replica does not count
    }
  }
}

// An LWW write that only the pending replica (not counted) acknowledged is
// stored there, and the join makes it a replica: the write failed, but in
// doubt. It was reported as certainly not applied.
TEST(RouteTest, AnLwwWriteAPendingReplicaAcknowledgedIsInDoubt) {
  ClusterMap map(*Ring::Create(Names(3), 64, 3));
  map.Reconcile(Names(4));
  const std::string key = KeyWithAPendingReplica(map);
  WriteRequest req;
  req.key = key;
  req.value = "v";
  req.lww = true;
  req.w = 1;  // (at W=2 the write ends at the second refusal, the third still out)
  WriteOp op(PlanRoute(map, key, AllHealthyExcept({})), req);
  std::vector<Send> sent = op.Start();
  ASSERT_EQ(sent.size(), 4u);
  for (const Send& s : sent) {
    if (op.target(s.target).node == "n4") op.OnReply(s.target, Ok(proto::Ack{5, 1}));
  }
  for (const Send& s : sent) {
    if (op.target(s.target).node != "n4") op.OnReply(s.target, Refused());
  }
  ASSERT_TRUE(op.done());
  EXPECT_FALSE(op.status().ok());
  EXPECT_TRUE(op.status().in_doubt()) << op.status().ToString();
}

// A reply of the wrong type comes from a node that got the request and may
// have applied it: in doubt, not "refused".
TEST(WriteOpTest, AReplyOfTheWrongTypeLeavesTheWriteInDoubt) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "v";
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  std::vector<Send> first = op.Start();
  ASSERT_EQ(first.size(), 1u);
  op.OnReply(first[0].target, Ok(proto::Ack{1, 1}));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().in_doubt()) << op.status().ToString();

  req.lww = true;
  WriteOp lww(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  std::vector<Send> all = lww.Start();
  ASSERT_EQ(all.size(), 3u);
  lww.OnReply(all[0].target, Ok(proto::GetReply{1, {}}));
  for (size_t i = 1; i < all.size() && !lww.done(); ++i) lww.OnReply(all[i].target, Refused());
  ASSERT_TRUE(lww.done());
  EXPECT_TRUE(lww.status().in_doubt()) << lww.status().ToString();
}

TEST(WriteOpTest, CoordinatorThenReplicasUntilW) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "apples";
  req.w = 2;
  req.preferred_coordinator = f.pref()[2];  // the node that answered a read fastest
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  std::vector<Send> first = op.Start();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(op.target(first[0].target).node, f.pref()[2]);
  ASSERT_TRUE(std::holds_alternative<proto::CoordPutRequest>(first[0].body));
  EXPECT_EQ(std::get<proto::CoordPutRequest>(first[0].body).value, "apples");

  std::vector<Send> replicas = op.OnReply(first[0].target, Ok(CoordReply("apples", 9)));
  ASSERT_EQ(replicas.size(), 2u);
  for (const Send& s : replicas) {
    const auto& rp = std::get<proto::ReplicaPutRequest>(s.body);
    EXPECT_EQ(rp.siblings, OneVersion("apples"));
    EXPECT_TRUE(rp.hint.empty());
  }
  EXPECT_FALSE(op.done());
  op.OnReply(replicas[0].target, Ok(proto::Ack{9, 1}));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok());
  EXPECT_EQ(op.receipt().acks.size(), 2u);
  EXPECT_EQ(op.receipt().acks[0].role, "coordinator");
  EXPECT_EQ(op.reached(),
            (std::vector<std::string>{f.pref()[2], op.target(replicas[0].target).node}));
  EXPECT_EQ(op.highest_epoch(), 9u);
  EXPECT_EQ(op.clock().Get(42), 7u);
  ASSERT_TRUE(op.written().has_value());
  EXPECT_EQ(op.written()->actor, 42u);
  EXPECT_EQ(op.written()->counter, 7u);
  EXPECT_FALSE(op.settled());  // one reply still out
  op.OnReply(replicas[1].target, Ok(proto::Ack{9, 1}));
  EXPECT_TRUE(op.settled());
}

// The context of the set a write left on its coordinator, with the write's
// reply from a coordinator holding `local` before it.
VersionVector ContextAfterWrite(const SiblingSet& local, const WriteIntent& intent) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = intent.value;
  req.context = intent.context;
  req.w = 1;
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  std::vector<Send> first = op.Start();
  Result<CoordinatorResult> applied = CoordinatorUpdate(local, 42, 1, intent, {});
  EXPECT_TRUE(applied.ok());
  op.OnReply(first[0].target, Ok(proto::CoordPutReply{5, applied->written.dot, applied->siblings}));
  EXPECT_TRUE(op.done() && op.status().ok());
  return op.clock();
}

// A write's context covers what its writer had seen and the write, never a
// version the coordinator kept beside it: writing again with that context
// keeps another client's concurrent write. Blind writes through one node
// take consecutive dots of its actor, which a version vector cannot tell
// apart, so the writer then gets only what it had seen.
TEST(WriteOpTest, AWritesContextNeverCoversAConcurrentVersionItDidNotSee) {
  const SiblingSet theirs = CoordinatorUpdate({}, 42, 1, WriteIntent{{}, "a", false, 1})->siblings;
  const VersionVector after_blind = ContextAfterWrite(theirs, WriteIntent{{}, "b", false, 2});
  EXPECT_FALSE(after_blind.Covers(theirs[0].dot));
  SiblingSet both = CoordinatorUpdate(theirs, 42, 1, WriteIntent{{}, "b", false, 2})->siblings;
  SiblingSet next =
      CoordinatorUpdate(both, 42, 1, WriteIntent{after_blind, "b2", false, 3})->siblings;
  EXPECT_TRUE(
      std::any_of(next.begin(), next.end(), [](const Version& v) { return v.value == "a"; }));

  // Another actor's concurrent version is not covered by the write's own
  // dot: the context then holds the write too, and writing with it
  // replaces the writer's version only.
  SiblingSet other = theirs;
  other[0].dot = Dot{43, 9};
  const VersionVector after = ContextAfterWrite(other, WriteIntent{{}, "c", false, 2});
  EXPECT_FALSE(after.Covers(Dot{43, 9}));
  EXPECT_TRUE(after.Covers(Dot{42, 1}));
}

// W=1 is done at the coordinator's answer; the other replicas still get
// their copies (the paper's N), not only anti-entropy's later repair.
TEST(WriteOpTest, AtWOneTheOtherReplicasStillGetTheWrite) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "pears";
  req.w = 1;
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send coord = op.Start()[0];
  std::vector<Send> replicas = op.OnReply(coord.target, Ok(CoordReply("pears")));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok());
  ASSERT_EQ(replicas.size(), 2u);
  std::set<NodeId> nodes{op.target(coord.target).node};
  for (const Send& s : replicas) {
    EXPECT_EQ(std::get<proto::ReplicaPutRequest>(s.body).siblings, OneVersion("pears"));
    nodes.insert(op.target(s.target).node);
  }
  const std::vector<NodeId> pref = f.pref();
  EXPECT_EQ(nodes, std::set<NodeId>(pref.begin(), pref.end()));
  EXPECT_FALSE(op.settled());
  op.OnReply(replicas[0].target, Ok(proto::Ack{1, 1}));
  // A failing replica gets a hinted stand-in after W=1 too.
  std::vector<Send> stand_in = op.OnReply(replicas[1].target, Refused());
  ASSERT_EQ(stand_in.size(), 1u);
  EXPECT_EQ(std::get<proto::ReplicaPutRequest>(stand_in[0].body).hint,
            op.target(replicas[1].target).node);
  op.OnReply(stand_in[0].target, Ok(proto::Ack{1, 1}));
  EXPECT_TRUE(op.settled());
}

// A coordinator that answers after the deadline has applied the write: the
// op stays failed in doubt, and the other replicas get the write too. The
// runtime keeps waiting for that answer past the deadline (and counts the
// node as timed out at the deadline); for nothing else.
TEST(WriteOpTest, ACoordinatorAnsweringPastTheDeadlineStillHasItsWriteReplicated) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "late";
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send coord = op.Start()[0];
  EXPECT_TRUE(coord.answer_outlives_deadline);
  EXPECT_EQ(AnswerWaitMs(coord, 300, 1000), 300 + kLateAnswerWaitMs);
  EXPECT_EQ(AnswerWaitMs(coord, 0, 1000), 1000u);
  EXPECT_EQ(RemainingMs(5000, 5001), 0u);
  EXPECT_EQ(RemainingMs(5000, 4700), 300u);
  op.OnDeadline();
  ASSERT_TRUE(op.done());
  EXPECT_EQ(op.status().code(), StatusCode::kTimeout);
  EXPECT_EQ(op.awaited_past_deadline(), std::optional<size_t>(coord.target));
  std::vector<Send> replicas = op.OnReply(coord.target, Ok(CoordReply("late")));
  EXPECT_EQ(op.awaited_past_deadline(), std::nullopt);
  ASSERT_EQ(replicas.size(), 2u);
  for (const Send& s : replicas) {
    EXPECT_FALSE(s.answer_outlives_deadline);
    EXPECT_EQ(AnswerWaitMs(s, 0, 1000), 1000u);
    // Sent just before the deadline: still awaited long enough for a live
    // node, so its usual latency is not a timeout against its health.
    EXPECT_EQ(AnswerWaitMs(s, 2, 1000), kAnswerWaitMinMs);
    EXPECT_EQ(AnswerWaitMs(s, 2, 50), 50u);
    EXPECT_EQ(AnswerWaitMs(s, 300, 1000), 300u);
  }
  EXPECT_EQ(op.status().code(), StatusCode::kTimeout);
  EXPECT_TRUE(op.status().in_doubt());
  EXPECT_EQ(SignalOf(DeadlineReply()), NodeSignal::kFailed);
}

TEST(WriteOpTest, FailedReplicaIsReplacedByAHintedFallback) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "v";
  req.w = 3;
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send coord = op.Start()[0];
  std::vector<Send> replicas = op.OnReply(coord.target, Ok(CoordReply("v")));
  ASSERT_EQ(replicas.size(), 2u);
  const NodeId failed = op.target(replicas[0].target).node;
  std::vector<Send> stand_in = op.OnReply(replicas[0].target, Refused());
  ASSERT_EQ(stand_in.size(), 1u);
  const auto& rp = std::get<proto::ReplicaPutRequest>(stand_in[0].body);
  EXPECT_EQ(rp.hint, failed);
  EXPECT_EQ(op.target(stand_in[0].target).role, Role::kFallback);
  op.OnReply(replicas[1].target, Ok(proto::Ack{1, 1}));
  EXPECT_FALSE(op.done());
  op.OnReply(stand_in[0].target, Ok(proto::Ack{1, 1}));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok());
  EXPECT_EQ(op.receipt().hints, 1u);
  EXPECT_EQ(op.receipt().acks.back().hint, failed);
  // The fallback's copy is a hint: the next write is not sent to it first.
  EXPECT_EQ(op.reached(), (std::vector<std::string>{op.target(coord.target).node,
                                                    op.target(replicas[1].target).node}));
}

TEST(WriteOpTest, ReplicaFailingAfterWIsMetStillGetsAHintedStandIn) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "v";
  req.w = 2;
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send coord = op.Start()[0];
  std::vector<Send> replicas = op.OnReply(coord.target, Ok(CoordReply("v")));
  ASSERT_EQ(replicas.size(), 2u);
  op.OnReply(replicas[0].target, Ok(proto::Ack{1, 1}));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok());
  const NodeId failed = op.target(replicas[1].target).node;
  std::vector<Send> stand_in = op.OnReply(replicas[1].target, Refused());
  ASSERT_EQ(stand_in.size(), 1u);
  EXPECT_EQ(std::get<proto::ReplicaPutRequest>(stand_in[0].body).hint, failed);
  EXPECT_FALSE(op.settled());
  op.OnReply(stand_in[0].target, Ok(proto::Ack{1, 1}));
  EXPECT_TRUE(op.settled());
  EXPECT_TRUE(op.status().ok());
  EXPECT_EQ(op.receipt().hints, 1u);
}

TEST(WriteOpTest, CoordinatorFailureTriesAnother) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "v";
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send first = op.Start()[0];
  std::vector<Send> second = op.OnReply(first.target, Refused());
  ASSERT_EQ(second.size(), 1u);
  EXPECT_NE(second[0].target, first.target);
  ASSERT_TRUE(std::holds_alternative<proto::CoordPutRequest>(second[0].body));
  std::vector<Send> replicas = op.OnReply(second[0].target, Ok(CoordReply("v")));
  // The failed coordinator's place went to a spare, which gets the set with a hint.
  bool hinted = false;
  for (const Send& s : replicas) hinted |= !std::get<proto::ReplicaPutRequest>(s.body).hint.empty();
  EXPECT_TRUE(hinted);
  op.OnReply(replicas[0].target, Ok(proto::Ack{1, 1}));
  EXPECT_TRUE(op.done() && op.status().ok());
  EXPECT_EQ(op.receipt().coordinator_retries, 1u);
}

TEST(WriteOpTest, NotInDoubtWhenNothingWasDelivered) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send first = op.Start()[0];
  std::vector<Send> second = op.OnReply(first.target, Refused());
  ASSERT_EQ(second.size(), 1u);
  std::vector<Send> third = op.OnReply(second[0].target, Refused());
  ASSERT_EQ(third.size(), 1u);
  EXPECT_FALSE(op.done());
  // Every replica of the key is tried, and only those.
  EXPECT_EQ((std::set<size_t>{first.target, second[0].target, third[0].target}).size(), 3u);
  EXPECT_TRUE(op.OnReply(third[0].target, Refused()).empty());
  ASSERT_TRUE(op.done());
  EXPECT_EQ(op.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(op.status().in_doubt());
  EXPECT_EQ(op.receipt().coordinator_retries, 3u);
}

// Nodes that died a moment ago refuse at once, while the client's map still
// shows them up: a ranked client whose first two are gone writes through the
// third, as one that coordinates through the fastest replica would.
TEST(WriteOpTest, ACoordinatorThatRefusesGivesWayUntilOneAccepts) {
  ClusterMap three(*Ring::Create(Names(3), 64, 3));
  WriteRequest req;
  req.key = "k";
  req.value = "v";
  req.w = 1;
  req.coordinator_rank_salt = 5;
  WriteOp op(PlanRoute(three, "k", AllHealthyExcept({})), req);
  Send first = op.Start()[0];
  std::vector<Send> second = op.OnReply(first.target, Refused());
  ASSERT_EQ(second.size(), 1u);
  std::vector<Send> third = op.OnReply(second[0].target, Refused());
  ASSERT_EQ(third.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<proto::CoordPutRequest>(third[0].body));
  op.OnReply(third[0].target, Ok(CoordReply("v")));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok()) << op.status().ToString();
  EXPECT_EQ(op.receipt().coordinator_retries, 2u);
}

TEST(WriteOpTest, CoordinatorTimeoutIsInDoubtAndNotRetried) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.op_id = 77;
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send first = op.Start()[0];
  EXPECT_EQ(std::get<proto::CoordPutRequest>(first.body).op_id, 77u);
  // The request may have landed: a second coordinator would write it twice.
  EXPECT_TRUE(op.OnReply(first.target, TimedOut()).empty());
  ASSERT_TRUE(op.done());
  EXPECT_EQ(op.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(op.status().in_doubt());
  // And at the deadline with the coordinator silent.
  WriteOp silent(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  silent.Start();
  silent.OnDeadline();
  EXPECT_EQ(silent.status().code(), StatusCode::kTimeout);
  EXPECT_TRUE(silent.status().in_doubt());
}

// A CoordPut answer the client could not read (a value past its own
// limits), or an error the node sent instead of an answer too large for a
// frame, may follow an applied write: in doubt, and no second coordinator.
TEST(WriteOpTest, AnAnswerThatCouldNotBeReadOrSentIsInDoubtAndNotRetried) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  const Reply unreadable{Status::InvalidArgument("value of 2097152 bytes exceeds value_bytes_max"),
                         true};
  const Reply too_large = Ok(proto::MakeError(
      Status::InvalidArgument("reply of 70000000 bytes exceeds frame_bytes_max").WithInDoubt(true),
      3));
  for (const Reply& reply : {unreadable, too_large}) {
    WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
    Send first = op.Start()[0];
    EXPECT_TRUE(op.OnReply(first.target, reply).empty());
    ASSERT_TRUE(op.done());
    EXPECT_TRUE(op.status().in_doubt()) << op.status().ToString();
  }
}

TEST(WriteOpTest, RefusedWriteIsNotRetried) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send first = op.Start()[0];
  std::vector<Send> more =
      op.OnReply(first.target, Ok(proto::MakeError(Status::Busy("too many siblings"), 3)));
  EXPECT_TRUE(more.empty());
  ASSERT_TRUE(op.done());
  EXPECT_EQ(op.status().code(), StatusCode::kBusy);
  EXPECT_FALSE(op.status().in_doubt());
}

TEST(WriteOpTest, TooFewNodesFailsWithAcksAndDoubt) {
  ClusterMap map(*Ring::Create(Names(3), 64, 3));  // no spares at all
  WriteRequest req;
  req.key = "k";
  req.w = 2;
  WriteOp op(PlanRoute(map, "k", AllHealthyExcept({})), req);
  Send coord = op.Start()[0];
  std::vector<Send> replicas = op.OnReply(coord.target, Ok(CoordReply("v")));
  op.OnReply(replicas[0].target, Refused());
  EXPECT_FALSE(op.done());
  op.OnReply(replicas[1].target, TimedOut());
  ASSERT_TRUE(op.done());
  EXPECT_EQ(op.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(op.status().in_doubt());
  EXPECT_NE(op.status().message().find("acknowledged by 1 of W=2"), std::string_view::npos)
      << op.status().ToString();
  EXPECT_EQ(op.receipt().acks.size(), 1u);
}

TEST(WriteOpTest, LwwWritesEveryReplicaInOneRound) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "last";
  req.lww = true;
  req.lww_dot = Dot{0xc11e, 1700000000000123};
  req.w = 2;
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  std::vector<Send> all = op.Start();
  ASSERT_EQ(all.size(), 3u);
  for (const Send& s : all) {
    const auto& rp = std::get<proto::ReplicaPutRequest>(s.body);
    ASSERT_EQ(rp.siblings.size(), 1u);
    EXPECT_TRUE(rp.siblings[0].lww);
    EXPECT_EQ(rp.siblings[0].dot, req.lww_dot);
    EXPECT_TRUE(rp.sync);  // no coordinator's synced write backs an LWW write
  }
  op.OnReply(all[0].target, Ok(proto::Ack{1, 1}));
  op.OnReply(all[1].target, Ok(proto::Ack{1, 1}));
  EXPECT_TRUE(op.done() && op.status().ok());
}

// An LWW write goes to every replica at once, so one replica's refusal of
// the request itself (here a node with a smaller value limit) ends the
// write in doubt while another may have applied it, and not in doubt once
// none can have.
TEST(WriteOpTest, AnLwwRefusalIsInDoubtWhileAnotherReplicaMayHaveTheWrite) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "v";
  req.lww = true;
  req.lww_dot = Dot{0xc11e, 1};
  const Reply invalid = Ok(proto::MakeError(Status::InvalidArgument("value too large"), 3));
  WriteOp pending(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  std::vector<Send> all = pending.Start();
  ASSERT_EQ(all.size(), 3u);
  pending.OnReply(all[0].target, invalid);
  ASSERT_TRUE(pending.done());
  EXPECT_EQ(pending.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(pending.status().in_doubt());

  // Three nodes (no spares), W=1: two replicas refuse the connection, so
  // neither got the write, and the third refuses the request.
  ClusterMap three(*Ring::Create(Names(3), 64, 3));
  req.w = 1;
  WriteOp none(PlanRoute(three, f.key, AllHealthyExcept({})), req);
  all = none.Start();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_TRUE(none.OnReply(all[0].target, Refused()).empty());
  EXPECT_TRUE(none.OnReply(all[1].target, Refused()).empty());
  ASSERT_FALSE(none.done());
  none.OnReply(all[2].target, invalid);
  ASSERT_TRUE(none.done());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(none.status().in_doubt());
}

// An LWW write at W=2, and a causal one at W=3, whose first replica (after
// the coordinator) fails with `refusal`: a hinted stand-in takes that
// replica's copy, and the write succeeds with it.
void ExpectAStandInReplaces(const Fixture& f, const Reply& refusal) {
  WriteRequest req;
  req.key = f.key;
  req.value = "v";
  req.lww = true;
  req.lww_dot = Dot{0xc11e, 1};
  WriteOp lww(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  std::vector<Send> all = lww.Start();
  ASSERT_EQ(all.size(), 3u);
  std::vector<Send> stand_in = lww.OnReply(all[0].target, refusal);
  ASSERT_EQ(stand_in.size(), 1u);
  EXPECT_EQ(std::get<proto::ReplicaPutRequest>(stand_in[0].body).hint,
            lww.target(all[0].target).node);
  EXPECT_FALSE(lww.done());
  lww.OnReply(all[1].target, Ok(proto::Ack{1, 1}));
  lww.OnReply(stand_in[0].target, Ok(proto::Ack{1, 1}));
  ASSERT_TRUE(lww.done());
  EXPECT_TRUE(lww.status().ok()) << lww.status().ToString();

  req.lww = false;
  req.w = 3;
  WriteOp causal(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send coord = causal.Start()[0];
  std::vector<Send> replicas = causal.OnReply(coord.target, Ok(CoordReply("v")));
  ASSERT_EQ(replicas.size(), 2u);
  stand_in = causal.OnReply(replicas[0].target, refusal);
  ASSERT_EQ(stand_in.size(), 1u);
  EXPECT_EQ(std::get<proto::ReplicaPutRequest>(stand_in[0].body).hint,
            causal.target(replicas[0].target).node);
  causal.OnReply(replicas[1].target, Ok(proto::Ack{1, 1}));
  causal.OnReply(stand_in[0].target, Ok(proto::Ack{1, 1}));
  ASSERT_TRUE(causal.done());
  EXPECT_TRUE(causal.status().ok()) << causal.status().ToString();
  EXPECT_EQ(causal.receipt().hints, 1u);
}

// A replica shedding load (Busy) has not taken the write: a hinted stand-in
// keeps its copy and W counts the others, for LWW and causal writes alike.
// With no spare left W=3 cannot be met: the write fails at once, in doubt
// while requests to other replicas are still out.
TEST(WriteOpTest, AReplicaSheddingLoadIsReplacedByAHintedStandIn) {
  Fixture f;
  const Reply busy = Ok(proto::MakeError(Status::Busy("node is overloaded"), 3));
  ExpectAStandInReplaces(f, busy);

  // Three nodes, no spare: LWW at W=3 with one replica shedding load
  // cannot succeed, and fails at once, in doubt, since the other two
  // replicas may yet apply the write; not in doubt when they could not.
  WriteRequest req;
  req.key = f.key;
  req.value = "v";
  req.lww = true;
  req.lww_dot = Dot{0xc11e, 1};
  req.w = 3;
  ClusterMap three(*Ring::Create(Names(3), 64, 3));
  WriteOp short_of_w(PlanRoute(three, f.key, AllHealthyExcept({})), req);
  std::vector<Send> all = short_of_w.Start();
  EXPECT_TRUE(short_of_w.OnReply(all[0].target, busy).empty());
  ASSERT_TRUE(short_of_w.done());
  EXPECT_EQ(short_of_w.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(short_of_w.status().in_doubt());

  req.w = 1;
  WriteOp none(PlanRoute(three, f.key, AllHealthyExcept({})), req);
  all = none.Start();
  none.OnReply(all[0].target, Refused());
  none.OnReply(all[1].target, Refused());
  EXPECT_FALSE(none.done());
  none.OnReply(all[2].target, busy);
  ASSERT_TRUE(none.done());
  EXPECT_FALSE(none.status().in_doubt()) << none.status().ToString();
}

// A coordinator that answers that it failed before applying the write (here
// a node shutting down) certainly did not apply it: the next replica
// coordinates. One that flags its error in doubt (its storage write failed)
// may have: the write fails in doubt.
TEST(WriteOpTest, ACoordinatorThatFailedBeforeApplyingIsReplaced) {
  Fixture f;
  WriteRequest req;
  req.key = f.key;
  req.value = "v";
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send first = op.Start()[0];
  std::vector<Send> next = op.OnReply(
      first.target, Ok(proto::MakeError(Status::Unavailable("node n1 is shutting down"), 3)));
  ASSERT_EQ(next.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<proto::CoordPutRequest>(next[0].body));
  EXPECT_NE(op.target(next[0].target).node, op.target(first.target).node);
  std::vector<Send> replicas = op.OnReply(next[0].target, Ok(CoordReply("v")));
  ASSERT_EQ(replicas.size(), 2u);
  op.OnReply(replicas[0].target, Ok(proto::Ack{1, 1}));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok()) << op.status().ToString();
  EXPECT_EQ(op.receipt().coordinator_retries, 1u);

  WriteOp failed_sync(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  first = failed_sync.Start()[0];
  EXPECT_TRUE(failed_sync
                  .OnReply(first.target, Ok(proto::MakeError(
                                             Status::IOError("sync failed").WithInDoubt(true), 3)))
                  .empty());
  ASSERT_TRUE(failed_sync.done());
  EXPECT_EQ(failed_sync.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(failed_sync.status().in_doubt());
}

// Busy from the client's own full write queue to a node means the request
// never left: the write goes on without that node as if it were down. A
// coordinator is replaced by the next replica, a replica by a hinted
// stand-in, and the node's health is not judged by it.
TEST(WriteOpTest, ARequestTheClientsOwnQueueRefusedGoesElsewhere) {
  Fixture f;
  const Reply queue_full{Status::Busy("write queue to n1 holds 1 bytes"), false};
  WriteRequest req;
  req.key = f.key;
  req.value = "v";
  req.w = 3;
  WriteOp causal(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  Send first = causal.Start()[0];
  const NodeId refused = causal.target(first.target).node;
  std::vector<Send> next = causal.OnReply(first.target, queue_full);
  ASSERT_EQ(next.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<proto::CoordPutRequest>(next[0].body));
  EXPECT_NE(causal.target(next[0].target).node, refused);
  EXPECT_FALSE(causal.done());
  std::vector<Send> replicas = causal.OnReply(next[0].target, Ok(CoordReply("v")));
  // The other primary, and a stand-in holding the refused node's hint.
  ASSERT_EQ(replicas.size(), 2u);
  if (std::get<proto::ReplicaPutRequest>(replicas[0].body).hint.empty()) {
    std::swap(replicas[0], replicas[1]);
  }
  EXPECT_EQ(std::get<proto::ReplicaPutRequest>(replicas[0].body).hint, refused);
  EXPECT_EQ(std::get<proto::ReplicaPutRequest>(replicas[1].body).hint, "");
  causal.OnReply(replicas[0].target, Ok(proto::Ack{1, 1}));
  causal.OnReply(replicas[1].target, Ok(proto::Ack{1, 1}));
  ASSERT_TRUE(causal.done());
  EXPECT_TRUE(causal.status().ok()) << causal.status().ToString();
  EXPECT_EQ(causal.receipt().coordinator_retries, 1u);

  // A replica refused so, of an LWW or a causal write, gets a stand-in.
  ExpectAStandInReplaces(f, queue_full);

  // Every coordinator refused so (three nodes, no spares): Busy, and not in
  // doubt, since no request left the client.
  ClusterMap three(*Ring::Create(Names(3), 64, 3));
  WriteOp none(PlanRoute(three, f.key, AllHealthyExcept({})), req);
  std::vector<Send> sent = none.Start();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(sent.size(), 1u) << i;
    sent = none.OnReply(sent[0].target, queue_full);
  }
  EXPECT_TRUE(sent.empty());
  ASSERT_TRUE(none.done());
  EXPECT_EQ(none.status().code(), StatusCode::kBusy);
  EXPECT_FALSE(none.status().in_doubt());
  EXPECT_NE(none.status().message().find("no coordinator accepted the write"),
            std::string_view::npos)
      << none.status().ToString();
}

// A read whose replica the client's own queue refused asks a stand-in.
TEST(ReadOpTest, AReplicaTheClientsOwnQueueRefusedIsReplacedByASpare) {
  Fixture f;
  ReadRequest req;
  req.key = f.key;
  req.r = 3;
  ReadOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
  std::vector<Send> all = op.Start();
  ASSERT_EQ(all.size(), 3u);
  std::vector<Send> spare = op.OnReply(all[0].target, Reply{Status::Busy("queue full"), false});
  ASSERT_EQ(spare.size(), 1u);
  EXPECT_EQ(std::get<proto::GetRequest>(spare[0].body).hint, op.target(all[0].target).node);
  // A node's own Busy is its answer: no spare, and R=3 can no longer be
  // met. The read fails with Busy (retry after a back-off), not Unavailable.
  EXPECT_TRUE(
      op.OnReply(all[1].target, Ok(proto::MakeError(Status::Busy("overloaded"), 3))).empty());
  ASSERT_TRUE(op.answered());
  EXPECT_EQ(op.status().code(), StatusCode::kBusy) << op.status().ToString();
}

TEST(WriteOpTest, AWriteThatNeedNotBeDurableAsksNoNodeToSync) {
  Fixture f;
  for (bool lww : {false, true}) {
    SCOPED_TRACE(lww ? "lww" : "causal");
    WriteRequest req;
    req.key = f.key;
    req.value = "v";
    req.lww = lww;
    req.lww_dot = Dot{0xc11e, 1};
    req.durable = false;
    WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
    std::vector<Send> sends = op.Start();
    if (!lww) {
      ASSERT_EQ(sends.size(), 1u);
      EXPECT_TRUE(std::get<proto::CoordPutRequest>(sends[0].body).no_sync);
      sends = op.OnReply(sends[0].target, Ok(CoordReply("v")));
    }
    ASSERT_EQ(sends.size(), lww ? 3u : 2u);
    for (const Send& s : sends) EXPECT_FALSE(std::get<proto::ReplicaPutRequest>(s.body).sync);
    // The default asks the coordinator for its sync.
    req.durable = true;
    WriteOp durable(PlanRoute(f.map, f.key, AllHealthyExcept({})), req);
    std::vector<Send> first = durable.Start();
    if (!lww) EXPECT_FALSE(std::get<proto::CoordPutRequest>(first[0].body).no_sync);
  }
}

void ExpectAck(const Receipt::Ack& ack, const std::string& node, const std::string& role,
               const std::string& hint) {
  EXPECT_EQ(ack.node, node);
  EXPECT_EQ(ack.role, role);
  EXPECT_EQ(ack.hint, hint);
}

TEST(ReadOpTest, AnswersAtRThenRepairsStaleReplicas) {
  Fixture f;
  ReadOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), ReadRequest{f.key, 2});
  std::vector<Send> gets = op.Start();
  ASSERT_EQ(gets.size(), 3u);
  SiblingSet newer = OneVersion("new");
  op.OnReply(gets[1].target, Ok(proto::GetReply{4, newer}));
  EXPECT_FALSE(op.answered());
  op.OnReply(gets[0].target, Ok(proto::GetReply{4, {}}));  // missing the key
  ASSERT_TRUE(op.answered());
  EXPECT_TRUE(op.status().ok());
  EXPECT_EQ(op.siblings(), newer);
  EXPECT_EQ(op.fastest(), op.target(gets[1].target).node);
  EXPECT_EQ(op.reached(), (std::vector<std::string>{op.target(gets[1].target).node,
                                                    op.target(gets[0].target).node}));
  EXPECT_EQ(op.receipt().read_repairs, 1u);
  op.OnReply(gets[2].target, Ok(proto::GetReply{4, newer}));
  EXPECT_TRUE(op.all_in());
  std::vector<Send> repairs = op.Repair();
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0].target, gets[0].target);
  EXPECT_EQ(std::get<proto::ReplicaPutRequest>(repairs[0].body).siblings, newer);
  EXPECT_TRUE(op.Repair().empty());  // once
}

TEST(ReadOpTest, MergesConcurrentSiblingsAndHintedFallbackReads) {
  Fixture f;
  std::vector<NodeId> pref = f.pref();
  ReadOp op(PlanRoute(f.map, f.key, AllHealthyExcept({pref[0]})), ReadRequest{f.key, 2});
  std::vector<Send> gets = op.Start();
  ASSERT_EQ(std::get<proto::GetRequest>(gets[0].body).hint, pref[0]);
  SiblingSet a = CoordinatorUpdate({}, 1, 1, WriteIntent{{}, "a", false, 1})->siblings;
  SiblingSet b = CoordinatorUpdate({}, 2, 1, WriteIntent{{}, "b", false, 1})->siblings;
  op.OnReply(gets[0].target, Ok(proto::GetReply{1, a}));
  op.OnReply(gets[1].target, Ok(proto::GetReply{1, b}));
  ASSERT_TRUE(op.answered());
  EXPECT_EQ(op.siblings().size(), 2u);
  EXPECT_EQ(op.fastest(), op.target(gets[1].target).node);  // the fallback is never the hint
  EXPECT_EQ(op.reached(), std::vector<std::string>{op.target(gets[1].target).node});
  Receipt r = op.receipt();
  ASSERT_EQ(r.acks.size(), 2u);
  ExpectAck(r.acks[0], op.target(gets[0].target).node, "fallback", pref[0]);
  ExpectAck(r.acks[1], op.target(gets[1].target).node, "primary", "");
}

TEST(ReadOpTest, ASpareThatAnswersIsReportedWithTheHintItCarried) {
  Fixture f;
  ReadOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), ReadRequest{f.key, 2});
  std::vector<Send> gets = op.Start();
  std::vector<Send> spare = op.OnReply(gets[0].target, Refused());
  ASSERT_EQ(spare.size(), 1u);
  op.OnReply(gets[1].target, Ok(proto::GetReply{1, {}}));
  op.OnReply(spare[0].target, Ok(proto::GetReply{1, {}}));
  EXPECT_TRUE(op.OnReply(gets[2].target, Refused()).empty());
  ASSERT_TRUE(op.answered());
  EXPECT_TRUE(op.status().ok());
  Receipt r = op.receipt();
  ASSERT_EQ(r.acks.size(), 2u);
  ExpectAck(r.acks[1], op.target(spare[0].target).node, "fallback", op.target(gets[0].target).node);
}

// A replica that refuses reads while it syncs still takes writes: a spare's
// answer in its place (empty: it holds no hint of the write) waits for the
// route's other replicas, which hold every write acknowledged by two of
// three; it counts only when one of them fails or stays silent.
TEST(ReadOpTest, ASparesAnswerCountsOnlyWhenTheOtherReplicasCannotAnswer) {
  Fixture f;
  const Reply syncing =
      Ok(proto::MakeError(Status::Unavailable("catching up; ask another replica"), 1));
  for (int last : {0, 1, 2}) {
    SCOPED_TRACE(last == 0 ? "answers" : last == 1 ? "fails" : "silent");
    ReadOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), ReadRequest{f.key, 2});
    std::vector<Send> gets = op.Start();
    ASSERT_EQ(gets.size(), 3u);
    std::vector<Send> spare = op.OnReply(gets[0].target, syncing);
    ASSERT_EQ(spare.size(), 1u);
    op.OnReply(spare[0].target, Ok(proto::GetReply{1, {}}));
    op.OnReply(gets[1].target, Ok(proto::GetReply{1, {}}));
    EXPECT_FALSE(op.answered());
    if (last == 0) op.OnReply(gets[2].target, Ok(proto::GetReply{1, OneVersion("written")}));
    if (last == 1) op.OnReply(gets[2].target, Refused());
    if (last == 2) op.OnDeadline();
    ASSERT_TRUE(op.answered());
    ASSERT_TRUE(op.status().ok()) << op.status().ToString();
    EXPECT_EQ(op.siblings().size(), last == 0 ? 1u : 0u);
  }
  // At R=1 a replica's answer is enough; the spare's alone is not.
  ReadOp one(PlanRoute(f.map, f.key, AllHealthyExcept({})), ReadRequest{f.key, 1});
  std::vector<Send> gets = one.Start();
  std::vector<Send> spare = one.OnReply(gets[0].target, syncing);
  ASSERT_EQ(spare.size(), 1u);
  one.OnReply(spare[0].target, Ok(proto::GetReply{1, {}}));
  EXPECT_FALSE(one.answered());
  one.OnReply(gets[2].target, Ok(proto::GetReply{1, OneVersion("written")}));
  ASSERT_TRUE(one.answered());
  EXPECT_EQ(one.siblings().size(), 1u);
}

// A node's refusal of a request for a partition it no longer replicates,
// naming the partition's replicas in its map, at `epoch`.
Reply NoReplica(std::vector<NodeId> replicas, uint64_t epoch) {
  proto::ErrorReply e =
      proto::MakeError(Status::Unavailable("does not replicate the partition"), epoch);
  for (const NodeId& n : replicas) e.replicas.push_back(proto::NodeAddress{n, n + ":7100"});
  return Ok(e);
}

// A causal write of "v" to `key` at W=3, coordinated by `coordinator` first.
WriteRequest WriteAtW3(const std::string& key, const NodeId& coordinator) {
  WriteRequest req;
  req.key = key;
  req.value = "v";
  req.w = 3;
  req.preferred_coordinator = coordinator;
  return req;
}

// A write of "v" at W=3 planned with every node up, coordinated by the
// key's first primary.
struct AllUpWrite {
  Fixture f;
  Route route = PlanRoute(f.map, f.key, AllHealthyExcept({}));
  std::vector<NodeId> pref = f.pref();
  WriteRequest req = WriteAtW3(f.key, pref[0]);
};

// A client on a map from before a ring switch: the replica a new node
// replaced refuses, and the new node takes its copy, counted and unhinted
// (a stand-in's hint for the refuser would miss the new replica's reads).
// A refusal from an older map than the route's names nothing better: a
// hinted stand-in as for any failure.
TEST(WriteOpTest, AReplicaThatNoLongerReplicatesThePartitionGivesWayToTheOneItNames) {
  AllUpWrite w;
  const auto& [f, route, pref, req] = w;
  WriteOp op(route, req);
  Send coord = op.Start()[0];
  std::vector<Send> replicas = op.OnReply(coord.target, Ok(CoordReply("v")));
  ASSERT_EQ(replicas.size(), 2u);
  const NodeId refuser = op.target(replicas[1].target).node;
  std::vector<Send> moved =
      op.OnReply(replicas[1].target,
                 NoReplica({pref[0], op.target(replicas[0].target).node, "n9"}, route.epoch + 1));
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(op.target(moved[0].target).node, "n9");
  EXPECT_EQ(op.target(moved[0].target).address, "n9:7100");
  EXPECT_EQ(op.target(moved[0].target).role, Role::kPrimary);
  EXPECT_TRUE(std::get<proto::ReplicaPutRequest>(moved[0].body).hint.empty());
  op.OnReply(replicas[0].target, Ok(proto::Ack{1, 1}));
  EXPECT_FALSE(op.done());
  op.OnReply(moved[0].target, Ok(proto::Ack{1, 1}));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok()) << op.status().ToString();
  EXPECT_EQ(op.receipt().hints, 0u);
  EXPECT_EQ(op.receipt().redirects, 1u);
  EXPECT_EQ(op.reached().back(), "n9");

  WriteOp stale(route, req);
  coord = stale.Start()[0];
  replicas = stale.OnReply(coord.target, Ok(CoordReply("v")));
  std::vector<Send> stand_in =
      stale.OnReply(replicas[1].target, NoReplica({pref[0], "n9"}, route.epoch));
  ASSERT_EQ(stand_in.size(), 1u);
  EXPECT_EQ(std::get<proto::ReplicaPutRequest>(stand_in[0].body).hint, refuser);
  EXPECT_EQ(stale.receipt().redirects, 0u);
}

// The replica a refusal names is often the stale route's first spare (the
// next node along the ring takes a leaver's place): it is then no stand-in
// for another replica that fails, or one node would count twice toward W,
// or R.
TEST(WriteOpTest, AReplicaARefusalNamedIsNoStandInForAnother) {
  AllUpWrite w;
  const auto& [f, route, pref, req] = w;
  ASSERT_EQ(route.spares.size(), 2u);
  WriteOp op(route, req);
  Send coord = op.Start()[0];
  std::vector<Send> replicas = op.OnReply(coord.target, Ok(CoordReply("v")));
  ASSERT_EQ(replicas.size(), 2u);
  const NodeId named = route.spares[0].node;
  std::vector<Send> moved =
      op.OnReply(replicas[1].target,
                 NoReplica({pref[0], op.target(replicas[0].target).node, named}, route.epoch + 1));
  ASSERT_EQ(moved.size(), 1u);
  ASSERT_EQ(op.target(moved[0].target).node, named);
  std::vector<Send> stand_in = op.OnReply(replicas[0].target, Refused());
  ASSERT_EQ(stand_in.size(), 1u);
  EXPECT_EQ(op.target(stand_in[0].target).node, route.spares[1].node);

  ReadOp read(route, ReadRequest{f.key, 2});
  std::vector<Send> gets = read.Start();
  ASSERT_EQ(gets.size(), 3u);
  moved = read.OnReply(gets[2].target, NoReplica({pref[0], pref[1], named}, route.epoch + 1));
  ASSERT_EQ(moved.size(), 1u);
  std::vector<Send> spare = read.OnReply(gets[1].target, Refused());
  ASSERT_EQ(spare.size(), 1u);
  EXPECT_EQ(read.target(spare[0].target).node, route.spares[1].node);
}

// A stand-in keeps the copy meant for the replica it replaces: a refusal
// naming that replica adds no second copy for its place.
TEST(WriteOpTest, AReplicaAStandInKeepsAHintForIsNotAddedAgain) {
  Fixture f;
  const std::vector<NodeId> pref = f.pref();
  const Route route = PlanRoute(f.map, f.key, AllHealthyExcept({pref[1]}));
  ASSERT_EQ(route.replicas[1].role, Role::kFallback);
  const NodeId stand_in = route.replicas[1].node;
  WriteRequest req = WriteAtW3(f.key, pref[0]);
  req.w = 2;
  WriteOp op(route, req);
  Send coord = op.Start()[0];
  ASSERT_EQ(op.target(coord.target).node, pref[0]);
  std::vector<Send> replicas = op.OnReply(coord.target, Ok(CoordReply("v")));
  ASSERT_EQ(replicas.size(), 2u);
  size_t refuser = replicas[0].target, fallback = replicas[1].target;
  if (op.target(refuser).node == stand_in) std::swap(refuser, fallback);
  EXPECT_TRUE(
      op.OnReply(refuser, NoReplica({pref[0], pref[1], stand_in}, route.epoch + 1)).empty());
  op.OnReply(fallback, Ok(proto::Ack{1, 1}));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok()) << op.status().ToString();
}

// A fallback the route put in a primary's place coordinates as one: its
// CoordPut names the primary, so that the node, which does not replicate
// the key's partition, takes it.
TEST(WriteOpTest, AFallbackCoordinatorsCoordPutNamesThePrimaryItStandsInFor) {
  Fixture f;
  const std::vector<NodeId> pref = f.pref();
  WriteRequest req = WriteAtW3(f.key, pref[1]);
  WriteOp op(PlanRoute(f.map, f.key, AllHealthyExcept({pref[0]})), req);
  std::vector<Send> next = op.Start();
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(next.size(), 1u);
    EXPECT_TRUE(std::get<proto::CoordPutRequest>(next[0].body).hint.empty());
    next = op.OnReply(next[0].target, Refused());
  }
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(op.target(next[0].target).role, Role::kFallback);
  EXPECT_EQ(std::get<proto::CoordPutRequest>(next[0].body).hint, pref[0]);
}

// The coordinator the stale route picked refuses (nothing applied): the
// next one coordinates, and the named replica gets the copy.
TEST(WriteOpTest, ACoordinatorThatNoLongerReplicatesThePartitionGivesWayToTheOthers) {
  AllUpWrite w;
  const auto& [f, route, pref, req] = w;
  WriteOp op(route, req);
  Send first = op.Start()[0];
  ASSERT_EQ(op.target(first.target).node, pref[0]);
  std::vector<Send> next =
      op.OnReply(first.target, NoReplica({"n9", pref[1], pref[2]}, route.epoch + 1));
  ASSERT_EQ(next.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<proto::CoordPutRequest>(next[0].body));
  EXPECT_NE(op.target(next[0].target).node, pref[0]);
  std::vector<Send> replicas = op.OnReply(next[0].target, Ok(CoordReply("v")));
  ASSERT_EQ(replicas.size(), 2u);
  std::set<NodeId> to;
  for (const Send& s : replicas) {
    to.insert(op.target(s.target).node);
    EXPECT_TRUE(std::get<proto::ReplicaPutRequest>(s.body).hint.empty());
    op.OnReply(s.target, Ok(proto::Ack{1, 1}));
  }
  EXPECT_TRUE(to.count("n9"));
  EXPECT_FALSE(to.count(pref[0]));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok()) << op.status().ToString();
  EXPECT_EQ(op.receipt().coordinator_retries, 1u);
}

// A route planned during a change sends the joiner its copy uncounted; once
// the replica it replaces refuses, the joiner's acknowledgement counts.
// A write of "v" at `w`, planned with every node up while n4 joins a
// 3-node ring, of a key n4 is to replicate.
struct JoinerWrite {
  explicit JoinerWrite(int w) {
    map.Reconcile(Names(4));
    req.key = KeyWithAPendingReplica(map);
    req.value = "v";
    req.w = w;
    route = PlanRoute(map, req.key, AllHealthyExcept({}));
  }
  ClusterMap map{*Ring::Create(Names(3), 64, 3)};
  WriteRequest req;
  Route route;
};

TEST(WriteOpTest, APendingReplicaNamedByARefusalCounts) {
  const JoinerWrite joiner(3);
  const Route& route = joiner.route;
  WriteOp op(route, joiner.req);
  Send coord = op.Start()[0];
  std::vector<Send> rest = op.OnReply(coord.target, Ok(CoordReply("v")));
  ASSERT_EQ(rest.size(), 3u);
  std::vector<NodeId> after;  // the coordinator, a kept replica and n4
  std::optional<Send> replaced, kept;
  for (const Send& s : rest) {
    const NodeId& node = op.target(s.target).node;
    if (node == "n4") {
      op.OnReply(s.target, Ok(proto::Ack{5, 1}));
    } else if (!replaced) {
      replaced = s;
    } else {
      kept = s;
    }
  }
  ASSERT_TRUE(replaced && kept);
  EXPECT_FALSE(op.done());
  std::vector<Send> more =
      op.OnReply(replaced->target,
                 NoReplica({op.target(coord.target).node, op.target(kept->target).node, "n4"},
                           route.epoch + 1));
  EXPECT_TRUE(more.empty());
  EXPECT_FALSE(op.done());
  op.OnReply(kept->target, Ok(proto::Ack{5, 1}));
  ASSERT_TRUE(op.done());
  EXPECT_TRUE(op.status().ok()) << op.status().ToString();
  EXPECT_EQ(op.receipt().redirects, 1u);
}

// A pending replica a refusal promoted is a coordinator candidate like a
// replica the refusal newly named: with the kept replicas failing, it
// coordinates.
TEST(WriteOpTest, APendingReplicaNamedByARefusalMayCoordinate) {
  const JoinerWrite joiner(2);
  const Route& route = joiner.route;
  WriteOp op(route, joiner.req);
  Send coord = op.Start()[0];
  std::vector<NodeId> kept;
  for (const Target& t : route.replicas) {
    if (t.node != op.target(coord.target).node) kept.push_back(t.node);
  }
  ASSERT_EQ(kept.size(), 2u);
  std::vector<Send> next =
      op.OnReply(coord.target, NoReplica({kept[0], kept[1], "n4"}, route.epoch + 1));
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(next.size(), 1u) << i;
    ASSERT_NE(op.target(next[0].target).node, "n4") << i;
    next = op.OnReply(next[0].target, Refused());
  }
  ASSERT_EQ(next.size(), 1u) << op.status().ToString();
  EXPECT_EQ(op.target(next[0].target).node, "n4");
  EXPECT_TRUE(std::holds_alternative<proto::CoordPutRequest>(next[0].body));
}

// A read on a stale route asks the replica a refusal names before it
// decides: a spare's answer in the refuser's place would not count yet, and
// the new replica may hold a write the others lack.
TEST(ReadOpTest, AReplicaThatNoLongerReplicatesThePartitionGivesWayToTheOneItNames) {
  Fixture f;
  const Route route = PlanRoute(f.map, f.key, AllHealthyExcept({}));
  ReadOp op(route, ReadRequest{f.key, 2});
  std::vector<Send> gets = op.Start();
  ASSERT_EQ(gets.size(), 3u);
  op.OnReply(gets[0].target, Ok(proto::GetReply{1, {}}));
  std::vector<Send> moved =
      op.OnReply(gets[2].target,
                 NoReplica({op.target(gets[0].target).node, op.target(gets[1].target).node, "n9"},
                           route.epoch + 1));
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(op.target(moved[0].target).node, "n9");
  EXPECT_TRUE(std::get<proto::GetRequest>(moved[0].body).hint.empty());
  std::vector<Send> spare = op.OnReply(gets[1].target, Refused());
  ASSERT_EQ(spare.size(), 1u);
  op.OnReply(spare[0].target, Ok(proto::GetReply{1, {}}));
  EXPECT_FALSE(op.answered()) << "answered without the replica that took the refuser's place";
  op.OnReply(moved[0].target, Ok(proto::GetReply{1, OneVersion("written")}));
  ASSERT_TRUE(op.answered());
  ASSERT_TRUE(op.status().ok()) << op.status().ToString();
  EXPECT_EQ(op.siblings().size(), 1u);
  EXPECT_EQ(op.reached().back(), "n9");
  EXPECT_EQ(op.receipt().redirects, 1u);
}

// A refusal that names a replica whose place a stand-in already holds (it
// is back, or no longer failing) adds the node that took the refuser's
// place: two answers for one place would meet R without the new replica.
TEST(ReadOpTest, AReplicaAStandInHoldsThePlaceOfIsNotAskedInTheRefusersPlace) {
  Fixture f;
  const std::vector<NodeId> pref = f.pref();
  const Route route = PlanRoute(f.map, f.key, AllHealthyExcept({pref[1]}));
  ASSERT_EQ(route.replicas[1].role, Role::kFallback);
  ASSERT_EQ(route.replicas[1].hint, pref[1]);
  ReadOp op(route, ReadRequest{f.key, 2});
  std::vector<Send> gets = op.Start();
  ASSERT_EQ(gets.size(), 3u);
  std::vector<Send> moved =
      op.OnReply(gets[0].target, NoReplica({pref[1], pref[2], "n9"}, route.epoch + 1));
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(op.target(moved[0].target).node, "n9");
  op.OnReply(gets[2].target, Refused());
  op.OnReply(gets[1].target, Ok(proto::GetReply{1, {}}));
  EXPECT_FALSE(op.answered());
  op.OnReply(moved[0].target, Ok(proto::GetReply{1, OneVersion("written")}));
  ASSERT_TRUE(op.answered());
  EXPECT_EQ(op.siblings().size(), 1u);
}

// A read that replicas shed and that then runs out of time fails with Busy,
// which says to retry after a back-off, as when the shedding alone decides.
TEST(ReadOpTest, AReadShedByAReplicaThatRunsOutOfTimeFailsWithBusy) {
  Fixture f;
  ClusterMap three(*Ring::Create(Names(3), 64, 3));
  ReadOp op(PlanRoute(three, f.key, AllHealthyExcept({})), ReadRequest{f.key, 2});
  std::vector<Send> gets = op.Start();
  ASSERT_EQ(gets.size(), 3u);
  EXPECT_TRUE(
      op.OnReply(gets[0].target, Ok(proto::MakeError(Status::Busy("overloaded"), 3))).empty());
  EXPECT_FALSE(op.answered());
  op.OnDeadline();
  ASSERT_TRUE(op.answered());
  EXPECT_EQ(op.status().code(), StatusCode::kBusy) << op.status().ToString();
}

// A replica's answer the client could not decode may hold a version the
// read cannot return: the read fails, rather than asking spares whose
// answers would make it "not found".
TEST(ReadOpTest, AnAnswerTheClientCouldNotReadFailsTheRead) {
  Fixture f;
  ReadOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), ReadRequest{f.key, 2});
  std::vector<Send> gets = op.Start();
  const Reply unreadable{
      Status::InvalidArgument("value of 300000000 bytes exceeds value_bytes_max"), true};
  EXPECT_TRUE(op.OnReply(gets[0].target, unreadable).empty());
  ASSERT_TRUE(op.answered());
  EXPECT_EQ(op.status().code(), StatusCode::kInvalidArgument) << op.status().ToString();
  EXPECT_NE(op.status().message().find("could not be read"), std::string_view::npos);
}

TEST(ReadOpTest, FailuresBringInSparesThenGiveUp) {
  Fixture f;
  ReadOp op(PlanRoute(f.map, f.key, AllHealthyExcept({})), ReadRequest{f.key, 2});
  std::vector<Send> gets = op.Start();
  std::vector<Send> spare = op.OnReply(gets[0].target, Refused());
  ASSERT_EQ(spare.size(), 1u);
  EXPECT_EQ(std::get<proto::GetRequest>(spare[0].body).hint, op.target(gets[0].target).node);
  op.OnReply(gets[1].target, Refused());
  op.OnReply(gets[2].target, Ok(proto::GetReply{1, {}}));
  EXPECT_FALSE(op.answered());
  op.OnDeadline();
  EXPECT_EQ(op.status().code(), StatusCode::kUnavailable);
  ReadOp silent(PlanRoute(f.map, f.key, AllHealthyExcept({})), ReadRequest{f.key, 2});
  silent.Start();
  silent.OnDeadline();
  EXPECT_EQ(silent.status().code(), StatusCode::kTimeout);
  // Calls timing out before the op's own deadline also read as a timeout.
  ReadOp stalled(PlanRoute(f.map, f.key, AllHealthyExcept({})), ReadRequest{f.key, 2});
  std::vector<Send> sent = stalled.Start();
  std::vector<Send> spare1 = stalled.OnReply(sent[0].target, TimedOut());
  std::vector<Send> spare2 = stalled.OnReply(sent[1].target, TimedOut());
  stalled.OnReply(sent[2].target, TimedOut());
  stalled.OnReply(spare1[0].target, TimedOut());
  ASSERT_TRUE(stalled.answered());
  EXPECT_EQ(stalled.status().code(), StatusCode::kTimeout);
}

TEST(ContextTest, RoundTripsAndRejectsGarbage) {
  VersionVector vv;
  vv.Add(Dot{0xabc, 12}, 99);
  vv.Add(Dot{0xdef, 3}, 100);
  Result<DecodedContext> back =
      DecodeContext(EncodeContext(vv, "n3", {"n3", "n1"}, ContextKeyHash("cart")));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->key_hash, ContextKeyHash("cart"));
  EXPECT_NE(ContextKeyHash("cart"), ContextKeyHash("cart2"));
  EXPECT_EQ(back->clock, vv);
  EXPECT_EQ(back->fastest, "n3");
  EXPECT_EQ(back->reached, (std::vector<std::string>{"n3", "n1"}));
  // At most kMaxReplicas nodes are kept.
  std::vector<std::string> many(kMaxReplicas + 3, "n1");
  back = DecodeContext(EncodeContext(vv, "", many, std::nullopt));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->reached.size(), kMaxReplicas);
  // A context from before the reached nodes were kept (three fields) still reads.
  std::string old_format;
  MsgpackWriter w(&old_format);
  w.Array(3);
  w.Uint(1);
  w.Array(0);
  w.Str("n2");
  back = DecodeContext(old_format);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->fastest, "n2");
  EXPECT_TRUE(back->reached.empty());
  EXPECT_FALSE(back->key_hash.has_value());
  // One with more fields than this client knows reads too.
  std::string newer;
  MsgpackWriter nw(&newer);
  nw.Array(6);
  nw.Uint(1);
  nw.Array(0);
  nw.Str("n2");
  nw.Array(1);
  nw.Str("n2");
  nw.Uint(7);
  nw.Str("later");
  back = DecodeContext(newer);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->reached, std::vector<std::string>{"n2"});
  EXPECT_EQ(back->key_hash, 7u);
  // A clock naming more actors than a context carries loses its oldest
  // entries, and the context still reads.
  VersionVector wide;
  for (uint64_t actor = 1; actor <= 300; ++actor) wide.Add(Dot{actor, 1}, 1000 + actor);
  back = DecodeContext(EncodeContext(wide, "", {}, std::nullopt));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->clock.size(), 256u);
  EXPECT_EQ(back->clock.Get(300), 1u);
  EXPECT_EQ(back->clock.Get(1), 0u);
  EXPECT_EQ(DecodeContext("not a context").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(DecodeContext("").ok());
  EXPECT_EQ(ClockString(vv), "{0000000000000abc:12, 0000000000000def:3}");
}

}  // namespace
}  // namespace dynamo::client
