// HashIndex: an open-addressing index of positions in a caller's table:
// linear probing over slots of (32 bits of the entry's hash, position),
// deletion by shifting later entries of a probe run back (no tombstones). A
// probe touches the caller's entry only where the stored hash bits match.
//
// HashedTable<T>: a vector of entries found by hash through a HashIndex that
// grows with it; a position stays the entry's until it is erased, and erased
// positions are reused.
//
// The slots are a ZeroedArray: a large index's pages are touched as it
// fills, not when it is made.
//
// Plain values. Thread-safety: none.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "dynamo/check.h"
#include "dynamo/zeroed_array.h"

namespace dynamo {

class HashIndex {
 public:
  static constexpr size_t kNone = SIZE_MAX;
  static constexpr size_t kMaxCapacity = size_t{1} << 30;

  // Room for `capacity` positions, at a load of at most one half.
  // Precondition: capacity <= kMaxCapacity.
  explicit HashIndex(size_t capacity = 0) {
    DYNAMO_CHECK(capacity <= kMaxCapacity);
    capacity_ = capacity;
    slots_ = ZeroedArray<Slot>(std::bit_ceil(capacity * 2 + 1));
    mask_ = slots_.size() - 1;
  }

  // The slot of a position inserted with `hash` for which match(position)
  // holds; kNone if there is none.
  template <typename Match>
  size_t Find(uint64_t hash, Match&& match) const {
    const auto h = static_cast<uint32_t>(hash);
    for (size_t s = h & mask_;; s = (s + 1) & mask_) {
      const Slot& slot = slots_[s];
      if (slot.empty()) return kNone;
      if (slot.hash == h && match(slot.position())) return s;
    }
  }

  uint32_t position(size_t slot) const { return slots_[slot].position(); }

  // Starts loading the slot a lookup of `hash` reads first. A hint only.
  void Prefetch(uint64_t hash) const {
    __builtin_prefetch(&slots_[static_cast<uint32_t>(hash) & mask_]);
  }
  // The position in the first slot a lookup of `hash` reads when that slot
  // holds the same hash bits (most likely the entry a lookup finds), else
  // kNone. Touches no entry.
  size_t LikelyPosition(uint64_t hash) const {
    const auto h = static_cast<uint32_t>(hash);
    const Slot& slot = slots_[h & mask_];
    return !slot.empty() && slot.hash == h ? slot.position() : kNone;
  }

  // Precondition: size() < capacity() and position < UINT32_MAX.
  void Insert(uint64_t hash, uint32_t position) {
    DYNAMO_CHECK(size_ < capacity_ && position != UINT32_MAX);
    const auto h = static_cast<uint32_t>(hash);
    size_t s = h & mask_;
    while (!slots_[s].empty()) s = (s + 1) & mask_;
    slots_[s] = Slot{h, position + 1};
    ++size_;
  }

  // Frees a slot that Find returned.
  void Erase(size_t slot) {
    DYNAMO_CHECK(slot < slots_.size() && !slots_[slot].empty());
    size_t hole = slot;
    slots_[hole] = Slot{};
    for (size_t j = (hole + 1) & mask_; !slots_[j].empty(); j = (j + 1) & mask_) {
      const size_t home = slots_[j].hash & mask_;
      // The entry at j may fill the hole unless its home lies cyclically in
      // (hole, j]: probing from there never passes the hole.
      const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (stays) continue;
      slots_[hole] = slots_[j];
      slots_[j] = Slot{};
      hole = j;
    }
    --size_;
  }

  void Clear() {
    slots_.Clear();
    size_ = 0;
  }

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  // Memory held by the slots.
  size_t bytes() const { return slots_.size() * sizeof(Slot); }

 private:
  // All zero bits is an empty slot.
  struct Slot {
    uint32_t hash = 0;
    uint32_t position_plus_one = 0;
    bool empty() const { return position_plus_one == 0; }
    uint32_t position() const { return position_plus_one - 1; }
  };

  ZeroedArray<Slot> slots_;
  size_t mask_ = 0;
  size_t capacity_ = 0;
  size_t size_ = 0;
};

template <typename T>
class HashedTable {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  // The position of a live entry added with `hash` for which match(entry)
  // holds; kNone if there is none.
  template <typename Match>
  uint32_t Find(uint64_t hash, Match&& match) const {
    size_t slot = index_.Find(hash, [&](uint32_t pos) { return match(items_[pos].value); });
    return slot == HashIndex::kNone ? kNone : index_.position(slot);
  }

  // Prefetching for a batch of lookups, in two passes: PrefetchSlot for every
  // hash, then PrefetchEntry for every hash, which reads the (by then loaded)
  // slot and returns the entry it starts loading, or nullptr. Hints only.
  void PrefetchSlot(uint64_t hash) const { index_.Prefetch(hash); }
  const T* PrefetchEntry(uint64_t hash) const {
    const size_t pos = index_.LikelyPosition(hash);
    if (pos == HashIndex::kNone) return nullptr;
    __builtin_prefetch(&items_[pos]);
    return &items_[pos].value;
  }

  // Adds an entry and returns its position. Precondition: fewer than
  // HashIndex::kMaxCapacity live entries.
  uint32_t Add(uint64_t hash, T value) {
    if (index_.size() == index_.capacity()) {
      HashIndex bigger(
          std::min(HashIndex::kMaxCapacity, std::max<size_t>(16, index_.capacity() * 2)));
      for (size_t pos = 0; pos < items_.size(); ++pos) {
        if (items_[pos].live) bigger.Insert(items_[pos].hash, static_cast<uint32_t>(pos));
      }
      index_ = std::move(bigger);
    }
    uint32_t pos;
    if (!free_.empty()) {
      pos = free_.back();
      free_.pop_back();
    } else {
      pos = static_cast<uint32_t>(items_.size());
      items_.emplace_back();
    }
    items_[pos] = Item{std::move(value), hash, true};
    index_.Insert(hash, pos);
    return pos;
  }

  // Erases the live entry at `pos`, releasing what it holds.
  void Erase(uint32_t pos) {
    DYNAMO_CHECK(pos < items_.size() && items_[pos].live);
    index_.Erase(index_.Find(items_[pos].hash, [pos](uint32_t p) { return p == pos; }));
    items_[pos] = Item{};
    free_.push_back(pos);
  }

  void Clear() {
    items_.clear();
    free_.clear();
    index_ = HashIndex();
  }

  T& at(uint32_t pos) { return items_[pos].value; }
  const T& at(uint32_t pos) const { return items_[pos].value; }
  uint64_t hash(uint32_t pos) const { return items_[pos].hash; }
  bool live(size_t pos) const { return pos < items_.size() && items_[pos].live; }
  // Positions are below end(); for sweeps over live(pos) ones.
  size_t end() const { return items_.size(); }
  size_t size() const { return index_.size(); }

 private:
  struct Item {
    T value{};
    uint64_t hash = 0;
    bool live = false;
  };

  std::vector<Item> items_;
  std::vector<uint32_t> free_;
  HashIndex index_;
};

}  // namespace dynamo
