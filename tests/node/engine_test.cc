// One conformance suite for every Engine.
#include "dynamo/node/engine.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "dynamo/node/keys.h"
#include "dynamo/node/memory_engine.h"
#include "dynamo/node/rocksdb_engine.h"

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
    } else {
      dir_ = TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
      Reopen();
    }
  }
  void TearDown() override {
    engine_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    engine_.reset();
    auto e = OpenRocksDb(dir_, {});
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(*e);
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
  if (GetParam() == "memory") GTEST_SKIP() << "memory engine has no reopen";
  WriteBatch b;
  b.Put(Space::kData, DataKey(3, "durable"), "yes");
  b.Put(Space::kMeta, "actor_id", EncodeU64(42));
  ASSERT_TRUE(engine_->Write(b, true).ok());
  Reopen();
  EXPECT_EQ(Read(Space::kData, DataKey(3, "durable")), "yes");
  EXPECT_EQ(*DecodeU64(*Read(Space::kMeta, "actor_id")), 42u);
}

TEST_P(EngineTest, SecondOpenOfTheSameDirectoryFails) {
  if (GetParam() == "memory") GTEST_SKIP();
  auto second = OpenRocksDb(dir_, {});
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kIOError);
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineTest, ::testing::Values("memory", "rocksdb"),
                         [](const auto& info) { return info.param; });

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
}

}  // namespace
}  // namespace dynamo::node
