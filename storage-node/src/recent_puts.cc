#include "dynamo/node/recent_puts.h"

#include "dynamo/check.h"
#include "dynamo/placement.h"

namespace dynamo::node {

RecentPuts::RecentPuts(size_t capacity) : index_(capacity) {
  DYNAMO_CHECK(capacity > 0);
  ring_.resize(capacity);
}

uint64_t RecentPuts::IndexHash(uint64_t key_hash, uint64_t op_id) {
  return Mix64(key_hash ^ Mix64(op_id));
}

size_t RecentPuts::SlotOf(uint64_t key_hash, uint64_t op_id) const {
  return index_.Find(IndexHash(key_hash, op_id), [&](uint32_t pos) {
    const Write& w = ring_[pos];
    return w.key_hash == key_hash && w.op_id == op_id;
  });
}

std::optional<Dot> RecentPuts::Find(std::string_view key, uint64_t op_id) const {
  size_t s = SlotOf(Hash64(key), op_id);
  if (s == HashIndex::kNone) return std::nullopt;
  return ring_[index_.position(s)].dot;
}

void RecentPuts::Remember(std::string_view key, uint64_t op_id, Dot dot) {
  const uint64_t key_hash = Hash64(key);
  if (SlotOf(key_hash, op_id) != HashIndex::kNone) return;
  if (size_ == ring_.size()) {
    const Write& oldest = ring_[oldest_];
    index_.Erase(SlotOf(oldest.key_hash, oldest.op_id));
    oldest_ = (oldest_ + 1) % ring_.size();
    --size_;
  }
  const size_t pos = (oldest_ + size_) % ring_.size();
  ring_[pos] = Write{key_hash, op_id, dot};
  index_.Insert(IndexHash(key_hash, op_id), static_cast<uint32_t>(pos));
  ++size_;
}

}  // namespace dynamo::node
