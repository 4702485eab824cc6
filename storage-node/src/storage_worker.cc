#include "storage_worker.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

namespace dynamo::node {

StorageWorker::StorageWorker(Engine* engine, net::EventLoop* loop, SyncPacerOptions pacing)
    : engine_(engine),
      loop_(loop),
      pacer_(pacing),
      thread_([this] { Run(); }),
      read_thread_([this] { RunReads(); }) {
  std::lock_guard lock(mu_);
  stats_.spacing_us = static_cast<uint64_t>(pacing.floor.count());
}

StorageWorker::~StorageWorker() { Stop(); }

void StorageWorker::Submit(StorageOp op, Done done) {
  if (std::holds_alternative<ReadOp>(op)) {
    {
      std::lock_guard lock(mu_);
      reads_.push_back(Item{std::move(op), std::move(done)});
    }
    reads_cv_.notify_one();
    return;
  }
  bool wake;
  {
    std::lock_guard lock(mu_);
    if (const auto* write = std::get_if<WriteOp>(&op); write != nullptr && write->sync)
      sync_queued_ = true;
    queue_.push_back(Item{std::move(op), std::move(done)});
    wake = !spacing_;
  }
  if (wake) cv_.notify_one();
}

namespace {

// A read's outcome as a StorageResult.
StorageResult ReadResult(Result<std::optional<std::string>> v) {
  StorageResult result;
  if (v.ok()) {
    result.value = std::move(*v);
  } else {
    result.status = v.status();
  }
  return result;
}

// A write of keys the core writes under its per-key lock.
bool InlineWrite(const WriteOp& write) {
  return !write.batch.empty() &&
         std::all_of(write.batch.ops().begin(), write.batch.ops().end(),
                     [](const WriteBatch::Op& op) { return op.space != Space::kMeta; });
}

}  // namespace

void StorageWorker::Execute(StorageOp op, Done done) {
  if (auto* read = std::get_if<ReadOp>(&op)) {
    inline_reads_.push_back(InlineRead{std::move(*read), std::move(done)});
  } else if (auto* write = std::get_if<WriteOp>(&op); write != nullptr && InlineWrite(*write)) {
    inline_batch_.Append(std::move(write->batch));
    inline_writers_.push_back(InlineWriter{std::move(done), write->sync});
  } else {
    Submit(std::move(op), std::move(done));
    return;
  }
  if (!finish_scheduled_) {
    finish_scheduled_ = true;
    loop_->Defer([this] { FinishInline(); });
  }
}

void StorageWorker::RunInlineReads() {
  std::vector<InlineRead> reads;
  reads.swap(inline_reads_);
  std::vector<std::string_view> data_keys;
  data_keys.reserve(reads.size());
  for (const InlineRead& r : reads) {
    if (r.op.space == Space::kData) data_keys.push_back(r.op.key);
  }
  if (data_keys.size() > 1) engine_->PrefetchData(data_keys);
  for (InlineRead& r : reads) {
    Result<std::optional<std::string>> v = engine_->GetCached(r.op.space, r.op.key);
    if (!v.ok() && v.status().code() == StatusCode::kBusy) {
      Submit(std::move(r.op), std::move(r.done));
      continue;
    }
    ready_.push_back(Ready{std::move(r.done), ReadResult(std::move(v))});
  }
}

void StorageWorker::FinishInline() {
  // Execute calls made by the completions below join this pass.
  while (true) {
    while (!ready_.empty() || !inline_reads_.empty()) {
      // The reads asked for so far are answered together, so that their
      // cache misses overlap (Engine::PrefetchData).
      if (!inline_reads_.empty()) RunInlineReads();
      std::vector<Ready> ready;
      ready.swap(ready_);
      for (Ready& r : ready) r.done(std::move(r.result));
    }
    if (inline_writers_.empty()) break;
    WriteBatch batch = std::move(inline_batch_);
    inline_batch_ = WriteBatch();
    std::vector<InlineWriter> writers = std::move(inline_writers_);
    inline_writers_.clear();
    Status s = engine_->WriteNoStall(batch);
    if (s.code() == StatusCode::kBusy) {
      // The engine is throttling writes, or a log sync is starting: wait
      // for it on the storage thread.
      bool sync = false;
      for (const InlineWriter& w : writers) sync |= w.sync;
      SubmitShared(WriteOp{std::move(batch), sync}, std::move(writers));
      continue;
    }
    if (s.ok() && engine_->MaintenanceDue()) {
      {
        std::lock_guard lock(mu_);
        maintenance_wanted_ = true;
      }
      cv_.notify_one();
    }
    std::vector<InlineWriter> synced;
    for (InlineWriter& w : writers) {
      if (s.ok() && w.sync) {
        synced.push_back(std::move(w));
        continue;
      }
      StorageResult r;
      r.status = s;
      ready_.push_back(Ready{std::move(w.done), std::move(r)});
    }
    // Applied; durable once the storage thread synced the log. Syncs queued
    // together share one.
    if (!synced.empty()) SubmitShared(WriteOp{WriteBatch{}, true}, std::move(synced));
  }
  finish_scheduled_ = false;
}

void StorageWorker::SubmitShared(WriteOp op, std::vector<InlineWriter> writers) {
  auto waiting = std::make_shared<std::vector<InlineWriter>>(std::move(writers));
  Submit(std::move(op), [waiting](StorageResult r) {
    for (InlineWriter& w : *waiting) w.done(r);
  });
}

void StorageWorker::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_ && !thread_.joinable() && !read_thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_one();
  reads_cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  if (read_thread_.joinable()) read_thread_.join();
}

StorageWorkerStats StorageWorker::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void StorageWorker::Run() {
  (void)::pthread_setname_np(::pthread_self(), "storage");
  while (true) {
    std::deque<Item> group;
    bool maintain = false;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty() || maintenance_wanted_; });
      if (queue_.empty() && stop_) return;
      const auto due = last_sync_start_ + pacer_.spacing();
      if (Spaced() && sync_queued_ && !stop_ && std::chrono::steady_clock::now() < due) {
        ++stats_.spaced;
        spacing_ = true;
        cv_.wait_until(lock, due, [this] { return stop_; });
        spacing_ = false;
      }
      group.swap(queue_);
      sync_queued_ = false;
      maintain = std::exchange(maintenance_wanted_, false);
    }
    if (!group.empty()) RunGroup(std::move(group));
    if (maintain) engine_->Maintain();
  }
}

void StorageWorker::RunReads() {
  (void)::pthread_setname_np(::pthread_self(), "storage-read");
  while (true) {
    std::deque<Item> group;
    {
      std::unique_lock lock(mu_);
      reads_cv_.wait(lock, [this] { return stop_ || !reads_.empty(); });
      if (reads_.empty() && stop_) return;
      group.swap(reads_);
    }
    Completions completions;
    completions.reserve(group.size());
    for (Item& item : group) {
      const auto& read = std::get<ReadOp>(item.op);
      completions.emplace_back(std::move(item.done),
                               ReadResult(engine_->Get(read.space, read.key)));
    }
    {
      std::lock_guard lock(mu_);
      stats_.reads += group.size();
    }
    Complete(std::move(completions));
  }
}

void StorageWorker::Complete(Completions completions) {
  auto batch = std::make_shared<Completions>(std::move(completions));
  loop_->Post([batch] {
    for (auto& [done, result] : *batch) done(std::move(result));
  });
}

void StorageWorker::RunGroup(std::deque<Item> group) {
  Completions completions;
  completions.reserve(group.size());
  WriteBatch combined;
  bool sync = false;
  std::vector<Done> writers;
  for (Item& item : group) {
    StorageResult result;
    if (auto* scan = std::get_if<ScanOp>(&item.op)) {
      Result<ScanResult> r = engine_->Scan(scan->space, scan->options);
      if (r.ok()) {
        result.scan = std::move(*r);
      } else {
        result.status = r.status();
      }
      completions.emplace_back(std::move(item.done), std::move(result));
    } else {
      auto& write = std::get<WriteOp>(item.op);
      combined.Append(std::move(write.batch));
      sync |= write.sync;
      writers.push_back(std::move(item.done));
    }
  }
  if (!writers.empty()) {
    const bool timed = sync && Spaced();
    if (timed) last_sync_start_ = std::chrono::steady_clock::now();
    Status s;
    if (!combined.empty()) {
      s = engine_->Write(combined, sync);
    } else if (sync) {
      s = engine_->Sync();
    }
    if (timed && s.ok()) pacer_.OnSync(std::chrono::steady_clock::now() - last_sync_start_);
    for (Done& done : writers) {
      StorageResult r;
      r.status = s;
      completions.emplace_back(std::move(done), std::move(r));
    }
  }
  {
    std::lock_guard lock(mu_);
    ++stats_.groups;
    stats_.writes += writers.size();
    stats_.syncs += (sync && !writers.empty()) ? 1 : 0;
    stats_.max_group = std::max<uint64_t>(stats_.max_group, group.size());
    stats_.spacing_us = static_cast<uint64_t>(pacer_.spacing().count());
  }
  Complete(std::move(completions));
}

}  // namespace dynamo::node
