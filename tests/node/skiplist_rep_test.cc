// The node's memtable representation, driven through RocksDB itself and
// checked against an ordered model.
#include "skiplist_rep.h"

#include <gtest/gtest.h>
#include <rocksdb/comparator.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace dynamo::node {
namespace {

using Model = std::map<std::string, std::string>;

// The factory's arguments. prefix_buckets: 1 (one skip list) or a few, so
// that the keys below (some with a 4-byte prefix under 24, some short)
// spread over several lists, leave some empty and share the last.
// indexed_keys: none, a few (most keys of a test go past the index's
// capacity), or more than any test writes.
struct RepParams {
  uint32_t prefix_buckets;
  size_t indexed_keys;
};

void PrintTo(const RepParams& p, std::ostream* os) {
  *os << p.prefix_buckets << " lists, " << p.indexed_keys << " indexed keys";
}

class SkipListRepTest : public ::testing::TestWithParam<RepParams> {
 protected:
  void SetUp() override {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '-');
    dir_ = (std::filesystem::temp_directory_path() /
            ("dynamo-skiplist-" + name + "-" + std::to_string(::getpid())))
               .string();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    Close();
    std::filesystem::remove_all(dir_);
  }

  rocksdb::Options Options(size_t write_buffer_bytes) {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.allow_concurrent_memtable_write = false;
    options.memtable_factory =
        NewBytewiseSkipListFactory(GetParam().prefix_buckets, GetParam().indexed_keys);
    options.write_buffer_size = write_buffer_bytes;
    return options;
  }
  void Open(size_t write_buffer_bytes = 64 << 20) {
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(Options(write_buffer_bytes), dir_, &raw);
    ASSERT_TRUE(s.ok()) << s.ToString();
    db_.reset(raw);
  }
  void Close() {
    for (const rocksdb::Snapshot* s : snapshots_) db_->ReleaseSnapshot(s);
    snapshots_.clear();
    db_.reset();
  }

  std::optional<std::string> Get(const std::string& key, const rocksdb::Snapshot* at = nullptr) {
    rocksdb::ReadOptions ro;
    ro.snapshot = at;
    std::string value;
    rocksdb::Status s = db_->Get(ro, key, &value);
    EXPECT_TRUE(s.ok() || s.IsNotFound()) << s.ToString();
    if (!s.ok()) return std::nullopt;
    return value;
  }

  // Every read path RocksDB has over a memtable, against the model.
  void ExpectMatches(const Model& model, const std::vector<std::string>& probes,
                     const rocksdb::Snapshot* at = nullptr) {
    for (const std::string& key : probes) {
      auto it = model.find(key);
      std::optional<std::string> want;
      if (it != model.end()) want = it->second;
      ASSERT_EQ(Get(key, at), want) << "key " << testing::PrintToString(key);
    }
    rocksdb::ReadOptions ro;
    ro.snapshot = at;
    std::unique_ptr<rocksdb::Iterator> iter(db_->NewIterator(ro));
    Model forward;
    for (iter->SeekToFirst(); iter->Valid(); iter->Next()) {
      forward.emplace_hint(forward.end(), iter->key().ToString(), iter->value().ToString());
    }
    ASSERT_TRUE(iter->status().ok());
    ASSERT_EQ(forward, model);
    Model backward;
    for (iter->SeekToLast(); iter->Valid(); iter->Prev()) {
      backward.emplace(iter->key().ToString(), iter->value().ToString());
    }
    ASSERT_EQ(backward, model);
    for (const std::string& probe : probes) {
      iter->Seek(probe);
      auto lower = model.lower_bound(probe);
      ASSERT_EQ(iter->Valid(), lower != model.end()) << testing::PrintToString(probe);
      if (iter->Valid()) ASSERT_EQ(iter->key().ToString(), lower->first);
      iter->SeekForPrev(probe);
      auto upper = model.upper_bound(probe);
      ASSERT_EQ(iter->Valid(), upper != model.begin()) << testing::PrintToString(probe);
      if (iter->Valid()) ASSERT_EQ(iter->key().ToString(), std::prev(upper)->first);
    }
  }

  // Whether a memtable was given RocksDB's skip list instead (the factory
  // says so in RocksDB's LOG).
  bool FellBack() {
    std::ifstream log(dir_ + "/LOG");
    std::string line;
    while (std::getline(log, line)) {
      if (line.find("comparator is not bytewise") != std::string::npos) return true;
    }
    return false;
  }

  std::string dir_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<const rocksdb::Snapshot*> snapshots_;
};

// `rest` after `prefix` as a big-endian u32, as the node's data keys start
// with their partition.
std::string Prefixed(uint32_t prefix, const std::string& rest) {
  std::string key(4, '\0');
  for (int i = 0; i < 4; ++i) key[i] = static_cast<char>(prefix >> (24 - 8 * i));
  return key + rest;
}

// Short keys with bytes where signed and unsigned order differ, prefixes of
// each other, and NULs, so the order check covers what a bytewise comparator
// must get right; half of them after a prefix below 24.
std::string RandomKey(std::mt19937_64& rng) {
  static const char kBytes[] = {'\0', '\x01', 'a', 'b', '\x7f', '\x80', '\xfe', '\xff'};
  std::string key(rng() % 4, '\0');
  for (char& c : key) c = kBytes[rng() % sizeof kBytes];
  return rng() % 2 == 0 ? key : Prefixed(static_cast<uint32_t>(rng() % 24), key);
}

TEST_P(SkipListRepTest, ReadsMatchAnOrderedModelThroughWritesSnapshotsAndReopen) {
  Open();
  std::mt19937_64 rng(7);
  Model model;
  std::vector<std::pair<const rocksdb::Snapshot*, Model>> taken;
  for (int round = 0; round < 40; ++round) {
    rocksdb::WriteBatch batch;
    // Every other batch hints its keys, and some it does not write, as the
    // engine does (ScopedInsertHint); the hint must change nothing.
    std::vector<std::string> hinted;
    for (int i = 0; i < 50; ++i) {
      std::string key = RandomKey(rng);
      hinted.push_back(key);
      if (i % 10 == 0) hinted.push_back(RandomKey(rng));
      if (rng() % 4 == 0) {
        batch.Delete(key);
        model.erase(key);
      } else {
        std::string value = std::to_string(round) + "/" + std::to_string(i);
        batch.Put(key, value);
        model[key] = value;
      }
    }
    std::vector<std::string_view> views(hinted.begin(), hinted.end());
    std::optional<ScopedInsertHint> hint;
    if (round % 2 == 0) hint.emplace(views);
    ASSERT_TRUE(db_->Write(rocksdb::WriteOptions(), &batch).ok());
    if (round % 10 == 0) {
      taken.emplace_back(db_->GetSnapshot(), model);
      snapshots_.push_back(taken.back().first);
    }
  }
  std::vector<std::string> probes;
  for (int i = 0; i < 300; ++i) probes.push_back(RandomKey(rng));
  ASSERT_FALSE(FellBack());
  ExpectMatches(model, probes);
  for (const auto& [snapshot, then] : taken) ExpectMatches(then, probes, snapshot);

  // The log is replayed into a fresh memtable of the same kind.
  Close();
  Open();
  ExpectMatches(model, probes);
  // And read back from the table a flush wrote from it.
  ASSERT_TRUE(db_->Flush(rocksdb::FlushOptions()).ok());
  ExpectMatches(model, probes);
}

// New versions of keys already held, while other keys land next to them:
// before the first, between two, after the last, at the head of a list.
// Every snapshot must still read what it read when taken.
TEST_P(SkipListRepTest, EverySnapshotKeepsItsVersionsAsKeysLandAroundThem) {
  Open();
  const std::vector<std::string> writes = {Prefixed(3, "m"),
                                           Prefixed(3, "m"),
                                           Prefixed(3, "c"),
                                           Prefixed(3, "m"),
                                           Prefixed(3, "g"),
                                           Prefixed(3, "m"),
                                           Prefixed(3, "c"),
                                           Prefixed(3, "a"),
                                           Prefixed(3, "c"),
                                           Prefixed(3, "z"),
                                           Prefixed(3, "m"),
                                           Prefixed(3, "z"),
                                           Prefixed(2, "m"),
                                           Prefixed(3, "a"),
                                           Prefixed(4, "a"),
                                           Prefixed(3, "z"),
                                           "m",
                                           "m",
                                           "",
                                           "m"};
  Model model;
  std::vector<std::pair<const rocksdb::Snapshot*, Model>> taken;
  for (size_t i = 0; i < writes.size(); ++i) {
    const std::string value = "v" + std::to_string(i);
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), writes[i], value).ok());
    model[writes[i]] = value;
    taken.emplace_back(db_->GetSnapshot(), model);
    snapshots_.push_back(taken.back().first);
  }
  std::vector<std::string> probes = writes;
  probes.push_back(Prefixed(3, ""));
  probes.push_back(Prefixed(3, "n"));
  ExpectMatches(model, probes);
  for (const auto& [snapshot, then] : taken) ExpectMatches(then, probes, snapshot);
}

TEST_P(SkipListRepTest, FlushesWhileWritingKeepEveryKey) {
  Open(256 << 10);  // many memtables, flushed while the next one fills
  Model model;
  std::mt19937_64 rng(11);
  std::vector<std::string> probes;
  for (int i = 0; i < 20000; ++i) {
    const uint64_t n = rng() % 5000;
    std::string key = Prefixed(static_cast<uint32_t>(n % 20), "k" + std::to_string(n));
    std::string value(100, static_cast<char>('a' + i % 26));
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key, value).ok());
    model[key] = value;
    if (i % 50 == 0) probes.push_back(key);
  }
  probes.push_back("k");
  probes.push_back("l");
  probes.push_back(Prefixed(7, ""));      // before a list's first key
  probes.push_back(Prefixed(7, "\xff"));  // after its last: the next list's first
  ExpectMatches(model, probes);
}

// Each memtable after the first few is made from the tables of one that went
// before (handed on cleared, so their pages stay mapped): it must hold only
// its own keys, and its key index must name only its own nodes (a stale one
// would link new entries next to another memtable's freed ones).
TEST_P(SkipListRepTest, MemtablesMadeFromEarlierOnesTablesHoldOnlyTheirOwnKeys) {
  Open();
  rocksdb::FlushOptions wait;
  wait.wait = true;
  for (int round = 0; round < 8; ++round) {
    Model model;
    std::vector<std::string> probes;
    for (int i = 0; i < 400; ++i) {
      // Half the keys recur in every round, half are the round's own.
      const int n = i % 2 == 0 ? i : 1000 * (round + 1) + i;
      std::string key = Prefixed(static_cast<uint32_t>(n % 20), "k" + std::to_string(n));
      std::string value = std::to_string(round) + ":" + std::to_string(i);
      ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key, value).ok());
      ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key, value + "'").ok());  // a second version
      model[key] = value + "'";
      if (i % 10 == 0) probes.push_back(key);
    }
    rocksdb::ReadOptions memtable_only;
    memtable_only.read_tier = rocksdb::kMemtableTier;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(memtable_only));
    Model in_memtable;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      in_memtable.emplace(it->key().ToString(), it->value().ToString());
    }
    ASSERT_TRUE(it->status().ok()) << it->status().ToString();
    it.reset();
    ASSERT_EQ(in_memtable, model) << "round " << round;
    for (const std::string& key : probes) ASSERT_EQ(Get(key), model[key]);
    ASSERT_TRUE(db_->Flush(wait).ok());
  }
}

TEST_P(SkipListRepTest, ReadersRunningBesideTheWriterSeeOnlyWrittenValues) {
  Open();
  constexpr int kKeys = 2000;
  auto key = [](int i) {
    return Prefixed(static_cast<uint32_t>(i % 20), "key" + std::to_string(i));
  };
  for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key(i), "0").ok());
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::atomic<long> reads{0};
  // Each key's value only grows, so a reader must never see it go back.
  auto reader = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<long> seen(kKeys, 0);
    while (!done.load()) {
      int i = static_cast<int>(rng() % kKeys);
      std::string value;
      if (!db_->Get(rocksdb::ReadOptions(), key(i), &value).ok()) {
        ++bad;
        continue;
      }
      long v = std::stol(value);
      if (v < seen[i]) ++bad;
      seen[i] = v;
      ++reads;
      if (rng() % 64 == 0) {
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
        int count = 0;
        for (it->SeekToFirst(); it->Valid(); it->Next()) ++count;
        if (count != kKeys) ++bad;
      }
    }
  };
  std::thread r1(reader, 1), r2(reader, 2);
  // The writes start once the readers are reading, so the two overlap.
  while (reads.load() < 2) std::this_thread::yield();
  std::mt19937_64 rng(3);
  std::vector<long> next(kKeys, 1);
  for (int n = 0; n < 60000; ++n) {
    int i = static_cast<int>(rng() % kKeys);
    ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), key(i), std::to_string(next[i]++)).ok());
  }
  done = true;
  r1.join();
  r2.join();
  EXPECT_EQ(bad.load(), 0);
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ(Get(key(i)), std::to_string(next[i] - 1));
}

TEST_P(SkipListRepTest, AComparatorThatIsNotBytewiseGetsRocksDbsOwnSkipList) {
  rocksdb::Options options = Options(64 << 20);
  options.comparator = rocksdb::ReverseBytewiseComparator();
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, dir_, &raw).ok());
  db_.reset(raw);
  for (const char* k : {"b", "a", "c"}) ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), k, k).ok());
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  std::string order;
  for (it->SeekToFirst(); it->Valid(); it->Next()) order += it->key().ToString();
  EXPECT_EQ(order, "cba");
  EXPECT_TRUE(FellBack());
  EXPECT_EQ(Get("a"), "a");
}

INSTANTIATE_TEST_SUITE_P(Lists, SkipListRepTest,
                         ::testing::Values(RepParams{1, 0}, RepParams{16, 0}, RepParams{16, 15},
                                           RepParams{1, 8191}, RepParams{16, 8191}),
                         [](const ::testing::TestParamInfo<RepParams>& info) {
                           return "x" + std::to_string(info.param.prefix_buckets) + "_index" +
                                  std::to_string(info.param.indexed_keys);
                         });

}  // namespace
}  // namespace dynamo::node
