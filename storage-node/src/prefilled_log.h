// Write-ahead logs laid out on disk before their first record.
//
// Appending to a file changes its size, and an fdatasync must then write the
// inode too: on ext4 a separate synchronous I/O between the data and the
// device flush, each I/O a host round trip in a VM. A log written over blocks
// the file already has syncs with the data and the flush alone (the same
// reason PostgreSQL fills its WAL segments with zeros before using them).
//
// The file system below keeps one spare file of zeros, written and synced by a
// background thread, and makes each new RocksDB log (NNNNNN.log) by renaming
// the spare, then writing over it from the start. RocksDB's log reader skips
// the zeros past the last record (record type 0 is reserved for preallocated
// files), so a log cut off by a crash reads back as a growing one does. When
// no spare is ready, or a log outgrows it, the log grows as usual.
//
// A spare is sized from the log it follows: a quarter more than the log
// current when the last one was made, up to a limit. A log that grows (the
// first after a start, or one made while no spare was ready) asks for a spare
// as soon as it passes kPrefillMinLogBytes, of the size the database expects
// its logs to reach, so a node writes over zeros from its second log on. A
// database that never fills a log of kPrefillMinLogBytes (an idle node, most
// tests) never writes a spare. Its zeros are written in small steps, each at
// twice the pace the log being written went over its last few mebibytes, so
// they keep ahead of a load that starts or speeds up. The steps are small
// because the disk's next cache flush, which a log sync waits for, carries
// whatever was written before it: a burst of zeros would lengthen the syncs
// behind it.
#pragma once

#include <rocksdb/file_system.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace dynamo::node {

// Bytes of a spare log file's writes between two sync_file_range calls, so
// the zeros reach the disk in steps rather than in one burst of writeback.
inline constexpr uint64_t kPrefillStepBytes = 128u << 10;
// The smallest log whose successor gets a spare.
inline constexpr uint64_t kPrefillMinLogBytes = 1u << 20;
// A spare is written this many times faster than the current log lately, and
// never slower than kPrefillMinPace bytes a second.
inline constexpr double kPrefillPaceFactor = 2.0;
inline constexpr double kPrefillMinPace = 4u << 20;

// The status of a failed call on `path` with `err` (errno), as RocksDB's
// own file system makes it: for ENOSPC a retryable NoSpace, which RocksDB
// recovers from once the disk has room (a full disk met by an append to a
// log written over a spare); IOError otherwise.
rocksdb::IOStatus ErrnoStatus(std::string_view what, const std::string& path, int err);

// How far a log has been written, and when it passed each of its last
// kMarks mebibytes: shared by the log and the file system, which paces the
// next spare by how fast the log was written lately (a log's whole life may
// hold an idle night). One writer at a time; any reader.
class LogProgress {
 public:
  using Clock = std::chrono::steady_clock;
  using NowFn = Clock::time_point (*)();
  static constexpr uint64_t kMarkBytes = 1u << 20;
  static constexpr uint64_t kMarks = 8;

  // A log made now; `now` tells the time (tests give their own).
  explicit LogProgress(NowFn now = &Clock::now) : now_(now), made_(now()) {}

  uint64_t bytes() const { return bytes_.load(std::memory_order_acquire); }
  // The log is `bytes` long. Reads the clock only when a mark is passed, so
  // an append costs no clock read.
  void Wrote(uint64_t bytes);
  // Bytes a second over the last kMarks MiB written, up to now; over the
  // log's life while it is shorter than 2 MiB.
  double Rate() const;

 private:
  const NowFn now_;
  const Clock::time_point made_;
  std::atomic<uint64_t> bytes_{0};
  std::array<std::atomic<int64_t>, kMarks> marks_{};
};

struct PrefilledLogOptions {
  // The largest spare.
  uint64_t spare_bytes_max = 64u << 20;
  // The spare a growing log asks for, before any log was seen to fill: about
  // the size the database's logs reach. Capped by spare_bytes_max.
  uint64_t first_spare_bytes = 64u << 20;
  // A log made from a spare keeps its zeros when closed, and frees their
  // blocks only when it is deleted. Freeing blocks can hold the disk (a file
  // system mounted with `discard` trims them on the spot), so a database
  // whose file deletions are paced (RocksDbOptions::delete_bytes_per_sec)
  // frees them at that pace, not when a log closes while others sync.
  // Recovery reads a closed log's zeros as it reads a crashed log's.
  bool keep_zeros_at_close = false;
  // Told why a spare could not be made (the logs then grow), from the spare's
  // thread. May be empty.
  std::function<void(const std::string&)> warn;
};

// What a prefilled-log file system has done (node stats, tests, benchmarks).
struct PrefilledLogStats {
  uint64_t prefilled_logs = 0;  // logs made from a spare
  uint64_t grown_logs = 0;      // logs made with no spare ready
  uint64_t spares_made = 0;
  uint64_t spare_failures = 0;  // spares that could not be written
  std::string last_error;       // why the last of them could not
};

class PrefilledLogFileSystem : public rocksdb::FileSystemWrapper {
 public:
  // Logs made in `dir` (the database directory) get spares as `options`
  // say. What an earlier run left there, a spare or a half-made one, is
  // removed when the first log is made (by then RocksDB holds the directory):
  // a crash may have undone the rename that made a spare a log after records
  // went into it, so a spare found at a start may not be all zeros.
  static std::shared_ptr<PrefilledLogFileSystem> Make(std::shared_ptr<rocksdb::FileSystem> base,
                                                      std::string dir, PrefilledLogOptions options);
  ~PrefilledLogFileSystem() override;

  const char* Name() const override { return "PrefilledLogFileSystem"; }
  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;

  // Blocks until no spare is being made (tests).
  void WaitForSpare();
  PrefilledLogStats stats() const;

 private:
  struct State;
  class GrownLog;
  PrefilledLogFileSystem(std::shared_ptr<rocksdb::FileSystem> base, std::shared_ptr<State> state);
  // Shared with the growing logs, which ask it for a spare.
  std::shared_ptr<State> state_;
};

}  // namespace dynamo::node
