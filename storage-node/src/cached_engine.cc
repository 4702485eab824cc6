#include "dynamo/node/cached_engine.h"

#include <algorithm>

#include "dynamo/placement.h"

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
    Clear();
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

size_t CachedEngine::SlotOf(std::string_view key, uint64_t hash) const {
  return index_.Find(hash, [&](uint32_t pos) { return entries_[pos].key == key; });
}

const std::string* CachedEngine::Lookup(std::string_view key) {
  size_t slot = SlotOf(key, Hash64(key));
  if (slot == HashIndex::kNone) return nullptr;
  Entry& e = entries_[index_.position(slot)];
  e.referenced = true;
  return &e.value;
}

void CachedEngine::Insert(std::string_view key, std::string_view value) {
  const size_t cost = key.size() + value.size() + kEntryOverheadBytes;
  const uint64_t hash = Hash64(key);
  size_t slot = SlotOf(key, hash);
  if (slot != HashIndex::kNone) {
    Entry& e = entries_[index_.position(slot)];
    if (cost > capacity_bytes_ / 8) {
      EraseSlot(slot);
      return;
    }
    bytes_ = bytes_ - e.value.size() + value.size();
    e.value.assign(value);
    e.referenced = true;
  } else {
    // One value may not take over the cache.
    if (cost > capacity_bytes_ / 8) return;
    if (index_.size() == index_.capacity()) {
      HashIndex bigger(std::max<size_t>(16, index_.capacity() * 2));
      for (size_t i = 0; i < entries_.size(); ++i) {
        if (entries_[i].live) bigger.Insert(entries_[i].hash, static_cast<uint32_t>(i));
      }
      index_ = std::move(bigger);
    }
    uint32_t pos;
    if (!free_.empty()) {
      pos = free_.back();
      free_.pop_back();
    } else {
      pos = static_cast<uint32_t>(entries_.size());
      entries_.emplace_back();
    }
    Entry& e = entries_[pos];
    e.key.assign(key);
    e.value.assign(value);
    e.hash = hash;
    e.live = true;
    e.referenced = false;  // a second chance only once used again
    index_.Insert(hash, pos);
    bytes_ += cost;
  }
  Evict();
}

void CachedEngine::Evict() {
  while (bytes_ > capacity_bytes_ && index_.size() > 0) {
    if (hand_ >= entries_.size()) hand_ = 0;
    Entry& e = entries_[hand_];
    if (e.live && e.referenced) {
      e.referenced = false;
    } else if (e.live) {
      const uint32_t victim = static_cast<uint32_t>(hand_);
      EraseSlot(index_.Find(e.hash, [&](uint32_t pos) { return pos == victim; }));
    }
    ++hand_;
  }
}

void CachedEngine::Erase(std::string_view key) {
  size_t slot = SlotOf(key, Hash64(key));
  if (slot != HashIndex::kNone) EraseSlot(slot);
}

void CachedEngine::EraseSlot(size_t slot) {
  const uint32_t pos = index_.position(slot);
  index_.Erase(slot);
  Entry& e = entries_[pos];
  bytes_ -= e.key.size() + e.value.size() + kEntryOverheadBytes;
  e.live = false;
  e.referenced = false;
  e.key.clear();
  std::string().swap(e.value);
  free_.push_back(pos);
}

void CachedEngine::Clear() {
  entries_.clear();
  free_.clear();
  index_ = HashIndex();
  hand_ = 0;
  bytes_ = 0;
}

void CachedEngine::Invalidate(const WriteBatch& batch) {
  std::lock_guard lock(mu_);
  ++generation_;
  for (const WriteBatch::Op& op : batch.ops()) {
    if (op.space == Space::kData) Erase(op.key);
  }
}

}  // namespace dynamo::node
