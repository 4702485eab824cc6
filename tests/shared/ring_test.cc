#include "dynamo/ring.h"
#include "dynamo/msgpack_io.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

namespace dynamo {
namespace {

std::vector<NodeId> Names(int n, int first = 1) {
  std::vector<NodeId> out;
  for (int i = first; i < first + n; ++i) out.push_back("n" + std::to_string(i));
  return out;
}

// Every invariant a ring must hold whatever changes produced it.
void CheckInvariants(const Ring& ring) {
  const size_t s = ring.nodes().size();
  const uint32_t q = ring.partition_count();
  std::map<NodeId, size_t> owned;
  for (PartitionId p = 0; p < q; ++p) ++owned[ring.Owner(p)];
  ASSERT_EQ(owned.size(), s);
  for (const auto& [node, count] : owned) {
    EXPECT_TRUE(count == q / s || count == (q + s - 1) / s)
        << node << " owns " << count << " of " << q << " with " << s << " nodes";
  }
  const size_t width = std::min<size_t>(ring.replicas(), s);
  for (PartitionId p = 0; p < q; ++p) {
    std::span<const NodeIndex> pref = ring.PreferenceIndices(p);
    ASSERT_EQ(pref.size(), width);
    EXPECT_EQ(ring.nodes()[pref[0]], ring.Owner(p));
    std::set<NodeIndex> distinct(pref.begin(), pref.end());
    ASSERT_EQ(distinct.size(), width) << "partition " << p;
  }
  Result<Ring> back = Ring::Deserialize(ring.Serialize());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == ring);
  EXPECT_EQ(back->ContentHash(), ring.ContentHash());
}

TEST(RingTest, CreateIsBalancedAndDistinct) {
  Result<Ring> r = Ring::Create(Names(5), 1024, 3);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->epoch(), 1u);
  EXPECT_EQ(r->partition_count(), 1024u);
  EXPECT_EQ(r->replicas(), 3u);
  CheckInvariants(*r);
  // Node order does not matter.
  std::vector<NodeId> shuffled = {"n3", "n5", "n1", "n4", "n2"};
  EXPECT_TRUE(*Ring::Create(shuffled, 1024, 3) == *r);
}

TEST(RingTest, CreateRejectsBadInput) {
  EXPECT_FALSE(Ring::Create({}, 64).ok());
  EXPECT_FALSE(Ring::Create({"a", "a"}, 64).ok());
  EXPECT_FALSE(Ring::Create({"bad id"}, 64).ok());
  EXPECT_FALSE(Ring::Create({std::string(65, 'x')}, 64).ok());
  EXPECT_FALSE(Ring::Create(Names(3), 100).ok());
  EXPECT_FALSE(Ring::Create(Names(3), 0).ok());
  EXPECT_FALSE(Ring::Create(Names(3), 64, 0).ok());
  EXPECT_FALSE(Ring::Create(Names(3), 64, kMaxReplicas + 1).ok());
  EXPECT_FALSE(Ring::Create(Names(9), 8).ok());
  Status s = Ring::Create({"a", "a"}, 64).status();
  EXPECT_NE(s.message().find("duplicate node id 'a'"), std::string_view::npos);
}

TEST(RingTest, FewerNodesThanReplicas) {
  Result<Ring> r = Ring::Create({"solo"}, 64, 3);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->PreferenceList(7), std::vector<NodeId>{"solo"});
  Result<Ring> two = r->WithNode("duo");
  ASSERT_TRUE(two.ok());
  CheckInvariants(*two);
  EXPECT_EQ(two->PreferenceList(0).size(), 2u);
}

TEST(RingTest, AddAndRemoveErrors) {
  Ring r = *Ring::Create(Names(3), 64);
  EXPECT_FALSE(r.WithNode("n1").ok());
  EXPECT_FALSE(r.WithNode("").ok());
  EXPECT_FALSE(r.WithoutNode("n9").ok());
  EXPECT_FALSE(Ring::Create({"a"}, 64)->WithoutNode("a").ok());
  Ring tiny = *Ring::Create(Names(2), 2);
  EXPECT_FALSE(tiny.WithNode("n3").ok());
}

TEST(RingTest, ExtendedListStartsWithPreferenceList) {
  Ring r = *Ring::Create(Names(7), 256, 3);
  for (PartitionId p = 0; p < 256; p += 17) {
    std::vector<NodeId> ext = r.ExtendedList(p);
    std::vector<NodeId> pref = r.PreferenceList(p);
    ASSERT_EQ(ext.size(), 7u);
    EXPECT_TRUE(std::equal(pref.begin(), pref.end(), ext.begin()));
    EXPECT_EQ(std::set<NodeId>(ext.begin(), ext.end()).size(), 7u);
  }
}

TEST(RingTest, KeyPlacementUsesPreferenceList) {
  Ring r = *Ring::Create(Names(4), 1024, 3);
  PartitionId p = r.KeyPartition("cart:alice");
  EXPECT_EQ(p, KeyPartition("cart:alice", 1024));
  std::vector<PartitionId> mine = r.PartitionsReplicatedBy(r.PreferenceList(p)[2]);
  EXPECT_TRUE(std::binary_search(mine.begin(), mine.end(), p));
}

// The foundation issue's property: for random join/leave sequences (S from 1
// to 64, Q from 64 to 4096), every node holds floor(Q/S) or ceil(Q/S)
// partitions, a join moves at most ceil(Q/(S+1)) partitions and only to the
// new node, a leave moves only the leaver's partitions, and every preference
// list has N distinct nodes when S >= N.
TEST(RingTest, RandomJoinLeaveSequencesStayBalanced) {
  std::mt19937_64 rng(20071014);
  for (int trial = 0; trial < 24; ++trial) {
    const uint32_t q = 64u << (rng() % 7);  // 64 .. 4096
    const uint32_t n = 1 + static_cast<uint32_t>(rng() % 5);
    const int start = 1 + static_cast<int>(rng() % 8);
    Ring ring = *Ring::Create(Names(start), q, n);
    int next_id = start + 1;
    SCOPED_TRACE("trial " + std::to_string(trial) + " Q=" + std::to_string(q) +
                 " N=" + std::to_string(n));
    for (int step = 0; step < 40; ++step) {
      const size_t s = ring.nodes().size();
      const bool join = s == 1 || (s < 64 && s < q && rng() % 3 != 0);
      Ring before = ring;
      if (join) {
        NodeId added = "n" + std::to_string(next_id++);
        Result<Ring> r = ring.WithNode(added);
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        ring = std::move(*r);
        size_t moved = 0;
        for (PartitionId p = 0; p < q; ++p) {
          if (before.Owner(p) != ring.Owner(p)) {
            ++moved;
            EXPECT_EQ(ring.Owner(p), added);
          }
        }
        EXPECT_LE(moved, (q + s) / (s + 1));  // ceil(Q / (S + 1))
      } else {
        NodeId gone = ring.nodes()[rng() % s];
        Result<Ring> r = ring.WithoutNode(gone);
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        ring = std::move(*r);
        for (PartitionId p = 0; p < q; ++p) {
          if (before.Owner(p) != gone) {
            EXPECT_EQ(before.Owner(p), ring.Owner(p));
          }
        }
      }
      EXPECT_EQ(ring.epoch(), before.epoch() + 1);
      CheckInvariants(ring);
      if (HasFatalFailure() || HasFailure()) return;
    }
  }
}

TEST(RingTest, ChangesAreDeterministic) {
  Ring a = *Ring::Create(Names(3), 512, 3);
  Ring b = *Ring::Create(Names(3), 512, 3);
  for (const char* node : {"x1", "x2", "x3"}) {
    a = *a.WithNode(node);
    b = *b.WithNode(node);
  }
  a = *a.WithoutNode("n2");
  b = *b.WithoutNode("n2");
  EXPECT_TRUE(a == b);
  EXPECT_EQ(a.ContentHash(), b.ContentHash());
  EXPECT_EQ(a.Serialize(), b.Serialize());
}

TEST(RingTest, ContentHashIgnoresEpoch) {
  Ring a = *Ring::Create(Names(3), 64);
  Ring b = a.WithEpoch(42);
  EXPECT_FALSE(a == b);
  EXPECT_EQ(a.ContentHash(), b.ContentHash());
  EXPECT_NE(a.ContentHash(), a.WithNode("n9")->ContentHash());
}

// Replica load: with claims that avoid adjacent partitions, each node stores
// about N*Q/S partitions.
TEST(RingTest, ReplicaLoadIsSpread) {
  Ring ring = *Ring::Create(Names(4), 1024, 3);
  for (const char* node : {"n5", "n6", "n7"}) ring = *ring.WithNode(node);
  ring = *ring.WithoutNode("n2");
  const double ideal = 3.0 * 1024 / ring.nodes().size();
  for (const NodeId& node : ring.nodes()) {
    double load = static_cast<double>(ring.PartitionsReplicatedBy(node).size());
    EXPECT_GT(load, ideal * 0.8) << node;
    EXPECT_LT(load, ideal * 1.2) << node;
  }
}

TEST(RingTest, DiffNamesMovesAndNewReplicas) {
  Ring before = *Ring::Create(Names(4), 256, 3);
  Ring after = *before.WithNode("n5");
  Result<std::vector<PartitionChange>> diff = DiffRings(before, after);
  ASSERT_TRUE(diff.ok());
  size_t owner_moves = 0;
  for (const PartitionChange& c : *diff) {
    EXPECT_EQ(c.old_replicas, before.PreferenceList(c.partition));
    EXPECT_EQ(c.new_replicas, after.PreferenceList(c.partition));
    if (c.old_owner != c.new_owner) {
      ++owner_moves;
      EXPECT_EQ(c.new_owner, "n5");
    }
    // A join only ever adds the new node to preference lists.
    EXPECT_EQ(c.gained, std::vector<NodeId>{"n5"});
    EXPECT_EQ(c.lost.size(), 1u);
  }
  EXPECT_EQ(owner_moves, after.PartitionsOwnedBy("n5").size());
  EXPECT_EQ(diff->size(), after.PartitionsReplicatedBy("n5").size());
  EXPECT_TRUE(DiffRings(before, before)->empty());
  EXPECT_FALSE(DiffRings(before, *Ring::Create(Names(4), 512)).ok());
}

TEST(RingTest, DeserializeRejectsCorruptInput) {
  Ring ring = *Ring::Create(Names(3), 64, 3);
  std::string good = ring.Serialize();
  for (size_t cut = 0; cut < good.size(); ++cut) {
    EXPECT_FALSE(Ring::Deserialize(good.substr(0, cut)).ok()) << cut;
  }
  // Flip each byte: must never crash; when accepted it must still be a valid ring.
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    Result<Ring> r = Ring::Deserialize(bad);
    if (r.ok()) CheckInvariants(*r);
  }
  EXPECT_EQ(Ring::Deserialize("").status().code(), StatusCode::kCorruption);
}

TEST(RingTest, DeserializeRejectsOwnerOutOfRangeAndMemberWithoutPartition) {
  auto build = [](std::vector<NodeId> nodes, std::vector<uint16_t> owners) {
    std::string out;
    MsgpackWriter w(&out);
    w.Array(6);
    w.Uint(1);
    w.Uint(3);
    w.Uint(owners.size());
    w.Uint(3);
    w.Array(static_cast<uint32_t>(nodes.size()));
    for (auto& n : nodes) w.Str(n);
    std::string bin;
    for (uint16_t o : owners) {
      bin.push_back(static_cast<char>(o >> 8));
      bin.push_back(static_cast<char>(o));
    }
    w.Bin(bin);
    return out;
  };
  EXPECT_TRUE(Ring::Deserialize(build({"a", "b"}, {0, 1, 0, 1})).ok());
  EXPECT_FALSE(Ring::Deserialize(build({"a", "b"}, {0, 2, 0, 1})).ok());
  EXPECT_FALSE(Ring::Deserialize(build({"a", "b"}, {0, 0, 0, 0})).ok());
  EXPECT_FALSE(Ring::Deserialize(build({"b", "a"}, {0, 1, 0, 1})).ok());
  EXPECT_FALSE(Ring::Deserialize(build({"a", "b"}, {0, 1, 0})).ok());
  // An unbalanced but valid ring is accepted and its lists are still correct.
  Result<Ring> lopsided = Ring::Deserialize(build({"a", "b", "c"}, {0, 0, 0, 0, 0, 0, 1, 2}));
  ASSERT_TRUE(lopsided.ok());
  EXPECT_EQ(lopsided->PreferenceList(0), (std::vector<NodeId>{"a", "b", "c"}));
  EXPECT_EQ(lopsided->PreferenceList(7), (std::vector<NodeId>{"c", "a", "b"}));
}

}  // namespace
}  // namespace dynamo
