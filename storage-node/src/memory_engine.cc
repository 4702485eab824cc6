#include "dynamo/node/memory_engine.h"

namespace dynamo::node {

void MemoryEngine::Apply(std::array<Map, kSpaceCount>& target, const WriteBatch::Op& op) {
  Map& m = target[static_cast<size_t>(op.space)];
  if (op.value) {
    m.insert_or_assign(op.key, *op.value);
  } else {
    m.erase(op.key);
  }
}

Result<std::optional<std::string>> MemoryEngine::Get(Space space, std::string_view key) {
  std::lock_guard lock(mu_);
  const Map& m = live_[static_cast<size_t>(space)];
  auto it = m.find(key);
  if (it == m.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Status MemoryEngine::SyncLocked() {
  if (fail_syncs_) return sync_failure_.Keep(Status::IOError("fsync failed (injected)"));
  for (const WriteBatch::Op& op : unsynced_) Apply(durable_, op);
  unsynced_.clear();
  return Status::OK();
}

Status MemoryEngine::Write(const WriteBatch& batch, bool sync) {
  DYNAMO_RETURN_IF_ERROR(sync_failure_.Check());
  std::lock_guard lock(mu_);
  for (const WriteBatch::Op& op : batch.ops()) {
    Apply(live_, op);
    if (options_.keep_synced_copy) unsynced_.push_back(op);
  }
  return sync ? SyncLocked() : Status::OK();
}

Result<ScanResult> MemoryEngine::Scan(Space space, const ScanOptions& options) {
  std::lock_guard lock(mu_);
  if (fail_scans_) return Status::IOError("simulated read error");
  const Map& m = live_[static_cast<size_t>(space)];
  ScanResult out;
  auto it = options.after.empty() ? m.lower_bound(options.prefix) : m.upper_bound(options.after);
  size_t bytes = 0;
  for (; it != m.end(); ++it) {
    if (it->first.compare(0, options.prefix.size(), options.prefix) != 0) {
      if (it->first > options.prefix) break;
      continue;
    }
    if (!out.entries.empty() &&
        (out.entries.size() >= options.max_entries || bytes >= options.max_bytes)) {
      return out;
    }
    bytes += it->first.size() + it->second.size();
    out.entries.emplace_back(it->first, it->second);
  }
  out.done = true;
  return out;
}

Status MemoryEngine::DeletePrefix(Space space, std::string_view prefix, bool sync) {
  DYNAMO_RETURN_IF_ERROR(sync_failure_.Check());
  std::lock_guard lock(mu_);
  Map& m = live_[static_cast<size_t>(space)];
  for (auto it = m.lower_bound(prefix); it != m.end() && it->first.starts_with(prefix);) {
    if (options_.keep_synced_copy) {
      unsynced_.push_back(WriteBatch::Op{space, it->first, std::nullopt});
    }
    it = m.erase(it);
  }
  return sync ? SyncLocked() : Status::OK();
}

Status MemoryEngine::Sync() {
  DYNAMO_RETURN_IF_ERROR(sync_failure_.Check());
  std::lock_guard lock(mu_);
  return SyncLocked();
}

void MemoryEngine::DropUnsynced() {
  std::lock_guard lock(mu_);
  if (!options_.keep_synced_copy) return;
  live_ = durable_;
  unsynced_.clear();
}

void MemoryEngine::FailSyncs(bool fail) {
  std::lock_guard lock(mu_);
  fail_syncs_ = fail;
}

void MemoryEngine::FailScans(bool fail) {
  std::lock_guard lock(mu_);
  fail_scans_ = fail;
}

size_t MemoryEngine::size(Space space) const {
  std::lock_guard lock(mu_);
  return live_[static_cast<size_t>(space)].size();
}

}  // namespace dynamo::node
