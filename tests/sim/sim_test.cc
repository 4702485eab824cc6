// Seeded simulator runs of the real node and client logic under faults (see
// workload.h for the fault model and the checks). A failure prints its seed;
// `dynamo_sim --start-seed SEED --seeds 1` replays it.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <iostream>
#include <map>

#include "sim/workload.h"

namespace dynamo::sim {
namespace {

void RunSeeds(uint64_t first, uint64_t count) {
  const auto start = std::chrono::steady_clock::now();
  uint64_t acked = 0, faults = 0, scrubbed = 0, hint_owners = 0, trees = 0, silent = 0;
  uint64_t unsent = 0, retries = 0, late = 0;
  uint64_t deletes = 0, purged = 0, power_losses = 0, client_cuts = 0, away = 0;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    WorkloadReport r = RunWorkload(seed, ConfigForSeed(seed));
    acked += r.acknowledged;
    deletes += r.deletes_checked;
    purged += r.tombstones_purged;
    power_losses += r.power_losses;
    client_cuts += r.client_cuts;
    away += r.away_past_grace;
    faults += r.faults;
    scrubbed += r.partitions_scrubbed;
    hint_owners += r.hint_owners_scrubbed;
    trees += r.trees_checked;
    silent += r.keys_silently_lost;
    unsent += r.refused_unsent;
    retries += r.coordinator_retries;
    late += r.late_coordinator_answers;
    ASSERT_TRUE(r.ok) << r.Summary();
    EXPECT_EQ(r.lost, 0u);
  }
  // What the checks rest on happened: adds acknowledged, deletes whose
  // resurrection was looked for, and each kind of fault the seeds draw.
  EXPECT_GT(acked, 0u);
  EXPECT_GT(deletes, 0u);
  EXPECT_GT(purged, 0u);
  EXPECT_GT(power_losses, 0u);
  EXPECT_GT(client_cuts, 0u);
  EXPECT_GT(away, 0u);
  const double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60;
  std::cout << "[ sim ] seeds " << first << "-" << first + count - 1 << ": all passed, " << acked
            << " acknowledged adds, " << faults << " faults, " << scrubbed << " partitions and "
            << hint_owners << " nodes' hints scrubbed away, " << silent << " keys silently lost, "
            << trees << " trees checked against storage, " << unsent
            << " client requests refused before they left, " << retries
            << " writes then sent to another coordinator, " << late
            << " coordinators answered past the deadline, " << deletes << " deletes checked, "
            << purged << " tombstones purged, " << power_losses << " power losses, " << client_cuts
            << " cuts of a client, " << away << " nodes away past the grace period, "
            << static_cast<uint64_t>(count / minutes) << " seeds per minute\n";
}

// 200 seeds in four batches, so ctest can run them in parallel.
TEST(SimTest, Seeds1To50) { RunSeeds(1, 50); }
TEST(SimTest, Seeds51To100) { RunSeeds(51, 50); }
TEST(SimTest, Seeds101To150) { RunSeeds(101, 50); }
TEST(SimTest, Seeds151To200) { RunSeeds(151, 50); }

// The seeds without crashes run half of the time with durable_writes off,
// so the unsynced write path is checked under the other faults.
TEST(SimTest, SomeSeedsWriteUnsynced) {
  int unsynced = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    const WorkloadConfig c = ConfigForSeed(seed);
    EXPECT_TRUE(c.durable_writes || !c.crashes) << seed;
    unsynced += c.durable_writes ? 0 : 1;
  }
  EXPECT_GT(unsynced, 10);
}

// How many of the CI seeds (1-200) draw a configuration with `flag` set.
int SeedsWith(bool WorkloadConfig::*flag) {
  int n = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) n += ConfigForSeed(seed).*flag ? 1 : 0;
  return n;
}

// Half of the seeds coordinate each client's writes through the replica it
// ranks first, the SDK's default, and half through the fastest replica.
TEST(SimTest, SomeSeedsCoordinateThroughTheRankedReplica) {
  const int ranked = SeedsWith(&WorkloadConfig::ranked_coordinator);
  EXPECT_GT(ranked, 50);
  EXPECT_LT(ranked, 150);
}

// Some seeds have the clients' requests refused before they leave: by a
// crashed node (a refused connection) or by the client's own full write
// queue. Such a write goes to the next coordinator or a stand-in, a read to
// a spare, and nothing acknowledged is lost.
TEST(SimTest, RequestsRefusedBeforeTheyLeaveGoElsewhere) {
  EXPECT_GT(SeedsWith(&WorkloadConfig::refused_when_down), 50);
  EXPECT_LT(SeedsWith(&WorkloadConfig::refused_when_down), 150);
  int queue_full = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed)
    queue_full += ConfigForSeed(seed).queue_full_per_mille > 0;
  EXPECT_GT(queue_full, 20);
  // Many more refusals than the CI seeds draw.
  uint64_t unsent = 0, retries = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    WorkloadConfig c = ConfigForSeed(seed);
    c.refused_when_down = true;
    c.queue_full_per_mille = 100;
    const WorkloadReport r = RunWorkload(seed, c);
    ASSERT_TRUE(r.ok) << r.Summary();
    EXPECT_EQ(r.lost, 0u);
    unsent += r.refused_unsent;
    retries += r.coordinator_retries;
  }
  EXPECT_GT(unsent, 100u);
  EXPECT_GT(retries, 10u);
}

// With no faults and no anti-entropy, every replica's copy comes from the
// clients: the client writes every replica whatever W is (at W=1 it once
// left two of them to anti-entropy, which runs with faults refilled before
// the end checks).
TEST(SimTest, WithoutAntiEntropyTheClientsWriteEveryReplica) {
  for (int w : {1, 2, 3}) {
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      WorkloadConfig c;
      c.crashes = c.cuts = c.pauses = false;
      c.anti_entropy = false;
      c.w = w;
      const WorkloadReport r = RunWorkload(seed, c);
      ASSERT_TRUE(r.ok) << r.Summary();
      EXPECT_EQ(r.lost, 0u);
      EXPECT_GT(r.acknowledged, 0u);
    }
  }
}

// A coordinator paused past the client's deadline applies the write after
// the client gave up on it (in doubt). Its late answer still sends the
// version on to the other replicas, so with no anti-entropy the replicas
// agree at the end.
TEST(SimTest, AWriteAppliedPastItsDeadlineStillReachesEveryReplica) {
  uint64_t late = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    WorkloadConfig c;
    c.crashes = c.cuts = false;
    c.pauses = true;
    c.anti_entropy = false;
    const WorkloadReport r = RunWorkload(seed, c);
    EXPECT_TRUE(r.ok) << r.Summary();
    EXPECT_EQ(r.lost, 0u);
    late += r.late_coordinator_answers;
  }
  EXPECT_GT(late, 0u);
}

// Seeds 1-12 on five nodes with three membership changes and what `force`
// sets; each must pass with nothing acknowledged lost.
std::vector<WorkloadReport> RunTwelveForced(const std::function<void(WorkloadConfig&)>& force) {
  std::vector<WorkloadReport> out;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    WorkloadConfig c = ConfigForSeed(seed);
    c.nodes = 5;
    c.membership_change = true;
    c.more_membership_changes = 2;
    force(c);
    out.push_back(RunWorkload(seed, c));
    EXPECT_TRUE(out.back().ok) << out.back().Summary();
    EXPECT_EQ(out.back().lost, 0u);
  }
  return out;
}

// Some CI seeds make several membership changes, one started while the one
// before is in progress, and some lose a node's disk: a crashed node is
// wiped before it restarts, or kept down and removed. A lost disk is the
// run's one lost copy, so it is drawn at W >= 2 only. Twelve more seeds run
// with both forced.
TEST(SimTest, SomeSeedsChangeMembershipAgainAndLoseADisk) {
  int again = 0, lost_disk = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    const WorkloadConfig c = ConfigForSeed(seed);
    again += c.more_membership_changes > 0;
    lost_disk += c.lost_disk;
    EXPECT_TRUE(!c.lost_disk || (c.w >= 2 && c.crashes)) << seed;
  }
  EXPECT_GT(again, 10);
  EXPECT_GT(lost_disk, 20);
  uint64_t changes = 0, disks = 0;
  for (const WorkloadReport& r : RunTwelveForced([](WorkloadConfig& c) {
         c.crashes = true;
         c.durable_writes = true;
         c.w = std::max(c.w, 2);
         c.lost_disk = true;
       })) {
    changes += r.membership_changes;
    disks += r.disks_lost;
  }
  std::cout << "[ sim ] 12 seeds forced: " << changes << " membership changes, " << disks
            << " disks lost, nothing acknowledged lost\n";
  EXPECT_GE(changes, 30u);
  EXPECT_GE(disks, 4u);
}

// Some CI seeds fill a node's disk for a while: it refuses new data, the
// clients write through the other replicas and stand-ins, and once it has
// room again hints and anti-entropy repair it. Twelve more seeds run with
// it forced.
TEST(SimTest, SomeSeedsFillADiskForAWhile) {
  int full = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) full += ConfigForSeed(seed).full_disks;
  EXPECT_GT(full, 25);
  uint64_t filled = 0, refused = 0;
  for (const WorkloadReport& r : RunTwelveForced([](WorkloadConfig& c) { c.full_disks = true; })) {
    filled += r.disks_filled;
    refused += r.refused_disk_low;
  }
  std::cout << "[ sim ] 12 seeds forced: " << filled << " disks filled, " << refused
            << " writes and pushes refused for a full disk, nothing acknowledged lost\n";
  EXPECT_GE(filled, 12u);
  EXPECT_GT(refused, 0u);
}

// Some CI seeds with membership changes keep one client on the map from
// before them: the nodes that gave a partition up refuse it, and it goes to
// the replicas they name. Twelve more seeds run with it forced.
TEST(SimTest, SomeSeedsKeepAClientOnTheMapFromBeforeTheChanges) {
  int stale = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    const WorkloadConfig c = ConfigForSeed(seed);
    stale += c.stale_map_client;
    EXPECT_TRUE(!c.stale_map_client || c.membership_change) << seed;
  }
  EXPECT_GT(stale, 10);
  uint64_t refused = 0, redirects = 0;
  for (const WorkloadReport& r :
       RunTwelveForced([](WorkloadConfig& c) { c.stale_map_client = true; })) {
    refused += r.refused_not_replica;
    redirects += r.redirects;
  }
  std::cout << "[ sim ] 12 seeds forced: " << refused << " requests refused as no replica, "
            << redirects << " replicas asked in the refusers' place, nothing acknowledged lost\n";
  EXPECT_GT(refused, 12u);
  EXPECT_GT(redirects, 0u);
}

// Some CI seeds run each of the other quorums: W=1 (answered at the
// coordinator's copy, the other replicas written after), W=3, R=1 and R=3.
// W=1 never meets a scrub, which may take away the one copy it promises.
TEST(SimTest, SomeSeedsRunOtherQuorums) {
  std::map<std::pair<int, int>, int> seen;  // (r, w) -> seeds
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    const WorkloadConfig c = ConfigForSeed(seed);
    ++seen[{c.r, c.w}];
    EXPECT_FALSE(c.w == 1 && c.scrubs) << seed;
  }
  for (std::pair<int, int> q : {std::pair{2, 1}, {2, 3}, {1, 2}, {3, 2}}) {
    EXPECT_GT(seen[q], 5) << "R=" << q.first << " W=" << q.second;
  }
  const int default_quorum = seen[std::pair{2, 2}];
  EXPECT_GT(default_quorum, 100);
}

// Half of the seeds check every Merkle tree against storage while they run
// (every seed checks the trees against storage at the end), and no check may
// find a disagreement.
TEST(SimTest, SomeSeedsCheckTreesAgainstStorageWhileTheyRun) {
  const int checking = SeedsWith(&WorkloadConfig::tree_checks);
  EXPECT_GT(checking, 50);
  EXPECT_LT(checking, 150);
  uint64_t seed = 1;
  WorkloadReport r, without;
  for (; seed <= 200; ++seed) {
    WorkloadConfig config = ConfigForSeed(seed);
    if (!config.tree_checks) continue;
    // Operations close together, mostly early in the fault phase: a later
    // loss is left to the checks (spread ones often write the key again).
    config.spread_ops = false;
    r = RunWorkload(seed, config);
    ASSERT_TRUE(r.ok) << r.Summary();
    EXPECT_GT(r.trees_checked, 0u);
    if (r.keys_silently_lost == 0) continue;
    // The negative control: without the checks the same loss is not
    // repaired, unless a later write or read repair happens to refill it.
    WorkloadConfig control = config;
    control.tree_checks_control = true;
    without = RunWorkload(seed, control);
    EXPECT_EQ(without.keys_silently_lost, r.keys_silently_lost);
    if (!without.ok) break;
  }
  ASSERT_LE(seed, 200u) << "no seed loses a key silently that only the tree checks refill";
  std::cout << "[ sim ] seed " << seed
            << ": a key lost without an error was found and refilled; without tree checks: "
            << (without.failures.empty() ? "" : without.failures[0]) << "\n";
}

// Half of the seeds with crashes turn some of them into a stop on a corrupt
// block and a scrub before the restart.
TEST(SimTest, SomeSeedsScrubANodeThatMetACorruptBlock) {
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    const WorkloadConfig c = ConfigForSeed(seed);
    EXPECT_TRUE(c.crashes || !c.scrubs) << seed;
  }
  const int scrubs = SeedsWith(&WorkloadConfig::scrubs);
  EXPECT_GT(scrubs, 50);
  EXPECT_LT(scrubs, 100);
  uint64_t scrubbed = 0;
  for (uint64_t seed = 1; seed <= 200 && scrubbed == 0; ++seed) {
    if (!ConfigForSeed(seed).scrubs) continue;
    WorkloadReport r = RunWorkload(seed, ConfigForSeed(seed));
    ASSERT_TRUE(r.ok) << r.Summary();
    scrubbed += r.partitions_scrubbed;
  }
  EXPECT_GT(scrubbed, 0u);
}

// Where the stopped node holds hints, the corrupt block may be the first
// hint held for one node instead; the scrub must keep every other node's
// hints that the node's stored state names (the workload checks it, and
// counts the hints so kept). A scrub that stopped at such a hint (as it did
// before it read the stored state) fails the seed: "n2's scrub dropped a
// readable hint held for n3, which its stored state names". Seed 605 keeps
// two such hints (36 of seeds 1-20000 keep any). A change of the simulated runs may need a new seed: run
// `dynamo_sim --verbose` and look for "(N hints kept past an unreadable
// one)" with N > 0. Earlier seeds: 754, until the simulated client waited
// for late coordinators; 3134, until a stand-in's Get read every primary's
// hints; 3712, until the simulated client ranked the primaries it heard
// from in the last 100 ms as reached (client::NodeTracker); 5174, until a
// node's back-off counted the failures of one spell once; 4191, until a
// read counted a spare's answer only once the replicas could not answer;
// 3646, until seeds drew more membership changes and lost disks; 9336,
// until seeds spread their operations, cut clients, lost power and purged
// tombstones (2026-12-07).
TEST(SimTest, AScrubKeepsTheHintsPastAnUnreadableFirstHint) {
  WorkloadReport r = RunWorkload(605, ConfigForSeed(605));
  ASSERT_TRUE(r.ok) << r.Summary();
  EXPECT_EQ(r.lost, 0u);
  EXPECT_EQ(r.hint_owners_scrubbed, 1u);
  EXPECT_GT(r.hints_kept_past_a_bad_hint, 0u);
}

// Seed 348: a client's read misses its own acknowledged add (sloppy quorum,
// replicas that lost unsynced copies), so its next add stands beside it and
// a key ends with more siblings than it had writers. Allowed, and counted. A
// change of the simulated runs may need a new seed: run `dynamo_sim
// --verbose` and look for keys with siblings past their writers. (Earlier
// seeds: 1090, until the simulated client began to wait for late
// coordinators; 1372, with scans answered at once, until a node's back-off
// counted the failures of one spell once; 4435, until the changes of
// 2026-12-05 evening to clocks, catch-up, transfers and map merges: a scan
// from seed 1 found 2323 first, and 4400-5150 hold none; 2323, until a read
// counted a spare's answer only once the replicas could not answer, which
// left 8 of seeds 1-20000 with such a key, 4 of them with 3 siblings or
// more, 6866 the lowest; 10457, until seeds spread their operations, cut
// clients, lost power and purged tombstones, after which 14 of seeds
// 1-20000 hold such a key, up to 7 siblings.)
TEST(SimTest, AWriteAfterAStaleReadMayAddASibling) {
  WorkloadReport r = RunWorkload(348, ConfigForSeed(348));
  ASSERT_TRUE(r.ok) << r.Summary();
  EXPECT_EQ(r.lost, 0u);
  EXPECT_GT(r.stale_reads, 0u);
  EXPECT_GE(r.max_siblings, 3u);
  EXPECT_GT(r.keys_past_writers, 0u);
}

TEST(SimTest, ASeedReplaysExactly) {
  for (uint64_t seed : {7u, 42u}) {
    WorkloadReport a = RunWorkload(seed, ConfigForSeed(seed));
    WorkloadReport b = RunWorkload(seed, ConfigForSeed(seed));
    EXPECT_EQ(a.trace_hash, b.trace_hash) << seed;
    EXPECT_EQ(a.Summary(), b.Summary());
    EXPECT_NE(a.trace_hash, RunWorkload(seed + 1, ConfigForSeed(seed)).trace_hash);
  }
}

// The negative control (R4): last-write-wins with concurrent writers to one
// key must show lost acknowledged adds, or the checker would be blind.
TEST(SimTest, LwwNegativeControlLosesAcknowledgedWrites) {
  uint64_t lost = 0, acked = 0;
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    WorkloadConfig c;
    c.lww = true;
    c.clients = 4;
    c.set_keys = 1;
    c.crashes = c.cuts = c.pauses = false;
    WorkloadReport r = RunWorkload(seed, c);
    ASSERT_TRUE(r.ok) << r.Summary();
    lost += r.lost;
    acked += r.acknowledged;
  }
  std::cout << "[ sim ] LWW control: " << lost << " of " << acked << " acknowledged adds lost\n";
  EXPECT_GT(lost, 0u);
}

}  // namespace
}  // namespace dynamo::sim
