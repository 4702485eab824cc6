// One conformance suite for every Engine.
#include "dynamo/node/engine.h"

#include <gtest/gtest.h>
#include <rocksdb/file_system.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "dynamo/cluster_map.h"
#include "dynamo/node/cached_engine.h"
#include "dynamo/node/keys.h"
#include "dynamo/node/memory_engine.h"
#include "dynamo/node/rocksdb_engine.h"
#include "dynamo/node/scrub.h"
#include "dynamo/proto/codec.h"
#include "support/corrupting_engine.h"

namespace dynamo::node {
namespace {

std::string TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("dynamo-engine-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

class EngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "memory") {
      engine_ = std::make_unique<MemoryEngine>();
    } else if (GetParam() == "memory_no_synced_copy") {
      MemoryEngineOptions o;
      o.keep_synced_copy = false;
      engine_ = std::make_unique<MemoryEngine>(o);
    } else {
      dir_ = TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
      Reopen();
    }
  }
  bool cached() const { return GetParam() == "rocksdb_cached"; }
  bool memory() const { return GetParam().starts_with("memory"); }
  void TearDown() override {
    engine_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    engine_.reset();
    auto e = OpenRocksDb(dir_, {});
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(*e);
    // A small cache, so that the tests also evict.
    if (cached()) engine_ = std::make_unique<CachedEngine>(std::move(engine_), 2048);
  }
  std::optional<std::string> Read(Space s, std::string_view k) {
    auto r = engine_->Get(s, k);
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : std::nullopt;
  }

  std::unique_ptr<Engine> engine_;
  std::string dir_;
};

TEST_P(EngineTest, PutGetDelete) {
  EXPECT_EQ(Read(Space::kData, "k"), std::nullopt);
  WriteBatch b;
  b.Put(Space::kData, "k", "v1");
  b.Put(Space::kMeta, "k", "meta");
  ASSERT_TRUE(engine_->Write(b, true).ok());
  EXPECT_EQ(Read(Space::kData, "k"), "v1");
  EXPECT_EQ(Read(Space::kMeta, "k"), "meta");
  EXPECT_EQ(Read(Space::kHints, "k"), std::nullopt);  // spaces are apart
  WriteBatch d;
  d.Delete(Space::kData, "k");
  d.Put(Space::kData, std::string("\0\xff", 2), std::string("\0", 1));
  ASSERT_TRUE(engine_->Write(d, false).ok());
  EXPECT_EQ(Read(Space::kData, "k"), std::nullopt);
  EXPECT_EQ(Read(Space::kData, std::string("\0\xff", 2)), std::string("\0", 1));
  EXPECT_EQ(Read(Space::kMeta, "k"), "meta");
}

TEST_P(EngineTest, BatchesApplyInOrder) {
  WriteBatch b;
  b.Put(Space::kData, "k", "first");
  b.Put(Space::kData, "k", "second");
  b.Delete(Space::kData, "gone");
  ASSERT_TRUE(engine_->Write(b, false).ok());
  EXPECT_EQ(Read(Space::kData, "k"), "second");
  EXPECT_EQ(b.bytes(), 1 + 5 + 1 + 6 + 4u);
}

TEST_P(EngineTest, ScanOnePartitionInKeyOrderWithPaging) {
  WriteBatch b;
  for (PartitionId p : {0u, 1u, 2u, 255u, 256u}) {
    for (int i = 0; i < 50; ++i) b.Put(Space::kData, DataKey(p, "key" + std::to_string(1000 + i)), "v");
  }
  ASSERT_TRUE(engine_->Write(b, false).ok());
  ScanOptions opt;
  opt.prefix = PartitionPrefix(255);
  opt.max_entries = 7;
  std::vector<std::string> seen;
  while (true) {
    auto page = engine_->Scan(Space::kData, opt);
    ASSERT_TRUE(page.ok());
    ASSERT_LE(page->entries.size(), 7u);
    for (auto& [k, v] : page->entries) {
      auto parts = ParseDataKey(k);
      ASSERT_TRUE(parts.ok());
      EXPECT_EQ(parts->partition, 255u);
      seen.emplace_back(parts->key);
    }
    if (page->done) break;
    ASSERT_FALSE(page->entries.empty());
    opt.after = page->entries.back().first;
  }
  ASSERT_EQ(seen.size(), 50u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  // Byte budget: the entry crossing it is included, so progress is guaranteed.
  opt.after.clear();
  opt.max_entries = 100;
  opt.max_bytes = 1;
  auto one = engine_->Scan(Space::kData, opt);
  EXPECT_EQ(one->entries.size(), 1u);
  EXPECT_FALSE(one->done);
}

TEST_P(EngineTest, DeletePrefixDropsOnePartition) {
  WriteBatch b;
  for (PartitionId p = 0; p < 4; ++p) {
    for (int i = 0; i < 10; ++i) b.Put(Space::kData, DataKey(p, "k" + std::to_string(i)), "v");
  }
  b.Put(Space::kHints, HintKey("n2", 1, "k"), "hint");
  ASSERT_TRUE(engine_->Write(b, false).ok());
  ASSERT_TRUE(engine_->DeletePrefix(Space::kData, PartitionPrefix(1), true).ok());
  ScanOptions all;
  all.max_entries = 1000;
  auto rest = engine_->Scan(Space::kData, all);
  EXPECT_EQ(rest->entries.size(), 30u);
  for (auto& [k, v] : rest->entries) EXPECT_NE(ParseDataKey(k)->partition, 1u);
  EXPECT_EQ(Read(Space::kHints, HintKey("n2", 1, "k")), "hint");
}

TEST_P(EngineTest, RandomOperationsMatchAModel) {
  std::mt19937_64 rng(7);
  std::map<std::string, std::string> model;
  for (int round = 0; round < 50; ++round) {
    WriteBatch b;
    for (int i = 0; i < 20; ++i) {
      std::string key = DataKey(rng() % 3, "k" + std::to_string(rng() % 40));
      if (rng() % 4 == 0) {
        b.Delete(Space::kData, key);
        model.erase(key);
      } else {
        std::string v = std::to_string(rng());
        b.Put(Space::kData, key, v);
        model[key] = v;
      }
    }
    ASSERT_TRUE(engine_->Write(b, rng() % 2 == 0).ok());
  }
  ScanOptions all;
  all.max_entries = 10000;
  auto got = engine_->Scan(Space::kData, all);
  ASSERT_TRUE(got.ok());
  std::map<std::string, std::string> stored(got->entries.begin(), got->entries.end());
  EXPECT_EQ(stored, model);
}

TEST_P(EngineTest, SyncedWritesSurviveReopen) {
  if (memory()) GTEST_SKIP() << "memory engine has no reopen";
  WriteBatch b;
  b.Put(Space::kData, DataKey(3, "durable"), "yes");
  b.Put(Space::kMeta, "actor_id", EncodeU64(42));
  ASSERT_TRUE(engine_->Write(b, true).ok());
  Reopen();
  EXPECT_EQ(Read(Space::kData, DataKey(3, "durable")), "yes");
  EXPECT_EQ(*DecodeU64(*Read(Space::kMeta, "actor_id")), 42u);
}

TEST_P(EngineTest, SecondOpenOfTheSameDirectoryFails) {
  if (memory()) GTEST_SKIP();
  auto second = OpenRocksDb(dir_, {});
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kIOError);
}

TEST_P(EngineTest, NonBlockingCallsAgreeWithTheBlockingOnes) {
  std::mt19937_64 rng(11);
  std::map<std::string, std::string> model;
  for (int round = 0; round < 40; ++round) {
    WriteBatch b;
    for (int i = 0; i < 10; ++i) {
      std::string key = DataKey(rng() % 3, "k" + std::to_string(rng() % 30));
      if (rng() % 4 == 0) {
        b.Delete(Space::kData, key);
        model.erase(key);
      } else {
        std::string v(rng() % 200, static_cast<char>('a' + rng() % 26));
        b.Put(Space::kData, key, v);
        model[key] = v;
      }
    }
    Status s = rng() % 2 ? engine_->WriteNoStall(b) : engine_->Write(b, rng() % 2 == 0);
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (int i = 0; i < 30; ++i) {
      std::string key = DataKey(rng() % 3, "k" + std::to_string(rng() % 30));
      auto want = model.find(key);
      Result<std::optional<std::string>> got = engine_->GetCached(Space::kData, key);
      // Busy only means "not in memory"; never a wrong answer.
      if (!got.ok()) {
        EXPECT_EQ(got.status().code(), StatusCode::kBusy);
        continue;
      }
      EXPECT_EQ(*got, want == model.end() ? std::nullopt : std::optional<std::string>(want->second)) << key;
      EXPECT_EQ(Read(Space::kData, key), *got);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineTest,
                         ::testing::Values("memory", "memory_no_synced_copy", "rocksdb",
                                           "rocksdb_cached"),
                         [](const auto& info) { return info.param; });

// Memtable sizes spread over ±25% of the configured size, so replicas that
// receive the same writes flush at different moments.
TEST(RocksDbEngineTest, MemtableSizesAreStaggeredAroundTheConfiguredSize) {
  const size_t base = 32u << 20;
  EXPECT_EQ(StaggeredWriteBufferBytes(base, 0.0), base / 4 * 3);
  EXPECT_EQ(StaggeredWriteBufferBytes(base, 0.5), base);
  EXPECT_LT(StaggeredWriteBufferBytes(base, 0.999), base / 4 * 5);
  EXPECT_EQ(StaggeredWriteBufferBytes(base, 7.0), base / 4 * 5);  // clamped
  EXPECT_LT(StaggeredWriteBufferBytes(base, 0.2), StaggeredWriteBufferBytes(base, 0.3));
}

// The memory each flushed memtable of the data space held, from RocksDB's
// event log in `dir` (each flush_started event follows its space's
// "Flushing memtable" line).
std::vector<uint64_t> FlushedMemtableBytes(const std::string& dir) {
  std::vector<uint64_t> out;
  std::ifstream log(dir + "/LOG");
  const std::regex flushing("\\[([a-z]+)\\] \\[JOB [0-9]+\\] Flushing memtable");
  const std::regex event("\"event\": \"flush_started\".*\"memory_usage\": ([0-9]+)");
  std::smatch m;
  std::string space;
  for (std::string line; std::getline(log, line);) {
    if (std::regex_search(line, m, flushing)) space = m[1];
    if (space == "default" && std::regex_search(line, m, event)) {
      out.push_back(std::stoull(m[1]));
    }
  }
  return out;
}

// Each memtable of the data space gets its own drawn size, so the flushes
// of two replicas that drew close sizes once do not stay in step. Writes
// reach it either blocking or, as on a node's event loop, without stalling
// and with the maintenance they make due done by another call (the node's
// storage thread).
void ExpectFlushesAtDrawnSizes(bool inline_writes) {
  const std::string dir = TempDir("flush-draws");
  RocksDbOptions options;
  options.write_buffer_bytes = 4u << 20;
  options.stagger_seed = 7;
  options.wait_for_flushes = true;  // the sizes must not depend on the disk's speed
  {
    auto engine = OpenRocksDb(dir, options);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    Engine& e = **engine;
    const std::string value(1000, 'v');
    for (int i = 0; i < 50'000; ++i) {
      WriteBatch b;
      b.Put(Space::kData, DataKey(static_cast<uint32_t>(i % 64), "k" + std::to_string(i)), value);
      if (!inline_writes) {
        ASSERT_TRUE(e.Write(b, false).ok());
        continue;
      }
      Status s = e.WriteNoStall(b);
      if (s.code() == StatusCode::kBusy) s = e.Write(b, false);
      ASSERT_TRUE(s.ok()) << s.ToString();
      if (e.MaintenanceDue()) e.Maintain();
    }
  }
  const std::vector<uint64_t> flushed = FlushedMemtableBytes(dir);
  std::filesystem::remove_all(dir);
  ASSERT_GE(flushed.size(), 8u);
  // With one size per open, every flush lands within a few bytes of the
  // same size (RocksDB counts memory in arena blocks).
  std::set<uint64_t> steps;
  for (uint64_t bytes : flushed) steps.insert(bytes / (256u << 10));
  EXPECT_GE(steps.size(), 3u) << "the memtables flushed at " << steps.size() << " sizes";
  for (uint64_t bytes : flushed) {
    // Within the spread, give or take the arena block RocksDB counts in.
    EXPECT_GE(bytes, StaggeredWriteBufferBytes(options.write_buffer_bytes, 0.0) - (1u << 20));
    EXPECT_LE(bytes, StaggeredWriteBufferBytes(options.write_buffer_bytes, 1.0) + (1u << 20));
  }
}

TEST(RocksDbEngineTest, EachDataMemtableFlushesAtItsOwnDrawnSize) {
  ExpectFlushesAtDrawnSizes(false);
}

TEST(RocksDbEngineTest, EachDataMemtableFlushesAtItsOwnDrawnSizeThroughInlineWrites) {
  ExpectFlushesAtDrawnSizes(true);
}

// The metadata space takes a write now and then, so every log holds some of
// it; the logs still go once the data space flushed, rather than piling up
// until RocksDB's own bound, each to be read again at the next open.
TEST(RocksDbEngineTest, LiveLogsStayWithinAFewWriteBuffers) {
  const std::string dir = TempDir("live-logs");
  RocksDbOptions options;
  options.write_buffer_bytes = 2u << 20;
  options.stagger_seed = 7;
  options.wait_for_flushes = true;
  options.prefilled_log_bytes_max = 0;  // log files at their true sizes
  auto live_log_bytes = [&] {
    uint64_t total = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().extension() == ".log") total += e.file_size();
    }
    return total;
  };
  auto engine = OpenRocksDb(dir, options);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  const std::string value(1000, 'v');
  uint64_t most = 0;
  for (int i = 0; i < 40'000; ++i) {
    WriteBatch b;
    b.Put(Space::kData, DataKey(static_cast<uint32_t>(i % 64), "k" + std::to_string(i)), value);
    if (i % 100 == 0) b.Put(Space::kMeta, "lease", std::to_string(i));
    ASSERT_TRUE((*engine)->Write(b, false).ok());
    if (i % 1000 == 0) most = std::max(most, live_log_bytes());
  }
  const uint64_t bound = (kLiveLogWriteBuffers + 1) * options.write_buffer_bytes;
  EXPECT_LE(most, bound) << "40 MB written, " << most << " bytes of logs live at once";
  Result<std::optional<std::string>> lease = (*engine)->Get(Space::kMeta, "lease");
  ASSERT_TRUE(lease.ok() && lease->has_value());
  EXPECT_EQ(**lease, "39900");
  engine->reset();
  std::filesystem::remove_all(dir);
}

// With deletions paced, obsolete logs and tables go to the trash first and
// shrink there; without, they are deleted at once, and what a paced run left
// in the trash is deleted during the next open (RocksDB's open clears the
// trash before it returns).
TEST(RocksDbEngineTest, PacedDeletionsGoThroughTheTrashAndTheNextOpenEmptiesIt) {
  const std::string dir = TempDir("paced-deletions");
  auto trash_files = [&] {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      n += e.path().extension() == ".trash";
    return n;
  };
  // Writes until a flush has freed a log (a paced deletion shows as trash) or
  // 40 MB went in (20 flushes); returns the most trash files seen at once.
  auto write_until_trash = [&](Engine& engine) {
    const std::string value(1000, 'v');
    size_t most = 0;
    for (int i = 0; i < 40'000 && most == 0; ++i) {
      WriteBatch b;
      b.Put(Space::kData, DataKey(static_cast<uint32_t>(i % 64), "k" + std::to_string(i)), value);
      EXPECT_TRUE(engine.Write(b, false).ok());
      if (i % 500 == 0) most = std::max(most, trash_files());
    }
    return most;
  };
  RocksDbOptions options;
  options.write_buffer_bytes = 2u << 20;
  options.stagger_seed = 7;
  options.wait_for_flushes = true;
  options.delete_bytes_per_sec = 64u << 10;  // a spare log of 2.5 MiB takes 40 s
  {
    auto engine = OpenRocksDb(dir, options);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    EXPECT_GE(write_until_trash(**engine), 1u);
  }
  ASSERT_GE(trash_files(), 1u) << "the paced deletion had time to finish";
  options.delete_bytes_per_sec = 0;
  auto engine = OpenRocksDb(dir, options);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  EXPECT_EQ(trash_files(), 0u) << "the trash outlived an open";
  EXPECT_EQ(write_until_trash(**engine), 0u) << "an unpaced deletion went through the trash";
  engine->reset();
  std::filesystem::remove_all(dir);
}

uint64_t Counter(const Engine& engine, const std::string& name) {
  EngineCounters counters;
  engine.AppendCounters(counters);
  for (const auto& [n, v] : counters) {
    if (n == name) return v;
  }
  ADD_FAILURE() << "no counter " << name;
  return 0;
}

// Paced at 1 MiB/s, a flush of a 1 MiB memtable of values that do not
// compress takes about a second, while writes at memory speed fill the next
// memtable, and would stop, in a fraction of that. The pace is lifted once
// that memtable is half full with the flush still running (when it is set
// again: BackgroundPaceTest). Unpaced, the engine keeps no such counters.
TEST(RocksDbEngineTest, PacedBackgroundWritesAreUnpacedWhileTheyFallBehind) {
  const std::string dir = TempDir("paced-flushes");
  RocksDbOptions options;
  options.write_buffer_bytes = 1u << 20;
  options.stagger_seed = 7;
  options.background_write_bytes_per_sec = 0;
  {
    auto unpaced = OpenRocksDb(dir, options);
    ASSERT_TRUE(unpaced.ok()) << unpaced.status().ToString();
    EngineCounters counters;
    (*unpaced)->AppendCounters(counters);
    for (const auto& [name, value] : counters) EXPECT_EQ(name.find("pace"), std::string::npos);
  }
  options.background_write_bytes_per_sec = kBackgroundWriteBytesPerSecMin;
  auto engine = OpenRocksDb(dir, options);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  Engine& e = **engine;
  EXPECT_EQ(Counter(e, "background_pace_lifts"), 0u);
  std::mt19937_64 rng(7);
  const int kWrites = 8000;  // 8 MB: several memtables
  for (int i = 0; i < kWrites; ++i) {
    std::string value(1000, '\0');
    for (char& c : value) c = static_cast<char>(rng());
    WriteBatch b;
    b.Put(Space::kData, DataKey(static_cast<uint32_t>(i % 64), "k" + std::to_string(i)), value);
    ASSERT_TRUE(e.Write(b, false).ok());
  }
  EXPECT_GE(Counter(e, "background_pace_lifts"), 1u);
  Result<std::optional<std::string>> last =
      e.Get(Space::kData, DataKey((kWrites - 1) % 64, "k" + std::to_string(kWrites - 1)));
  ASSERT_TRUE(last.ok() && last->has_value());
  engine->reset();
  std::filesystem::remove_all(dir);
}

TEST(MemoryEngineTest, PowerLossDropsUnsyncedWrites) {
  MemoryEngine e;
  WriteBatch synced, unsynced;
  synced.Put(Space::kData, "a", "1");
  unsynced.Put(Space::kData, "b", "2");
  unsynced.Delete(Space::kData, "a");
  ASSERT_TRUE(e.Write(synced, true).ok());
  ASSERT_TRUE(e.Write(unsynced, false).ok());
  EXPECT_FALSE(e.Get(Space::kData, "a")->has_value());
  e.DropUnsynced();
  EXPECT_EQ(**e.Get(Space::kData, "a"), "1");
  EXPECT_FALSE(e.Get(Space::kData, "b")->has_value());
}

TEST(MemoryEngineTest, FailedSyncLeavesWritesUndurable) {
  MemoryEngine e;
  e.FailSyncs(true);
  WriteBatch b;
  b.Put(Space::kData, "a", "1");
  EXPECT_EQ(e.Write(b, true).code(), StatusCode::kIOError);
  e.DropUnsynced();
  EXPECT_FALSE(e.Get(Space::kData, "a")->has_value());
}

// dynamo-node's memory engine keeps no synced copy: reads, writes and
// failing syncs behave the same, and there is no earlier state to drop to.
TEST(MemoryEngineTest, WithoutASyncedCopyWritesStayAndSyncsStillFail) {
  MemoryEngineOptions o;
  o.keep_synced_copy = false;
  MemoryEngine e(o);
  WriteBatch b;
  b.Put(Space::kData, "a", "1");
  b.Put(Space::kData, "b", "2");
  ASSERT_TRUE(e.Write(b, false).ok());
  ASSERT_TRUE(e.DeletePrefix(Space::kData, "b", false).ok());
  ASSERT_TRUE(e.Sync().ok());
  e.DropUnsynced();
  EXPECT_EQ(**e.Get(Space::kData, "a"), "1");
  EXPECT_FALSE(e.Get(Space::kData, "b")->has_value());
  e.FailSyncs(true);
  EXPECT_EQ(e.Sync().code(), StatusCode::kIOError);
  e.FailSyncs(false);
  EXPECT_EQ(e.Sync().code(), StatusCode::kIOError);
}

// The kernel reports a failed write-back once; a later fsync returns 0 with
// those pages lost. So after one failed sync no write or sync succeeds, not
// even one that has nothing new to write.
TEST(MemoryEngineTest, AfterAFailedSyncNoWriteOrSyncSucceeds) {
  MemoryEngine e;
  WriteBatch b;
  b.Put(Space::kData, "a", "1");
  e.FailSyncs(true);
  EXPECT_EQ(e.Write(b, true).code(), StatusCode::kIOError);
  e.FailSyncs(false);
  EXPECT_EQ(e.Sync().code(), StatusCode::kIOError);
  EXPECT_EQ(e.Write(b, false).code(), StatusCode::kIOError);
  EXPECT_EQ(e.WriteNoStall(b).code(), StatusCode::kIOError);
  EXPECT_EQ(e.DeletePrefix(Space::kData, "a", false).code(), StatusCode::kIOError);
  Status s = e.Write(b, true);
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_NE(s.message().find("fsync failed (injected)"), std::string::npos) << s.ToString();
  EXPECT_EQ(**e.Get(Space::kData, "a"), "1");  // reads go on
}

// The OS's file system, whose log files fail their syncs while `failing`
// (with ENOSPC while `syncs_full`, as a write-back the disk had no room for)
// and their appends with ENOSPC while `full`, as a full disk does to a log
// that grows (which also reports no free space then: RocksDB's file
// manager polls it before it recovers). While `hold_syncs`, a sync waits
// (up to 10 s) until it is cleared, counted in `syncs_held` as it starts.
// RocksDB's info log (LOG) fails its writes with ENOSPC while
// `info_log_full`, counted in `info_log_failed`; `tables_made` counts the
// table files made.
class FaultyLogs : public rocksdb::FileSystemWrapper {
 public:
  FaultyLogs() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FaultyLogs"; }
  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    if (name.ends_with("/LOG")) {
      if (info_log_refused) return rocksdb::IOStatus::NoSpace("info log creation (injected)");
      ++info_logs_made;
    }
    rocksdb::IOStatus s = target()->NewWritableFile(name, options, result, dbg);
    if (s.ok() && name.ends_with(".log")) *result = std::make_unique<Log>(std::move(*result), this);
    if (s.ok() && name.ends_with("/LOG")) {
      *result = std::make_unique<InfoLog>(std::move(*result), this);
    }
    if (s.ok() && name.ends_with(".sst")) ++tables_made;
    return s;
  }
  rocksdb::IOStatus RenameFile(const std::string& from, const std::string& to,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
    if (info_log_rename_back_refused && to.ends_with("/LOG")) {
      return rocksdb::IOStatus::IOError("info log rename (injected)");
    }
    return target()->RenameFile(from, to, options, dbg);
  }
  rocksdb::IOStatus GetFreeSpace(const std::string& path, const rocksdb::IOOptions& options,
                                 uint64_t* free, rocksdb::IODebugContext* dbg) override {
    if (!full) return target()->GetFreeSpace(path, options, free, dbg);
    *free = 0;
    return rocksdb::IOStatus::OK();
  }
  std::atomic<bool> failing{false};
  std::atomic<int> failed{0};
  std::atomic<bool> full{false};
  std::atomic<bool> syncs_full{false};
  std::atomic<bool> hold_syncs{false};
  std::atomic<int> syncs_held{0};
  std::atomic<bool> info_log_full{false};
  std::atomic<int> info_log_failed{0};
  std::atomic<bool> info_log_refused{false};
  std::atomic<bool> info_log_rename_back_refused{false};
  std::atomic<int> info_logs_made{0};
  std::atomic<uint64_t> info_log_append_max{0};
  std::atomic<int> tables_made{0};

 private:
  class InfoLog : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    InfoLog(std::unique_ptr<rocksdb::FSWritableFile> file, FaultyLogs* fs)
        : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override {
      if (!fs_->info_log_full) {
        uint64_t seen = fs_->info_log_append_max.load();
        while (data.size() > seen &&
               !fs_->info_log_append_max.compare_exchange_weak(seen, data.size())) {
        }
        return target()->Append(data, o, d);
      }
      ++fs_->info_log_failed;
      return rocksdb::IOStatus::NoSpace("info log append (injected)");
    }

   private:
    FaultyLogs* fs_;
  };

  class Log : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    Log(std::unique_ptr<rocksdb::FSWritableFile> file, FaultyLogs* fs)
        : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs) {}
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
      Hold();
      return Failed() ? Failure() : target()->Sync(o, d);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
      Hold();
      return Failed() ? Failure() : target()->Fsync(o, d);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override {
      return fs_->full ? rocksdb::IOStatus::NoSpace("log append (injected)")
                       : target()->Append(data, o, d);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             const rocksdb::DataVerificationInfo& v,
                             rocksdb::IODebugContext* d) override {
      return fs_->full ? rocksdb::IOStatus::NoSpace("log append (injected)")
                       : target()->Append(data, o, v, d);
    }

   private:
    void Hold() {
      if (!fs_->hold_syncs) return;
      ++fs_->syncs_held;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (fs_->hold_syncs && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    bool Failed() {
      if (!fs_->failing && !fs_->syncs_full) return false;
      ++fs_->failed;
      return true;
    }
    rocksdb::IOStatus Failure() const {
      return fs_->syncs_full ? rocksdb::IOStatus::NoSpace("log sync failed (injected)")
                             : rocksdb::IOStatus::IOError("log sync failed (injected)");
    }
    FaultyLogs* fs_;
  };
};

// A RocksDB engine over `fs`'s logs (none prefilled); with `flushing`, 1 MiB
// memtables whose flushes end before the write that filled one returns.
Result<std::unique_ptr<Engine>> OpenOverFaultyLogs(const std::string& dir,
                                                   std::shared_ptr<FaultyLogs> fs, bool flushing,
                                                   bool mark_memtables = true) {
  RocksDbOptions o;
  o.file_system = std::move(fs);
  o.prefilled_log_bytes_max = 0;
  o.mark_memtables = mark_memtables;
  if (flushing) {
    o.write_buffer_bytes = 1u << 20;
    o.wait_for_flushes = true;
  }
  return OpenRocksDb(dir, o);
}

// Unsynced writes of 4 KB values until a flush has synced a log, `fs`
// failed that sync, and the engine refuses writes for it (up to 4 MB, then
// up to 10 s: the flush may be one RocksDB started by itself, whose failure
// the engine learns of just after `fs` counted it).
void WriteUntilAFlushSyncsALog(Engine& engine, const FaultyLogs& fs) {
  const std::string value(4096, 'v');
  std::optional<std::chrono::steady_clock::time_point> deadline;
  for (int i = 0; deadline ? std::chrono::steady_clock::now() < *deadline : i < 1024; ++i) {
    WriteBatch b;
    b.Put(Space::kData, "k" + std::to_string(i), value);
    const bool written = engine.Write(b, false).ok();
    if (fs.failed == 0) continue;
    if (!written) return;
    if (!deadline) deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  }
}

// RocksDB's info log files in `dir` (LOG and LOG.old.*), name -> size.
// Of a closed engine's directory.
std::map<std::string, uint64_t> InfoLogFiles(const std::string& dir) {
  std::map<std::string, uint64_t> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "LOG" || name.starts_with("LOG.old.")) files[name] = entry.file_size(ec);
  }
  return files;
}

// Writes `count` 4 KiB values under keys `prefix`0, `prefix`1, ...: with 1
// MiB memtables, a flush (and its lines in the info log) every 250 or so.
void WriteValues(Engine& engine, const std::string& prefix, int count) {
  const std::string value(4096, 'v');
  for (int i = 0; i < count; ++i) {
    WriteBatch b;
    b.Put(Space::kData, prefix + std::to_string(i), value);
    ASSERT_TRUE(engine.Write(b, false).ok()) << prefix << i;
  }
}

// An engine over FaultyLogs with 1 MiB memtables, whose flushes (each
// waited for) write lines into RocksDB's info log, and its warnings kept.
struct InfoLogEngine {
  InfoLogEngine() {
    options.file_system = fs;
    options.prefilled_log_bytes_max = 0;
    options.write_buffer_bytes = 1u << 20;
    options.wait_for_flushes = true;
    options.warn = [this](const std::string& w) {
      std::lock_guard lock(mu);
      warnings.push_back(w);
    };
  }
  std::vector<std::string> Warnings() {
    std::lock_guard lock(mu);
    return warnings;
  }
  std::shared_ptr<FaultyLogs> fs = std::make_shared<FaultyLogs>();
  RocksDbOptions options;
  std::mutex mu;
  std::vector<std::string> warnings;  // guarded by mu
};

// RocksDB 7.8 writes its info log through a writer that asserts on the line
// after a failed write: a node whose disk filled aborted at RocksDB's next
// line, whatever its storage did (a flush logs and flushes the info log).
// The engine drops the lines that cannot be written, says so once, and
// goes on.
TEST(RocksDbEngineTest, AnInfoLogThatMetAFullDiskDropsItsLinesAndTheEngineGoesOn) {
  const std::string dir = TempDir("full-disk-info-log");
  InfoLogEngine t;
  FaultyLogs* fs = t.fs.get();
  auto e = OpenRocksDb(dir, t.options);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  Engine& engine = **e;
  fs->info_log_full = true;
  const std::string value(4096, 'v');
  for (int i = 0; i < 1024; ++i) {
    WriteBatch b;
    b.Put(Space::kData, "k" + std::to_string(i), value);
    ASSERT_TRUE(engine.Write(b, i % 64 == 0).ok()) << i;
  }
  EXPECT_GE(fs->info_log_failed.load(), 2) << "RocksDB wrote its info log once at most";
  // A flush makes a table of each space it takes (two at most).
  EXPECT_GE(fs->tables_made.load(), 4) << "fewer than two flushes";
  EXPECT_TRUE(engine.Sync().ok());
  Result<std::optional<std::string>> read = engine.Get(Space::kData, "k1000");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->value_or(""), value);
  // With room again, the info log takes lines again (each flush writes some).
  fs->info_log_full = false;
  const uint64_t log_bytes = std::filesystem::file_size(dir + "/LOG");
  WriteValues(engine, "later", 512);
  EXPECT_GT(std::filesystem::file_size(dir + "/LOG"), log_bytes);
  const std::vector<std::string> warnings = t.Warnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("info log"), std::string::npos) << warnings[0];
  e->reset();
  std::filesystem::remove_all(dir);
}

// RocksDB's info log is one file per open, never rotated by size (RocksDB's
// defaults), so it grew with a node's uptime, and old ones were kept up to
// 1,000 opens. The engine rotates it at info_log_bytes_max and RocksDB keeps
// kInfoLogFilesKept of them.
TEST(RocksDbEngineTest, TheInfoLogIsRotatedBySizeAndOnlyTheNewestFilesAreKept) {
  const std::string dir = TempDir("info-log-rotation");
  InfoLogEngine t;
  FaultyLogs* fs = t.fs.get();
  RocksDbOptions& o = t.options;
  o.info_log_bytes_max = 16u << 10;
  {
    auto e = OpenRocksDb(dir, o);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    WriteValues(**e, "k", 2048);
  }
  std::map<std::string, uint64_t> files = InfoLogFiles(dir);
  // The first open renamed no LOG: the old files are rotations.
  EXPECT_GE(files.size(), 3u) << "the info log was not rotated";
  const uint64_t largest_append = fs->info_log_append_max.load();
  ASSERT_GT(largest_append, 0u);
  for (const auto& [name, bytes] : files) {
    EXPECT_LE(bytes, std::max<uint64_t>(o.info_log_bytes_max, largest_append)) << name;
  }
  for (int open = 0; open < 4; ++open) {
    auto e = OpenRocksDb(dir, o);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    WriteValues(**e, "again" + std::to_string(open) + "-", 512);
  }
  // An open and a close trim the old files; this last open rotates nothing
  // after its close's trim.
  const std::map<std::string, uint64_t> before = InfoLogFiles(dir);
  o.info_log_bytes_max = 1u << 30;
  ASSERT_TRUE(OpenRocksDb(dir, o).ok());
  files = InfoLogFiles(dir);
  EXPECT_EQ(files.size(), kInfoLogFilesKept);
  EXPECT_TRUE(files.contains("LOG"));
  // What went is older than every old file kept (names by microseconds).
  const std::string oldest_kept = std::next(files.begin())->first;  // after "LOG"
  for (const auto& [name, bytes] : before) {
    if (name != "LOG" && !files.contains(name)) EXPECT_LT(name, oldest_kept);
  }
  std::filesystem::remove_all(dir);
}

// A rotation that cannot make the new file keeps writing the file it has,
// says so once, and rotates once it can, also after it could not give the
// file its name back.
TEST(RocksDbEngineTest, AnInfoLogThatCannotBeRotatedGrowsUntilItCan) {
  const std::string dir = TempDir("info-log-rotation-refused");
  InfoLogEngine t;
  FaultyLogs* fs = t.fs.get();
  RocksDbOptions& o = t.options;
  o.info_log_bytes_max = 32u << 10;
  auto e = OpenRocksDb(dir, o);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  fs->info_log_refused = true;
  const int made = fs->info_logs_made.load();
  WriteValues(**e, "k", 2048);
  EXPECT_EQ(fs->info_logs_made.load(), made);
  const std::vector<std::string> warnings = t.Warnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("could not be rotated"), std::string::npos) << warnings[0];
  // Renamed to LOG.old.* and not back: no LOG for a while.
  fs->info_log_rename_back_refused = true;
  WriteValues(**e, "stuck", 256);
  fs->info_log_refused = false;
  fs->info_log_rename_back_refused = false;
  WriteValues(**e, "later", 512);
  EXPECT_GT(fs->info_logs_made.load(), made) << "not rotated once it could be";
  e->reset();
  // Every LOG made is there, the one written while refused among them.
  const std::map<std::string, uint64_t> files = InfoLogFiles(dir);
  ASSERT_LE(fs->info_logs_made.load(), static_cast<int>(kInfoLogFilesKept)) << "some were trimmed";
  EXPECT_EQ(files.size(), static_cast<size_t>(fs->info_logs_made.load()));
  uint64_t largest = 0;
  for (const auto& [name, bytes] : files) largest = std::max(largest, bytes);
  EXPECT_GT(largest, 2 * o.info_log_bytes_max) << "the lines written meanwhile were not kept";
  ASSERT_TRUE(files.contains("LOG"));
  EXPECT_LE(files.at("LOG"), std::max<uint64_t>(o.info_log_bytes_max, fs->info_log_append_max));
  std::filesystem::remove_all(dir);
}

// A flush syncs the logs it closes; when that sync fails, the engine's next
// sync fails too, though the log's later fsync would return 0 (the kernel
// reports a failed write-back once). Before, RocksDB kept the error to
// itself and the next Sync() (a retried transfer whose versions were all
// stored already, say) was answered OK.
TEST(RocksDbEngineTest, AFailedSyncOfALogAFlushClosedFailsTheNextSync) {
  const std::string dir = TempDir("background-log-sync");
  auto fs = std::make_shared<FaultyLogs>();
  auto e = OpenOverFaultyLogs(dir, fs, true);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  Engine& engine = **e;
  fs->failing = true;
  WriteUntilAFlushSyncsALog(engine, *fs);
  ASSERT_GT(fs->failed.load(), 0) << "no flush synced a log";
  fs->failing = false;
  Status synced = engine.Sync();
  EXPECT_EQ(synced.code(), StatusCode::kIOError) << synced.ToString();
  WriteBatch later;
  later.Put(Space::kData, "later", "v");
  EXPECT_EQ(engine.Write(later, true).code(), StatusCode::kIOError);
  e->reset();
  std::filesystem::remove_all(dir);
}

// A log append that meets a full disk stops RocksDB's writes. The engine's
// later syncs and writes fail with the error; they must not reach the log
// writer that failed (Debian's RocksDB asserts on that, which took a node
// down when its disk filled). With room again, RocksDB recovers by itself
// (its file manager polls the free space) and so does the engine, also when
// the write that met the full disk was a synced one: its append failed, so
// nothing of it was synced (before, that write's error was kept as a failed
// sync, and the engine refused every write until it was reopened).
TEST(RocksDbEngineTest, AfterALogAppendMetAFullDiskSyncsAndWritesFailWithoutCrashing) {
  for (const bool synced_write : {false, true}) {
    SCOPED_TRACE(synced_write ? "a synced write met the full disk" : "an unsynced write did");
    const std::string dir = TempDir("full-disk-log");
    auto fs = std::make_shared<FaultyLogs>();
    auto e = OpenOverFaultyLogs(dir, fs, false);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    Engine& engine = **e;
    WriteBatch before;
    before.Put(Space::kData, "before", "v");
    ASSERT_TRUE(engine.Write(before, true).ok());
    fs->full = true;
    WriteBatch b;
    b.Put(Space::kData, "k", "v");
    const Status written = engine.Write(b, synced_write);
    EXPECT_EQ(written.code(), StatusCode::kIOError) << written.ToString();
    const Status synced = engine.Sync();
    EXPECT_EQ(synced.code(), StatusCode::kIOError) << synced.ToString();
    EXPECT_NE(synced.message().find("storage writes stopped"), std::string_view::npos)
        << synced.ToString();
    EXPECT_EQ(engine.Write(b, true).code(), StatusCode::kIOError);
    EXPECT_EQ(engine.Sync().code(), StatusCode::kIOError);
    Result<std::optional<std::string>> read = engine.Get(Space::kData, "before");
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(read->value_or(""), "v");
    fs->full = false;
    const auto start = std::chrono::steady_clock::now();
    Status again;
    do {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      again = engine.Write(b, true);
    } while (!again.ok() && std::chrono::steady_clock::now() - start < std::chrono::seconds(60));
    EXPECT_TRUE(again.ok()) << again.ToString();
    std::cout << "[ engine ] writes taken again "
              << std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - start)
                     .count()
              << " ms after the disk had room\n";
    EXPECT_TRUE(engine.Sync().ok());
    e->reset();
    std::filesystem::remove_all(dir);
  }
}

// A Sync keeps inline writes out until RocksDB has checked the newest log's
// writer, and lets them append while that log is synced (the next sync
// covers them). RocksDB 7.8's SyncWAL asserts when an append to a log it
// syncs failed after the engine's check and before its own: an inline write
// whose append met a full disk there aborted the process.
TEST(RocksDbEngineTest, InlineWritesAreKeptOutOfASyncUntilItSyncsTheNewestLog) {
  const std::string dir = TempDir("inline-beside-sync");
  auto fs = std::make_shared<FaultyLogs>();
  Engine* engine = nullptr;
  bool tried = false;
  Status in_window;
  RocksDbOptions o;
  o.file_system = fs;
  o.prefilled_log_bytes_max = 0;
  o.sync_hook_for_tests = [&] {
    if (engine == nullptr || tried) return;
    tried = true;
    std::thread([&] {  // as the event loop's would
      fs->full = true;
      WriteBatch b;
      b.Put(Space::kData, "in-window", "v");
      in_window = engine->WriteNoStall(b);
      fs->full = false;
    })
        .join();
  };
  auto e = OpenRocksDb(dir, o);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  engine = e->get();
  WriteBatch unsynced;
  unsynced.Put(Space::kData, "a", "1");
  ASSERT_TRUE(engine->WriteNoStall(unsynced).ok());
  const Status first = engine->Sync();
  EXPECT_TRUE(first.ok()) << first.ToString();
  ASSERT_TRUE(tried);
  EXPECT_EQ(in_window.code(), StatusCode::kBusy) << in_window.ToString();

  fs->hold_syncs = true;
  Status held;
  std::thread syncer([&] { held = engine->Sync(); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (fs->syncs_held == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GT(fs->syncs_held.load(), 0) << "no sync started";
  WriteBatch beside;
  beside.Put(Space::kData, "c", "3");
  const Status appended = engine->WriteNoStall(beside);
  EXPECT_TRUE(appended.ok()) << appended.ToString();
  fs->hold_syncs = false;
  syncer.join();
  EXPECT_TRUE(held.ok()) << held.ToString();
  EXPECT_TRUE(engine->Sync().ok());
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::optional<std::string>>>{
           {"a", "1"}, {"c", "3"}, {"in-window", std::nullopt}}) {
    Result<std::optional<std::string>> read = engine->Get(Space::kData, key);
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(*read, value) << key;
  }
  EngineCounters counters;
  engine->AppendCounters(counters);
  const std::pair<std::string, uint64_t> refused{"writes_behind_log_sync", 1};
  EXPECT_NE(std::find(counters.begin(), counters.end(), refused), counters.end());
  e->reset();
  std::filesystem::remove_all(dir);
}

// RocksDB 7.8 recovers from a failed log append by flushing the memtables,
// which starts a new log only if one of them holds a write. When none does
// (the first write after an open or a flush met the full disk), it would go
// on with the log writer that failed, and the next write aborted the process
// (Debian's RocksDB asserts there) once the disk had room. The engine stops
// its writes for good instead, until it is reopened. (Its memtable marker,
// off here, keeps a memtable from being empty after an open or a switch.)
TEST(RocksDbEngineTest, AFullDiskMetWithEveryMemtableEmptyStopsWritesUntilReopened) {
  for (const bool synced_write : {false, true}) {
    SCOPED_TRACE(synced_write ? "a synced write met the full disk" : "an unsynced write did");
    const std::string dir = TempDir("full-disk-empty");
    auto fs = std::make_shared<FaultyLogs>();
    auto e = OpenOverFaultyLogs(dir, fs, false, /*mark_memtables=*/false);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    fs->full = true;
    WriteBatch b;
    b.Put(Space::kData, "k", "v");
    EXPECT_EQ((*e)->Write(b, synced_write).code(), StatusCode::kIOError);
    fs->full = false;
    // With room, the writes fail for good and say why (without the stop they
    // failed only until RocksDB's recovery, and the first after it aborted).
    for (const bool sync : {false, true}) {
      const Status later = (*e)->Write(b, sync);
      EXPECT_EQ(later.code(), StatusCode::kIOError) << later.ToString();
      EXPECT_NE(later.message().find("until the node is restarted"), std::string_view::npos)
          << later.ToString();
    }
    EXPECT_EQ((*e)->Sync().code(), StatusCode::kIOError);
    e->reset();
    e = OpenOverFaultyLogs(dir, fs, false, /*mark_memtables=*/false);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_TRUE((*e)->Write(b, true).ok());
    Result<std::optional<std::string>> read = (*e)->Get(Space::kData, "k");
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(read->value_or(""), "v");
    e->reset();
    std::filesystem::remove_all(dir);
  }
}

// With the memtable marker, the first write after an open, after a memtable
// flush (a new log, which grows on a full disk since no spare can be made),
// or after RocksDB recovered from a full disk (its flush switched the
// memtables again) is one RocksDB recovers from: writes are taken again
// once the disk has room, without a reopen.
TEST(RocksDbEngineTest, AFullDiskMetByTheFirstWriteAfterAnOpenAFlushOrARecoveryIsRecoveredFrom) {
  enum class After { kOpen, kFlush, kRecovery };
  for (const After after : {After::kOpen, After::kFlush, After::kRecovery}) {
    SCOPED_TRACE(after == After::kOpen    ? "the first write after the open"
                 : after == After::kFlush ? "the first write after a flush"
                                          : "the first write after a recovery");
    const std::string dir = TempDir("full-disk-marked");
    auto fs = std::make_shared<FaultyLogs>();
    auto e = OpenOverFaultyLogs(dir, fs, after == After::kFlush);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    Engine& engine = **e;
    auto tables = [&] {
      size_t n = 0;
      for (const auto& f : std::filesystem::directory_iterator(dir)) {
        n += f.path().extension() == ".sst";
      }
      return n;
    };
    WriteBatch b;
    b.Put(Space::kData, "k", "v");
    // Polls `ready` every 50 ms for up to 20 s.
    auto eventually = [](const std::function<Status()>& ready) {
      const auto start = std::chrono::steady_clock::now();
      Status s;
      do {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        s = ready();
      } while (!s.ok() && std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
      return s;
    };
    if (after == After::kFlush) {
      // Until a write flushed the memtables it filled (and waited for it).
      const size_t before = tables();
      const std::string value(4096, 'v');
      for (int i = 0; i < 1024 && tables() == before; ++i) {
        WriteBatch w;
        w.Put(Space::kData, "k" + std::to_string(i), value);
        ASSERT_TRUE(engine.Write(w, false).ok());
      }
      ASSERT_GT(tables(), before) << "no flush";
    } else if (after == After::kRecovery) {
      // A first full disk, recovered from; no write since.
      fs->full = true;
      EXPECT_EQ(engine.Write(b, true).code(), StatusCode::kIOError);
      fs->full = false;
      const Status recovered = eventually([&] { return engine.Sync(); });
      ASSERT_TRUE(recovered.ok()) << recovered.ToString();
    }
    fs->full = true;
    EXPECT_EQ(engine.Write(b, true).code(), StatusCode::kIOError);
    fs->full = false;
    const Status again = eventually([&] { return engine.Write(b, true); });
    EXPECT_TRUE(again.ok()) << again.ToString();
    EXPECT_TRUE(engine.Sync().ok());
    e->reset();
    std::filesystem::remove_all(dir);
  }
}

// A log sync that meets a full disk (a write-back with no room) is a failed
// sync like any other: kept for good, though RocksDB would recover from its
// error once there is room. So is one the engine did not ask for (a flush
// closing a log), which RocksDB reports only as a background error.
TEST(RocksDbEngineTest, ALogSyncThatMetAFullDiskFailsEveryLaterWrite) {
  for (const bool own_sync : {true, false}) {
    SCOPED_TRACE(own_sync ? "a synced write's sync" : "a flush's sync of the log it closed");
    const std::string dir = TempDir("full-disk-sync");
    auto fs = std::make_shared<FaultyLogs>();
    auto e = OpenOverFaultyLogs(dir, fs, true);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    Engine& engine = **e;
    fs->syncs_full = true;
    WriteBatch b;
    b.Put(Space::kData, "k", "v");
    if (own_sync) {
      EXPECT_EQ(engine.Write(b, true).code(), StatusCode::kIOError);
    } else {
      WriteUntilAFlushSyncsALog(engine, *fs);
    }
    ASSERT_GT(fs->failed.load(), 0);
    fs->syncs_full = false;
    const Status later = engine.Write(b, false);
    EXPECT_EQ(later.code(), StatusCode::kIOError);
    EXPECT_NE(later.message().find("a sync failed earlier"), std::string_view::npos)
        << later.ToString();
    EXPECT_EQ(engine.Sync().code(), StatusCode::kIOError);
    e->reset();
    std::filesystem::remove_all(dir);
  }
}

TEST(SyncFailureTest, KeepsTheFirstFailureOnly) {
  SyncFailure f;
  EXPECT_TRUE(f.Keep(Status::OK()).ok());
  EXPECT_TRUE(f.Check().ok());
  EXPECT_EQ(f.Keep(Status::IOError("first")).code(), StatusCode::kIOError);
  (void)f.Keep(Status::IOError("second"));
  EXPECT_NE(f.Check().message().find("first"), std::string::npos);
  EXPECT_EQ(f.Check().message().find("second"), std::string::npos);
}

// Counts what reaches the engine behind the cache; `during_cached_get` runs
// inside GetCached after the value was read, like a write from the storage
// thread landing between the read and the cache fill.
class ProbeEngine : public MemoryEngine {
 public:
  int gets = 0, cached_gets = 0;
  std::function<void()> during_cached_get;
  Result<std::optional<std::string>> Get(Space space, std::string_view key) override {
    ++gets;
    return MemoryEngine::Get(space, key);
  }
  Result<std::optional<std::string>> GetCached(Space space, std::string_view key) override {
    ++cached_gets;
    auto r = MemoryEngine::Get(space, key);
    if (during_cached_get) {
      auto hook = std::move(during_cached_get);
      during_cached_get = nullptr;
      hook();
    }
    return r;
  }
};

TEST(CachedEngineTest, ReadsAndWritesFillTheCache) {
  auto probe = std::make_unique<ProbeEngine>();
  ProbeEngine* inner = probe.get();
  CachedEngine e(std::move(probe), 1 << 20);
  WriteBatch b;
  b.Put(Space::kData, "a", "1");
  b.Put(Space::kMeta, "m", "x");
  ASSERT_TRUE(e.WriteNoStall(b).ok());
  EXPECT_EQ(**e.GetCached(Space::kData, "a"), "1");
  EXPECT_EQ(inner->cached_gets, 0);
  EXPECT_EQ(**e.GetCached(Space::kMeta, "m"), "x");  // other spaces pass through
  EXPECT_EQ(inner->cached_gets, 1);
  ASSERT_TRUE(inner->MemoryEngine::Write([] {
    WriteBatch w;
    w.Put(Space::kData, "b", "2");
    return w;
  }(), false).ok());
  EXPECT_EQ(**e.GetCached(Space::kData, "b"), "2");  // a miss fills
  EXPECT_EQ(**e.GetCached(Space::kData, "b"), "2");
  EXPECT_EQ(inner->cached_gets, 2);
  EXPECT_EQ(e.stats().hits, 2u);
  EXPECT_EQ(e.stats().entries, 2u);
  WriteBatch del;
  del.Delete(Space::kData, "a");
  ASSERT_TRUE(e.WriteNoStall(del).ok());
  EXPECT_FALSE(e.GetCached(Space::kData, "a")->has_value());
}

// The entry count is bounded too (by what the index holds): past it the
// clock evicts before adding, however much room the bytes leave.
TEST(CachedEngineTest, KeepsNoMoreEntriesThanItsIndexHolds) {
  auto probe = std::make_unique<ProbeEngine>();
  ProbeEngine* inner = probe.get();
  CachedEngine e(std::move(probe), 1 << 20, 4);
  for (char k : std::string("abcdef")) {
    WriteBatch b;
    b.Put(Space::kData, std::string(1, k), "v");
    ASSERT_TRUE(e.WriteNoStall(b).ok());
    EXPECT_LE(e.stats().entries, 4u);
  }
  EXPECT_EQ(e.stats().entries, 4u);
  for (char k : std::string("cdef")) {
    EXPECT_EQ(**e.GetCached(Space::kData, std::string(1, k)), "v");
  }
  EXPECT_EQ(inner->cached_gets, 0);
  EXPECT_EQ(**e.GetCached(Space::kData, "a"), "v");  // evicted: read through
  EXPECT_EQ(inner->cached_gets, 1);
}

TEST(CachedEngineTest, AReadRacingAWriteDoesNotCacheTheOldValue) {
  auto probe = std::make_unique<ProbeEngine>();
  ProbeEngine* inner = probe.get();
  CachedEngine e(std::move(probe), 1 << 20);
  WriteBatch v1, v2;
  v1.Put(Space::kData, "k", "old");
  v2.Put(Space::kData, "k", "new");
  ASSERT_TRUE(inner->MemoryEngine::Write(v1, false).ok());
  inner->during_cached_get = [&] { ASSERT_TRUE(e.Write(v2, true).ok()); };
  EXPECT_EQ(**e.GetCached(Space::kData, "k"), "old");  // read before the write landed
  EXPECT_EQ(**e.GetCached(Space::kData, "k"), "new");
  EXPECT_EQ(**e.Get(Space::kData, "k"), "new");
}

TEST(CachedEngineTest, EvictsWhatWasNotUsedAgainWithinItsBudget) {
  auto probe = std::make_unique<ProbeEngine>();
  ProbeEngine* inner = probe.get();
  const size_t entry = 1 + 10 + CachedEngine::kEntryOverheadBytes;
  CachedEngine e(std::move(probe), 16 * entry);
  const std::string keys = "abcdefghijklmnopq";
  for (char k : keys) {
    WriteBatch b;
    b.Put(Space::kData, std::string(1, k), std::string(10, k));
    ASSERT_TRUE(e.WriteNoStall(b).ok());
    if (k == 'p') ASSERT_TRUE(e.GetCached(Space::kData, "a").ok());  // a is used again
  }
  EXPECT_EQ(e.stats().entries, 16u);
  EXPECT_EQ(e.stats().bytes, 16 * entry);
  EXPECT_EQ(inner->cached_gets, 0);
  for (char k : keys) {
    if (k != 'b') ASSERT_TRUE(e.GetCached(Space::kData, std::string(1, k)).ok());
  }
  EXPECT_EQ(inner->cached_gets, 0);
  EXPECT_EQ(**e.GetCached(Space::kData, "b"), std::string(10, 'b'));  // evicted: read through
  EXPECT_EQ(inner->cached_gets, 1);
  // A value over an eighth of the budget is never cached.
  WriteBatch big;
  big.Put(Space::kData, "big", std::string(3 * entry, 'x'));
  ASSERT_TRUE(e.WriteNoStall(big).ok());
  EXPECT_EQ(**e.GetCached(Space::kData, "big"), std::string(3 * entry, 'x'));
  EXPECT_EQ(inner->cached_gets, 2);
}

// Random writes, deletes and reads through a small cache, with the engine
// behind it as the truth: every read answers what the engine holds, and the
// cache keeps within its budget while its index grows and entries cycle.
TEST(CachedEngineTest, StaysTrueToTheEngineThroughManyWritesAndEvictions) {
  auto probe = std::make_unique<ProbeEngine>();
  ProbeEngine* inner = probe.get();
  const size_t budget = 64 * (8 + 40 + CachedEngine::kEntryOverheadBytes);
  CachedEngine e(std::move(probe), budget);
  std::mt19937_64 rng(5);
  for (int i = 0; i < 20000; ++i) {
    std::string key = "k" + std::to_string(rng() % 300);
    WriteBatch b;
    switch (rng() % 4) {
      case 0:
        b.Delete(Space::kData, key);
        ASSERT_TRUE(e.WriteNoStall(b).ok());
        break;
      case 1:
        b.Put(Space::kData, key, std::string(rng() % 80, static_cast<char>('a' + i % 26)));
        ASSERT_TRUE(e.WriteNoStall(b).ok());
        break;
      case 2:
        b.Put(Space::kData, key, std::to_string(i));
        ASSERT_TRUE(e.Write(b, false).ok());
        break;
      default:
        break;
    }
    std::string probe_key = "k" + std::to_string(rng() % 300);
    // A prefetch, of keys cached, evicted or never written, changes nothing.
    const std::string_view prefetched[] = {probe_key, key, "never-written"};
    e.PrefetchData(prefetched);
    auto cached = e.GetCached(Space::kData, probe_key);
    ASSERT_TRUE(cached.ok());
    ASSERT_EQ(*cached, *inner->MemoryEngine::Get(Space::kData, probe_key)) << probe_key;
    ASSERT_LE(e.stats().bytes, budget);
  }
  EXPECT_GT(e.stats().hits, 0u);
  EXPECT_GT(e.stats().misses, 0u);
  EXPECT_GT(e.stats().entries, 16u);  // the index grew past its first size
}

// A memory engine whose listed keys fail their checksum when a read reaches
// them, as a bad block of RocksDB does.
struct FailingEngine {
  MemoryEngine stored;
  std::set<std::pair<Space, std::string>> bad;
  test::CorruptingEngine view{stored, [this](Space space, std::string_view key) {
                                return bad.count({space, std::string(key)}) > 0;
                              }};
};

std::map<std::string, std::string> AllOf(Engine& e, Space space) {
  ScanOptions all;
  all.max_entries = SIZE_MAX;
  all.max_bytes = SIZE_MAX;
  Result<ScanResult> r = e.Scan(space, all);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  std::map<std::string, std::string> out;
  if (r.ok()) out.insert(r->entries.begin(), r->entries.end());
  return out;
}

TEST(ScrubTest, KeepsWholePartitionsAndOwnersAndLeavesOutThoseWithABadEntry) {
  FailingEngine failing;
  Engine& from = failing.view;
  auto& bad = failing.bad;
  WriteBatch b;
  b.Put(Space::kMeta, std::string(kMetaNodeId), "n1");
  b.Put(Space::kMeta, std::string(kMetaIncarnation), EncodeU64(4));
  b.Put(Space::kHints, HintKey("n2", 3, "h1"), "x");
  b.Put(Space::kHints, HintKey("n2", 9, "h2"), "x");
  b.Put(Space::kHints, HintKey("n3", 3, "h3"), "x");
  b.Put(Space::kHints, HintKey("n3", 4, "h5"), "x");
  b.Put(Space::kHints, HintKey("n4", 1, "h4"), "x");
  for (PartitionId p : {0u, 5u, 7u, kMaxPartitions - 1}) {
    for (const char* k : {"a", "b", "c"}) b.Put(Space::kData, DataKey(p, k), "v");
  }
  ASSERT_TRUE(from.Write(b, true).ok());
  bad.insert({Space::kData, DataKey(5, "b")});  // mid-partition
  bad.insert({Space::kData, DataKey(0, "a")});  // the first data key of all
  bad.insert({Space::kHints, HintKey("n3", 4, "h5")});

  Result<ScrubReport> checked = Scrub(from, nullptr);
  ASSERT_TRUE(checked.ok()) << checked.status().ToString();
  EXPECT_FALSE(checked->clean());
  EXPECT_EQ(checked->lost_partitions, (std::vector<PartitionId>{0, 5}));
  EXPECT_EQ(checked->lost_hint_owners, std::vector<std::string>{"n3"});
  EXPECT_FALSE(checked->unnamed_hints_lost);
  EXPECT_EQ(checked->partitions, 2u);
  EXPECT_EQ(checked->entries, 2u + 3u + 6u);
  EXPECT_NE(checked->first_error.find("checksum"), std::string::npos);
  EXPECT_NE(checked->Summary().find("left out: 2 partitions (0, 5)"), std::string::npos)
      << checked->Summary();

  MemoryEngine to;
  Result<ScrubReport> copied = Scrub(from, &to);
  ASSERT_TRUE(copied.ok()) << copied.status().ToString();
  EXPECT_EQ(copied->lost_partitions, checked->lost_partitions);
  // The metadata, and the mark that has the node catch up on what was lost.
  std::map<std::string, std::string> meta = AllOf(from, Space::kMeta);
  meta.emplace(kMetaCatchingUp, "1");
  EXPECT_EQ(AllOf(to, Space::kMeta), meta);
  EXPECT_EQ(AllOf(to, Space::kHints),
            (std::map<std::string, std::string>{{HintKey("n2", 3, "h1"), "x"},
                                                {HintKey("n2", 9, "h2"), "x"},
                                                {HintKey("n4", 1, "h4"), "x"}}));
  std::map<std::string, std::string> data = AllOf(to, Space::kData);
  EXPECT_EQ(data.size(), 6u);
  for (PartitionId p : {7u, kMaxPartitions - 1}) {
    for (const char* k : {"a", "b", "c"}) EXPECT_EQ(data.count(DataKey(p, k)), 1u) << p << k;
  }

  // When the first hint held for a node is unreadable and the stored state
  // names no node, whose it was cannot be told: the hints from there on are
  // left out.
  bad.insert({Space::kHints, HintKey("n4", 1, "h4")});
  Result<ScrubReport> cut = Scrub(from, nullptr);
  ASSERT_TRUE(cut.ok());
  EXPECT_TRUE(cut->unnamed_hints_lost);
  EXPECT_EQ(cut->lost_hint_owners, std::vector<std::string>{"n3"});
  EXPECT_EQ(cut->entries, 2u + 2u + 6u);
  EXPECT_NE(cut->Summary().find("hints of a node no stored map or member list names"),
            std::string::npos)
      << cut->Summary();
}

TEST(ScrubTest, HintsPastAnUnreadableFirstHintAreKeptForTheNodesTheStoredStateNames) {
  FailingEngine failing;
  Engine& from = failing.view;
  auto& bad = failing.bad;
  WriteBatch b;
  b.Put(Space::kMeta, std::string(kMetaNodeId), "n1");
  Result<Ring> ring = Ring::Create({"n1", "n2", "n3"}, 8);
  ASSERT_TRUE(ring.ok());
  b.Put(Space::kMeta, std::string(kMetaClusterMap), ClusterMap(*ring).Serialize());
  std::vector<proto::Member> members(2);
  members[0].id = "n4";
  members[1].id = "n6";
  b.Put(Space::kMeta, std::string(kMetaMembers), proto::EncodeMembers(members));
  // m7 and n5 are named nowhere (a node removed long ago, say).
  for (const char* owner : {"m7", "n2", "n3", "n4", "n5", "n6"}) {
    b.Put(Space::kHints, HintKey(owner, 1, "a"), "x");
    b.Put(Space::kHints, HintKey(owner, 2, "b"), "x");
  }
  ASSERT_TRUE(from.Write(b, true).ok());
  const uint64_t meta_entries = 3;

  // The unreadable first hints of named nodes cost those nodes' hints only.
  bad.insert({Space::kHints, HintKey("n3", 1, "a")});
  bad.insert({Space::kHints, HintKey("n6", 1, "a")});
  MemoryEngine to;
  Result<ScrubReport> named = Scrub(from, &to);
  ASSERT_TRUE(named.ok()) << named.status().ToString();
  EXPECT_EQ(named->lost_hint_owners, (std::vector<std::string>{"n3", "n6"}));
  EXPECT_FALSE(named->unnamed_hints_lost) << named->Summary();
  EXPECT_EQ(named->entries, meta_entries + 4u * 2u);
  std::set<std::string> kept;
  for (const auto& [key, value] : AllOf(to, Space::kHints)) {
    kept.insert(std::string(ParseHintKey(key)->owner));
  }
  EXPECT_EQ(kept, (std::set<std::string>{"m7", "n2", "n4", "n5"}));

  // An unreadable first hint of a node named nowhere loses that node's
  // hints, reported as such, and no others.
  bad = {{Space::kHints, HintKey("m7", 1, "a")}, {Space::kHints, HintKey("n5", 1, "a")}};
  Result<ScrubReport> unnamed = Scrub(from, nullptr);
  ASSERT_TRUE(unnamed.ok()) << unnamed.status().ToString();
  EXPECT_TRUE(unnamed->lost_hint_owners.empty());
  EXPECT_TRUE(unnamed->unnamed_hints_lost);
  EXPECT_EQ(unnamed->entries, meta_entries + 4u * 2u);
}

TEST(ScrubTest, ACleanEngineIsReportedCleanAndUnreadableMetadataIsAnError) {
  FailingEngine failing;
  Engine& from = failing.view;
  auto& bad = failing.bad;
  WriteBatch b;
  b.Put(Space::kMeta, std::string(kMetaNodeId), "n1");
  b.Put(Space::kData, DataKey(2, "k"), "v");
  ASSERT_TRUE(from.Write(b, true).ok());
  Result<ScrubReport> clean = Scrub(from, nullptr);
  ASSERT_TRUE(clean.ok());
  EXPECT_TRUE(clean->clean());
  EXPECT_EQ(clean->entries, 2u);
  EXPECT_NE(clean->Summary().find("nothing unreadable"), std::string::npos);

  bad.insert({Space::kMeta, std::string(kMetaNodeId)});
  MemoryEngine to;
  Result<ScrubReport> lost = Scrub(from, &to);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), StatusCode::kCorruption);
  EXPECT_NE(lost.status().ToString().find("metadata (its identity) cannot be read"),
            std::string::npos);
}

TEST(ScrubTest, AFlippedByteInARocksDbTableCostsOnlyThePartitionsOfItsBlock) {
  const std::string dir = TempDir("scrub") + "/rocksdb";
  constexpr uint32_t kPartitions = 1024;
  constexpr int kKeys = 20'000;
  const std::string value(100, 'v');
  auto key_of = [](int i) {
    return DataKey(static_cast<PartitionId>(i % kPartitions), "key" + std::to_string(i));
  };
  {
    auto e = OpenRocksDb(dir, {});
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    WriteBatch b;
    b.Put(Space::kMeta, std::string(kMetaNodeId), "n1");
    for (int i = 0; i < kKeys; ++i) b.Put(Space::kData, key_of(i), value);
    ASSERT_TRUE((*e)->Write(b, true).ok());
  }
  // Reopening replays the log into a table file.
  ASSERT_TRUE(OpenRocksDb(dir, {}).ok());
  std::filesystem::path table;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    if (f.path().extension() == ".sst" &&
        (table.empty() || f.file_size() > std::filesystem::file_size(table))) {
      table = f.path();
    }
  }
  ASSERT_FALSE(table.empty());
  {
    std::fstream f(table, std::ios::in | std::ios::out | std::ios::binary);
    const auto middle = static_cast<std::streamoff>(std::filesystem::file_size(table) / 2);
    f.seekg(middle);
    char byte = 0;
    f.get(byte);
    f.seekp(middle);
    f.put(static_cast<char>(byte ^ 0x5a));
  }

  ASSERT_TRUE(MarkScrubNeeded(dir).ok());
  EXPECT_TRUE(ScrubNeeded(dir));
  EXPECT_FALSE(InterruptedScrubSwap(dir).has_value());  // no swap under way
  EXPECT_TRUE(KeptAside(dir).empty());
  Result<ScrubOutcome> scrubbed = ScrubRocksDb(dir, {});
  ASSERT_TRUE(scrubbed.ok()) << scrubbed.status().ToString();
  EXPECT_FALSE(ScrubNeeded(dir));
  EXPECT_EQ(KeptAside(dir), std::vector<std::string>{scrubbed->kept_aside});
  const ScrubReport& report = scrubbed->report;
  ASSERT_FALSE(report.clean());
  EXPECT_GE(report.lost_partitions.size(), 1u);
  EXPECT_LE(report.lost_partitions.size(), 8u) << report.Summary();  // one 4 KiB block's worth
  EXPECT_EQ(report.partitions, kPartitions - report.lost_partitions.size());
  ASSERT_FALSE(scrubbed->kept_aside.empty());
  EXPECT_TRUE(
      std::filesystem::exists(std::filesystem::path(scrubbed->kept_aside) / table.filename()));
  EXPECT_FALSE(std::filesystem::exists(dir + ".scrub"));

  const std::set<PartitionId> lost(report.lost_partitions.begin(), report.lost_partitions.end());
  {
    auto e = OpenRocksDb(dir, {});
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    Result<std::optional<std::string>> id = (*e)->Get(Space::kMeta, kMetaNodeId);
    ASSERT_TRUE(id.ok() && id->has_value());
    EXPECT_EQ(**id, "n1");
    size_t kept = 0;
    for (int i = 0; i < kKeys; ++i) {
      Result<std::optional<std::string>> got = (*e)->Get(Space::kData, key_of(i));
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      if (lost.count(static_cast<PartitionId>(i % kPartitions))) {
        EXPECT_FALSE(got->has_value()) << i;
      } else {
        ASSERT_TRUE(got->has_value()) << i;
        EXPECT_EQ(**got, value);
        ++kept;
      }
    }
    EXPECT_EQ(kept, report.entries - 1);  // all but the node id
  }
  Result<ScrubOutcome> again = ScrubRocksDb(dir, {});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->report.clean()) << again->report.Summary();
  EXPECT_TRUE(again->kept_aside.empty());
  EXPECT_EQ(KeptAside(dir).size(), 1u);
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}

TEST(ScrubTest, AnInterruptedScrubIsFinishedOrDiscardedAtTheNextOpen) {
  const std::string root = TempDir("scrub-interrupted");
  const std::string dir = root + "/rocksdb";
  auto write_one = [](const std::string& where, const std::string& key) {
    auto e = OpenRocksDb(where, {});
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    WriteBatch b;
    b.Put(Space::kMeta, key, "1");
    ASSERT_TRUE((*e)->Write(b, true).ok());
  };
  auto has = [](const std::string& where, const std::string& key) {
    auto e = OpenRocksDb(where, {});
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    if (!e.ok()) return false;
    Result<std::optional<std::string>> v = (*e)->Get(Space::kMeta, key);
    return v.ok() && v->has_value();
  };
  // Crashed while copying: the old database stays, the copy goes.
  write_one(dir, "old");
  write_one(dir + ".scrub", "copy");
  EXPECT_TRUE(has(dir, "old"));
  EXPECT_FALSE(std::filesystem::exists(dir + ".scrub"));
  // Crashed between the two renames: the finished copy takes the old one's place.
  std::filesystem::rename(dir, root + "/aside");
  write_one(root + "/aside.scrub", "copy");
  std::filesystem::rename(root + "/aside.scrub", dir + ".scrub");
  EXPECT_TRUE(has(dir, "copy"));
  EXPECT_FALSE(has(dir, "old"));
  EXPECT_FALSE(std::filesystem::exists(dir + ".scrub"));
  Result<bool> nothing = FinishInterruptedScrub(dir);
  ASSERT_TRUE(nothing.ok());
  EXPECT_FALSE(*nothing);
  std::filesystem::remove_all(root);
}

TEST(KeysTest, Layouts) {
  std::string k = DataKey(0x01020304, "user");
  EXPECT_EQ(k, std::string("\x01\x02\x03\x04user", 8));
  EXPECT_EQ(ParseDataKey(k)->key, "user");
  EXPECT_FALSE(ParseDataKey("abc").ok());
  std::string h = HintKey("n2", 7, "key");
  auto parts = ParseHintKey(h);
  ASSERT_TRUE(parts.ok());
  EXPECT_EQ(parts->owner, "n2");
  EXPECT_EQ(parts->partition, 7u);
  EXPECT_EQ(parts->key, "key");
  EXPECT_TRUE(h.starts_with(HintOwnerPrefix("n2")));
  EXPECT_FALSE(ParseHintKey(std::string("\x09n2", 3)).ok());
  EXPECT_EQ(*DecodeU64(EncodeU64(0x0102030405060708ULL)), 0x0102030405060708ULL);
  EXPECT_FALSE(DecodeU64("short").ok());
  const SwitchSync sync = {{7, {"n2", "n10"}}, {0x01020304, {"a"}}, {9, {}}};
  const std::string bytes = EncodeSwitchSync(sync);
  EXPECT_EQ(*DecodeSwitchSync(bytes), sync);
  EXPECT_TRUE(DecodeSwitchSync("")->empty());
  for (size_t cut = 1; cut < bytes.size(); ++cut) {
    Result<SwitchSync> partial = DecodeSwitchSync(std::string_view(bytes).substr(0, cut));
    if (partial.ok()) {
      EXPECT_NE(*partial, sync) << cut;  // cut at a record's end: fewer records
    } else {
      EXPECT_EQ(partial.status().code(), StatusCode::kCorruption) << cut;
    }
  }
}

}  // namespace
}  // namespace dynamo::node
