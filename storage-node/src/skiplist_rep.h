// A RocksDB memtable representation: a skip list with one writer at a time
// and lock-free readers, ordered by RocksDB's internal key over the bytewise
// user comparator, compiled with the rest of the node.
//
// Why not RocksDB's own: Debian's librocksdb is built with assertions on, and
// its skip list checks the order of the nodes it passes on every step of
// every search (two extra key comparisons per step, each through two virtual
// calls), which made the skip list search the largest single item in a
// node's write profile (docs/performance.md).
#pragma once

#include <rocksdb/memtablerep.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>

namespace dynamo::node {

// The factory for DBOptions/ColumnFamilyOptions::memtable_factory.
// Contract:
// - Needs DBOptions::allow_concurrent_memtable_write = false (RocksDB then
//   inserts from one thread at a time; DB::Open refuses the combination
//   otherwise).
// - A column family whose comparator does not order keys as the bytewise
//   comparator does (checked on sample keys when each memtable is created)
//   gets RocksDB's own skip list instead.
// - With prefix_buckets > 1, each memtable keeps one skip list per value of
//   the user key's first four bytes (big-endian; shorter keys zero-padded;
//   values from prefix_buckets - 1 up share the last list), so a search
//   descends only its own prefix's list. For keys that start with a small
//   u32 (the node's data keys start with their partition). Costs
//   8 * prefix_buckets bytes per memtable.
// - With indexed_keys > 0, the memtable being written keeps an index of up
//   to that many user keys (up to 48 bytes per key, counted in its memory
//   usage, until it becomes read-only). A new version of an indexed key is
//   then linked next to the key's newest entry without a search. Keys past
//   the capacity are placed by a search, as without the index.
// - A memtable's bucket table and key index are handed on, cleared, to a
//   later memtable of the same factory (the factory keeps up to two of
//   each), so making a memtable maps no new pages once the factory has made
//   a few.
inline constexpr size_t kMaxIndexedKeys = size_t{1} << 24;
std::shared_ptr<rocksdb::MemTableRepFactory> NewBytewiseSkipListFactory(uint32_t prefix_buckets = 1,
                                                                        size_t indexed_keys = 0);

// While one lives on a thread, the first insert that thread makes into a
// memtable with a key index (see above) first starts loading what inserting
// `user_keys` will touch: their index entries, the nodes those name and the
// nodes after them, and for keys the index does not name the nodes their
// searches pass; a pass over all keys per step, so that the inserts' cache
// misses overlap. A hint only: keys need not be inserted, and inserts made on
// another thread (RocksDB's write group leader) ignore it. `user_keys` must
// outlive the hint. Not nestable.
class ScopedInsertHint {
 public:
  explicit ScopedInsertHint(std::span<const std::string_view> user_keys);
  ~ScopedInsertHint();
  ScopedInsertHint(const ScopedInsertHint&) = delete;
  ScopedInsertHint& operator=(const ScopedInsertHint&) = delete;
};

}  // namespace dynamo::node
