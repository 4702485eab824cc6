// The storage seam of a node: an ordered key-value store with three spaces.
//
//  - kData: a key's sibling set, keyed [partition u32 big-endian][user key], so
//    one partition is one contiguous range (keys.h builds the keys).
//  - kHints: versions held for another node (sloppy quorum), apart from the
//    node's own data.
//  - kMeta: node metadata (identity, counter lease, membership, ring).
//
// Implementations: RocksDB (durable, default) and memory (tests, simulation;
// it can model a power loss by dropping writes that were never synced).
//
// Thread-safety: implementations must be safe to call from several threads
// at once. The node runs blocking calls on its storage and read threads and
// the non-blocking ones (GetCached, WriteNoStall) on its event loop, so that
// a read answered from memory or an unsynced write costs no thread switch.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dynamo/status.h"

namespace dynamo::node {

enum class Space : uint8_t { kData = 0, kHints = 1, kMeta = 2 };
inline constexpr size_t kSpaceCount = 3;

// A group of puts and deletes applied atomically.
class WriteBatch {
 public:
  struct Op {
    Space space;
    std::string key;
    std::optional<std::string> value;  // nullopt deletes
  };

  void Put(Space space, std::string key, std::string value);
  void Delete(Space space, std::string key);
  // Moves every op of `other` to the end of this batch.
  void Append(WriteBatch&& other);

  const std::vector<Op>& ops() const { return ops_; }
  bool empty() const { return ops_.empty(); }
  // Bytes of keys and values, for accounting.
  size_t bytes() const { return bytes_; }

 private:
  std::vector<Op> ops_;
  size_t bytes_ = 0;
};

struct ScanOptions {
  std::string prefix;           // only keys starting with it
  std::string after;            // only keys greater than it (full key); empty: from the start
  size_t max_entries = 1000;    // at least one entry is returned if any remains
  size_t max_bytes = 4u << 20;  // keys plus values; the entry crossing it is included
  bool fill_cache = true;       // false: a pass over cold data that should not evict hot blocks
};

// Named counters, for the node's stats reply.
using EngineCounters = std::vector<std::pair<std::string, uint64_t>>;

struct ScanResult {
  std::vector<std::pair<std::string, std::string>> entries;  // full keys, ascending
  bool done = false;                                         // nothing after the last entry
};

// The first failed sync of an engine, kept until it is reopened. Linux
// reports a failed write-back once: a later fsync returns 0 although the
// pages it could not write are gone. So once a sync failed, every later
// write and sync fails with it, and nothing written after it is
// acknowledged as durable. Thread-safe.
class SyncFailure {
 public:
  // OK, or an IOError naming the sync that failed.
  Status Check() const;
  // Keeps `s` when it is the first failure. Returns `s`.
  Status Keep(Status s);

 private:
  std::atomic<bool> failed_{false};
  mutable std::mutex mu_;
  Status first_;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // The value at `key`, nullopt if none. Corruption if a stored block fails
  // its checksum.
  virtual Result<std::optional<std::string>> Get(Space space, std::string_view key) = 0;
  // Like Get, but answered from memory only: Busy when the answer would need
  // a disk read. Default: always Busy.
  virtual Result<std::optional<std::string>> GetCached(Space space, std::string_view key);
  // A hint that the data-space `keys` are about to be read: an engine may
  // start loading what those reads will touch, so that the cache misses of
  // several reads overlap. Default: nothing.
  virtual void PrefetchData(std::span<const std::string_view> keys) { (void)keys; }
  // Like Write(batch, false), but Busy instead of waiting when the engine is
  // throttling writes or cannot append beside a log sync starting (the
  // batch is then not applied; a blocking Write takes it). Default: always
  // Busy.
  virtual Status WriteNoStall(const WriteBatch& batch);
  // Applies `batch` atomically. With `sync`, it and every earlier write are
  // durable when this returns OK. IOError on failure; after a failed sync
  // every write and sync fails (SyncFailure).
  virtual Status Write(const WriteBatch& batch, bool sync) = 0;
  // Keys in [prefix, prefix + 0xff...) after `after`, in order, within limits.
  virtual Result<ScanResult> Scan(Space space, const ScanOptions& options) = 0;
  // Deletes every key starting with `prefix`.
  virtual Status DeletePrefix(Space space, std::string_view prefix, bool sync) = 0;
  // Makes every write so far durable.
  virtual Status Sync() = 0;
  // Whether the engine has blocking housekeeping for Maintain, such as
  // switching a memtable (which creates a log file) that WriteNoStall made
  // due. Cheap; any thread. Default: never.
  virtual bool MaintenanceDue() const { return false; }
  // Does that housekeeping. Blocks: never call it on the event loop.
  // Default: nothing.
  virtual void Maintain() {}
  // Appends the engine's own counters to `out`. Any thread. Default: none.
  virtual void AppendCounters(EngineCounters& out) const { (void)out; }
  // "rocksdb" or "memory".
  virtual std::string_view name() const = 0;
};

}  // namespace dynamo::node
