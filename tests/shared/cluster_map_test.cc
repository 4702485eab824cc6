#include "dynamo/cluster_map.h"

#include <gtest/gtest.h>

#include <random>

namespace dynamo {
namespace {

std::vector<NodeId> Names(int n) {
  std::vector<NodeId> out;
  for (int i = 1; i <= n; ++i) out.push_back("n" + std::to_string(i));
  return out;
}

ClusterMap MapOf(int nodes, uint32_t q = 64) { return ClusterMap(*Ring::Create(Names(nodes), q, 3)); }

void FinishAll(ClusterMap& m) {
  for (const Transfer& t : m.Awaiting()) m.MarkDone(t);
}

TEST(ClusterMapTest, JoinWaitsForTransfersThenSwitches) {
  ClusterMap m = MapOf(3);
  const uint64_t e0 = m.epoch();
  ASSERT_TRUE(m.Reconcile(Names(4)));
  ASSERT_TRUE(m.next().has_value());
  EXPECT_GT(m.epoch(), e0);
  EXPECT_FALSE(m.ring().Contains("n4"));  // still routing on the old ring
  std::vector<Transfer> owed = m.Transfers();
  ASSERT_FALSE(owed.empty());
  for (const Transfer& t : owed) {
    EXPECT_EQ(t.node, "n4");
    EXPECT_EQ(m.PendingReplicas(t.partition), std::vector<NodeId>{"n4"});
  }
  EXPECT_EQ(owed.size(), m.next()->PartitionsReplicatedBy("n4").size());
  const uint64_t pending_epoch = m.epoch();
  for (size_t i = 0; i + 1 < owed.size(); ++i) {
    EXPECT_TRUE(m.MarkDone(owed[i]));
    EXPECT_FALSE(m.MarkDone(owed[i]));  // idempotent
    EXPECT_EQ(m.epoch(), pending_epoch);  // progress is not a routing change
  }
  EXPECT_TRUE(m.MarkDone(owed.back()));
  EXPECT_FALSE(m.next().has_value());
  EXPECT_TRUE(m.ring().Contains("n4"));
  EXPECT_GT(m.epoch(), pending_epoch);
  EXPECT_TRUE(m.Transfers().empty());
  EXPECT_FALSE(m.Reconcile(Names(4)));  // nothing left to do
}

TEST(ClusterMapTest, LeaveAndRemove) {
  ClusterMap m = MapOf(4);
  ASSERT_TRUE(m.Reconcile({"n1", "n2", "n4"}));
  for (const Transfer& t : m.Transfers()) EXPECT_NE(t.node, "n3");
  FinishAll(m);
  EXPECT_FALSE(m.ring().Contains("n3"));
  EXPECT_EQ(m.ring().nodes().size(), 3u);
  // Below N nodes nobody gains a partition: the switch is immediate.
  ASSERT_TRUE(m.Reconcile({"n1", "n2"}));
  EXPECT_FALSE(m.next().has_value());
  EXPECT_EQ(m.ring().nodes().size(), 2u);
  EXPECT_FALSE(m.Reconcile({}));
}

TEST(ClusterMapTest, UndoingAPendingChangeMovesForward) {
  ClusterMap m = MapOf(3);
  ASSERT_TRUE(m.Reconcile(Names(4)));
  const uint64_t pending = m.epoch();
  ASSERT_TRUE(m.Reconcile(Names(3)));  // n4 left before its transfers finished
  EXPECT_FALSE(m.next().has_value());
  EXPECT_GT(m.epoch(), pending);
  EXPECT_TRUE(m.ring().SamePlacement(*Ring::Create(Names(3), 64, 3)));
}

TEST(ClusterMapTest, ChangingThePendingTargetKeepsValidProgress) {
  ClusterMap m = MapOf(3, 256);
  ASSERT_TRUE(m.Reconcile(Names(4)));
  std::vector<Transfer> first = m.Transfers();
  for (size_t i = 0; i < first.size() / 2; ++i) m.MarkDone(first[i]);
  ASSERT_TRUE(m.Reconcile(Names(5)));  // another join while the first is pending
  size_t kept = 0;
  for (const Transfer& t : m.Transfers()) {
    if (m.IsDone(t)) {
      ++kept;
      EXPECT_EQ(t.node, "n4");
    }
  }
  EXPECT_GT(kept, 0u);
  FinishAll(m);
  EXPECT_EQ(m.ring().nodes(), Names(5));
}

// z finished t while the change owed it; the others moved on to a change
// that did not owe t (writes to its partition went elsewhere), then to one
// that owes it again. z's mark must not come back with that map: t's node
// missed the writes made in between.
TEST(ClusterMapTest, AMergeDoesNotCarryATransferDoneBeforeAChangeThatStoppedOwingIt) {
  ClusterMap x = MapOf(3, 256);
  ASSERT_TRUE(x.Reconcile(Names(4)));
  ClusterMap z = x;
  ASSERT_TRUE(x.Reconcile(Names(5)));
  std::optional<Transfer> t;
  for (const Transfer& owed : z.Transfers()) {
    const std::vector<Transfer>& at5 = x.Transfers();
    if (std::find(at5.begin(), at5.end(), owed) == at5.end()) t = owed;
  }
  ASSERT_TRUE(t.has_value());
  ASSERT_TRUE(z.MarkDone(*t));
  ASSERT_TRUE(x.Reconcile(Names(4)));
  ASSERT_TRUE(std::find(x.Transfers().begin(), x.Transfers().end(), *t) != x.Transfers().end());
  EXPECT_TRUE(z.Merge(x));
  EXPECT_FALSE(z.IsDone(*t));
}

TEST(ClusterMapTest, MergePicksGreaterAndUnionsProgress) {
  ClusterMap a = MapOf(3), b = MapOf(3);
  a.Reconcile(Names(4));
  b.Reconcile(Names(4));
  ASSERT_EQ(a, b);  // same inputs, same change
  std::vector<Transfer> owed = a.Transfers();
  a.MarkDone(owed[0]);
  b.MarkDone(owed[1]);
  EXPECT_TRUE(a.Merge(b));
  EXPECT_TRUE(a.IsDone(owed[0]) && a.IsDone(owed[1]));
  EXPECT_FALSE(a.Merge(b));
  ClusterMap old = MapOf(3);
  EXPECT_FALSE(a.Merge(old));  // older epoch loses
  EXPECT_TRUE(old.Merge(a));
  EXPECT_EQ(old, a);
}

// X finished n4's join and switched; Y, still pending on it, learned of two
// more joiners and made a change of a greater epoch from the old ring.
// Before, X adopted Y's map: n4 left the routing ring again, and the old
// replicas, which had handed their data to n4, served it as absent.
TEST(ClusterMapTest, ASwitchIsNeverUndoneByAChangeMadeFromTheRingBefore) {
  for (int joiners : {1, 2}) {
    SCOPED_TRACE(joiners);
    ClusterMap x = MapOf(3);
    ASSERT_TRUE(x.Reconcile(Names(4)));
    ClusterMap y = x;
    FinishAll(x);
    ASSERT_TRUE(x.ring().Contains("n4"));
    ASSERT_TRUE(y.Reconcile(Names(4 + joiners)));
    const ClusterMap y_before = y;
    x.Merge(y_before);
    EXPECT_TRUE(x.ring().Contains("n4"));
    EXPECT_GT(x.epoch(), y_before.epoch());  // so that every node and client prefers x's
    EXPECT_TRUE(y.Merge(x));
    EXPECT_TRUE(y.ring().Contains("n4"));
    EXPECT_EQ(x, y);
    // Each then makes the joins from the switched ring.
    x.Reconcile(Names(4 + joiners));
    y.Reconcile(Names(4 + joiners));
    EXPECT_EQ(x, y);
    FinishAll(x);
    EXPECT_EQ(x.ring().nodes(), Names(4 + joiners));
  }
}

// n4 joined; X finished its transfers and switched while Y saw n4 leave and
// undid the change, at once or after seeing n5 join and leave too (its undo
// then came several epochs past the pending change). The switch wins (its
// old replicas may have handed their data off), and Y then removes n4 from
// the switched ring.
TEST(ClusterMapTest, ASwitchWinsOverAConcurrentUndo) {
  for (bool further_changes : {false, true}) {
    SCOPED_TRACE(further_changes ? "after further changes" : "at once");
    ClusterMap x = MapOf(3);
    ASSERT_TRUE(x.Reconcile(Names(4)));
    ClusterMap y = x;
    FinishAll(x);
    if (further_changes) ASSERT_TRUE(y.Reconcile(Names(5)));
    ASSERT_TRUE(y.Reconcile(Names(3)));
    ASSERT_FALSE(y.next().has_value());
    const ClusterMap x_before = x, y_before = y;
    x.Merge(y_before);
    EXPECT_TRUE(x.ring().Contains("n4"));
    EXPECT_TRUE(y.Merge(x_before));
    EXPECT_TRUE(y.ring().Contains("n4"));
    ASSERT_TRUE(y.Reconcile(Names(3)));
    ASSERT_TRUE(x.Merge(y));
    FinishAll(x);
    EXPECT_FALSE(x.ring().Contains("n4"));
  }
}

TEST(ClusterMapTest, MapsOfAnotherShapeAreNotMerged) {
  ClusterMap m = MapOf(3);
  ClusterMap other_q(*Ring::Create({"x"}, 16, 3, 100));
  ClusterMap other_n(*Ring::Create({"x"}, 64, 2, 100));
  const ClusterMap before = m;
  EXPECT_FALSE(m.Merge(other_q));
  EXPECT_FALSE(m.Merge(other_n));
  EXPECT_EQ(m, before);
}

TEST(ClusterMapTest, MapsOfAnotherClusterAreNotMerged) {
  ClusterMap a(*Ring::Create(Names(3), 64, 3), 7);
  const ClusterMap b(*Ring::Create(Names(4), 64, 3, 100), 8);
  const ClusterMap before = a;
  EXPECT_FALSE(a.SameCluster(b));
  EXPECT_FALSE(a.Merge(b));
  EXPECT_EQ(a, before);
  // A map from before clusters had ids (four fields, read as id 0) takes
  // the other's, and merges.
  std::string bytes = ClusterMap(*Ring::Create(Names(3), 64, 3), 5).Serialize();
  ASSERT_EQ(static_cast<uint8_t>(bytes[0]), 0x95);
  ASSERT_EQ(bytes.back(), '\x05');
  bytes[0] = static_cast<char>(0x94);
  bytes.pop_back();
  Result<ClusterMap> old = ClusterMap::Deserialize(bytes);
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->cluster_id(), 0u);
  EXPECT_TRUE(old->SameCluster(b));
  EXPECT_TRUE(old->Merge(b));
  EXPECT_EQ(old->cluster_id(), 8u);
  EXPECT_EQ(old->ring(), b.ring());
  EXPECT_EQ(ClusterMap::Deserialize(old->Serialize())->cluster_id(), 8u);
}

// Two joins through different seeds at the same time: the maps disagree at
// the same epoch, and converge once both know both joiners.
TEST(ClusterMapTest, ConcurrentJoinsConverge) {
  ClusterMap x = MapOf(3), y = MapOf(3);
  x.Reconcile({"n1", "n2", "n3", "j1"});
  y.Reconcile({"n1", "n2", "n3", "j2"});
  ASSERT_EQ(x.epoch(), y.epoch());
  ASSERT_NE(x.ContentHash(), y.ContentHash());
  std::vector<NodeId> all = {"n1", "n2", "n3", "j1", "j2"};
  for (int round = 0; round < 4; ++round) {
    ClusterMap xs = x, ys = y;
    x.Merge(ys);
    y.Merge(xs);
    x.Reconcile(all);
    y.Reconcile(all);
  }
  EXPECT_EQ(x, y);
  FinishAll(x);
  FinishAll(y);
  EXPECT_EQ(x, y);
  EXPECT_EQ(x.ring().nodes().size(), 5u);
}

// Randomized gossip among 6 maps with members joining and leaving: once the
// member set stops changing and transfers finish, every map is the same.
TEST(ClusterMapTest, RandomChangesConvergeUnderGossip) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    std::vector<ClusterMap> maps(6, MapOf(3, 128));
    std::vector<NodeId> members = Names(3);
    int next_id = 4;
    for (int step = 0; step < 30; ++step) {
      // Some node learns of a membership change.
      if (rng() % 3 == 0) {
        if (members.size() < 8 && rng() % 2) {
          members.push_back("n" + std::to_string(next_id++));
        } else if (members.size() > 2) {
          members.erase(members.begin() + static_cast<long>(rng() % members.size()));
        }
      }
      size_t who = rng() % maps.size();
      maps[who].Reconcile(members);
      // Some transfers finish somewhere.
      size_t worker = rng() % maps.size();
      std::vector<Transfer> owed = maps[worker].Awaiting();
      for (size_t i = 0; i < owed.size() && i < 5; ++i) maps[worker].MarkDone(owed[rng() % owed.size()]);
      // A gossip exchange. No map's ring goes back to an older one.
      size_t a = rng() % maps.size(), b = rng() % maps.size();
      const uint64_t ring_a = maps[a].ring().epoch(), ring_b = maps[b].ring().epoch();
      ClusterMap ma = maps[a];
      maps[a].Merge(maps[b]);
      maps[b].Merge(ma);
      EXPECT_GE(maps[a].ring().epoch(), ring_a) << "seed " << seed;
      EXPECT_GE(maps[b].ring().epoch(), ring_b) << "seed " << seed;
    }
    // Quiesce: everyone reconciles with the final members, transfers finish.
    for (int round = 0; round < 20; ++round) {
      for (ClusterMap& m : maps) {
        m.Reconcile(members);
        FinishAll(m);
      }
      for (size_t a = 0; a < maps.size(); ++a) {
        size_t b = (a + 1 + static_cast<size_t>(round)) % maps.size();
        ClusterMap ma = maps[a];
        maps[a].Merge(maps[b]);
        maps[b].Merge(ma);
      }
    }
    for (const ClusterMap& m : maps) {
      ASSERT_EQ(m, maps[0]) << "seed " << seed;
      EXPECT_FALSE(m.next().has_value());
      std::vector<NodeId> sorted = members;
      std::sort(sorted.begin(), sorted.end());
      EXPECT_EQ(m.ring().nodes(), sorted) << "seed " << seed;
    }
  }
}

TEST(ClusterMapTest, SerializesAndValidates) {
  ClusterMap m = MapOf(3);
  m.Reconcile(Names(5));
  m.MarkDone(m.Transfers()[2]);
  Result<ClusterMap> back = ClusterMap::Deserialize(m.Serialize());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, m);
  EXPECT_EQ(back->ContentHash(), m.ContentHash());
  std::string bytes = m.Serialize();
  for (size_t cut = 0; cut < bytes.size(); cut += 7) {
    EXPECT_FALSE(ClusterMap::Deserialize(bytes.substr(0, cut)).ok());
  }
  ClusterMap plain = MapOf(2);
  EXPECT_EQ(*ClusterMap::Deserialize(plain.Serialize()), plain);
}

// A map a peer sent past the largest epoch a peer's map may carry is
// refused; steps taken from one at it make maps every node still reads.
// Before, a peer's next ring at the largest epoch a map may carry moved this
// map's ring one past it: no node, this one included, could read it again.
TEST(ClusterMapTest, StepsFromThePeersLargestEpochStayReadable) {
  const Ring ring = *Ring::Create(Names(3), 64, 3);
  constexpr uint64_t e = kMapEpochFromPeerMax;
  ClusterMap peer(ring.WithEpoch(e - 1));
  peer.Reconcile(Names(4));
  ASSERT_EQ(peer.epoch(), e);
  ASSERT_TRUE(ClusterMap::FromPeer(peer.Serialize()).ok());
  ClusterMap mine(ring.WithEpoch(e));  // a newer ring, an older map
  ASSERT_TRUE(mine.Merge(peer));
  EXPECT_EQ(mine.epoch(), e + 1);
  EXPECT_TRUE(ClusterMap::Deserialize(mine.Serialize()).ok());
  FinishAll(peer);
  ASSERT_FALSE(peer.next());
  EXPECT_TRUE(ClusterMap::Deserialize(peer.Serialize()).ok());
  ClusterMap past(ring.WithEpoch(e + 1));
  EXPECT_TRUE(ClusterMap::Deserialize(past.Serialize()).ok());
  EXPECT_EQ(ClusterMap::FromPeer(past.Serialize()).status().code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace dynamo
