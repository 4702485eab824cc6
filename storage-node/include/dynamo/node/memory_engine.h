// An Engine in memory, for tests, the simulator and `dynamo-node --engine
// memory`. By default it keeps what a disk would hold after the last sync
// apart from what reads see, so a test can model a power loss
// (DropUnsynced) or a failing fsync (FailSyncs).
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <array>
#include <map>
#include <mutex>

#include "dynamo/node/engine.h"

namespace dynamo::node {

struct MemoryEngineOptions {
  // Keep the synced copy that DropUnsynced returns to. Each sync copies the
  // writes since the last one into it, under the lock reads take. A process
  // whose whole store ends with it (dynamo-node's memory engine) has no use
  // for the copy.
  bool keep_synced_copy = true;
};

class MemoryEngine : public Engine {
 public:
  explicit MemoryEngine(MemoryEngineOptions options = {}) : options_(options) {}

  Result<std::optional<std::string>> Get(Space space, std::string_view key) override;
  Result<std::optional<std::string>> GetCached(Space space, std::string_view key) override {
    return Get(space, key);
  }
  Status Write(const WriteBatch& batch, bool sync) override;
  Status WriteNoStall(const WriteBatch& batch) override { return Write(batch, false); }
  Result<ScanResult> Scan(Space space, const ScanOptions& options) override;
  Status DeletePrefix(Space space, std::string_view prefix, bool sync) override;
  Status Sync() override;
  std::string_view name() const override { return "memory"; }

  // Forgets every write since the last successful sync, as a power loss would.
  // Without keep_synced_copy there is nothing to return to: it keeps them.
  void DropUnsynced();
  // While set, every sync fails with IOError and leaves its writes unsynced.
  // As with a real disk, a failed sync also fails every later write and sync
  // (SyncFailure), for the engine's lifetime.
  void FailSyncs(bool fail);
  // While set, every scan fails with IOError (a disk that cannot be read).
  void FailScans(bool fail);
  // Keys in `space` as reads see them.
  size_t size(Space space) const;

 private:
  using Map = std::map<std::string, std::string, std::less<>>;
  void Apply(std::array<Map, kSpaceCount>& target, const WriteBatch::Op& op);
  Status SyncLocked();

  const MemoryEngineOptions options_;
  mutable std::mutex mu_;
  std::array<Map, kSpaceCount> live_;
  std::array<Map, kSpaceCount> durable_;
  std::vector<WriteBatch::Op> unsynced_;
  bool fail_syncs_ = false;
  bool fail_scans_ = false;
  SyncFailure sync_failure_;
};

}  // namespace dynamo::node
