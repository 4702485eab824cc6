// An Engine in front of another that keeps recently read and written values
// of the data space in memory (evicted by the clock algorithm, an
// approximation of least recently used), so that the
// read half of a read-modify-write (CoordPut, ReplicaPut) and most Gets skip
// the engine's lookup.
//
// The cache always holds what the engine holds. Writes made through
// WriteNoStall update it; Write and DeletePrefix, which may run while
// GetCached runs on another thread, drop the keys they touch before and
// after writing, and a read that raced with one of them does not fill the
// cache. Scans, syncs and other spaces pass through.
//
// Thread-safety: like any Engine, safe from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "dynamo/hash_index.h"
#include "dynamo/node/engine.h"

namespace dynamo::node {

struct CachedEngineStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t entries = 0;
  uint64_t bytes = 0;
};

class CachedEngine : public Engine {
 public:
  // Bytes an entry costs beyond its key and value (the entry and its index
  // slots).
  static constexpr size_t kEntryOverheadBytes = 96;

  // Caches up to `capacity_bytes` of keys and values in front of `inner`,
  // in at most `entries_max` entries (at most HashIndex::kMaxCapacity, what
  // its index holds: a cache of ~110 GiB of small values reaches it).
  CachedEngine(std::unique_ptr<Engine> inner, size_t capacity_bytes,
               size_t entries_max = HashIndex::kMaxCapacity);

  Result<std::optional<std::string>> Get(Space space, std::string_view key) override;
  Result<std::optional<std::string>> GetCached(Space space, std::string_view key) override;
  void PrefetchData(std::span<const std::string_view> keys) override;
  Status Write(const WriteBatch& batch, bool sync) override;
  Status WriteNoStall(const WriteBatch& batch) override;
  Result<ScanResult> Scan(Space space, const ScanOptions& options) override {
    return inner_->Scan(space, options);
  }
  Status DeletePrefix(Space space, std::string_view prefix, bool sync) override;
  Status Sync() override { return inner_->Sync(); }
  bool MaintenanceDue() const override { return inner_->MaintenanceDue(); }
  void Maintain() override { inner_->Maintain(); }
  // The inner engine's counters and the cache's (value_cache_*).
  void AppendCounters(EngineCounters& out) const override;
  std::string_view name() const override { return inner_->name(); }

  CachedEngineStats stats() const;
  Engine& inner() { return *inner_; }

 private:
  struct Entry {
    std::string key;
    std::string value;
    bool referenced = false;  // read or written since the clock hand passed
  };

  // Under mu_.
  const std::string* Lookup(std::string_view key);
  void Insert(std::string_view key, std::string_view value);
  void Erase(std::string_view key);
  void Invalidate(const WriteBatch& batch);
  uint32_t PositionOf(std::string_view key, uint64_t hash) const;
  void EraseAt(uint32_t pos);
  // Evicts until the cache is within its bytes and has room for `adding`
  // more entries.
  void Evict(size_t adding);
  void Clear();

  std::unique_ptr<Engine> inner_;
  const size_t capacity_bytes_;
  const size_t entries_max_;
  mutable std::mutex mu_;
  // Entries are evicted by the clock algorithm (second chance): the hand
  // sweeps the table's positions, clearing `referenced`, and evicts the
  // first entry it finds unreferenced.
  HashedTable<Entry> entries_;
  size_t hand_ = 0;
  size_t bytes_ = 0;
  // Bumped by every Write and DeletePrefix; a read that saw it change while
  // it asked the engine does not fill the cache.
  uint64_t generation_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace dynamo::node
