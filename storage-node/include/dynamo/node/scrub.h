// Scrubbing a node's stored data (`dynamo-node --scrub`): every entry is
// read back, checksums and all, and when some fail the node keeps what
// read back intact and leaves the rest to anti-entropy, which refills it
// from the other replicas.
//
// The unit kept or left out is a whole partition (and, for hints, everything
// held for one node), never part of one: a partition with one unreadable
// entry could otherwise come back with an older version of a key whose newer
// version (or tombstone) sat in the bad block. A partition left out is held
// by nothing on this node, as after a wipe, and anti-entropy restores it.
// The node takes a fresh actor id at its next start anyway (node_state.h),
// so it never claims the writes it lost.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dynamo/node/engine.h"
#include "dynamo/node/rocksdb_engine.h"
#include "dynamo/placement.h"
#include "dynamo/ring.h"
#include "dynamo/status.h"

namespace dynamo::node {

struct ScrubReport {
  uint64_t entries = 0;                       // read back intact (and copied, when copying)
  uint64_t bytes = 0;                         // their keys and values
  uint64_t partitions = 0;                    // partitions with data that read back whole
  std::vector<PartitionId> lost_partitions;   // a read failed its checksum: left out
  std::vector<std::string> lost_hint_owners;  // nodes whose hints failed a read: left out
  // An unreadable hint was the first held for a node that neither the stored
  // cluster map nor the member list names, so whose hints were lost cannot
  // be told. Hints of the nodes they name are kept past such a block.
  bool unnamed_hints_lost = false;
  std::string first_error;  // the first checksum failure met, if any

  bool clean() const {
    return lost_partitions.empty() && lost_hint_owners.empty() && !unnamed_hints_lost;
  }
  // One line for the node's log.
  std::string Summary() const;
};

// Reads every entry of `from`: metadata, hints one owner at a time, data one
// partition at a time. When `to` is given, writes each unit that read back
// whole into it (unsynced; the caller syncs) and leaves out the others; when
// it left partitions out, it also marks the node as catching up
// (kMetaCatchingUp), so that it answers no read until anti-entropy refilled
// them. A
// Corruption met in a unit is reported, not returned. Errors: Corruption when
// the metadata (the node's identity) cannot be read, which no scrub can
// save; any other error of either engine.
Result<ScrubReport> Scrub(Engine& from, Engine* to);

// The nodes whose hints a scrub of `engine` keeps past an unreadable first
// hint of another node: those its stored cluster map (ring and next) and
// member list name, sorted. Entries that cannot be read or parsed name none.
std::vector<NodeId> HintOwnersNamedIn(Engine& engine);

// The RocksDB database in `dir`, scrubbed in place. Reads it all; if every
// entry reads back, changes nothing. Otherwise copies what did into
// `dir`.scrub, syncs it, renames `dir` to `dir`.corrupt-TIME (kept for the
// operator to inspect or delete; `kept_aside` names it) and the copy to
// `dir`. Needs free space for the copy. A crash part-way leaves either the
// old database in place (the unfinished copy is removed at the next open) or
// the finished copy waiting to be renamed (done at the next open; see
// FinishInterruptedScrub).
struct ScrubOutcome {
  ScrubReport report;
  std::string kept_aside;  // empty when the database was clean
};
Result<ScrubOutcome> ScrubRocksDb(const std::string& dir, const RocksDbOptions& options);

// A node that stopped on a checksum failure leaves a mark beside `dir`
// (`dir`.scrub-needed), so that its next start scrubs without having to meet
// the bad block again. ScrubRocksDb removes it once done.
Status MarkScrubNeeded(const std::string& dir);
bool ScrubNeeded(const std::string& dir);
// The damaged copy a scrub of `dir` was putting aside when a crash stopped
// it (its name is in the mark while it swaps the databases): the next start
// finishes that scrub (it is not an earlier scrub's copy). nullopt otherwise.
std::optional<std::string> InterruptedScrubSwap(const std::string& dir);
// The damaged databases earlier scrubs of `dir` kept aside, oldest first.
std::vector<std::string> KeptAside(const std::string& dir);

// Completes or discards a scrub of `dir` that a crash interrupted: with
// `dir` gone and `dir`.scrub present, the copy was finished and becomes
// `dir`; with both present, the copy was not, and is removed. Returns whether
// it found either. OpenRocksDb calls it first.
Result<bool> FinishInterruptedScrub(const std::string& dir);

}  // namespace dynamo::node
