// The durable Engine: RocksDB with one column family per space.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "dynamo/node/engine.h"

namespace rocksdb {
class FileSystem;
}

namespace dynamo::node {

// Table files RocksDB keeps open at once (each holds a file descriptor).
inline constexpr int kRocksDbOpenFilesMax = 512;

struct RocksDbOptions {
  // Block cache for reads. Default: 64 MiB.
  size_t block_cache_bytes = 64u << 20;
  // Bloom filter bits per key in every table file (0: none). A point read
  // then looks only into the files whose filter admits its key: for a key
  // that exists about one, for a new key (the read of a first write) none,
  // instead of every level-0 file and a file per level. Default: 10, about
  // 1% false positives for 1.25 bytes per key.
  double bloom_bits_per_key = 10;
  // Memtable size per column family. Default: 32 MiB. Each memtable of the
  // data space is flushed at a size drawn anew within kWriteBufferSpread of
  // it (see StaggeredWriteBufferBytes); the other spaces draw once per open.
  size_t write_buffer_bytes = 32u << 20;
  // Seed of those draws; 0: a random one.
  uint64_t stagger_seed = 0;
  // For tests: a memtable switch the engine makes returns once the flush it
  // starts is done, so no switch is skipped for a flush still running (and
  // left to RocksDB's own limit) however slow the disk is. Default: off.
  bool wait_for_flushes = false;
  // Before the first write after the open and after each memtable switch,
  // the engine keeps a memtable from being empty with a deletion that is not
  // logged, so that RocksDB can recover from a log write that met a full
  // disk (rocksdb_engine.cc, BackgroundErrors). Tests turn it off to reach
  // the case it avoids. Default: on.
  bool mark_memtables = true;
  // Largest spare log file kept written with zeros, so that a log sync need
  // not write the log's inode (storage-node/src/prefilled_log.h); 0: logs
  // grow as they are written. A spare is a quarter larger than the log before
  // it, so the default covers the logs of the default memtables.
  uint64_t prefilled_log_bytes_max = 64u << 20;
  // Pace of file deletions (obsolete logs and table files), in bytes a
  // second; 0: each file is deleted at once. Freeing a file's blocks can hold
  // the disk for milliseconds per megabyte (a file system mounted with
  // `discard` trims them on the spot), and log syncs wait behind it, so a
  // paced deletion renames the file out of RocksDB's way (NNNNNN.log.trash)
  // and shrinks it kDeleteChunkBytes at a time in the background; a log
  // made from a spare then keeps its zeros until deleted. Files left in
  // the trash by a stop are deleted after the next open, paced or not.
  // Default: 64 MiB/s.
  uint64_t delete_bytes_per_sec = 64u << 20;
  // Pace of RocksDB's flush and compaction writes, in bytes a second; 0:
  // unpaced. A flush written out at the disk's speed holds the disk that
  // the log syncs of writes wait for; paced, its megabytes go out over
  // seconds. The pace is lifted while the work falls behind the writes
  // (storage-node/src/background_pace.h), so it never stalls them for long.
  // Default: 16 MiB/s. The node's config takes 0 or at least
  // kBackgroundWriteBytesPerSecMin; smaller paces are for tests.
  uint64_t background_write_bytes_per_sec = 16u << 20;
  // Told of trouble the engine works around, such as a spare log file it
  // could not write (its logs then grow); called from the engine's threads.
  // May be empty.
  std::function<void(const std::string&)> warn;
  // Size at which RocksDB's info log (LOG in the database's directory) is
  // renamed LOG.old.<microseconds> and a new LOG begun. RocksDB keeps
  // kInfoLogFilesKept of these files, the live one among them, and deletes
  // older ones at the open, at the close and at its periodic full scan of
  // the directory (every 6 hours under writes). Default: 16 MiB.
  uint64_t info_log_bytes_max = 16u << 20;
  // For tests: the file system under the engine; null: the OS's.
  std::shared_ptr<rocksdb::FileSystem> file_system;
  // For tests: called by Sync while it keeps inline writes out, just before
  // RocksDB syncs the logs. May be empty.
  std::function<void()> sync_hook_for_tests;
};

// Replicas receive the same writes, so with equal memtables they would all
// flush at the same moment, and a machine hosting several of them would stall
// foreground work for the length of a flush. Memtables are therefore flushed
// at write_buffer_bytes scaled by a factor in
// [1 - kWriteBufferSpread, 1 + kWriteBufferSpread), drawn for each memtable
// of the data space: RocksDB flushes at whole arena-block steps, so two
// nodes whose sizes fell in one step would otherwise flush together for as
// long as they run.
inline constexpr double kWriteBufferSpread = 0.25;
// The small spaces (metadata, hints) take a few writes into every log, and
// RocksDB keeps a log until every space written into it has flushed. So
// every flush takes every space with writes (RocksDB's atomic flush: one
// memtable switch, one new log), and past this total of live logs, in
// multiples of write_buffer_bytes, RocksDB flushes the spaces holding the
// oldest log. Left to RocksDB's own bound (4x all
// memtables), a node would keep about 27 write buffers of logs, 860 MiB by
// default, all of it read again at a restart.
inline constexpr uint64_t kLiveLogWriteBuffers = 4;
// A paced deletion (delete_bytes_per_sec) frees this much of a file at a
// time.
inline constexpr uint64_t kDeleteChunkBytes = 1u << 20;
// Files waiting in a paced deletion's trash beyond this multiple of the
// table files' total size are deleted at once instead (a bound on the disk
// the trash takes while deletions fall behind).
inline constexpr double kDeleteTrashRatioMax = 1.0;
// Least pace of background writes the node's config takes: RocksDB's rate
// limiter cuts each write into a 50th of a second's pace, and at smaller
// paces into pieces of a few hundred bytes (paced or not).
inline constexpr uint64_t kBackgroundWriteBytesPerSecMin = 1u << 20;
// RocksDB's info log files kept (RocksDB's keep_log_file_num): the live LOG
// and the newest old ones, renamed at each open and at info_log_bytes_max.
inline constexpr size_t kInfoLogFilesKept = 5;
// Bytes written to the data space between two looks at its memtable's size.
inline constexpr uint64_t kFlushCheckBytes = 256u << 10;
// The memtable size for `bytes` and a uniform `draw` in [0, 1).
size_t StaggeredWriteBufferBytes(size_t bytes, double draw);

// Opens (creating if needed) the database in `dir`, after finishing or
// discarding a scrub of it that a crash interrupted (scrub.h). IOError if it
// cannot, e.g. because another process holds it.
Result<std::unique_ptr<Engine>> OpenRocksDb(const std::string& dir, const RocksDbOptions& options);

}  // namespace dynamo::node
