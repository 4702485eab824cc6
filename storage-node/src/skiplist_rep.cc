#include "skiplist_rep.h"

#include <rocksdb/env.h>
#include <rocksdb/slice.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

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

constexpr int kMaxHeight = 12;
constexpr uint32_t kBranching = 4;  // a node reaches level i+1 with chance 1/4
// A scan prefetches a node's first lines: its lowest link, then its entry
// (the key and, for small values, the value).
constexpr size_t kCacheLine = 64;
constexpr size_t kScanPrefetchLines = 3;

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

// RocksDB's internal key order over bytewise user keys: user key ascending,
// then tag (sequence number) descending.
int Compare(const Decoded& a, const Decoded& b) {
  size_t n = a.user_len < b.user_len ? a.user_len : b.user_len;
  int r = n == 0 ? 0 : std::memcmp(a.user, b.user, n);
  if (r != 0) return r;
  if (a.user_len != b.user_len) return a.user_len < b.user_len ? -1 : 1;
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

class SkipListRep final : public rocksdb::MemTableRep {
 public:
  SkipListRep(rocksdb::Allocator* allocator, uint64_t seed)
      : MemTableRep(allocator), rng_(seed), head_(NewNode(kMaxHeight, 0, nullptr)) {}

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
    Node* prev[kMaxHeight];
    Node* next = FindGreaterOrEqual(key, prev);
    if (next != nullptr && Compare(key, Decode(next->Entry())) == 0) return false;
    int max_height = max_height_.load(std::memory_order_relaxed);
    if (height > max_height) {
      for (int i = max_height; i < height; ++i) prev[i] = head_;
      // Readers that see the new height before the links find nullptr at
      // those levels from head_, and drop a level.
      max_height_.store(height, std::memory_order_relaxed);
    }
    for (int i = 0; i < height; ++i) {
      x->RelaxedSetNext(i, prev[i]->RelaxedNext(i));
      prev[i]->SetNext(i, x);
    }
    return true;
  }

  bool Contains(const char* entry) const override {
    Decoded key = Decode(entry);
    Node* x = FindGreaterOrEqual(key, nullptr);
    return x != nullptr && Compare(key, Decode(x->Entry())) == 0;
  }

  void Get(const rocksdb::LookupKey& k, void* callback_args,
           bool (*callback_func)(void* arg, const char* entry)) override {
    for (Node* x = FindGreaterOrEqual(Decode(MemtableKeyOf(k)), nullptr);
         x != nullptr && callback_func(callback_args, x->Entry()); x = x->Next(0)) {
    }
  }

  size_t ApproximateMemoryUsage() override { return 0; }  // all of it is in the arena

  class Iter final : public rocksdb::MemTableRep::Iterator {
   public:
    explicit Iter(const SkipListRep* list) : list_(list) {}
    bool Valid() const override { return node_ != nullptr; }
    const char* key() const override { return node_->Entry(); }
    void Next() override { Land(node_->Next(0)); }
    void Prev() override {
      node_ = list_->FindLessThan(Decode(node_->Entry()));
      if (node_ == list_->head_) node_ = nullptr;
    }
    void Seek(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      Land(list_->FindGreaterOrEqual(Target(internal_key, memtable_key), nullptr));
    }
    void SeekForPrev(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      Decoded target = Target(internal_key, memtable_key);
      node_ = list_->FindGreaterOrEqual(target, nullptr);
      if (node_ == nullptr) {
        SeekToLast();
      }
      while (node_ != nullptr && Compare(Decode(node_->Entry()), target) > 0) Prev();
    }
    void SeekToFirst() override { Land(list_->head_->Next(0)); }
    void SeekToLast() override {
      node_ = list_->FindLast();
      if (node_ == list_->head_) node_ = nullptr;
    }

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

    const SkipListRep* list_;
    Node* node_ = nullptr;
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

  int RandomHeight() {
    int height = 1;
    while (height < kMaxHeight && rng_() % kBranching == 0) ++height;
    return height;
  }

  // The first node whose entry is >= key, or nullptr; prev, when given,
  // gets the last node before it at every level.
  Node* FindGreaterOrEqual(const Decoded& key, Node** prev) const {
    Node* x = head_;
    int level = max_height_.load(std::memory_order_relaxed) - 1;
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

  // The last node whose entry is < key, or head_.
  Node* FindLessThan(const Decoded& key) const {
    Node* x = head_;
    int level = max_height_.load(std::memory_order_relaxed) - 1;
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

  Node* FindLast() const {
    Node* x = head_;
    int level = max_height_.load(std::memory_order_relaxed) - 1;
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

  std::minstd_rand rng_;  // the writer's only
  Node* const head_;
  std::atomic<int> max_height_{1};
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
    return new SkipListRep(allocator, std::random_device()());
  }
};

}  // namespace

std::shared_ptr<rocksdb::MemTableRepFactory> NewBytewiseSkipListFactory() {
  return std::make_shared<Factory>();
}

}  // namespace dynamo::node
