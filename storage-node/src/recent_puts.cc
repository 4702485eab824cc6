#include "dynamo/node/recent_puts.h"

#include <bit>

#include "dynamo/check.h"
#include "dynamo/placement.h"

namespace dynamo::node {

RecentPuts::RecentPuts(size_t capacity) {
  DYNAMO_CHECK(capacity > 0 && capacity <= (size_t{1} << 30));
  ring_.resize(capacity);
  index_.assign(std::bit_ceil(capacity * 2), kEmpty);
  mask_ = index_.size() - 1;
}

size_t RecentPuts::Home(uint64_t key_hash, uint64_t op_id) const {
  return static_cast<size_t>(Mix64(key_hash ^ Mix64(op_id))) & mask_;
}

size_t RecentPuts::SlotOf(uint64_t key_hash, uint64_t op_id) const {
  for (size_t s = Home(key_hash, op_id);; s = (s + 1) & mask_) {
    if (index_[s] == kEmpty) return kNone;
    const Write& w = ring_[index_[s]];
    if (w.key_hash == key_hash && w.op_id == op_id) return s;
  }
}

std::optional<Dot> RecentPuts::Find(std::string_view key, uint64_t op_id) const {
  size_t s = SlotOf(Hash64(key), op_id);
  if (s == kNone) return std::nullopt;
  return ring_[index_[s]].dot;
}

void RecentPuts::Remember(std::string_view key, uint64_t op_id, Dot dot) {
  const uint64_t key_hash = Hash64(key);
  if (SlotOf(key_hash, op_id) != kNone) return;
  if (size_ == ring_.size()) {
    const Write& oldest = ring_[oldest_];
    EraseSlot(SlotOf(oldest.key_hash, oldest.op_id));
    oldest_ = (oldest_ + 1) % ring_.size();
    --size_;
  }
  const size_t pos = (oldest_ + size_) % ring_.size();
  ring_[pos] = Write{key_hash, op_id, dot};
  size_t s = Home(key_hash, op_id);
  while (index_[s] != kEmpty) s = (s + 1) & mask_;
  index_[s] = static_cast<uint32_t>(pos);
  ++size_;
}

void RecentPuts::EraseSlot(size_t slot) {
  DYNAMO_CHECK(slot != kNone);
  size_t hole = slot;
  index_[hole] = kEmpty;
  for (size_t j = (hole + 1) & mask_; index_[j] != kEmpty; j = (j + 1) & mask_) {
    const Write& w = ring_[index_[j]];
    const size_t home = Home(w.key_hash, w.op_id);
    // The entry at j may fill the hole unless its home lies cyclically in
    // (hole, j]: probing from there never passes the hole.
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    index_[hole] = index_[j];
    index_[j] = kEmpty;
    hole = j;
  }
}

}  // namespace dynamo::node
