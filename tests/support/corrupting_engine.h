// An Engine in front of another whose chosen entries fail their checksum
// when a read or scan reaches them, as a bad RocksDB block does. Writes go
// through to the engine behind it.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "dynamo/node/engine.h"

namespace dynamo::test {

class CorruptingEngine : public node::Engine {
 public:
  using IsBad = std::function<bool(node::Space, std::string_view key)>;
  // `inner` must outlive this view.
  CorruptingEngine(node::Engine& inner, IsBad bad) : inner_(inner), bad_(std::move(bad)) {}

  Result<std::optional<std::string>> Get(node::Space space, std::string_view key) override {
    if (bad_(space, key)) return Corrupt();
    return inner_.Get(space, key);
  }
  Result<node::ScanResult> Scan(node::Space space, const node::ScanOptions& options) override {
    Result<node::ScanResult> r = inner_.Scan(space, options);
    if (!r.ok()) return r;
    for (const auto& entry : r->entries) {
      if (bad_(space, entry.first)) return Corrupt();
    }
    return r;
  }
  Status Write(const node::WriteBatch& batch, bool sync) override {
    return inner_.Write(batch, sync);
  }
  Status DeletePrefix(node::Space space, std::string_view prefix, bool sync) override {
    return inner_.DeletePrefix(space, prefix, sync);
  }
  Status Sync() override { return inner_.Sync(); }
  std::string_view name() const override { return inner_.name(); }

 private:
  static Status Corrupt() { return Status::Corruption("block checksum mismatch (simulated)"); }

  node::Engine& inner_;
  IsBad bad_;
};

}  // namespace dynamo::test
