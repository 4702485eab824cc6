// Whether RocksDB's flushes and compactions run at their pace
// (storage.background_write_bytes_per_sec) or at the disk's speed.
//
// Paced, a flush's megabytes go out over seconds instead of in one burst,
// so the log syncs that writes wait for do not queue behind them. But paced
// work that falls behind the writes would stall them (RocksDB stops writes
// while a full memtable waits for the one before it to flush) or pile up
// files in level 0, each of which a read may look into. So the pace is lifted
// while the work is behind:
//  - RocksDB slows or stops writes;
//  - a memtable waits for its flush while the next one is already half full
//    (kPaceLiftFill), or two wait;
//  - level 0 holds kPaceLiftLevel0Factor times the files that start a
//    compaction;
// and set again once it caught up: no memtable waits for a flush, the active
// one is less than half full (else its own flush, soon due, would start
// paced and late), writes are not slowed, and level 0 holds no more files
// than start a compaction.
//
// Plain logic: the engine hands in RocksDB's state as memtables fill and after
// each flush and compaction, and applies the answer to its rate limiter.
#pragma once

#include <cstdint>

namespace dynamo::node {

inline constexpr double kPaceLiftFill = 0.5;
inline constexpr uint64_t kPaceLiftLevel0Factor = 2;

struct BackgroundLoad {
  uint64_t unflushed_memtables = 0;  // full ones, flushing or waiting to
  double active_fill = 0;            // the active memtable's size over the size it flushes at
  uint64_t level0_files = 0;
  bool writes_slowed = false;  // RocksDB delays or stops writes
};

class BackgroundPace {
 public:
  // `level0_compaction_trigger`: the level-0 files that start a compaction.
  explicit BackgroundPace(uint64_t level0_compaction_trigger)
      : level0_trigger_(level0_compaction_trigger) {}

  // Whether the pace is lifted under `load`, given whether it was.
  bool Lifted(const BackgroundLoad& load);
  bool lifted() const { return lifted_; }
  // Times the pace was lifted.
  uint64_t lifts() const { return lifts_; }

 private:
  uint64_t level0_trigger_;
  bool lifted_ = false;
  uint64_t lifts_ = 0;
};

}  // namespace dynamo::node
