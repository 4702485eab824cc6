#include "dynamo/node/cached_engine.h"

#include <algorithm>

#include "dynamo/placement.h"

namespace dynamo::node {

CachedEngine::CachedEngine(std::unique_ptr<Engine> inner, size_t capacity_bytes, size_t entries_max)
    : inner_(std::move(inner)),
      capacity_bytes_(capacity_bytes),
      entries_max_(std::clamp<size_t>(entries_max, 1, HashIndex::kMaxCapacity)) {}

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

void CachedEngine::PrefetchData(std::span<const std::string_view> keys) {
  // Three passes over up to kChunk keys: the index slots, then the entries
  // the slots name, then the key and value bytes the entries point to.
  constexpr size_t kChunk = 16;
  uint64_t hashes[kChunk];
  const Entry* entries[kChunk];
  std::lock_guard lock(mu_);
  for (size_t at = 0; at < keys.size(); at += kChunk) {
    const size_t n = std::min(kChunk, keys.size() - at);
    for (size_t i = 0; i < n; ++i) {
      hashes[i] = Hash64(keys[at + i]);
      entries_.PrefetchSlot(hashes[i]);
    }
    for (size_t i = 0; i < n; ++i) entries[i] = entries_.PrefetchEntry(hashes[i]);
    for (size_t i = 0; i < n; ++i) {
      if (entries[i] == nullptr) continue;
      __builtin_prefetch(entries[i]->key.data());
      __builtin_prefetch(entries[i]->value.data());
    }
  }
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
  return CachedEngineStats{hits_, misses_, entries_.size(), bytes_};
}

void CachedEngine::AppendCounters(EngineCounters& out) const {
  inner_->AppendCounters(out);
  const CachedEngineStats s = stats();
  out.insert(out.end(), {{"value_cache_bytes", s.bytes},
                         {"value_cache_entries", s.entries},
                         {"value_cache_hits", s.hits},
                         {"value_cache_misses", s.misses}});
}

uint32_t CachedEngine::PositionOf(std::string_view key, uint64_t hash) const {
  return entries_.Find(hash, [&](const Entry& e) { return e.key == key; });
}

const std::string* CachedEngine::Lookup(std::string_view key) {
  uint32_t pos = PositionOf(key, Hash64(key));
  if (pos == HashedTable<Entry>::kNone) return nullptr;
  Entry& e = entries_.at(pos);
  e.referenced = true;
  return &e.value;
}

void CachedEngine::Insert(std::string_view key, std::string_view value) {
  const size_t cost = key.size() + value.size() + kEntryOverheadBytes;
  const uint64_t hash = Hash64(key);
  uint32_t pos = PositionOf(key, hash);
  if (pos != HashedTable<Entry>::kNone) {
    if (cost > capacity_bytes_ / 8) {
      EraseAt(pos);
      return;
    }
    Entry& e = entries_.at(pos);
    bytes_ = bytes_ - e.value.size() + value.size();
    e.value.assign(value);
    e.referenced = true;
  } else {
    // One value may not take over the cache.
    if (cost > capacity_bytes_ / 8) return;
    Evict(1);
    // A second chance only once used again.
    entries_.Add(hash, Entry{std::string(key), std::string(value), false});
    bytes_ += cost;
  }
  Evict(0);
}

void CachedEngine::Evict(size_t adding) {
  while ((bytes_ > capacity_bytes_ || entries_.size() + adding > entries_max_) &&
         entries_.size() > 0) {
    if (hand_ >= entries_.end()) hand_ = 0;
    const auto pos = static_cast<uint32_t>(hand_++);
    if (!entries_.live(pos)) continue;
    Entry& e = entries_.at(pos);
    if (e.referenced) {
      e.referenced = false;
    } else {
      EraseAt(pos);
    }
  }
}

void CachedEngine::Erase(std::string_view key) {
  uint32_t pos = PositionOf(key, Hash64(key));
  if (pos != HashedTable<Entry>::kNone) EraseAt(pos);
}

void CachedEngine::EraseAt(uint32_t pos) {
  const Entry& e = entries_.at(pos);
  bytes_ -= e.key.size() + e.value.size() + kEntryOverheadBytes;
  entries_.Erase(pos);
}

void CachedEngine::Clear() {
  entries_.Clear();
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
