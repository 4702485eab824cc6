// The dots of a node's most recent coordinated writes, by (data key, op id),
// so that a CoordPut the client sent twice is answered, not written twice.
//
// First in, first out: once `capacity` writes are remembered, each new one
// forgets the oldest. A write is held as its op id and a 64-bit hash of its
// key, not a copy of the key, so two writes with one op id are taken for one
// only if their keys' hashes are equal too. Fixed memory, no allocation
// after construction.
//
// Plain value. Thread-safety: none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "dynamo/version.h"

namespace dynamo::node {

class RecentPuts {
 public:
  // Precondition: 0 < capacity <= 2^30.
  explicit RecentPuts(size_t capacity);

  // The dot remembered for (key, op_id), if any.
  std::optional<Dot> Find(std::string_view key, uint64_t op_id) const;
  // Remembers (key, op_id) -> dot, forgetting the oldest write when full. A
  // pair already remembered keeps its first dot.
  void Remember(std::string_view key, uint64_t op_id, Dot dot);

  size_t size() const { return size_; }
  size_t capacity() const { return ring_.size(); }

 private:
  struct Write {
    uint64_t key_hash = 0;
    uint64_t op_id = 0;
    Dot dot;
  };
  static constexpr uint32_t kEmpty = UINT32_MAX;
  static constexpr size_t kNone = SIZE_MAX;

  size_t Home(uint64_t key_hash, uint64_t op_id) const;
  // The index_ slot of the write (key_hash, op_id); kNone if not remembered.
  size_t SlotOf(uint64_t key_hash, uint64_t op_id) const;
  // Frees an index_ slot, moving later entries of its probe run back.
  void EraseSlot(size_t slot);

  std::vector<Write> ring_;
  std::vector<uint32_t> index_;  // open addressing over ring positions; kEmpty = free
  size_t mask_ = 0;
  size_t oldest_ = 0;  // ring position of the oldest write
  size_t size_ = 0;
};

}  // namespace dynamo::node
