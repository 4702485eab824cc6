#include "storage_worker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dynamo/node/memory_engine.h"

namespace dynamo::node {
namespace {

// A MemoryEngine that records which calls ran on which thread and can refuse
// the non-blocking calls, as RocksDB does when a block is not cached or
// writes are being throttled.
class RecordingEngine : public MemoryEngine {
 public:
  std::atomic<bool> refuse_cached{false};
  std::atomic<bool> refuse_no_stall{false};
  std::atomic<int> gets{0}, cached_gets{0}, writes{0}, no_stall_writes{0}, syncs{0};
  std::atomic<int> synced_writes{0};
  std::atomic<size_t> last_no_stall_ops{0};
  std::atomic<bool> blocking_call_on_loop{false};
  std::thread::id loop_thread;

  Result<std::optional<std::string>> Get(Space space, std::string_view key) override {
    ++gets;
    NoteBlocking();
    return MemoryEngine::Get(space, key);
  }
  Result<std::optional<std::string>> GetCached(Space space, std::string_view key) override {
    ++cached_gets;
    if (refuse_cached) return Status::Busy("not cached");
    return MemoryEngine::Get(space, key);
  }
  void PrefetchData(std::span<const std::string_view> keys) override {
    if (std::this_thread::get_id() != loop_thread) prefetch_off_loop = true;
    prefetched.emplace_back(keys.begin(), keys.end());
    prefetch_before_get.push_back(cached_gets.load());
  }
  // Loop thread only: each PrefetchData call's keys, and how many GetCached
  // calls came before it.
  std::vector<std::vector<std::string>> prefetched;
  std::vector<int> prefetch_before_get;
  std::atomic<bool> prefetch_off_loop{false};
  Status Write(const WriteBatch& batch, bool sync) override {
    if (hold_next_write.exchange(false)) {
      write_held.set_value();
      writes_released.wait();
    }
    ++writes;
    if (sync) {
      ++synced_writes;
      NoteSync();
    }
    NoteBlocking();
    return MemoryEngine::Write(batch, sync);
  }
  Status WriteNoStall(const WriteBatch& batch) override {
    ++no_stall_writes;
    last_no_stall_ops = batch.ops().size();
    if (refuse_no_stall) return Status::Busy("throttled");
    return MemoryEngine::Write(batch, false);
  }
  Status Sync() override {
    ++syncs;
    NoteSync();
    NoteBlocking();
    return MemoryEngine::Sync();
  }
  bool MaintenanceDue() const override { return due; }
  void Maintain() override {
    NoteBlocking();
    due = false;
    if (++maintained == 1) first_maintain.set_value();
  }
  // The next Write waits, once inside, for `release_writes` (as one
  // RocksDB stalls does).
  std::atomic<bool> hold_next_write{false};
  std::promise<void> write_held;
  std::promise<void> release_writes;
  std::shared_future<void> writes_released = release_writes.get_future().share();
  std::atomic<bool> due{false};
  std::atomic<int> maintained{0};
  std::promise<void> first_maintain;

  // How long each sync takes (set before the worker starts).
  std::chrono::microseconds sync_sleep{0};
  // When each sync (a synced Write or a Sync) started.
  std::vector<std::chrono::steady_clock::time_point> SyncTimes() {
    std::lock_guard lock(times_mu_);
    return sync_times_;
  }

 private:
  void NoteSync() {
    {
      std::lock_guard lock(times_mu_);
      sync_times_.push_back(std::chrono::steady_clock::now());
    }
    if (sync_sleep.count() > 0) std::this_thread::sleep_for(sync_sleep);
  }
  std::mutex times_mu_;
  std::vector<std::chrono::steady_clock::time_point> sync_times_;
  void NoteBlocking() {
    if (std::this_thread::get_id() == loop_thread) blocking_call_on_loop = true;
  }
};

class StorageWorkerTest : public ::testing::Test {
 protected:
  StorageWorkerTest() {
    loop_thread_ = std::thread([this] { loop_.Run(); });
    engine_.loop_thread = loop_thread_.get_id();
    worker_ = std::make_unique<StorageWorker>(&engine_, &loop_);
  }
  ~StorageWorkerTest() override {
    worker_->Stop();
    OnLoop([this] { worker_.reset(); });
    loop_.Stop();
    loop_thread_.join();
  }

  void RestartWorker(std::chrono::microseconds floor, uint32_t percent = 0) {
    worker_->Stop();
    SyncPacerOptions pacing;
    pacing.floor = floor;
    pacing.percent = percent;
    OnLoop([&] { worker_ = std::make_unique<StorageWorker>(&engine_, &loop_, pacing); });
  }

  // Submits `op` from this thread; the future holds its status.
  std::future<Status> SubmitFromHere(StorageOp op) {
    auto p = std::make_shared<std::promise<Status>>();
    std::future<Status> f = p->get_future();
    worker_->Submit(std::move(op), [p](StorageResult r) { p->set_value(r.status); });
    return f;
  }

  void OnLoop(std::function<void()> fn) {
    std::promise<void> p;
    loop_.Post([&] {
      fn();
      p.set_value();
    });
    p.get_future().get();
  }

  // Executes `ops` in one loop iteration; returns their results in order.
  std::vector<StorageResult> ExecuteAll(std::vector<StorageOp> ops) {
    auto results = std::make_shared<std::vector<std::optional<StorageResult>>>(ops.size());
    auto left = std::make_shared<size_t>(ops.size());
    auto inside = std::make_shared<bool>(false);
    std::promise<void> all;
    loop_.Post([&, results, left, inside] {
      *inside = true;
      for (size_t i = 0; i < ops.size(); ++i) {
        worker_->Execute(std::move(ops[i]), [&, i, results, left, inside](StorageResult r) {
          EXPECT_FALSE(*inside) << "done ran inside Execute";
          (*results)[i] = std::move(r);
          if (--*left == 0) all.set_value();
        });
      }
      *inside = false;
    });
    all.get_future().get();
    std::vector<StorageResult> out;
    for (auto& r : *results) out.push_back(std::move(*r));
    return out;
  }

  // Data key "k" holds "v", and no read is answered from memory.
  void StoreKeyTheCacheLacks() {
    engine_.refuse_cached = true;
    WriteBatch b;
    b.Put(Space::kData, "k", "v");
    ASSERT_TRUE(engine_.MemoryEngine::Write(b, false).ok());
  }

  static WriteOp Put(Space space, std::string key, std::string value, bool sync) {
    WriteOp w;
    w.batch.Put(space, std::move(key), std::move(value));
    w.sync = sync;
    return w;
  }

  net::EventLoop loop_;
  std::thread loop_thread_;
  RecordingEngine engine_;
  std::unique_ptr<StorageWorker> worker_;
};

TEST_F(StorageWorkerTest, CachedReadsAreAnsweredOnTheLoop) {
  ASSERT_TRUE(engine_
                  .Write(
                      [] {
                        WriteBatch b;
                        b.Put(Space::kData, "k", "v");
                        return b;
                      }(),
                      false)
                  .ok());
  std::vector<StorageResult> r =
      ExecuteAll({ReadOp{Space::kData, "k"}, ReadOp{Space::kData, "absent"}});
  ASSERT_TRUE(r[0].status.ok());
  EXPECT_EQ(r[0].value, std::optional<std::string>("v"));
  EXPECT_TRUE(r[1].status.ok());
  EXPECT_FALSE(r[1].value.has_value());
  EXPECT_EQ(engine_.cached_gets, 2);
  EXPECT_EQ(engine_.gets, 0);
}

TEST_F(StorageWorkerTest, ReadsOfOneIterationArePrefetchedTogetherBeforeAnyIsAnswered) {
  ASSERT_TRUE(engine_
                  .Write(
                      [] {
                        WriteBatch b;
                        b.Put(Space::kData, "a", "1");
                        b.Put(Space::kData, "c", "3");
                        b.Put(Space::kHints, "h", "4");
                        return b;
                      }(),
                      false)
                  .ok());
  std::vector<StorageResult> r = ExecuteAll({ReadOp{Space::kData, "a"}, ReadOp{Space::kHints, "h"},
                                             ReadOp{Space::kData, "b"}, ReadOp{Space::kData, "c"}});
  EXPECT_EQ(r[0].value, std::optional<std::string>("1"));
  EXPECT_EQ(r[1].value, std::optional<std::string>("4"));
  EXPECT_FALSE(r[2].value.has_value());
  EXPECT_EQ(r[3].value, std::optional<std::string>("3"));
  // One hint, for the data keys only, on the loop, before the first answer.
  OnLoop([this] {
    ASSERT_EQ(engine_.prefetched.size(), 1u);
    EXPECT_EQ(engine_.prefetched[0], (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(engine_.prefetch_before_get[0], 0);
  });
  EXPECT_FALSE(engine_.prefetch_off_loop);
}

TEST_F(StorageWorkerTest, UncachedReadsGoToTheReadThread) {
  ASSERT_NO_FATAL_FAILURE(StoreKeyTheCacheLacks());
  std::vector<StorageResult> r = ExecuteAll({ReadOp{Space::kData, "k"}});
  EXPECT_EQ(r[0].value, std::optional<std::string>("v"));
  EXPECT_EQ(engine_.gets, 1);
  EXPECT_FALSE(engine_.blocking_call_on_loop);
}

TEST_F(StorageWorkerTest, AnUncachedReadIsAnsweredWhileTheStorageThreadIsInAStalledWrite) {
  ASSERT_NO_FATAL_FAILURE(StoreKeyTheCacheLacks());
  engine_.hold_next_write = true;
  std::future<Status> write = SubmitFromHere(Put(Space::kMeta, "m", "1", true));
  engine_.write_held.get_future().wait();
  std::vector<std::future<StorageResult>> reads;
  for (const char* key : {"k", "absent"}) {
    auto p = std::make_shared<std::promise<StorageResult>>();
    reads.push_back(p->get_future());
    worker_->Submit(ReadOp{Space::kData, key},
                    [p](StorageResult r) { p->set_value(std::move(r)); });
  }
  // Bounded only so that the old behaviour fails rather than hangs: a read
  // takes microseconds.
  const auto bound = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  const bool answered = reads[0].wait_until(bound) == std::future_status::ready &&
                        reads[1].wait_until(bound) == std::future_status::ready;
  engine_.release_writes.set_value();
  ASSERT_TRUE(answered) << "the reads waited for the stalled write";
  EXPECT_EQ(reads[0].get().value, std::optional<std::string>("v"));
  StorageResult absent = reads[1].get();
  EXPECT_TRUE(absent.status.ok());
  EXPECT_FALSE(absent.value.has_value());
  EXPECT_TRUE(write.get().ok());
  EXPECT_EQ(worker_->stats().reads, 2u);
}

TEST_F(StorageWorkerTest, WritesOfOneIterationAreOneBatch) {
  std::vector<StorageResult> r =
      ExecuteAll({Put(Space::kData, "a", "1", false), Put(Space::kHints, "b", "2", false),
                  Put(Space::kData, "c", "3", false)});
  for (const StorageResult& one : r) EXPECT_TRUE(one.status.ok());
  EXPECT_EQ(engine_.no_stall_writes, 1);
  EXPECT_EQ(engine_.last_no_stall_ops, 3u);
  EXPECT_EQ(engine_.writes, 0);
  EXPECT_EQ(engine_.syncs, 0);
  EXPECT_EQ(engine_.size(Space::kData), 2u);
}

TEST_F(StorageWorkerTest, SyncedWritesAreAppliedOnTheLoopAndSyncedOnTheStorageThread) {
  std::vector<StorageResult> r =
      ExecuteAll({Put(Space::kData, "a", "1", true), Put(Space::kData, "b", "2", true),
                  Put(Space::kData, "c", "3", false)});
  for (const StorageResult& one : r) EXPECT_TRUE(one.status.ok());
  EXPECT_EQ(engine_.no_stall_writes, 1);
  EXPECT_EQ(engine_.writes, 0);
  EXPECT_GE(engine_.syncs, 1);
  EXPECT_FALSE(engine_.blocking_call_on_loop);
  // Durable: a power loss now keeps all three (the sync covered every
  // write applied before it).
  engine_.DropUnsynced();
  EXPECT_EQ(engine_.size(Space::kData), 3u);
}

TEST_F(StorageWorkerTest, FailedSyncFailsTheWritesThatWaitedForIt) {
  engine_.FailSyncs(true);
  std::vector<StorageResult> r = ExecuteAll({Put(Space::kData, "a", "1", true)});
  EXPECT_EQ(r[0].status.code(), StatusCode::kIOError);
}

// A transfer's or a hint's retry finds its versions stored and asks only
// for a sync: after a failed one, that sync fails too.
TEST_F(StorageWorkerTest, AfterAFailedSyncASyncWithNothingToWriteFailsToo) {
  engine_.FailSyncs(true);
  ASSERT_EQ(ExecuteAll({Put(Space::kData, "a", "1", true)})[0].status.code(), StatusCode::kIOError);
  engine_.FailSyncs(false);
  EXPECT_EQ(ExecuteAll({WriteOp{WriteBatch{}, true}})[0].status.code(), StatusCode::kIOError);
  EXPECT_EQ(ExecuteAll({Put(Space::kData, "b", "2", false)})[0].status.code(),
            StatusCode::kIOError);
}

TEST_F(StorageWorkerTest, MetaWritesAndScansGoToTheStorageThread) {
  ScanOp scan;
  scan.space = Space::kData;
  std::vector<StorageResult> r = ExecuteAll({Put(Space::kMeta, "m", "1", false), scan});
  EXPECT_TRUE(r[0].status.ok());
  EXPECT_TRUE(r[1].status.ok());
  EXPECT_EQ(engine_.no_stall_writes, 0);
  EXPECT_EQ(engine_.writes, 1);
  EXPECT_FALSE(engine_.blocking_call_on_loop);
}

TEST_F(StorageWorkerTest, ThrottledWritesWaitOnTheStorageThreadAndKeepTheirSync) {
  engine_.refuse_no_stall = true;
  std::vector<StorageResult> r =
      ExecuteAll({Put(Space::kData, "a", "1", false), Put(Space::kData, "b", "2", true)});
  for (const StorageResult& one : r) EXPECT_TRUE(one.status.ok());
  EXPECT_EQ(engine_.writes, 1);
  EXPECT_EQ(engine_.synced_writes, 1);
  EXPECT_FALSE(engine_.blocking_call_on_loop);
  engine_.DropUnsynced();
  EXPECT_EQ(engine_.size(Space::kData), 2u);
}

TEST_F(StorageWorkerTest, WorkStartedByACompletionJoinsTheSamePass) {
  std::promise<std::vector<StorageResult>> p;
  loop_.Post([&] {
    worker_->Execute(Put(Space::kData, "a", "1", false), [&](StorageResult first) {
      worker_->Execute(ReadOp{Space::kData, "a"}, [&, first](StorageResult second) {
        p.set_value({first, second});
      });
    });
  });
  std::vector<StorageResult> r = p.get_future().get();
  EXPECT_TRUE(r[0].status.ok());
  EXPECT_EQ(r[1].value, std::optional<std::string>("1"));
  EXPECT_EQ(engine_.gets, 0);
}

// Housekeeping an inline write made due (a RocksDB memtable switch) runs on
// the storage thread, never on the loop.
TEST_F(StorageWorkerTest, MaintenanceAnInlineWriteMadeDueRunsOnTheStorageThread) {
  std::vector<StorageResult> r = ExecuteAll({Put(Space::kData, "a", "1", false)});
  ASSERT_TRUE(r[0].status.ok());
  EXPECT_EQ(engine_.maintained, 0);
  engine_.due = true;
  r = ExecuteAll({Put(Space::kData, "b", "2", false)});
  ASSERT_TRUE(r[0].status.ok());
  ASSERT_EQ(engine_.first_maintain.get_future().wait_for(std::chrono::seconds(30)),
            std::future_status::ready);
  EXPECT_FALSE(engine_.blocking_call_on_loop);
  EXPECT_EQ(engine_.no_stall_writes, 2);
  EXPECT_EQ(engine_.writes, 0);
}

}  // namespace
}  // namespace dynamo::node

namespace dynamo::node {
namespace {

TEST_F(StorageWorkerTest, SyncsAskedForWithinTheSpacingWaitForItAndShareOneSync) {
  RestartWorker(std::chrono::seconds(30));
  ASSERT_TRUE(SubmitFromHere(Put(Space::kData, "a", "1", true)).get().ok());
  std::future<Status> b = SubmitFromHere(Put(Space::kData, "b", "2", true));
  // The thread waits out the spacing with b queued...
  for (int i = 0; i < 10000 && worker_->stats().spaced == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(worker_->stats().spaced, 1u);
  EXPECT_EQ(b.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  std::future<Status> c = SubmitFromHere(Put(Space::kData, "c", "3", true));
  // ...and Stop ends the wait: b and c share the one sync that follows.
  worker_->Stop();
  EXPECT_TRUE(b.get().ok());
  EXPECT_TRUE(c.get().ok());
  EXPECT_EQ(engine_.SyncTimes().size(), 2u);
  EXPECT_EQ(worker_->stats().syncs, 2u);
}

TEST_F(StorageWorkerTest, TwoSyncsStartAtLeastTheSpacingApart) {
  const auto spacing = std::chrono::milliseconds(30);
  RestartWorker(spacing);
  const auto before_first = std::chrono::steady_clock::now();
  ASSERT_TRUE(SubmitFromHere(Put(Space::kData, "a", "1", true)).get().ok());
  // Unsynced work does not wait for the spacing, nor start it.
  ASSERT_TRUE(SubmitFromHere(Put(Space::kData, "u", "0", false)).get().ok());
  EXPECT_EQ(worker_->stats().spaced, 0u);
  ASSERT_TRUE(SubmitFromHere(WriteOp{WriteBatch{}, true}).get().ok());
  const auto times = engine_.SyncTimes();
  ASSERT_EQ(times.size(), 2u);
  // The first sync started after before_first, the second the spacing after it.
  EXPECT_GE(times[1] - before_first, spacing);
}

// With a percentage set, the spacing follows what the engine's syncs take.
TEST_F(StorageWorkerTest, APercentageSpacingFollowsTheSyncTime) {
  const auto took = std::chrono::microseconds(400);
  engine_.sync_sleep = took;
  RestartWorker(std::chrono::microseconds(0), 200);
  EXPECT_EQ(worker_->stats().spacing_us, 0u);
  const auto before_first = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(SubmitFromHere(Put(Space::kData, "a", std::to_string(i), true)).get().ok());
  }
  const uint64_t spacing_us = worker_->stats().spacing_us;
  EXPECT_GE(spacing_us, 2 * static_cast<uint64_t>(took.count()));
  EXPECT_LE(spacing_us, static_cast<uint64_t>(kSyncPacerShareMax.count()));
  const auto times = engine_.SyncTimes();
  ASSERT_EQ(times.size(), 3u);
  // The first sync took at least `took`, so the second waited for twice that.
  EXPECT_GE(times[1] - before_first, 2 * took);
}

}  // namespace
}  // namespace dynamo::node
