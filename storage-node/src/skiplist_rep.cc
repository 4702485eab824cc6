#include "skiplist_rep.h"

#include <rocksdb/env.h>
#include <rocksdb/slice.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dynamo/check.h"
#include "dynamo/hash_index.h"
#include "dynamo/placement.h"
#include "dynamo/zeroed_array.h"

namespace rocksdb {
// RocksDB's memory/allocator.h, which Debian does not install: the base of
// the Arena that GetIterator is handed, unchanged since RocksDB 4.
class Allocator {
 public:
  virtual ~Allocator() {}
  virtual char* Allocate(size_t bytes) = 0;
  virtual char* AllocateAligned(size_t bytes, size_t huge_page_size = 0,
                                Logger* logger = nullptr) = 0;
  virtual size_t BlockSize() const = 0;
};
}  // namespace rocksdb

namespace dynamo::node {
namespace {

// The keys of this thread's ScopedInsertHint, until an insert used them.
thread_local std::span<const std::string_view> tls_insert_hint;

constexpr int kMaxHeight = 12;
constexpr uint32_t kBranching = 4;  // a node reaches level i+1 with chance 1/4
// A scan prefetches a node's first lines: its lowest link, then its entry
// (the key and, for small values, the value).
constexpr size_t kCacheLine = 64;
constexpr size_t kScanPrefetchLines = 3;
// An insert hint's keys are prefetched this many at a time.
constexpr size_t kChunk = 16;

// Entries are what RocksDB's MemTable::Add writes: varint32 length of the
// internal key, the internal key (user key, then an 8-byte little-endian tag
// of sequence << 8 | type), then the value.
const char* DecodeVarint32(const char* p, uint32_t* v) {
  uint32_t result = 0;
  for (int shift = 0; shift <= 28; shift += 7) {
    uint32_t byte = static_cast<unsigned char>(*p++);
    result |= (byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) break;
  }
  *v = result;
  return p;
}

char* EncodeVarint32(char* p, uint32_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

uint64_t DecodeFixed64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);  // little-endian hosts only, as RocksDB's format
  return v;
}

// An internal key taken apart once, so a search decodes its own key once.
struct Decoded {
  const char* user;
  size_t user_len;
  uint64_t tag;
};

Decoded Decode(const char* entry) {
  uint32_t len = 0;
  const char* p = DecodeVarint32(entry, &len);
  return Decoded{p, len - 8, DecodeFixed64(p + len - 8)};
}

// Bytewise order of the user keys alone.
int CompareUserKeys(const Decoded& a, const Decoded& b) {
  size_t n = a.user_len < b.user_len ? a.user_len : b.user_len;
  int r = n == 0 ? 0 : std::memcmp(a.user, b.user, n);
  if (r != 0) return r;
  if (a.user_len != b.user_len) return a.user_len < b.user_len ? -1 : 1;
  return 0;
}

bool UserKeyLess(const Decoded& a, const Decoded& b) { return CompareUserKeys(a, b) < 0; }

// RocksDB's internal key order over bytewise user keys: user key ascending,
// then tag (sequence number) descending.
int Compare(const Decoded& a, const Decoded& b) {
  if (int r = CompareUserKeys(a, b); r != 0) return r;
  if (a.tag != b.tag) return a.tag > b.tag ? -1 : 1;
  return 0;
}

// next_[0] is the node's lowest link; links of higher levels sit below it in
// memory, and the entry follows it. Until the node is linked, next_[0] holds
// its height.
struct Node {
  std::atomic<Node*> next_[1];

  std::atomic<Node*>* Link(int level) { return &next_[0] - level; }
  Node* Next(int level) { return Link(level)->load(std::memory_order_acquire); }
  void SetNext(int level, Node* x) { Link(level)->store(x, std::memory_order_release); }
  Node* RelaxedNext(int level) { return Link(level)->load(std::memory_order_relaxed); }
  void RelaxedSetNext(int level, Node* x) { Link(level)->store(x, std::memory_order_relaxed); }
  const char* Entry() const { return reinterpret_cast<const char*>(&next_[1]); }
};

// A skip list: its head (a node of kMaxHeight links and no entry) and the
// height of its tallest node.
struct List {
  Node* head;
  std::atomic<int> max_height{1};
};

// A key index entry: a user key's 64-bit hash and the node before the key's
// newest entry (nullptr: the list's head).
struct Pred {
  uint64_t hash;
  Node* node;
};

// The tables a memtable keeps beside its arena: the bucket table (until the
// memtable goes) and the writer's key index (until it becomes read-only),
// megabytes for a data memtable. A memtable's are handed on to a later one of
// the same factory, cleared, so their pages stay mapped: a page the kernel
// maps on first touch costs several microseconds here (14 on the VM of
// docs/performance.md item 33), and a data memtable's tables are about 1,100
// pages, which made each memtable switch hold the switching thread (the
// node's storage thread, which the log syncs wait for) for 6-9 ms, or the
// writes after it if they came from calloc. Thread-safe.
class TablePool {
 public:
  struct Index {
    HashIndex index;
    std::vector<Pred> preds;
  };

  TablePool(uint32_t buckets, size_t indexed_keys)
      : buckets_(buckets), indexed_keys_(indexed_keys) {}

  // Cleared tables: handed-back ones while there are any, else new ones.
  ZeroedArray<List*> TakeLists() {
    return Take(lists_, [this] { return ZeroedArray<List*>(buckets_); });
  }
  Index TakeIndex() {
    return Take(indexes_, [this] {
      Index made{HashIndex(indexed_keys_), {}};
      made.preds.reserve(indexed_keys_);
      return made;
    });
  }
  // Clears them and keeps them for the next taker (up to kKeptMax of each).
  void Give(ZeroedArray<List*> lists) {
    lists.Clear();
    Keep(lists_, std::move(lists));
  }
  void Give(Index index) {
    index.index.Clear();
    index.preds.clear();
    Keep(indexes_, std::move(index));
  }

 private:
  // Two memtables of a column family live at once when one is flushing; the
  // next is made before the current one is marked read-only.
  static constexpr size_t kKeptMax = 2;

  template <typename T, typename Make>
  T Take(std::vector<T>& kept, Make make) {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!kept.empty()) {
        T t = std::move(kept.back());
        kept.pop_back();
        return t;
      }
    }
    return make();
  }
  template <typename T>
  void Keep(std::vector<T>& kept, T t) {
    std::lock_guard<std::mutex> g(mu_);
    if (kept.size() < kKeptMax) kept.push_back(std::move(t));
  }

  const uint32_t buckets_;
  const size_t indexed_keys_;
  std::mutex mu_;  // guards what follows
  std::vector<ZeroedArray<List*>> lists_;
  std::vector<Index> indexes_;
};

// The entries, spread over `buckets` skip lists by the first four bytes of
// the user key (big-endian, zero-padded, capped at buckets - 1). That bucket
// never decreases as keys increase, so walking the lists in bucket order
// walks the entries in order; a search only descends the list of its own
// bucket, which is what makes it shorter (the node's data keys start with
// their partition, so each list holds one partition). One bucket is a plain
// skip list.
class SkipListRep final : public rocksdb::MemTableRep {
 public:
  // The tables come from `pool` and go back to it.
  SkipListRep(rocksdb::Allocator* allocator, uint64_t seed, uint32_t buckets,
              std::shared_ptr<TablePool> pool)
      : MemTableRep(allocator),
        rng_(seed),
        buckets_(buckets),
        pool_(std::move(pool)),
        lists_(pool_->TakeLists()) {
    TablePool::Index taken = pool_->TakeIndex();
    index_ = std::move(taken.index);
    preds_ = std::move(taken.preds);
    index_bytes_.store(IndexBytes(), std::memory_order_relaxed);
  }
  ~SkipListRep() override {
    pool_->Give(std::move(lists_));
    GiveIndex();
  }

  rocksdb::KeyHandle Allocate(const size_t len, char** buf) override {
    int height = RandomHeight();
    Node* x = NewNode(height, len, buf);
    x->RelaxedSetNext(0, reinterpret_cast<Node*>(static_cast<intptr_t>(height)));
    return x;
  }

  void Insert(rocksdb::KeyHandle handle) override { InsertKey(handle); }

  bool InsertKey(rocksdb::KeyHandle handle) override {
    Node* x = static_cast<Node*>(handle);
    int height = static_cast<int>(reinterpret_cast<intptr_t>(x->RelaxedNext(0)));
    Decoded key = Decode(x->Entry());
    List& list = WritableList(BucketOf(key));
    const bool indexed = index_.capacity() > 0;
    if (indexed && !tls_insert_hint.empty()) PrefetchInserts(std::exchange(tls_insert_hint, {}));
    const uint64_t hash = indexed ? HashOf(key) : 0;
    Pred* pred = indexed ? FindPred(hash) : nullptr;
    if (pred != nullptr) {
      if (std::optional<bool> done = InsertAfter(list, pred->node, x, key)) return *done;
    }
    Node* prev[kMaxHeight];
    Node* next = FindGreaterOrEqual(list, key, prev);
    if (next != nullptr && Compare(key, Decode(next->Entry())) == 0) return false;
    int max_height = list.max_height.load(std::memory_order_relaxed);
    if (height > max_height) {
      for (int i = max_height; i < height; ++i) prev[i] = list.head;
      // Readers that see the new height before the links find nullptr at
      // those levels from the head, and drop a level.
      list.max_height.store(height, std::memory_order_relaxed);
    }
    for (int i = 0; i < height; ++i) {
      x->RelaxedSetNext(i, prev[i]->RelaxedNext(i));
      prev[i]->SetNext(i, x);
    }
    if (indexed) NoteLinked(list, x, key, hash, pred, prev[0], next);
    return true;
  }

  bool Contains(const char* entry) const override {
    Decoded key = Decode(entry);
    const List* list = ListAt(BucketOf(key));
    if (list == nullptr) return false;
    Node* x = FindGreaterOrEqual(*list, key, nullptr);
    return x != nullptr && Compare(key, Decode(x->Entry())) == 0;
  }

  void Get(const rocksdb::LookupKey& k, void* callback_args,
           bool (*callback_func)(void* arg, const char* entry)) override {
    uint32_t bucket = 0;
    for (Node* x = LowerBound(Decode(MemtableKeyOf(k)), &bucket);
         x != nullptr && callback_func(callback_args, x->Entry()); x = After(x, &bucket)) {
    }
  }

  // No inserts follow: the key index goes.
  void MarkReadOnly() override {
    GiveIndex();
    index_bytes_.store(0, std::memory_order_relaxed);
  }

  // The arena holds the nodes; the bucket table and the key index are the
  // rep's own.
  size_t ApproximateMemoryUsage() override {
    return sizeof(List*) * buckets_ + index_bytes_.load(std::memory_order_relaxed);
  }

  class Iter final : public rocksdb::MemTableRep::Iterator {
   public:
    explicit Iter(const SkipListRep* rep) : rep_(rep) {}
    bool Valid() const override { return node_ != nullptr; }
    const char* key() const override { return node_->Entry(); }
    void Next() override { Land(rep_->After(node_, &bucket_)); }
    void Prev() override { node_ = rep_->Before(Decode(node_->Entry()), &bucket_); }
    void Seek(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      Land(rep_->LowerBound(Target(internal_key, memtable_key), &bucket_));
    }
    void SeekForPrev(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      Decoded target = Target(internal_key, memtable_key);
      node_ = rep_->LowerBound(target, &bucket_);
      if (node_ == nullptr || Compare(Decode(node_->Entry()), target) != 0) {
        node_ = rep_->Before(target, &bucket_);
      }
    }
    void SeekToFirst() override { Land(rep_->FirstFrom(0, &bucket_)); }
    void SeekToLast() override { node_ = rep_->LastUpTo(rep_->buckets_ - 1, &bucket_); }

   private:
    // Moves to x and starts loading the node two steps on, for a scan (a
    // flush): nodes lie in insertion order, not key order, so each step
    // would otherwise wait for a cache miss. The next node was started one
    // step ago; two ahead measured faster than one.
    void Land(Node* x) {
      node_ = x;
      if (x == nullptr) return;
      Node* ahead = x->Next(0);
      if (ahead != nullptr) ahead = ahead->Next(0);
      if (ahead == nullptr) return;
      const char* p = reinterpret_cast<const char*>(ahead);
      for (size_t i = 0; i < kScanPrefetchLines; ++i) __builtin_prefetch(p + i * kCacheLine);
    }

    Decoded Target(const rocksdb::Slice& internal_key, const char* memtable_key) {
      if (memtable_key != nullptr) return Decode(memtable_key);
      return Decoded{internal_key.data(), internal_key.size() - 8,
                     DecodeFixed64(internal_key.data() + internal_key.size() - 8)};
    }

    const SkipListRep* rep_;
    Node* node_ = nullptr;
    uint32_t bucket_ = 0;  // node_'s
  };

  // With an arena, the caller only runs the iterator's destructor and frees
  // the arena later. RocksDB's Arena derives from Allocator alone.
  Iterator* GetIterator(rocksdb::Arena* arena) override {
    if (arena == nullptr) return new Iter(this);
    char* mem = reinterpret_cast<rocksdb::Allocator*>(arena)->AllocateAligned(sizeof(Iter));
    return new (mem) Iter(this);
  }

 private:
  static void* AlignUp(char* p, size_t align) {
    auto v = reinterpret_cast<uintptr_t>(p);
    return reinterpret_cast<void*>((v + align - 1) & ~(uintptr_t{align} - 1));
  }

  // RocksDB's LookupKey starts with a pointer to its memtable key (varint32
  // length, user key, tag), as it has since LevelDB; it has no public
  // accessor.
  static const char* MemtableKeyOf(const rocksdb::LookupKey& k) {
    const char* start = nullptr;
    std::memcpy(&start, &k, sizeof start);
    return start;
  }

  Node* NewNode(int height, size_t entry_len, char** buf) {
    size_t links = sizeof(std::atomic<Node*>) * static_cast<size_t>(height);
    char* mem = nullptr;
    MemTableRep::Allocate(links + entry_len + alignof(Node), &mem);
    char* base = static_cast<char*>(AlignUp(mem, alignof(Node)));
    Node* x = reinterpret_cast<Node*>(base + links - sizeof(std::atomic<Node*>));
    for (int i = 0; i < height; ++i) new (x->Link(i)) std::atomic<Node*>(nullptr);
    if (buf != nullptr) *buf = const_cast<char*>(x->Entry());
    return x;
  }

  // The writer's shortcut for a user key the list already holds: x goes
  // right after `pred` (the list's head when nullptr), at level 0 only,
  // when it sorts between pred and pred's successor. Returns whether x was
  // inserted (false: an equal entry exists), or nullopt when it does not
  // sort there and must be placed by a search. Linked at level 0 alone, x
  // leaves the upper levels to the entries placed by a search (about one per
  // key in the memtable), which is what a search descends; the links
  // allocated above stay unused.
  static std::optional<bool> InsertAfter(const List& list, Node* pred, Node* x,
                                         const Decoded& key) {
    Node* before = pred != nullptr ? pred : list.head;
    Node* next = before->RelaxedNext(0);
    if (next == nullptr) return std::nullopt;
    if (pred != nullptr && Compare(Decode(pred->Entry()), key) >= 0) return std::nullopt;
    const int order = Compare(key, Decode(next->Entry()));
    if (order == 0) return false;
    if (order > 0) return std::nullopt;
    x->RelaxedSetNext(0, next);
    before->SetNext(0, x);
    return true;
  }

  // ScopedInsertHint's passes, over up to kChunk keys at a time: index
  // slots, then the entries they name, then those entries' nodes, then the
  // nodes after them (what InsertAfter compares against). Keys the index
  // does not name are searched for together (PrefetchSearches).
  void PrefetchInserts(std::span<const std::string_view> keys) {
    uint64_t hashes[kChunk];
    const Pred* preds[kChunk];
    std::string_view unnamed[kChunk];
    for (size_t at = 0; at < keys.size(); at += kChunk) {
      const size_t n = std::min(kChunk, keys.size() - at);
      for (size_t i = 0; i < n; ++i) {
        hashes[i] = Hash64(keys[at + i]);
        index_.Prefetch(hashes[i]);
      }
      for (size_t i = 0; i < n; ++i) {
        const size_t pos = index_.LikelyPosition(hashes[i]);
        preds[i] = pos == HashIndex::kNone ? nullptr : &preds_[pos];
        if (preds[i] != nullptr) __builtin_prefetch(preds[i]);
      }
      size_t searched = 0;
      for (size_t i = 0; i < n; ++i) {
        if (preds[i] == nullptr || preds[i]->hash != hashes[i]) preds[i] = FindPred(hashes[i]);
        if (preds[i] == nullptr) {
          unnamed[searched++] = keys[at + i];
        } else if (preds[i]->node == nullptr) {
          preds[i] = nullptr;
        } else {
          __builtin_prefetch(preds[i]->node);
        }
      }
      for (size_t i = 0; i < n; ++i) {
        if (preds[i] == nullptr) continue;
        if (Node* next = preds[i]->node->RelaxedNext(0)) __builtin_prefetch(next);
      }
      // One search alone has no misses to overlap.
      if (searched > 1) PrefetchSearches(std::span(unnamed, searched));
    }
  }

  // The searches of up to kChunk user keys, each advanced by one node per
  // pass over all of them: a pass loads the nodes the one before it
  // prefetched and prefetches the next, so the searches' cache misses
  // overlap instead of following one another. It compares user keys only
  // and changes nothing; the inserts' own searches then find the nodes
  // loaded. Writer thread only (the lists do not change under it).
  void PrefetchSearches(std::span<const std::string_view> keys) {
    struct Walk {
      Decoded key;
      Node* x;            // the last node known to sort before key
      Node* candidate;    // the node after x at `level`, prefetched
      Node* last_bigger;  // a node known not to sort before key
      int level;
    };
    Walk walks[kChunk];
    size_t n = 0;
    for (std::string_view key : keys) {
      const Decoded decoded{key.data(), key.size(), 0};
      const List* list = ListAt(BucketOf(decoded));
      if (list == nullptr) continue;
      Node* head = list->head;
      const int level = list->max_height.load(std::memory_order_relaxed) - 1;
      __builtin_prefetch(head->Link(level));
      walks[n++] = Walk{decoded, head, nullptr, nullptr, level};
    }
    while (n > 0) {
      for (size_t i = 0; i < n;) {
        if (Step(walks[i])) {
          ++i;
        } else {
          walks[i] = walks[--n];
        }
      }
    }
  }

  // One step of a PrefetchSearches walk: decides on the candidate loaded
  // since the last step, then finds and prefetches the next. Returns false
  // when the walk has reached level 0's place for its key.
  template <typename Walk>
  static bool Step(Walk& w) {
    if (w.candidate != nullptr) {
      if (UserKeyLess(Decode(w.candidate->Entry()), w.key)) {
        w.x = w.candidate;
      } else {
        if (w.level == 0) return false;
        w.last_bigger = w.candidate;
        --w.level;
      }
    }
    while (true) {
      Node* next = w.x->RelaxedNext(w.level);
      if (next != nullptr && next != w.last_bigger) {
        w.candidate = next;
        __builtin_prefetch(next->Entry());
        __builtin_prefetch(next->Link(w.level));
        return true;
      }
      if (w.level == 0) return false;
      --w.level;
    }
  }

  static uint64_t HashOf(const Decoded& key) {
    return Hash64(std::string_view(key.user, key.user_len));
  }

  Pred* FindPred(uint64_t hash) {
    size_t slot = index_.Find(hash, [&](uint32_t p) { return preds_[p].hash == hash; });
    return slot == HashIndex::kNone ? nullptr : &preds_[index_.position(slot)];
  }

  // After a search linked x (user key `key`, index entry `pred` if any)
  // between `before` and `after`: when x is now its key's newest entry,
  // `before` is its key's predecessor; and when `after` is another key's
  // newest entry, x is now that key's. The list's head is kept as nullptr,
  // so that a Pred never names another list's head (whose entry is empty).
  void NoteLinked(const List& list, Node* x, const Decoded& key, uint64_t hash, Pred* pred,
                  Node* before, Node* after) {
    if (before == list.head) {
      before = nullptr;
    } else if (!UserKeyLess(Decode(before->Entry()), key)) {
      return;
    }
    if (pred != nullptr) {
      pred->node = before;
    } else if (index_.size() < index_.capacity()) {
      index_.Insert(hash, static_cast<uint32_t>(preds_.size()));
      preds_.push_back(Pred{hash, before});
      index_bytes_.store(IndexBytes(), std::memory_order_relaxed);
    }
    if (after == nullptr) return;
    const Decoded next_key = Decode(after->Entry());
    if (!UserKeyLess(key, next_key)) return;
    if (Pred* next_pred = FindPred(HashOf(next_key))) next_pred->node = x;
  }

  size_t IndexBytes() const { return index_.bytes() + preds_.size() * sizeof(Pred); }

  // Hands the key index back to the pool, once; the memtable keeps none.
  void GiveIndex() {
    if (index_.capacity() == 0) return;
    pool_->Give(TablePool::Index{std::exchange(index_, HashIndex()), std::exchange(preds_, {})});
  }

  int RandomHeight() {
    int height = 1;
    while (height < kMaxHeight && rng_() % kBranching == 0) ++height;
    return height;
  }

  uint32_t BucketOf(const Decoded& key) const {
    if (buckets_ == 1) return 0;
    uint32_t prefix = 0;
    for (size_t i = 0; i < 4; ++i) {
      prefix = (prefix << 8) | (i < key.user_len ? static_cast<unsigned char>(key.user[i]) : 0u);
    }
    return prefix < buckets_ ? prefix : buckets_ - 1;
  }

  // The bucket table's entries are read and written atomically.
  std::atomic_ref<List*> ListSlot(uint32_t bucket) const {
    return std::atomic_ref<List*>(lists_[bucket]);
  }

  const List* ListAt(uint32_t bucket) const {
    return ListSlot(bucket).load(std::memory_order_acquire);
  }

  // The writer's: the bucket's list, made on first use.
  List& WritableList(uint32_t bucket) {
    List* list = ListSlot(bucket).load(std::memory_order_relaxed);
    if (list != nullptr) return *list;
    char* mem = allocator_->AllocateAligned(sizeof(List));
    list = new (mem) List{NewNode(kMaxHeight, 0, nullptr)};
    ListSlot(bucket).store(list, std::memory_order_release);
    if (bucket > top_bucket_.load(std::memory_order_relaxed)) {
      top_bucket_.store(bucket, std::memory_order_release);
    }
    return *list;
  }

  // The first node whose entry is >= key, or nullptr; prev, when given,
  // gets the last node before it at every level.
  static Node* FindGreaterOrEqual(const List& list, const Decoded& key, Node** prev) {
    Node* x = list.head;
    int level = list.max_height.load(std::memory_order_relaxed) - 1;
    Node* last_bigger = nullptr;
    while (true) {
      Node* next = x->Next(level);
      if (next != nullptr && next != last_bigger) __builtin_prefetch(next->Next(level));
      if (next != nullptr && next != last_bigger && Compare(Decode(next->Entry()), key) < 0) {
        x = next;
        continue;
      }
      if (prev != nullptr) prev[level] = x;
      if (level == 0) return next;
      last_bigger = next;
      --level;
    }
  }

  // The last node whose entry is < key, or the head.
  static Node* FindLessThan(const List& list, const Decoded& key) {
    Node* x = list.head;
    int level = list.max_height.load(std::memory_order_relaxed) - 1;
    while (true) {
      Node* next = x->Next(level);
      if (next != nullptr && Compare(Decode(next->Entry()), key) < 0) {
        x = next;
      } else if (level == 0) {
        return x;
      } else {
        --level;
      }
    }
  }

  // The list's last node, or the head.
  static Node* FindLast(const List& list) {
    Node* x = list.head;
    int level = list.max_height.load(std::memory_order_relaxed) - 1;
    while (true) {
      Node* next = x->Next(level);
      if (next != nullptr) {
        x = next;
      } else if (level == 0) {
        return x;
      } else {
        --level;
      }
    }
  }

  // Across buckets; each sets *bucket to the bucket of the node it returns.
  // The first node of the buckets from `from` on, or nullptr.
  Node* FirstFrom(uint32_t from, uint32_t* bucket) const {
    const uint32_t top = top_bucket_.load(std::memory_order_acquire);
    for (uint32_t b = from; b <= top && b < buckets_; ++b) {
      const List* list = ListAt(b);
      Node* x = list != nullptr ? list->head->Next(0) : nullptr;
      if (x != nullptr) {
        *bucket = b;
        return x;
      }
    }
    return nullptr;
  }
  // The last node of the buckets up to `upto`, or nullptr.
  Node* LastUpTo(uint32_t upto, uint32_t* bucket) const {
    const uint32_t top = top_bucket_.load(std::memory_order_acquire);
    for (uint32_t b = upto < top ? upto : top;; --b) {
      const List* list = ListAt(b);
      Node* x = list != nullptr ? FindLast(*list) : nullptr;
      if (x != nullptr && x != list->head) {
        *bucket = b;
        return x;
      }
      if (b == 0) return nullptr;
    }
  }
  // The first node whose entry is >= key, or nullptr.
  Node* LowerBound(const Decoded& key, uint32_t* bucket) const {
    const uint32_t b = BucketOf(key);
    if (const List* list = ListAt(b)) {
      if (Node* x = FindGreaterOrEqual(*list, key, nullptr)) {
        *bucket = b;
        return x;
      }
    }
    return FirstFrom(b + 1, bucket);
  }
  // The node after x (in *bucket), or nullptr.
  Node* After(Node* x, uint32_t* bucket) const {
    Node* next = x->Next(0);
    return next != nullptr ? next : FirstFrom(*bucket + 1, bucket);
  }
  // The last node whose entry is < key, or nullptr.
  Node* Before(const Decoded& key, uint32_t* bucket) const {
    const uint32_t b = BucketOf(key);
    if (const List* list = ListAt(b)) {
      Node* x = FindLessThan(*list, key);
      if (x != list->head) {
        *bucket = b;
        return x;
      }
    }
    return b == 0 ? nullptr : LastUpTo(b - 1, bucket);
  }

  std::minstd_rand rng_;  // the writer's only
  const uint32_t buckets_;
  const std::shared_ptr<TablePool> pool_;
  // Null lists (zero bits) until first used; read and written through
  // ListSlot.
  mutable ZeroedArray<List*> lists_;
  std::atomic<uint32_t> top_bucket_{0};  // no list above it
  // The writer's index of user keys (by their 64-bit hash) to the node just
  // before each key's newest entry, for InsertAfter. A stale entry, or two
  // keys of one hash, only cost a search: InsertAfter checks the order
  // itself. Keys past its capacity are not indexed.
  HashIndex index_;
  std::vector<Pred> preds_;
  std::atomic<size_t> index_bytes_{0};
};

// Encodes a memtable entry with no value, for the order check.
std::string SampleEntry(std::string_view user_key, uint64_t seq) {
  std::string out(5 + user_key.size() + 8, '\0');
  char* p = EncodeVarint32(out.data(), static_cast<uint32_t>(user_key.size() + 8));
  std::memcpy(p, user_key.data(), user_key.size());
  p += user_key.size();
  uint64_t tag = (seq << 8) | 1;
  std::memcpy(p, &tag, sizeof tag);
  out.resize(static_cast<size_t>(p + sizeof tag - out.data()));
  return out;
}

// Whether cmp orders entries as Compare does, on keys where a custom
// comparator would most likely differ (prefixes, bytes above 0x7f, equal
// user keys at different sequence numbers).
bool OrdersAsBytewise(const rocksdb::MemTableRep::KeyComparator& cmp) {
  const std::string samples[] = {
      SampleEntry("", 1),         SampleEntry("a", 5), SampleEntry("a", 9),
      SampleEntry("ab", 2),       SampleEntry("b", 1), SampleEntry("\x80", 3),
      SampleEntry("\x7f\xff", 4), SampleEntry("B", 7), SampleEntry(std::string_view("b\0", 2), 1),
  };
  auto sign = [](int v) { return (v > 0) - (v < 0); };
  for (const std::string& a : samples) {
    for (const std::string& b : samples) {
      if (sign(cmp(a.data(), b.data())) != sign(Compare(Decode(a.data()), Decode(b.data())))) {
        return false;
      }
    }
  }
  return true;
}

constexpr char kNotBytewiseLogLine[] =
    "memtable: the comparator is not bytewise; using RocksDB's skip list";

class Factory final : public rocksdb::MemTableRepFactory {
 public:
  Factory(uint32_t buckets, size_t indexed_keys)
      : buckets_(buckets), pool_(std::make_shared<TablePool>(buckets, indexed_keys)) {}
  const char* Name() const override { return "DynamoBytewiseSkipList"; }

  using MemTableRepFactory::CreateMemTableRep;
  rocksdb::MemTableRep* CreateMemTableRep(const rocksdb::MemTableRep::KeyComparator& cmp,
                                          rocksdb::Allocator* allocator,
                                          const rocksdb::SliceTransform* transform,
                                          rocksdb::Logger* logger) override {
    if (!OrdersAsBytewise(cmp)) {
      rocksdb::Log(rocksdb::InfoLogLevel::WARN_LEVEL, logger, "%s", kNotBytewiseLogLine);
      return rocksdb::SkipListFactory().CreateMemTableRep(cmp, allocator, transform, logger);
    }
    return new SkipListRep(allocator, std::random_device()(), buckets_, pool_);
  }

 private:
  const uint32_t buckets_;
  // Shared by the memtables of every column family the factory serves.
  const std::shared_ptr<TablePool> pool_;
};

}  // namespace

ScopedInsertHint::ScopedInsertHint(std::span<const std::string_view> user_keys) {
  tls_insert_hint = user_keys;
}

ScopedInsertHint::~ScopedInsertHint() { tls_insert_hint = {}; }

std::shared_ptr<rocksdb::MemTableRepFactory> NewBytewiseSkipListFactory(uint32_t prefix_buckets,
                                                                        size_t indexed_keys) {
  DYNAMO_CHECK(prefix_buckets >= 1);
  DYNAMO_CHECK(indexed_keys <= kMaxIndexedKeys);
  return std::make_shared<Factory>(prefix_buckets, indexed_keys);
}

}  // namespace dynamo::node
