#include "dynamo/node/engine.h"

namespace dynamo::node {

void WriteBatch::Put(Space space, std::string key, std::string value) {
  bytes_ += key.size() + value.size();
  ops_.push_back(Op{space, std::move(key), std::move(value)});
}

void WriteBatch::Delete(Space space, std::string key) {
  bytes_ += key.size();
  ops_.push_back(Op{space, std::move(key), std::nullopt});
}

void WriteBatch::Append(WriteBatch&& other) {
  bytes_ += other.bytes_;
  if (ops_.empty()) {
    ops_ = std::move(other.ops_);
  } else {
    for (Op& op : other.ops_) ops_.push_back(std::move(op));
  }
  other.ops_.clear();
  other.bytes_ = 0;
}

Status SyncFailure::Check() const {
  if (!failed_.load(std::memory_order_acquire)) return Status::OK();
  std::lock_guard lock(mu_);
  return Status::IOError(
      "a sync failed earlier, so no write can be made durable until the "
      "node restarts: " +
      first_.ToString());
}

Status SyncFailure::Keep(Status s) {
  if (s.ok()) return s;
  std::lock_guard lock(mu_);
  if (!failed_.load(std::memory_order_relaxed)) {
    first_ = s;
    failed_.store(true, std::memory_order_release);
  }
  return s;
}

Result<std::optional<std::string>> Engine::GetCached(Space, std::string_view) {
  return Status::Busy("this engine has no non-blocking read");
}

Status Engine::WriteNoStall(const WriteBatch&) {
  return Status::Busy("this engine has no non-blocking write");
}

}  // namespace dynamo::node
