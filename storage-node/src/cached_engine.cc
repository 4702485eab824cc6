#include "dynamo/node/cached_engine.h"

namespace dynamo::node {

CachedEngine::CachedEngine(std::unique_ptr<Engine> inner, size_t capacity_bytes)
    : inner_(std::move(inner)), capacity_bytes_(capacity_bytes) {}

Result<std::optional<std::string>> CachedEngine::Get(Space space, std::string_view key) {
  if (space == Space::kData) {
    std::lock_guard lock(mu_);
    if (const std::string* v = Lookup(key)) return std::optional<std::string>(*v);
  }
  return inner_->Get(space, key);
}

Result<std::optional<std::string>> CachedEngine::GetCached(Space space, std::string_view key) {
  if (space != Space::kData) return inner_->GetCached(space, key);
  uint64_t generation = 0;
  {
    std::lock_guard lock(mu_);
    if (const std::string* v = Lookup(key)) {
      ++hits_;
      return std::optional<std::string>(*v);
    }
    ++misses_;
    generation = generation_;
  }
  Result<std::optional<std::string>> r = inner_->GetCached(space, key);
  if (r.ok() && r->has_value()) {
    std::lock_guard lock(mu_);
    if (generation == generation_) Insert(key, **r);
  }
  return r;
}

Status CachedEngine::WriteNoStall(const WriteBatch& batch) {
  Status s = inner_->WriteNoStall(batch);
  if (!s.ok()) {
    if (s.code() != StatusCode::kBusy) Invalidate(batch);
    return s;
  }
  std::lock_guard lock(mu_);
  for (const WriteBatch::Op& op : batch.ops()) {
    if (op.space != Space::kData) continue;
    if (op.value) {
      Insert(op.key, *op.value);
    } else {
      Erase(op.key);
    }
  }
  return s;
}

Status CachedEngine::Write(const WriteBatch& batch, bool sync) {
  Invalidate(batch);
  Status s = inner_->Write(batch, sync);
  Invalidate(batch);
  return s;
}

Status CachedEngine::DeletePrefix(Space space, std::string_view prefix, bool sync) {
  auto clear = [this] {
    std::lock_guard lock(mu_);
    ++generation_;
    index_.clear();
    lru_.clear();
    bytes_ = 0;
  };
  if (space == Space::kData) clear();
  Status s = inner_->DeletePrefix(space, prefix, sync);
  if (space == Space::kData) clear();
  return s;
}

CachedEngineStats CachedEngine::stats() const {
  std::lock_guard lock(mu_);
  return CachedEngineStats{hits_, misses_, index_.size(), bytes_};
}

const std::string* CachedEngine::Lookup(std::string_view key) {
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return &it->second->value;
}

void CachedEngine::Insert(std::string_view key, std::string_view value) {
  const size_t cost = key.size() + value.size() + kEntryOverheadBytes;
  auto it = index_.find(key);
  if (it != index_.end()) {
    bytes_ -= it->second->key.size() + it->second->value.size() + kEntryOverheadBytes;
    if (cost > capacity_bytes_ / 8) {
      Lru::iterator entry = it->second;
      index_.erase(it);
      lru_.erase(entry);
      return;
    }
    it->second->value.assign(value);
    lru_.splice(lru_.begin(), lru_, it->second);
  } else {
    // One value may not take over the cache.
    if (cost > capacity_bytes_ / 8) return;
    lru_.push_front(Entry{std::string(key), std::string(value)});
    index_.emplace(lru_.front().key, lru_.begin());
  }
  bytes_ += cost;
  while (bytes_ > capacity_bytes_ && !lru_.empty()) {
    const Entry& last = lru_.back();
    bytes_ -= last.key.size() + last.value.size() + kEntryOverheadBytes;
    index_.erase(last.key);
    lru_.pop_back();
  }
}

void CachedEngine::Erase(std::string_view key) {
  auto it = index_.find(key);
  if (it == index_.end()) return;
  bytes_ -= it->second->key.size() + it->second->value.size() + kEntryOverheadBytes;
  Lru::iterator entry = it->second;
  index_.erase(it);
  lru_.erase(entry);
}

void CachedEngine::Invalidate(const WriteBatch& batch) {
  std::lock_guard lock(mu_);
  ++generation_;
  for (const WriteBatch::Op& op : batch.ops()) {
    if (op.space == Space::kData) Erase(op.key);
  }
}

}  // namespace dynamo::node
