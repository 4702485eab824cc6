// The simulator's workload and checker.
//
// One seed decides everything: the cluster size, the client count, every
// fault rate and every fault. A run has a fault phase and then a healing
// phase:
//
//  - Clients add unique elements to a few shared set keys by read-modify-
//    write (reads merge siblings by union, like the shopping cart), and
//    write then delete other keys, each once; mostly at R=2 W=2, in some
//    seeds at W=1, W=3, R=1 or R=3.
//  - Faults: message drops, duplicates and jitter (reordering); cuts between
//    nodes, sometimes one-way; crashes that lose every write a node had not
//    synced, followed by restarts (in some seeds, stops that lose nothing
//    instead, one of which may be on a corrupt block: a scrub drops its
//    partition, or the hints held for one node, before the restart, and
//    must keep the hints of every other node its stored state names; or,
//    where nodes check their trees, a
//    set key that a running node's storage loses without an error); pauses
//    (a stopped process); clock skew of about 1 s or 60 s; membership
//    changes (joins, leaves, removals of a node kept down), some started
//    while the one before is in progress; at most one lost disk (a
//    crashed node wiped before its restart, or the removed node); and, in
//    some seeds, disks that fill up for a while (the node refuses new data
//    until space is freed).
//  - Then every fault heals and the cluster runs until it is quiet.
//
// Checks, after healing:
//  - no acknowledged element is missing from its key (nothing acknowledged is
//    lost), and no element appears that no client tried to add;
//  - no key holds more siblings than there were writers that could be
//    concurrent (clients, plus writes whose outcome was in doubt, plus writes
//    made after a read that missed an acknowledged write: with sloppy quorum
//    and replicas that lose unsynced copies, a client need not read its own
//    last write, and its next write then stands beside it);
//  - every partition's Merkle roots agree on all its replicas and every key
//    is on its N replicas, and every node's trees hold what its storage holds
//    (and, in seeds where nodes check their trees against storage while they
//    run, no check found a disagreement but the silent loss);
//  - no key whose delete was acknowledged after reading the write holds a live
//    value again.
//
// Thread-safety: runs are independent; one per thread at most.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim/sim_cluster.h"

namespace dynamo::sim {

struct WorkloadConfig {
  int nodes = 4;
  int clients = 3;
  int set_keys = 4;
  int delete_keys = 6;
  int ops_per_client = 40;
  uint32_t partitions = 16;
  uint64_t fault_phase_ms = 8000;
  uint64_t heal_phase_max_ms = 120000;
  NetworkFaults network;
  uint64_t fault_interval_ms = 600;  // one fault event about this often
  bool crashes = true;
  bool cuts = true;
  bool pauses = true;
  int64_t clock_skew_ms = 0;
  bool membership_change = false;
  // Membership changes after that first one, 1 to 3 s apart, so that some
  // start while the one before is still in progress: joins, leaves and, in
  // seeds with a lost disk, the removal of a node kept down. The ring keeps
  // three nodes at least.
  int more_membership_changes = 0;
  // One node loses its disk (W >= 2 only; the one lost copy of the run, as a
  // scrub's): a crashed node is wiped before it restarts, or, as one of the
  // more membership changes, a node is crashed, kept down and removed. Its
  // crashes then keep unsynced writes (as with scrubs): a crash that loses
  // a replica's unsynced copy is a lost copy too, and with the disk two.
  bool lost_disk = false;
  // One client (the first) refreshes its map only every kStaleMapRefreshMs,
  // the others every second, and starts its operations 1-3 s after the
  // first membership change: it routes by the map from before the changes,
  // and the nodes that no longer replicate a partition refuse it, naming
  // the replicas it should ask.
  bool stale_map_client = false;
  // Some of the pauses are instead a node's disk filling up for 0.3-3 s:
  // it is told its disk has no room left (NodeCore::OnDiskSpace), refuses
  // writes, copies, hints and pushes and pauses its anti-entropy and
  // transfers until it is told of room again.
  bool full_disks = false;
  bool lww = false;  // the negative control: LWW loses concurrent adds
  // Off only without crashes: a crash loses a node's unsynced writes, and an
  // unsynced acknowledged write is then lost once every holder crashed.
  bool durable_writes = true;
  // Each client coordinates its writes through the replica it ranks first
  // (ClientOptions::coordinator kClientRanked); false: the fastest replica.
  bool ranked_coordinator = false;
  // Crashes are stops that lose nothing, and one of them (the first drawn,
  // one in three) may be a stop on a block that fails its checksum: one set
  // key of the node is made unreadable and the node is scrubbed
  // (dynamo-node --scrub) before it restarts, losing that key's partition
  // until anti-entropy refills it. One lost copy per run, since W=2 leaves
  // two copies of an acknowledged write.
  bool scrubs = false;
  // Every node checks each Merkle tree against its storage once every
  // kTreeCheckIntervalMs (NodeOptions::tree_check_interval_ms). In seeds
  // with scrubs too, the one lost copy may instead be a set key that a
  // running node's storage loses without an error, which the node must find
  // (at a write of the key or a tree check) so that anti-entropy refills it;
  // no check may find any other disagreement.
  bool tree_checks = false;
  // The negative control of tree checks: the silent loss happens, but no
  // node checks its trees, so nothing finds the loss.
  bool tree_checks_control = false;
  // The clients' quorum (N is 3). W=1 promises one copy, so it is drawn only
  // where no fault takes an acknowledged copy away (no scrubs).
  int r = 2;
  int w = 2;
  // False: anti-entropy runs one cycle as the cluster forms and then not
  // again within the run, so every copy must come from the clients'
  // writes and read repair (for fault-free runs only: the end checks wait
  // for the replicas to agree).
  bool anti_entropy = true;
  // A client's request to a crashed node fails at once as never sent (a
  // refused connection), so the write goes to the next coordinator or a
  // stand-in; false: it times out.
  bool refused_when_down = false;
  // Per mille of the clients' requests refused by their own full write
  // queue (Busy, never sent).
  uint32_t queue_full_per_mille = 0;
  // SimOptions::scan_answer_delay_ms: scans answered after the writes that
  // came meanwhile, as the storage thread does.
  uint64_t scan_answer_delay_ms = 0;
  // Each client's operations are spread over the fault phase (a pause of up
  // to 2 * fault_phase_ms / ops_per_client between two), so that the faults
  // and membership changes meet them; false: they follow each other within
  // 20 ms, and mostly end early in the fault phase, contending more.
  bool spread_ops = false;
  // The first crash (with durable writes, in seeds that lose no copy
  // otherwise) is instead a power loss: every node stops at once, losing its unsynced
  // writes, and starts again 0.2-2 s later. Each acknowledged write was
  // synced by its coordinator, so a copy survives.
  bool power_loss = false;
  // Tombstones are purged within the run: a grace period of
  // kShortGraceMs (and a clock skew bound of twice the drawn skew and 1 s),
  // some crashed nodes stay down past it (then catch up when back), and
  // once the cluster is quiet the run goes on until every tombstone could
  // have been purged, then waits for quiet again before the checks.
  bool short_grace = false;
  // Half of the cuts are between a node and a client instead of two nodes.
  bool client_cuts = false;
};

// The tombstone grace period in seeds with short_grace.
inline constexpr uint64_t kShortGraceMs = 5000;
// The tree check period in seeds with tree_checks.
inline constexpr uint64_t kTreeCheckIntervalMs = 3000;
// The map refresh period of the stale_map_client: longer than the fault phase.
inline constexpr uint64_t kStaleMapRefreshMs = 30000;

// The configuration a seed stands for.
WorkloadConfig ConfigForSeed(uint64_t seed);

struct WorkloadReport {
  uint64_t seed = 0;
  int r = 2, w = 2;  // the clients' quorum
  bool ok = true;
  std::vector<std::string> failures;
  uint64_t trace_hash = 0;
  uint64_t acknowledged = 0;     // elements whose add was acknowledged
  uint64_t lost = 0;             // of those, missing at the end
  uint64_t in_doubt = 0;         // adds that failed but may have applied
  uint64_t not_applied = 0;      // adds that failed as not applied (none may be present)
  uint64_t stale_reads = 0;      // reads before an add that missed an acknowledged add
  // Keys with more siblings than clients and in-doubt writes: only writes
  // after stale reads explain them.
  uint64_t keys_past_writers = 0;
  uint64_t deletes_checked = 0;
  uint64_t resurrected = 0;
  size_t max_siblings = 0;
  uint64_t faults = 0;
  uint64_t membership_changes = 0;   // joins, leaves and removals asked for
  uint64_t disks_lost = 0;           // nodes wiped or removed after a crash
  uint64_t disks_filled = 0;         // times a node's disk filled up for a while
  uint64_t power_losses = 0;         // times every node stopped at once
  uint64_t away_past_grace = 0;      // crashed nodes kept down longer than the grace period
  uint64_t tombstones_purged = 0;
  uint64_t client_cuts = 0;          // cuts between a node and a client
  uint64_t load_end_ms = 0;          // the clients' last operation, from the fault phase's start
  uint64_t partitions_scrubbed = 0;  // left out by scrubs, to be refilled
  uint64_t hint_owners_scrubbed = 0;  // nodes whose hints scrubs left out
  // Hints held for other nodes, named in the stored state, that a scrub kept
  // past an unreadable hint.
  uint64_t hints_kept_past_a_bad_hint = 0;
  uint64_t trees_checked = 0;        // partitions whose tree a node checked against storage
  uint64_t keys_silently_lost = 0;   // set keys a running node's storage lost without an error
  uint64_t messages = 0;
  uint64_t refused_unsent = 0;       // client requests that never left (refused, queue full)
  // Client requests nodes refused as no replica of the key's partition (a
  // client's map older than theirs).
  uint64_t refused_not_replica = 0;
  // Writes and pushes nodes refused while their disks were full.
  uint64_t refused_disk_low = 0;
  // Replicas clients then asked in the refusers' place.
  uint64_t redirects = 0;
  uint64_t coordinator_retries = 0;  // writes that then went to another coordinator
  uint64_t late_coordinator_answers = 0;  // coordinators that answered past the deadline
  uint64_t heal_ms = 0;          // virtual time from healing to quiet
  std::string Summary() const;
};

WorkloadReport RunWorkload(uint64_t seed, const WorkloadConfig& config);

}  // namespace dynamo::sim
