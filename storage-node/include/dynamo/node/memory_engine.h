// An Engine in memory, for tests and the simulator. It keeps what a disk
// would hold after the last sync apart from what reads see, so a test can
// model a power loss (DropUnsynced) or a failing fsync (FailSyncs).
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <array>
#include <map>
#include <mutex>

#include "dynamo/node/engine.h"

namespace dynamo::node {

class MemoryEngine : public Engine {
 public:
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
  void DropUnsynced();
  // While set, every sync fails with IOError and leaves its writes unsynced.
  void FailSyncs(bool fail);
  // Keys in `space` as reads see them.
  size_t size(Space space) const;

 private:
  using Map = std::map<std::string, std::string, std::less<>>;
  void Apply(std::array<Map, kSpaceCount>& target, const WriteBatch::Op& op);
  Status SyncLocked();

  mutable std::mutex mu_;
  std::array<Map, kSpaceCount> live_;
  std::array<Map, kSpaceCount> durable_;
  std::vector<WriteBatch::Op> unsynced_;
  bool fail_syncs_ = false;
};

}  // namespace dynamo::node
