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

#include "dynamo/hash_index.h"
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

  static uint64_t IndexHash(uint64_t key_hash, uint64_t op_id);
  // The index_ slot of the write (key_hash, op_id); HashIndex::kNone if not
  // remembered.
  size_t SlotOf(uint64_t key_hash, uint64_t op_id) const;

  std::vector<Write> ring_;
  HashIndex index_;    // over ring positions
  size_t oldest_ = 0;  // ring position of the oldest write
  size_t size_ = 0;
};

}  // namespace dynamo::node
