// The prefilled log file system (storage-node/src/prefilled_log.h): its
// spares, and a database whose logs it makes recovering every synced write
// from a crash image that still holds the zeros.
#include "prefilled_log.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include "dynamo/node/keys.h"
#include "dynamo/node/rocksdb_engine.h"

namespace dynamo::node {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  auto dir =
      fs::temp_directory_path() / ("dynamo-prefilled-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool AllZero(std::string_view bytes) {
  return bytes.find_first_not_of('\0') == std::string_view::npos;
}

// The log with the highest number in `dir`.
fs::path NewestLog(const std::string& dir) {
  fs::path newest;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".log" && (newest.empty() || e.path() > newest)) newest = e.path();
  }
  return newest;
}

// Whether the file's last 4 KiB are zeros (a log from a spare, still open).
bool EndsInZeros(const fs::path& path) {
  constexpr size_t kTail = 4096;
  if (path.empty() || fs::file_size(path) < 2 * kTail) return false;
  std::ifstream in(path, std::ios::binary);
  in.seekg(-static_cast<std::streamoff>(kTail), std::ios::end);
  std::string tail(kTail, 'x');
  in.read(tail.data(), kTail);
  return AllZero(tail);
}

class PrefilledLogTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kMax = 8u << 20;
  static constexpr uint64_t kFirst = 3u << 20;

  void SetUp() override {
    dir_ = TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    Make();
  }
  void TearDown() override {
    fs_.reset();
    fs::remove_all(dir_);
  }
  void Make(bool keep_zeros_at_close = false) {
    PrefilledLogOptions options;
    options.keep_zeros_at_close = keep_zeros_at_close;
    options.spare_bytes_max = kMax;
    options.first_spare_bytes = kFirst;
    options.warn = [this](const std::string& message) {
      std::lock_guard<std::mutex> lock(mu_);
      warnings_.push_back(message);
    };
    fs_ = PrefilledLogFileSystem::Make(rocksdb::FileSystem::Default(), dir_, std::move(options));
  }

  std::string Name(int number) { return dir_ + "/" + std::to_string(100000 + number) + ".log"; }

  std::unique_ptr<rocksdb::FSWritableFile> Create(const std::string& path) {
    std::unique_ptr<rocksdb::FSWritableFile> f;
    EXPECT_TRUE(fs_->NewWritableFile(path, rocksdb::FileOptions(), &f, nullptr).ok());
    return f;
  }
  void Append(rocksdb::FSWritableFile* f, const std::string& data) {
    ASSERT_TRUE(f->Append(data, io_, nullptr).ok());
  }
  std::string Spare() const { return dir_ + "/PREFILLED-LOG"; }
  // Fills log 1 enough for a spare, waits for it and switches to log 2, made
  // from it, then waits for the spare the switch asks for.
  std::unique_ptr<rocksdb::FSWritableFile> SwitchAfterAFullLog() {
    auto log = Create(Name(1));
    Append(log.get(), std::string(kPrefillMinLogBytes, 'a'));
    fs_->WaitForSpare();
    log = Create(Name(2));
    fs_->WaitForSpare();
    EXPECT_EQ(fs_->stats().prefilled_logs, 1u);
    return log;
  }
  std::vector<std::string> Warnings() {
    std::lock_guard<std::mutex> lock(mu_);
    return warnings_;
  }

  std::string dir_;
  std::shared_ptr<PrefilledLogFileSystem> fs_;
  rocksdb::IOOptions io_;
  std::mutex mu_;
  std::vector<std::string> warnings_;
};

// For a database whose deletions are paced: the zeros' blocks are freed when
// the log is deleted, at that pace, not when it closes.
TEST_F(PrefilledLogTest, ALogKeepingItsZerosClosesAtTheSparesSize) {
  fs_.reset();
  Make(/*keep_zeros_at_close=*/true);
  auto log = SwitchAfterAFullLog();
  Append(log.get(), "record");
  ASSERT_TRUE(log->Sync(io_, nullptr).ok());
  ASSERT_TRUE(log->Close(io_, nullptr).ok());
  std::string on_disk = ReadFile(Name(2));
  ASSERT_EQ(on_disk.size(), kFirst);
  EXPECT_EQ(on_disk.substr(0, 6), "record");
  EXPECT_TRUE(AllZero(std::string_view(on_disk).substr(6)));
}

TEST_F(PrefilledLogTest, AGrowingLogPastAMebibyteGetsTheFirstSpare) {
  auto first = Create(Name(1));
  Append(first.get(), std::string(kPrefillMinLogBytes - 1, 'a'));
  fs_->WaitForSpare();
  EXPECT_FALSE(fs::exists(Spare()));
  Append(first.get(), "a");
  fs_->WaitForSpare();
  ASSERT_TRUE(fs::exists(Spare()));
  EXPECT_EQ(fs::file_size(Spare()), kFirst);
  EXPECT_TRUE(AllZero(ReadFile(Spare())));
  // Asked once: more records ask for no other spare.
  Append(first.get(), std::string(kPrefillMinLogBytes, 'a'));
  fs_->WaitForSpare();
  PrefilledLogStats stats = fs_->stats();
  EXPECT_EQ(stats.spares_made, 1u);
  EXPECT_EQ(stats.grown_logs, 1u);
  ASSERT_TRUE(first->Close(io_, nullptr).ok());
  EXPECT_EQ(fs::file_size(Name(1)), 2 * kPrefillMinLogBytes);
}

TEST_F(PrefilledLogTest, TheLogAfterAFullOneIsWrittenOverASpareOfZeros) {
  auto first = Create(Name(1));
  Append(first.get(), std::string(2u << 20, 'a'));
  fs_->WaitForSpare();
  ASSERT_TRUE(first->Close(io_, nullptr).ok());
  // The second log is the first spare; the switch asks for the next one, a
  // quarter larger than the first log.
  auto second = Create(Name(2));
  fs_->WaitForSpare();
  ASSERT_TRUE(fs::exists(Spare()));
  EXPECT_EQ(fs::file_size(Spare()), (2u << 20) + (512u << 10));
  EXPECT_TRUE(AllZero(ReadFile(Spare())));
  PrefilledLogStats stats = fs_->stats();
  EXPECT_EQ(stats.grown_logs, 1u);
  EXPECT_EQ(stats.prefilled_logs, 1u);
  EXPECT_EQ(stats.spares_made, 2u);
  Append(second.get(), "record one");
  Append(second.get(), " and two");
  ASSERT_TRUE(second->Sync(io_, nullptr).ok());
  EXPECT_EQ(second->GetFileSize(io_, nullptr), 18u);
  // On disk the log keeps the spare's size, its records over the first zeros.
  std::string on_disk = ReadFile(Name(2));
  ASSERT_EQ(on_disk.size(), kFirst);
  EXPECT_EQ(on_disk.substr(0, 18), "record one and two");
  EXPECT_TRUE(AllZero(std::string_view(on_disk).substr(18)));
  // Closed, it has its true size.
  ASSERT_TRUE(second->Close(io_, nullptr).ok());
  EXPECT_EQ(ReadFile(Name(2)), "record one and two");

  auto third = Create(Name(3));
  EXPECT_FALSE(fs::exists(Spare()));
  EXPECT_EQ(fs::file_size(Name(3)), (2u << 20) + (512u << 10));
  // The second log, under 1 MiB, got no spare after it, and the third, made
  // from one, asks for none however full.
  Append(third.get(), std::string(2u << 20, 'c'));
  fs_->WaitForSpare();
  EXPECT_FALSE(fs::exists(Spare()));
  EXPECT_EQ(fs_->stats().spares_made, 2u);
  EXPECT_TRUE(Warnings().empty());
}

TEST_F(PrefilledLogTest, LogsUnderAMebibyteMakeNoSpareAndSparesStopAtTheLimit) {
  auto log = Create(Name(1));
  Append(log.get(), std::string(kPrefillMinLogBytes - 1, 'a'));
  log = Create(Name(2));
  fs_->WaitForSpare();
  EXPECT_FALSE(fs::exists(Spare()));
  Append(log.get(), std::string(kMax, 'b'));
  fs_->WaitForSpare();
  log = Create(Name(3));
  EXPECT_EQ(fs_->stats().prefilled_logs, 1u);
  fs_->WaitForSpare();
  EXPECT_EQ(fs::file_size(Spare()), kMax);
  EXPECT_EQ(fs_->stats().spares_made, 2u);
}

TEST_F(PrefilledLogTest, ASpareThatCannotBeWrittenIsReportedAndLogsGrow) {
  // A directory where the spare is written makes every attempt fail.
  fs::create_directories(dir_ + "/PREFILLED-LOG.tmp");
  auto log = Create(Name(1));
  Append(log.get(), std::string(kPrefillMinLogBytes, 'a'));
  fs_->WaitForSpare();
  log = Create(Name(2));
  fs_->WaitForSpare();
  Append(log.get(), "after");
  ASSERT_TRUE(log->Sync(io_, nullptr).ok());
  ASSERT_TRUE(log->Close(io_, nullptr).ok());
  EXPECT_EQ(ReadFile(Name(2)), "after");
  PrefilledLogStats stats = fs_->stats();
  EXPECT_EQ(stats.grown_logs, 2u);
  EXPECT_EQ(stats.prefilled_logs, 0u);
  EXPECT_EQ(stats.spares_made, 0u);
  EXPECT_EQ(stats.spare_failures, 2u);
  EXPECT_NE(stats.last_error.find("PREFILLED-LOG.tmp"), std::string::npos) << stats.last_error;
  std::vector<std::string> warnings = Warnings();
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("logs grow"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find(stats.last_error), std::string::npos) << warnings[0];
}

TEST_F(PrefilledLogTest, ALogThatOutgrowsItsSpareGrows) {
  auto log = SwitchAfterAFullLog();
  log = Create(Name(3));
  ASSERT_EQ(fs_->stats().prefilled_logs, 2u);
  const uint64_t spare = fs::file_size(Name(3));
  const std::string data(spare + 1000, 'c');
  Append(log.get(), data.substr(0, 1000));
  Append(log.get(), data.substr(1000));
  ASSERT_TRUE(log->Sync(io_, nullptr).ok());
  EXPECT_EQ(ReadFile(Name(3)), data);
}

TEST_F(PrefilledLogTest, OtherFilesPassThrough) {
  for (const std::string& name : {"MANIFEST-000001", "000005.sst", "LOG", "1.log.old", "x1.log"}) {
    auto f = Create(dir_ + "/" + name);
    Append(f.get(), "plain");
    ASSERT_TRUE(f->Close(io_, nullptr).ok());
    EXPECT_EQ(ReadFile(dir_ + "/" + name), "plain") << name;
  }
  // A log of another directory too.
  fs::create_directories(dir_ + "/sub");
  auto f = Create(dir_ + "/sub/000001.log");
  EXPECT_EQ(fs_->stats().grown_logs, 0u);
}

TEST_F(PrefilledLogTest, AStartDropsTheSparesItFinds) {
  auto log = SwitchAfterAFullLog();
  log.reset();
  fs_.reset();
  // A spare holding records (a log whose rename a crash undid), and a half
  // made one.
  std::ofstream(Spare(), std::ios::app) << "records of a log";
  std::ofstream(dir_ + "/PREFILLED-LOG.tmp") << "half made";
  Make();
  log = Create(Name(3));
  EXPECT_EQ(fs_->stats().prefilled_logs, 0u);
  EXPECT_EQ(fs_->stats().grown_logs, 1u);
  EXPECT_FALSE(fs::exists(Spare()));
  EXPECT_FALSE(fs::exists(dir_ + "/PREFILLED-LOG.tmp"));
  Append(log.get(), "new");
  ASSERT_TRUE(log->Close(io_, nullptr).ok());
  EXPECT_EQ(ReadFile(Name(3)), "new");
}

LogProgress::Clock::time_point test_now;

// A log written over a spare that meets a full disk reports it as RocksDB's
// own files do (retryable NoSpace), so that RocksDB recovers once the disk
// has room; as a plain IOError it stopped writes until the node restarted.
TEST(ErrnoStatusTest, AFullDiskIsARetryableNoSpace) {
  const rocksdb::IOStatus full = ErrnoStatus("write", "/d/000012.log", ENOSPC);
  EXPECT_TRUE(full.IsNoSpace()) << full.ToString();
  EXPECT_TRUE(full.GetRetryable());
  EXPECT_NE(full.ToString().find("/d/000012.log"), std::string::npos);
  const rocksdb::IOStatus other = ErrnoStatus("write", "/d/000012.log", EIO);
  EXPECT_TRUE(other.IsIOError());
  EXPECT_FALSE(other.IsNoSpace());
  EXPECT_FALSE(other.GetRetryable());
}

TEST(LogProgressTest, PacesByTheLastMebibytesNotTheWholeLife) {
  using std::chrono::milliseconds;
  constexpr uint64_t kMiB = 1u << 20;
  const LogProgress::Clock::time_point made{};
  test_now = made;
  LogProgress log([] { return test_now; });
  // Under 2 MiB: the rate over the log's life.
  test_now = made + milliseconds(1000);
  log.Wrote(kMiB);
  test_now = made + milliseconds(2000);
  EXPECT_NEAR(log.Rate(), kMiB / 2.0, 1.0);
  // Idle for 1,000 s, then 16 MiB at 10 MiB a second, 1 MiB at a time.
  const LogProgress::Clock::time_point busy = made + milliseconds(1'000'000);
  for (uint64_t i = 1; i <= 16; ++i) {
    test_now = busy + milliseconds(100 * i);
    log.Wrote((1 + i) * kMiB);
  }
  EXPECT_EQ(log.bytes(), 17 * kMiB);
  EXPECT_NEAR(log.Rate(), 10.0 * kMiB, 0.01 * kMiB);
  // A write past several marks at once dates them all.
  test_now = busy + milliseconds(2600);
  log.Wrote(30 * kMiB);
  EXPECT_NEAR(log.Rate(), 7.0 * kMiB / 1e-3, 1.0);
}

// A database writing synced batches through its logs, the later ones made
// from spares, then copied while open: the copy is what a crash would leave
// (every write was synced, and the current log still holds its zeros).
TEST(PrefilledLogEngineTest, EverySyncedWriteSurvivesACrashImageWithZerosInTheLog) {
  const std::string dir = TempDir("engine");
  const std::string db = dir + "/db";
  RocksDbOptions options;
  options.write_buffer_bytes = 2u << 20;
  options.wait_for_flushes = true;
  options.stagger_seed = 7;
  const std::string value(4000, 'v');
  auto key = [](int i) {
    return DataKey(static_cast<PartitionId>(i % 16), "k" + std::to_string(i));
  };
  int written = 0;
  fs::path prefilled;
  {
    // RocksDB itself, with the engine's column families: the engine flushes
    // every space at each switch, and this database must keep its older logs.
    PrefilledLogOptions spares;
    spares.first_spare_bytes = 4u << 20;
    std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(
        PrefilledLogFileSystem::Make(rocksdb::FileSystem::Default(), db, spares));
    rocksdb::Options o;
    o.create_if_missing = true;
    o.create_missing_column_families = true;
    o.env = env.get();
    o.write_buffer_size = options.write_buffer_bytes;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const char* name : {rocksdb::kDefaultColumnFamilyName.c_str(), "hints", "meta"}) {
      families.emplace_back(name, rocksdb::ColumnFamilyOptions(o));
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    rocksdb::Status opened = rocksdb::DB::Open(o, db, families, &handles, &raw);
    ASSERT_TRUE(opened.ok()) << opened.ToString();
    std::unique_ptr<rocksdb::DB> rdb(raw);
    rocksdb::WriteOptions synced;
    synced.sync = true;
    // A hint nothing flushes keeps every log alive, so the image holds them
    // all, as one taken while a flush runs holds the logs it will free.
    ASSERT_TRUE(rdb->Put(synced, handles[1], "hint", "kept").ok());
    // Until 20 writes went into a log made from a spare, which still holds
    // its zeros: it is the newest log and ends in them.
    int after = 0;
    while (after < 20) {
      ASSERT_LT(written, 20000) << "no log was made from a spare";
      ASSERT_TRUE(rdb->Put(synced, handles[0], key(written), value + std::to_string(written)).ok());
      ++written;
      const fs::path log = NewestLog(db);
      if (EndsInZeros(log)) {
        after = log == prefilled ? after + 1 : 1;
        prefilled = log;
      } else {
        after = 0;
      }
    }
    fs::copy(db, dir + "/image", fs::copy_options::recursive);
    for (auto* h : handles) ASSERT_TRUE(rdb->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(rdb->Close().ok());
  }
  const fs::path newest = NewestLog(dir + "/image");
  ASSERT_EQ(newest.filename(), prefilled.filename());
  std::string log = ReadFile(newest.string());
  const size_t end = log.find_last_not_of('\0') + 1;
  ASSERT_LT(end + 4096, log.size()) << "the newest log holds no zeros";

  // And a torn record after the last synced one, as a crash mid-write leaves.
  const std::string torn = dir + "/torn";
  fs::copy(dir + "/image", torn, fs::copy_options::recursive);
  {
    std::fstream f(torn + "/" + newest.filename().string(),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(end));
    f << std::string(100, '\xab');
  }
  // And the older logs ending in zeros too, as logs not yet closed by a crash
  // do: recovery must read past them into the newest.
  const std::string padded = dir + "/padded";
  fs::copy(dir + "/image", padded, fs::copy_options::recursive);
  int older = 0;
  for (const auto& e : fs::directory_iterator(padded)) {
    if (e.path().extension() != ".log" || e.path().filename() == newest.filename()) continue;
    std::ofstream(e.path(), std::ios::app | std::ios::binary) << std::string(64u << 10, '\0');
    ++older;
  }
  ASSERT_GE(older, 2);
  for (const std::string& image : {dir + "/image", torn, padded}) {
    for (uint64_t prefill : {uint64_t{0}, options.prefilled_log_bytes_max}) {
      RocksDbOptions reopen = options;
      reopen.prefilled_log_bytes_max = prefill;
      Result<std::unique_ptr<Engine>> engine = OpenRocksDb(image, reopen);
      ASSERT_TRUE(engine.ok()) << image << ": " << engine.status().ToString();
      for (int i = 0; i < written; ++i) {
        Result<std::optional<std::string>> got = (*engine)->Get(Space::kData, key(i));
        ASSERT_TRUE(got.ok() && got->has_value())
            << image << " lost key " << i << " of " << written;
        ASSERT_EQ(**got, value + std::to_string(i));
      }
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dynamo::node
