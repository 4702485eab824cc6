#include "dynamo/version.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <sstream>

namespace dynamo {
namespace {

constexpr ActorId kA = 0xA;
constexpr ActorId kB = 0xB;
constexpr ActorId kC = 0xC;

VersionVector VV(std::initializer_list<std::pair<ActorId, uint64_t>> entries) {
  VersionVector vv;
  for (auto [a, c] : entries) vv.Add(Dot{a, c}, 0);
  return vv;
}

WriteIntent Write(VersionVector context, std::string value, bool tombstone = false) {
  WriteIntent w;
  w.context = std::move(context);
  w.value = std::move(value);
  w.tombstone = tombstone;
  w.timestamp_ms = 1000;
  return w;
}

std::multiset<std::string> Values(const SiblingSet& set) {
  std::multiset<std::string> out;
  for (const Version& v : set) {
    if (!v.tombstone) out.insert(v.value);
  }
  return out;
}

// Set-union payloads: "a,b,c".
std::set<std::string> Elements(const SiblingSet& set) {
  std::set<std::string> out;
  for (const Version& v : set) {
    std::stringstream ss(v.value);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (!item.empty()) out.insert(item);
    }
  }
  return out;
}

std::string Join(const std::set<std::string>& items) {
  std::string s;
  for (const std::string& i : items) s += i + ",";
  return s;
}

TEST(VersionVectorTest, Basics) {
  VersionVector vv = VV({{kB, 2}, {kA, 5}});
  EXPECT_EQ(vv.Get(kA), 5u);
  EXPECT_EQ(vv.Get(kB), 2u);
  EXPECT_EQ(vv.Get(kC), 0u);
  EXPECT_TRUE(vv.Covers(Dot{kA, 5}));
  EXPECT_FALSE(vv.Covers(Dot{kA, 6}));
  EXPECT_FALSE(vv.Covers(Dot{kC, 1}));
  EXPECT_FALSE(vv.Covers(Dot{kA, 0}));
  EXPECT_EQ(vv.entries().front().actor, kA);  // sorted
  VersionVector other = VV({{kA, 3}, {kC, 1}});
  EXPECT_FALSE(vv.Descends(other));
  vv.Merge(other);
  EXPECT_TRUE(vv.Descends(other));
  EXPECT_EQ(vv.Get(kA), 5u);
  EXPECT_EQ(vv.Get(kC), 1u);
  EXPECT_EQ(vv.size(), 3u);
}

TEST(VersionVectorTest, FromEntriesValidates) {
  EXPECT_TRUE(VersionVector::FromEntries({{1, 1, 0}, {2, 5, 0}}).ok());
  EXPECT_FALSE(VersionVector::FromEntries({{2, 1, 0}, {1, 5, 0}}).ok());
  EXPECT_FALSE(VersionVector::FromEntries({{1, 1, 0}, {1, 5, 0}}).ok());
  EXPECT_FALSE(VersionVector::FromEntries({{1, 0, 0}}).ok());
}

TEST(VersionVectorTest, TruncateDropsRetiredThenOldest) {
  VersionVector vv;
  for (ActorId a = 1; a <= 12; ++a) vv.Add(Dot{a, 1}, /*timestamp_ms=*/100 + a);
  VersionVector t = vv;
  t.Truncate(10);
  EXPECT_EQ(t.size(), 10u);
  EXPECT_EQ(t.Get(1), 0u);  // oldest two gone
  EXPECT_EQ(t.Get(2), 0u);
  EXPECT_EQ(t.Get(3), 1u);
  t = vv;
  t.Truncate(10, [](ActorId a) { return a == 7 || a == 9; });
  EXPECT_EQ(t.size(), 10u);
  EXPECT_EQ(t.Get(7), 0u);
  EXPECT_EQ(t.Get(9), 0u);
  EXPECT_EQ(t.Get(1), 1u);
  t = vv;
  t.Truncate(20);
  EXPECT_EQ(t, vv);
}

// DESIGN.md "Causality": two clients that read the same context and both write
// through the same coordinator must end with two siblings, not one overwrite.
TEST(CausalityTest, SameContextSameCoordinatorGivesTwoSiblings) {
  SiblingSet stored;
  Result<CoordinatorResult> first = CoordinatorUpdate(stored, kA, 1, Write({}, "v0"));
  ASSERT_TRUE(first.ok());
  stored = first->siblings;
  VersionVector ctx = ContextOf(stored);  // both clients read this

  Result<CoordinatorResult> x = CoordinatorUpdate(stored, kA, 2, Write(ctx, "from-x"));
  ASSERT_TRUE(x.ok());
  stored = x->siblings;
  Result<CoordinatorResult> y = CoordinatorUpdate(stored, kA, 3, Write(ctx, "from-y"));
  ASSERT_TRUE(y.ok());
  stored = y->siblings;

  EXPECT_EQ(Values(stored), (std::multiset<std::string>{"from-x", "from-y"}));
  // Writing back with the merged context resolves them.
  Result<CoordinatorResult> fix = CoordinatorUpdate(stored, kA, 4, Write(ContextOf(stored), "xy"));
  ASSERT_TRUE(fix.ok());
  EXPECT_EQ(Values(fix->siblings), (std::multiset<std::string>{"xy"}));
}

TEST(CausalityTest, BlindWritesAreConcurrent) {
  SiblingSet stored;
  for (int i = 0; i < 3; ++i) {
    stored = CoordinatorUpdate(stored, kA, 0, Write({}, "w" + std::to_string(i)))->siblings;
  }
  EXPECT_EQ(stored.size(), 3u);
}

TEST(CausalityTest, CounterRisesAboveFloorContextAndLocalDots) {
  SiblingSet stored = CoordinatorUpdate({}, kA, 0, Write({}, "a"))->siblings;
  EXPECT_EQ(stored[0].dot, (Dot{kA, 1}));
  Result<CoordinatorResult> r = CoordinatorUpdate(stored, kA, 50, Write({}, "b"));
  EXPECT_EQ(r->written.dot, (Dot{kA, 50}));
  r = CoordinatorUpdate(r->siblings, kA, 0, Write(VV({{kA, 70}}), "c"));
  EXPECT_EQ(r->written.dot, (Dot{kA, 71}));
  r = CoordinatorUpdate(r->siblings, kA, 0, Write({}, "d"));
  EXPECT_EQ(r->written.dot, (Dot{kA, 72}));
  EXPECT_EQ(r->written.timestamp_ms, 1000u);
}

TEST(CausalityTest, TombstonesAreVersions) {
  SiblingSet stored = CoordinatorUpdate({}, kA, 1, Write({}, "v"))->siblings;
  Result<CoordinatorResult> del =
      CoordinatorUpdate(stored, kA, 2, Write(ContextOf(stored), "ignored", true));
  ASSERT_TRUE(del.ok());
  ASSERT_EQ(del->siblings.size(), 1u);
  EXPECT_TRUE(del->siblings[0].tombstone);
  EXPECT_TRUE(del->siblings[0].value.empty());
  EXPECT_FALSE(HasLiveValue(del->siblings));
  // A write concurrent with the delete survives next to it.
  SiblingSet concurrent = CoordinatorUpdate(stored, kB, 1, Write(ContextOf(stored), "keep"))->siblings;
  SiblingSet merged = MergeSiblings(del->siblings, concurrent);
  EXPECT_EQ(merged.size(), 2u);
  EXPECT_TRUE(HasLiveValue(merged));
}

TEST(CausalityTest, ASetMentionsTheActorsOfItsDotsAndContexts) {
  SiblingSet stored = CoordinatorUpdate({}, kA, 1, Write(VV({{kB, 3}}), "v"))->siblings;
  EXPECT_TRUE(MentionsActor(stored, kA));  // a dot
  EXPECT_TRUE(MentionsActor(stored, kB));  // a context entry
  EXPECT_FALSE(MentionsActor(stored, kC));
  EXPECT_FALSE(MentionsActor({}, kA));
}

TEST(CausalityTest, SiblingLimitRefusesWrite) {
  CoordinatorOptions opts;
  opts.siblings_max = 3;
  SiblingSet stored;
  for (int i = 0; i < 3; ++i) stored = CoordinatorUpdate(stored, kA, 0, Write({}, "x"), opts)->siblings;
  Result<CoordinatorResult> r = CoordinatorUpdate(stored, kA, 0, Write({}, "x"), opts);
  EXPECT_EQ(r.status().code(), StatusCode::kBusy);
  // A write that resolves them is accepted.
  EXPECT_TRUE(CoordinatorUpdate(stored, kA, 0, Write(ContextOf(stored), "x"), opts).ok());
}

TEST(CausalityTest, ContextIsTruncatedOnWrite) {
  VersionVector big;
  for (ActorId a = 100; a < 130; ++a) big.Add(Dot{a, 1}, a);
  CoordinatorOptions opts;
  opts.retired = [](ActorId a) { return a >= 125; };
  Result<CoordinatorResult> r = CoordinatorUpdate({}, kA, 0, Write(big, "v"), opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->written.context.size(), kDefaultClockEntriesMax);
  EXPECT_EQ(r->written.context.Get(129), 0u);  // retired first
  EXPECT_EQ(r->written.context.Get(124), 1u);  // then oldest
  EXPECT_EQ(r->written.context.Get(100), 0u);
}

TEST(CausalityTest, LwwKeyRefusesCausalWrite) {
  Version lww;
  lww.dot = Dot{77, 123456};
  lww.lww = true;
  lww.value = "x";
  EXPECT_EQ(CoordinatorUpdate({lww}, kA, 0, Write({}, "y")).status().code(),
            StatusCode::kInvalidArgument);
}

// riak_kv#679: a replica loses its copy, then coordinates a new write. With
// the node's counter floor the new dot is above anything it issued before, so
// the other replica keeps the new write instead of treating it as seen.
TEST(CausalityTest, LostLocalCopyDoesNotReissueDots) {
  SiblingSet on_a = CoordinatorUpdate({}, kA, 1, Write({}, "old"))->siblings;
  SiblingSet on_b = MergeSiblings({}, on_a);
  uint64_t floor = on_a[0].dot.counter + 1;  // persisted by the node
  on_a.clear();                               // a loses the key
  SiblingSet fresh = CoordinatorUpdate(on_a, kA, floor, Write({}, "new"))->siblings;
  SiblingSet merged = MergeSiblings(on_b, fresh);
  EXPECT_EQ(Values(merged), (std::multiset<std::string>{"new", "old"}));
  // The same with a new actor id for a wiped data directory.
  SiblingSet wiped = CoordinatorUpdate({}, kC, 1, Write({}, "new2"))->siblings;
  EXPECT_EQ(Values(MergeSiblings(on_b, wiped)), (std::multiset<std::string>{"new2", "old"}));
}

// Riak's sibling-explosion scenario: two writers interleave read-modify-write
// for 100 rounds. With dots, never more than 2 siblings; with set-union
// payloads every element written is still reachable.
void RunInterleavedWriters(bool two_coordinators) {
  SiblingSet on_a, on_b;  // two replicas
  uint64_t floor_a = 1, floor_b = 1;
  std::set<std::string> written;
  for (int round = 0; round < 100; ++round) {
    SiblingSet read_x = on_a;
    SiblingSet read_y = two_coordinators ? on_b : on_a;
    std::string ex = "x" + std::to_string(round), ey = "y" + std::to_string(round);
    written.insert(ex);
    written.insert(ey);

    std::set<std::string> vx = Elements(read_x);
    vx.insert(ex);
    Result<CoordinatorResult> wx = CoordinatorUpdate(on_a, kA, floor_a, Write(ContextOf(read_x), Join(vx)));
    ASSERT_TRUE(wx.ok());
    floor_a = wx->written.dot.counter + 1;
    on_a = wx->siblings;
    if (two_coordinators) on_b = MergeSiblings(on_b, on_a);

    std::set<std::string> vy = Elements(read_y);
    vy.insert(ey);
    SiblingSet& coord = two_coordinators ? on_b : on_a;
    uint64_t& floor = two_coordinators ? floor_b : floor_a;
    Result<CoordinatorResult> wy =
        CoordinatorUpdate(coord, two_coordinators ? kB : kA, floor, Write(ContextOf(read_y), Join(vy)));
    ASSERT_TRUE(wy.ok());
    floor = wy->written.dot.counter + 1;
    coord = wy->siblings;
    if (two_coordinators) on_a = MergeSiblings(on_a, on_b);

    ASSERT_LE(on_a.size(), 2u) << "round " << round;
    ASSERT_LE(on_b.size(), 2u) << "round " << round;
  }
  SiblingSet all = MergeSiblings(on_a, on_b);
  EXPECT_LE(all.size(), 2u);
  EXPECT_EQ(Elements(all), written);
}

TEST(CausalityTest, InterleavedWritersSameCoordinator) { RunInterleavedWriters(false); }
TEST(CausalityTest, InterleavedWritersTwoCoordinators) { RunInterleavedWriters(true); }

// A randomized history: 3 replicas, clients reading from one replica and
// writing through a random coordinator with what they read, replication to a
// random subset of replicas (so replicas diverge). Returns every sibling set
// that ever existed on a replica, plus the set of elements acknowledged.
struct History {
  std::vector<SiblingSet> states;
  std::set<std::string> acknowledged;
  std::vector<SiblingSet> final_replicas;
};

History RandomHistory(uint64_t seed, int writes, bool deletes) {
  std::mt19937_64 rng(seed);
  const ActorId actors[3] = {1001, 2002, 3003};
  std::vector<SiblingSet> replica(3);
  std::vector<uint64_t> floor(3, 1);
  History h;
  for (int i = 0; i < writes; ++i) {
    size_t read_from = rng() % 3, coord = rng() % 3;
    SiblingSet read = replica[read_from];
    std::set<std::string> items = Elements(read);
    std::string element = "e" + std::to_string(i);
    items.insert(element);
    bool blind = rng() % 10 == 0;
    bool del = deletes && rng() % 15 == 0;
    WriteIntent w = Write(blind ? VersionVector{} : ContextOf(read), Join(items), del);
    w.timestamp_ms = 1000 + i;
    Result<CoordinatorResult> r = CoordinatorUpdate(replica[coord], actors[coord], floor[coord], w);
    if (!r.ok()) continue;
    floor[coord] = r->written.dot.counter + 1;
    replica[coord] = r->siblings;
    h.states.push_back(replica[coord]);
    if (!del) h.acknowledged.insert(element);
    for (size_t k = 0; k < 3; ++k) {
      if (k != coord && rng() % 2 == 0) {
        replica[k] = MergeSiblings(replica[k], replica[coord]);
        h.states.push_back(replica[k]);
      }
    }
    if (rng() % 4 == 0) {  // anti-entropy between two random replicas
      size_t a = rng() % 3, b = rng() % 3;
      SiblingSet m = MergeSiblings(replica[a], replica[b]);
      replica[a] = replica[b] = m;
      h.states.push_back(m);
    }
  }
  h.final_replicas = replica;
  return h;
}

TEST(MergeTest, CommutativeAssociativeIdempotent) {
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    History h = RandomHistory(seed, 60, true);
    std::mt19937_64 rng(seed * 7919);
    for (int t = 0; t < 200; ++t) {
      const SiblingSet& a = h.states[rng() % h.states.size()];
      const SiblingSet& b = h.states[rng() % h.states.size()];
      const SiblingSet& c = h.states[rng() % h.states.size()];
      ASSERT_EQ(MergeSiblings(a, b), MergeSiblings(b, a)) << "seed " << seed;
      ASSERT_EQ(MergeSiblings(MergeSiblings(a, b), c), MergeSiblings(a, MergeSiblings(b, c)))
          << "seed " << seed;
      ASSERT_EQ(MergeSiblings(a, a), Canonicalize(a)) << "seed " << seed;
      ASSERT_EQ(Canonicalize(a), a) << "replica states are canonical, seed " << seed;
      ASSERT_EQ(SiblingDigest(MergeSiblings(a, b)), SiblingDigest(MergeSiblings(b, a)));
    }
  }
}

// Writers that merge what they read by union never lose an element: without
// deletes, every acknowledged element (blind writes included) is in the union
// of the converged siblings.
TEST(MergeTest, NoAcknowledgedUpdateIsLost) {
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    History h = RandomHistory(seed, 80, false);
    SiblingSet converged;
    for (const SiblingSet& s : h.final_replicas) converged = MergeSiblings(converged, s);
    EXPECT_EQ(Elements(converged), h.acknowledged) << "seed " << seed;
  }
}

TEST(LwwTest, GreatestStampWins) {
  auto lww = [](uint64_t ts, ActorId client, std::string value) {
    Version v;
    v.dot = Dot{client, ts};
    v.lww = true;
    v.value = std::move(value);
    return v;
  };
  Version a = lww(100, 1, "a"), b = lww(200, 1, "b"), c = lww(200, 2, "c");
  EXPECT_TRUE(LwwLess(a, b));
  EXPECT_TRUE(LwwLess(b, c));
  EXPECT_EQ(MergeSiblings({a}, {b}), SiblingSet{b});
  EXPECT_EQ(MergeSiblings({c}, {a, b}), SiblingSet{c});
  EXPECT_EQ(MergeSiblings({b}, {c}), MergeSiblings({c}, {b}));
  // An LWW version present beats causal siblings.
  SiblingSet causal = CoordinatorUpdate({}, kA, 1, Write({}, "causal"))->siblings;
  EXPECT_EQ(MergeSiblings(causal, {a}), SiblingSet{a});
  EXPECT_TRUE(Supersedes(a, causal[0]));
  EXPECT_FALSE(Supersedes(causal[0], a));
  EXPECT_TRUE(ContextOf({a}).empty());
}

TEST(MergeTest, DuplicateDotsResolveDeterministically) {
  Version v1;
  v1.dot = Dot{kA, 1};
  v1.value = "one";
  Version v2 = v1;
  v2.value = "two";  // only a faulty peer could produce this
  EXPECT_EQ(MergeSiblings({v1}, {v2}), MergeSiblings({v2}, {v1}));
  EXPECT_EQ(MergeSiblings({v1}, {v2}).size(), 1u);
}

// A cycle of versions each covering the next (a reused dot or a bad peer
// makes one) drops none of them: dropping each as covered would leave the key
// with nothing, not even a tombstone.
TEST(MergeTest, VersionsThatCoverEachOtherAreAllKept) {
  auto version = [](ActorId actor, uint64_t counter, VersionVector context, std::string value) {
    Version v;
    v.dot = Dot{actor, counter};
    v.context = std::move(context);
    v.value = std::move(value);
    return v;
  };
  const Version x = version(kA, 1, VV({{kA, 2}}), "x");
  const Version y = version(kA, 2, VV({{kA, 1}}), "y");
  EXPECT_EQ(Values(MergeSiblings({x}, {y})), (std::multiset<std::string>{"x", "y"}));
  EXPECT_EQ(MergeSiblings({x}, {y}), MergeSiblings({y}, {x}));
  // Three in a ring, and one outside it that the ring supersedes.
  const Version p = version(kA, 1, VV({{kC, 1}}), "p");
  const Version q = version(kB, 1, VV({{kA, 1}, {kC, 2}}), "q");
  const Version r = version(kC, 1, VV({{kB, 1}}), "r");
  const Version old = version(kC, 2, {}, "old");
  EXPECT_EQ(Values(MergeSiblings({p, q}, {r, old})), (std::multiset<std::string>{"p", "q", "r"}));
  // Outside a cycle, a covered version still goes.
  const Version newer = version(kB, 2, VV({{kA, 1}}), "newer");
  EXPECT_EQ(Values(MergeSiblings({x}, {newer})), (std::multiset<std::string>{"newer"}));
}

// Random small sets, cycles and duplicate-free dots included, against the
// rule spelled out by brute force: a version is dropped when another covers
// it and it does not reach that one back through versions each covering the
// next.
TEST(MergeTest, DropsExactlyTheVersionsCoveredFromOutsideTheirCycle) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 3000; ++round) {
    const size_t n = 1 + rng() % 7;
    SiblingSet set;
    for (size_t i = 0; i < n; ++i) {
      Version v;
      v.dot = Dot{1 + i % 3, 1 + i / 3};  // distinct dots over three actors
      std::vector<ClockEntry> entries;
      for (ActorId a = 1; a <= 3; ++a) {
        if (rng() % 2 == 0) entries.push_back(ClockEntry{a, 1 + rng() % 3, 0});
      }
      v.context = *VersionVector::FromEntries(std::move(entries));
      v.value = "v" + std::to_string(i);
      set.push_back(v);
    }
    std::vector<std::vector<bool>> reach(n, std::vector<bool>(n, false));
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < n; ++j) reach[i][j] = i != j && set[i].context.Covers(set[j].dot);
    }
    for (size_t k = 0; k < n; ++k) {
      for (size_t i = 0; i < n; ++i) {
        for (size_t j = 0; j < n; ++j) reach[i][j] = reach[i][j] || (reach[i][k] && reach[k][j]);
      }
    }
    std::multiset<std::string> kept;
    for (size_t i = 0; i < n; ++i) {
      bool dropped = false;
      for (size_t j = 0; j < n; ++j) {
        dropped = dropped || (j != i && set[j].context.Covers(set[i].dot) && !reach[i][j]);
      }
      if (!dropped) kept.insert(set[i].value);
    }
    ASSERT_EQ(Values(Canonicalize(set)), kept) << "round " << round;
  }
}

// Thousands of versions that all cover one another (what a bad peer can
// send): each is kept, and the merge takes n^2 cover tests, not the n^3 of
// a search from every version (minutes at this size, days at the wire's
// 65,536).
TEST(MergeTest, AManyVersionCycleMergesInQuadraticTime) {
  constexpr uint64_t kVersions = 3000;
  SiblingSet set;
  for (uint64_t i = 0; i < kVersions; ++i) {
    Version v;
    v.dot = Dot{kA + i % 2, 1 + i / 2};
    v.context = VV({{kA, kVersions}, {kB, kVersions}});
    v.value = "v";
    set.push_back(v);
  }
  EXPECT_EQ(MergeSiblings(set, {}).size(), kVersions);
}

// A write is never stamped before what it supersedes: a coordinator whose
// clock is behind stamps it with the newest stamp its context saw, so the
// tombstone's grace period ends after every deleted version's.
TEST(CausalityTest, AWriteIsStampedNoEarlierThanWhatItSupersedes) {
  WriteIntent ahead = Write({}, "v");
  ahead.timestamp_ms = 50'000;
  SiblingSet stored = CoordinatorUpdate({}, kA, 1, ahead)->siblings;
  WriteIntent del = Write(ContextOf(stored), "", true);
  del.timestamp_ms = 1'000;
  EXPECT_EQ(CoordinatorUpdate(stored, kB, 1, del)->written.timestamp_ms, 50'000u);
  // Also from a local version the context covers but carries no stamp of.
  WriteIntent blind_ctx = Write(VV({{kA, 1}}), "w");
  blind_ctx.timestamp_ms = 2'000;
  EXPECT_EQ(CoordinatorUpdate(stored, kB, 1, blind_ctx)->written.timestamp_ms, 50'000u);
  // Not from one it leaves standing.
  WriteIntent concurrent = Write({}, "c");
  concurrent.timestamp_ms = 3'000;
  EXPECT_EQ(CoordinatorUpdate(stored, kB, 1, concurrent)->written.timestamp_ms, 3'000u);
}

TEST(DigestTest, SensitiveToEveryField) {
  SiblingSet base = CoordinatorUpdate({}, kA, 1, Write(VV({{kB, 3}}), "v"))->siblings;
  uint64_t d = SiblingDigest(base);
  EXPECT_EQ(d, SiblingDigest(base));
  auto changed = [&](auto mutate) {
    SiblingSet s = base;
    mutate(s[0]);
    return SiblingDigest(s);
  };
  EXPECT_NE(d, changed([](Version& v) { v.value = "w"; }));
  EXPECT_NE(d, changed([](Version& v) { v.dot.counter++; }));
  EXPECT_NE(d, changed([](Version& v) { v.dot.actor++; }));
  EXPECT_NE(d, changed([](Version& v) { v.tombstone = true; }));
  EXPECT_NE(d, changed([](Version& v) { v.lww = true; }));
  EXPECT_NE(d, changed([](Version& v) { v.timestamp_ms++; }));
  EXPECT_NE(d, changed([](Version& v) { v.context.Add(Dot{kC, 1}, 0); }));
  EXPECT_NE(d, SiblingDigest({}));
}

}  // namespace
}  // namespace dynamo
