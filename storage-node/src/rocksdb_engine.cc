#include "dynamo/node/rocksdb_engine.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/rate_limiter.h>
#include <rocksdb/sst_file_manager.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <chrono>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <thread>
#include <vector>

#include "background_pace.h"
#include "dynamo/node/keys.h"
#include "dynamo/node/scrub.h"
#include "dynamo/placement.h"
#include "prefilled_log.h"
#include "skiplist_rep.h"

namespace dynamo::node {
namespace {

constexpr uint64_t kBackgroundBytesPerSync = 1u << 20;
// The meta-space key whose deletion marks a memtable (MarkMemtableIfDue);
// no one writes it.
constexpr std::string_view kMemtableMarker = "engine_memtable_marker";
// The rate limiter's refill period: a paced flush or compaction writes at
// most a 50th of a second's pace at a time.
constexpr int64_t kPaceRefillMicros = 20'000;
// How fast RocksDB lets writes go while it slows them (its default).
constexpr uint64_t kDelayedWriteBytesPerSec = 16u << 20;
// Largest pace (a larger one is the same as none).
constexpr uint64_t kPaceBytesPerSecMax = uint64_t{1} << 40;
// Data keys start with their partition (keys.h), so the data space's
// memtables keep one skip list per partition.
constexpr uint32_t kDataMemtableBuckets = kMaxPartitions;
// The data memtable's key index holds as many keys as the memtable holds
// entries of this size (a 32 MiB memtable: 131,071 keys, 4 MiB of index).
constexpr uint64_t kDataMemtableBytesPerIndexedKey = 256;

size_t DataMemtableIndexedKeys(uint64_t write_buffer_bytes) {
  const uint64_t keys =
      std::min<uint64_t>(write_buffer_bytes / kDataMemtableBytesPerIndexedKey, kMaxIndexedKeys);
  return keys < 2 ? 0 : static_cast<size_t>(std::bit_floor(keys) - 1);
}

const char* const kFamilyNames[kSpaceCount] = {rocksdb::kDefaultColumnFamilyName.c_str(), "hints",
                                               "meta"};

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::OK();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(msg);
  if (s.IsNotFound()) return Status::NotFound(msg);
  if (s.IsBusy() || s.IsTryAgain()) return Status::Busy(msg);
  return Status::IOError(msg);
}

// The error that stopped RocksDB's writes (a log append or a flush that
// failed, a full disk), until RocksDB recovers from it, or for good when it
// cannot (BackgroundErrors). While it holds,
// the engine calls neither SyncWAL, which does not look at that error and
// would sync the log writer that failed (Debian's RocksDB asserts there,
// which took a node down when its disk filled), nor Write. An inline write
// (WriteNoStall) cannot fail its append between this check and SyncWAL's
// own check of the log writer (LogSyncGate).
class WritesStopped {
 public:
  Status Check() const {
    if (!stopped_.load(std::memory_order_acquire)) return Status::OK();
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  void Stop(Status error, bool for_good) {
    std::lock_guard<std::mutex> lock(mu_);
    if (for_good_) return;
    error_ = std::move(error);
    for_good_ = for_good;
    stopped_.store(true, std::memory_order_release);
  }
  void Resume() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!for_good_) stopped_.store(false, std::memory_order_release);
  }
  bool for_good() const {
    std::lock_guard<std::mutex> lock(mu_);
    return for_good_;
  }

 private:
  std::atomic<bool> stopped_{false};
  mutable std::mutex mu_;
  Status error_;
  bool for_good_ = false;
};

// RocksDB's background I/O errors count as failed syncs (its own syncs of
// logs are kept by SyncWatch as they fail), so that no later sync is taken
// for durable (the kernel reports a failed write-back once, and RocksDB's
// SyncWAL does not look at its background error). A full disk is left to
// RocksDB, which recovers from it (until then, WritesStopped), except where
// it cannot: RocksDB 7.8 recovers from a failed log append by flushing the
// memtables, which starts a new log only if one of them holds a write
// (rocksdb issues 11643, 12998). With none, it would go on with the log
// writer that failed, and the next write would abort the process on
// Debian's RocksDB (an assertion) or fail for good. So the engine's writes
// then stop until it is reopened, whatever RocksDB does (its recovery is
// turned off where it has not started yet). The engine's memtable marker
// (RocksDbEngine::MarkMemtableIfDue), due again at every memtable switch,
// keeps that case to a write that itself made RocksDB switch memtables.
class BackgroundErrors : public rocksdb::EventListener {
 public:
  BackgroundErrors(std::shared_ptr<SyncFailure> failure, std::shared_ptr<WritesStopped> stopped,
                   std::shared_ptr<std::atomic<bool>> mark_due)
      : failure_(std::move(failure)),
        stopped_(std::move(stopped)),
        mark_due_(std::move(mark_due)) {}

  // Called as a memtable is switched, before any write reaches the new one.
  void OnMemTableSealed(const rocksdb::MemTableInfo&) override {
    mark_due_->store(true, std::memory_order_release);
  }

  // The open database, whose memtables a failed log append looks at; null
  // before it is open and once it starts closing.
  void Attach(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> families) {
    std::lock_guard<std::mutex> lock(mu_);
    db_ = db;
    families_ = std::move(families);
  }

  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* error) override {
    if (error == nullptr || error->ok()) return;
    if (error->severity() >= rocksdb::Status::Severity::kHardError) {
      if (reason == rocksdb::BackgroundErrorReason::kWriteCallback && error->IsNoSpace() &&
          !AMemtableHoldsAWrite()) {
        stopped_->Stop(Status::IOError("storage writes stopped until the node is restarted: a "
                                       "log write met a full disk while no memtable held a "
                                       "write, which RocksDB cannot recover from: " +
                                       error->ToString()),
                       /*for_good=*/true);
      } else {
        stopped_->Stop(FromRocks(*error, "storage writes stopped"), /*for_good=*/false);
      }
    }
    if (!error->IsIOError() || error->IsNoSpace()) return;
    (void)failure_->Keep(FromRocks(*error, "background write"));
  }
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status,
                            bool* auto_recovery) override {
    if (auto_recovery != nullptr && stopped_->for_good()) *auto_recovery = false;
  }
  void OnErrorRecoveryEnd(const rocksdb::BackgroundErrorRecoveryInfo& info) override {
    if (info.new_bg_error.ok()) stopped_->Resume();
  }

 private:
  // RocksDB does not hold its mutex while it reports an error. Unknown (no
  // database attached) counts as none: stopping for good is the safe side.
  bool AMemtableHoldsAWrite() {
    std::lock_guard<std::mutex> lock(mu_);
    if (db_ == nullptr) return false;
    for (rocksdb::ColumnFamilyHandle* family : families_) {
      uint64_t entries = 0;
      if (!db_->GetIntProperty(family, rocksdb::DB::Properties::kNumEntriesActiveMemTable,
                               &entries)) {
        return false;
      }
      if (entries > 0) return true;
    }
    return false;
  }

  std::shared_ptr<SyncFailure> failure_;
  std::shared_ptr<WritesStopped> stopped_;
  std::shared_ptr<std::atomic<bool>> mark_due_;
  std::mutex mu_;
  rocksdb::DB* db_ = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> families_;
};

// Keeps an inline write's log append away from a Sync until RocksDB has
// begun syncing the newest log. RocksDB 7.8's SyncWAL syncs each log writer
// outside its write group, after checking that no append to it failed, and
// asserts there otherwise (Debian's RocksDB keeps its asserts): an inline
// write (WriteNoStall, on the event loop) whose append met a full disk
// between the engine's check (WritesStopped) and RocksDB's aborted the
// process. The sync itself still overlaps the inline writes (group commit:
// they are synced by the next one). Lockable for the inline writes, which
// take it with try_lock for their whole write, so that a failed append has
// stopped the engine's writes (BackgroundErrors) before a sync can start.
// As read in RocksDB 7.8.3 (Debian 12): look again on another version.
class LogSyncGate {
 public:
  bool try_lock() { return mu_.try_lock(); }
  void unlock() { mu_.unlock(); }

  // Storage thread: keeps inline writes out until Release, or until this
  // thread begins syncing the newest log (NewestLogSyncBegins).
  void Hold() {
    mu_.lock();
    holder_.store(std::this_thread::get_id(), std::memory_order_release);
  }
  // Ends the Hold made on this thread, if it still holds.
  void Release() {
    if (holder_.load(std::memory_order_acquire) != std::this_thread::get_id()) return;
    holder_.store(std::thread::id(), std::memory_order_release);
    mu_.unlock();
  }
  // SyncWatch, as a sync of the newest log begins: on the thread that holds,
  // RocksDB has checked that log's writer. Any thread.
  void NewestLogSyncBegins() { Release(); }

 private:
  std::mutex mu_;
  std::atomic<std::thread::id> holder_{};
};

// Keeps every failed sync of a log or of a directory in the engine's
// SyncFailure as it fails, whichever thread asked for it (SyncWAL, a synced
// write's group, a flush closing the logs it replaces, RocksDB's recovery).
// The engine can then tell a synced write whose log append met a full disk,
// none of which was synced and after which RocksDB stops writes until it
// has recovered (BackgroundErrors), from one whose sync failed, which is
// never taken back. (Logs are not range-synced: wal_bytes_per_sync is 0.)
// Also keeps RocksDB's info log (LOG) from failing, and rotates it: see
// InfoLogFile.
class SyncWatch : public rocksdb::FileSystemWrapper {
 public:
  SyncWatch(std::shared_ptr<rocksdb::FileSystem> base, std::shared_ptr<SyncFailure> failure,
            std::shared_ptr<LogSyncGate> gate, uint64_t info_log_bytes_max,
            std::function<void(const std::string&)> warn)
      : FileSystemWrapper(std::move(base)),
        failure_(std::move(failure)),
        gate_(std::move(gate)),
        info_log_bytes_max_(info_log_bytes_max),
        warn_(std::move(warn)) {}
  const char* Name() const override { return "SyncWatch"; }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewWritableFile(name, options, result, dbg);
    // The info log's name while options.db_log_dir is empty (it is).
    if (s.ok() && name.ends_with("/LOG")) {
      *result = std::make_unique<InfoLogFile>(std::move(*result), target_, name, options,
                                              info_log_bytes_max_, warn_);
      return s;
    }
    return WatchLog(name, s, result);
  }
  // RocksDB's own info log (FileSystem's), but made over this file system:
  // each wrapper's NewLogger would make it over the OS's files directly.
  rocksdb::IOStatus NewLogger(const std::string& name, const rocksdb::IOOptions& options,
                              std::shared_ptr<rocksdb::Logger>* result,
                              rocksdb::IODebugContext* dbg) override {
    return rocksdb::FileSystem::NewLogger(name, options, result, dbg);
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    return WatchLog(name, target()->ReopenWritableFile(name, options, result, dbg), result);
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& name, const std::string& old_name,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
    return WatchLog(name, target()->ReuseWritableFile(name, old_name, options, result, dbg),
                    result);
  }
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& options,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewDirectory(name, options, result, dbg);
    if (s.ok()) *result = std::make_unique<WatchedDirectory>(std::move(*result), failure_.get());
    return s;
  }

 private:
  rocksdb::IOStatus WatchLog(const std::string& name, rocksdb::IOStatus s,
                             std::unique_ptr<rocksdb::FSWritableFile>* file) {
    if (s.ok() && name.ends_with(".log")) {
      auto log = std::make_unique<WatchedLog>(std::move(*file), this);
      newest_log_.store(log.get(), std::memory_order_release);
      *file = std::move(log);
    }
    return s;
  }
  static rocksdb::IOStatus Watch(SyncFailure* failure, rocksdb::IOStatus s, const char* what) {
    if (!s.ok()) (void)failure->Keep(FromRocks(s, what));
    return s;
  }

  // RocksDB appends to the log it made last.
  class WatchedLog : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    WatchedLog(std::unique_ptr<rocksdb::FSWritableFile> file, SyncWatch* watch)
        : FSWritableFileOwnerWrapper(std::move(file)), watch_(watch) {}
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
      SyncBegins();
      return Watch(watch_->failure_.get(), target()->Sync(o, d), "log sync");
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
      SyncBegins();
      return Watch(watch_->failure_.get(), target()->Fsync(o, d), "log sync");
    }

   private:
    void SyncBegins() {
      if (watch_->newest_log_.load(std::memory_order_acquire) == this) {
        watch_->gate_->NewestLogSyncBegins();
      }
    }
    SyncWatch* watch_;
  };

  class WatchedDirectory : public rocksdb::FSDirectoryWrapper {
   public:
    WatchedDirectory(std::unique_ptr<rocksdb::FSDirectory> dir, SyncFailure* failure)
        : FSDirectoryWrapper(std::move(dir)), failure_(failure) {}
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
      return Watch(failure_, FSDirectoryWrapper::Fsync(o, d), "directory sync");
    }
    rocksdb::IOStatus FsyncWithDirOptions(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d,
                                          const rocksdb::DirFsyncOptions& fo) override {
      return Watch(failure_, FSDirectoryWrapper::FsyncWithDirOptions(o, d, fo), "directory sync");
    }

   private:
    SyncFailure* failure_;
  };

  // RocksDB's info log, written through a WritableFileWriter that RocksDB
  // 7.8 never resets: after one failed write (a full disk), its next line
  // asserts in WritableFileWriter::AssertFalseAndGetStatusForPrevError,
  // which aborted nodes (Debian's RocksDB has asserts on) whatever stopped
  // the storage's own writes first. RocksDB ignores the info log's errors
  // anyway; here they never reach the writer: what cannot be written is
  // dropped, and the first failure is told.
  // The file is also rotated here, under the writer, which never learns of
  // it: past bytes_max it is renamed LOG.old.<microseconds> (RocksDB's name
  // for old info logs, which it trims to keep_log_file_num) and a new LOG
  // begun. RocksDB's own rotation (max_log_file_size) asserts in
  // AutoRollLogger::Logv on the line after a roll that could not make the
  // new file. A rotation that fails goes on with the file it has and is
  // tried again a sixteenth of bytes_max later. Called under EnvLogger's
  // mutex only.
  class InfoLogFile : public rocksdb::FSWritableFile {
   public:
    InfoLogFile(std::unique_ptr<rocksdb::FSWritableFile> file,
                std::shared_ptr<rocksdb::FileSystem> fs, std::string name,
                rocksdb::FileOptions options, uint64_t bytes_max,
                std::function<void(const std::string&)> warn)
        : file_(std::move(file)),
          fs_(std::move(fs)),
          name_(std::move(name)),
          options_(std::move(options)),
          bytes_max_(std::max<uint64_t>(bytes_max, 1)),
          rotate_at_(bytes_max_),
          warn_(std::move(warn)) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override {
      if (bytes_ > 0 && bytes_ + data.size() > rotate_at_) Rotate(o, d);
      rocksdb::IOStatus s = file_->Append(data, o, d);
      if (s.ok()) bytes_ += data.size();
      return Dropped(s);
    }
    rocksdb::IOStatus Flush(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
      return Dropped(file_->Flush(o, d));
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
      return Dropped(file_->Sync(o, d));
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
      return Dropped(file_->Fsync(o, d));
    }
    rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const rocksdb::IOOptions& o,
                                rocksdb::IODebugContext* d) override {
      return Dropped(file_->RangeSync(offset, nbytes, o, d));
    }
    rocksdb::IOStatus Close(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
      return Dropped(file_->Close(o, d));
    }
    uint64_t GetFileSize(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
      return bytes_;
    }

   private:
    void Rotate(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) {
      rotate_at_ = bytes_ + bytes_max_ / 16;
      const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
      const std::string old = name_ + ".old." + std::to_string(micros);
      // No LOG: file_ kept an old name when a rotation could not undo its
      // rename, and only a new LOG is missing.
      rocksdb::IOStatus s = fs_->RenameFile(name_, old, o, d);
      const bool renamed = s.ok();
      if (!renamed && !s.IsPathNotFound()) return NotRotated(s);
      std::unique_ptr<rocksdb::FSWritableFile> next;
      s = fs_->NewWritableFile(name_, options_, &next, d);
      if (!s.ok()) {
        // Still written through file_, under its old name again if it can.
        if (renamed) (void)fs_->RenameFile(old, name_, o, d);
        return NotRotated(s);
      }
      (void)file_->Close(o, d);
      file_ = std::move(next);
      bytes_ = 0;
      rotate_at_ = bytes_max_;
    }
    void NotRotated(const rocksdb::IOStatus& s) {
      if (!rotation_told_ && warn_) {
        rotation_told_ = true;
        warn_("RocksDB's info log (LOG) could not be rotated, it grows until it can: " +
              s.ToString());
      }
    }
    rocksdb::IOStatus Dropped(const rocksdb::IOStatus& s) {
      if (!s.ok() && !told_.exchange(true) && warn_) {
        warn_("RocksDB's info log (LOG) failed a write, its lines are dropped while it fails: " +
              s.ToString());
      }
      return rocksdb::IOStatus::OK();
    }
    std::unique_ptr<rocksdb::FSWritableFile> file_;
    const std::shared_ptr<rocksdb::FileSystem> fs_;
    const std::string name_;
    const rocksdb::FileOptions options_;
    const uint64_t bytes_max_;
    uint64_t bytes_ = 0;  // in file_
    uint64_t rotate_at_;
    bool rotation_told_ = false;
    const std::function<void(const std::string&)> warn_;
    std::atomic<bool> told_{false};
  };

  std::shared_ptr<SyncFailure> failure_;
  std::shared_ptr<LogSyncGate> gate_;
  const uint64_t info_log_bytes_max_;
  std::function<void(const std::string&)> warn_;
  std::atomic<const WatchedLog*> newest_log_{nullptr};  // compared, never followed
};

// RocksDB's rate limiter at a fixed pace, passed by while lifted. (Lifting
// by raising the rate instead would leave the limiter holding up to two
// refills at the raised rate, gigabytes that would go out unpaced once the
// pace is set again.)
class LiftableRateLimiter : public rocksdb::RateLimiter {
 public:
  explicit LiftableRateLimiter(int64_t bytes_per_sec)
      : rocksdb::RateLimiter(Mode::kWritesOnly),
        paced_(rocksdb::NewGenericRateLimiter(bytes_per_sec, kPaceRefillMicros, /*fairness=*/10,
                                              Mode::kWritesOnly)) {}

  void Lift(bool lifted) { lifted_.store(lifted, std::memory_order_relaxed); }

  void Request(const int64_t bytes, const rocksdb::Env::IOPriority pri,
               rocksdb::Statistics* stats) override {
    if (!lifted_.load(std::memory_order_relaxed)) paced_->Request(bytes, pri, stats);
  }
  void SetBytesPerSecond(int64_t bytes_per_second) override {
    paced_->SetBytesPerSecond(bytes_per_second);
  }
  int64_t GetSingleBurstBytes() const override { return paced_->GetSingleBurstBytes(); }
  int64_t GetTotalBytesThrough(const rocksdb::Env::IOPriority pri) const override {
    return paced_->GetTotalBytesThrough(pri);
  }
  int64_t GetTotalRequests(const rocksdb::Env::IOPriority pri) const override {
    return paced_->GetTotalRequests(pri);
  }
  int64_t GetBytesPerSecond() const override { return paced_->GetBytesPerSecond(); }

 private:
  const std::unique_ptr<rocksdb::RateLimiter> paced_;
  std::atomic<bool> lifted_{false};
};

// Sets the pace of RocksDB's flushes and compactions (its rate limiter) as
// BackgroundPace decides from the data space's state, which the engine looks
// at as memtables fill and PaceEvents after each flush and compaction.
class PaceControl {
 public:
  PaceControl(uint64_t paced_bytes_per_sec, uint64_t level0_compaction_trigger)
      : limiter_(std::make_shared<LiftableRateLimiter>(
            static_cast<int64_t>(std::min(paced_bytes_per_sec, kPaceBytesPerSecMax)))),
        pace_(level0_compaction_trigger) {}

  std::shared_ptr<rocksdb::RateLimiter> limiter() const { return limiter_; }

  // The database to look at, from its open until its close (null: none).
  void Attach(rocksdb::DB* db) { db_.store(db); }
  // The size the data space's active memtable flushes at.
  void SetFlushAt(uint64_t bytes) { flush_at_.store(bytes, std::memory_order_relaxed); }

  // Looks at the data space and sets the pace. Of two looks racing, the
  // later one's state is kept (a flush may finish between a look and its
  // decision).
  void Update() {
    rocksdb::DB* db = db_.load();
    if (db == nullptr) return;
    const uint64_t look = looks_.fetch_add(1) + 1;
    rocksdb::ColumnFamilyHandle* data = db->DefaultColumnFamily();
    uint64_t active = 0, unflushed = 0, level0 = 0, stopped = 0, delayed_rate = 0;
    std::string files;
    if (!db->GetIntProperty(data, rocksdb::DB::Properties::kCurSizeActiveMemTable, &active) ||
        !db->GetIntProperty(data, rocksdb::DB::Properties::kNumImmutableMemTable, &unflushed) ||
        !db->GetIntProperty(rocksdb::DB::Properties::kIsWriteStopped, &stopped) ||
        !db->GetIntProperty(rocksdb::DB::Properties::kActualDelayedWriteRate, &delayed_rate) ||
        !db->GetProperty(data, rocksdb::DB::Properties::kNumFilesAtLevelPrefix + "0", &files) ||
        std::from_chars(files.data(), files.data() + files.size(), level0).ec != std::errc()) {
      return;
    }
    std::lock_guard<std::mutex> g(mu_);
    if (look < last_look_) return;
    last_look_ = look;
    load_.unflushed_memtables = unflushed;
    load_.active_fill =
        static_cast<double>(active) / static_cast<double>(std::max<uint64_t>(1, flush_at_.load()));
    load_.level0_files = level0;
    load_.writes_slowed = stopped > 0 || delayed_rate > 0;
    limiter_->Lift(pace_.Lifted(load_));
  }

  void AppendCounters(EngineCounters& out) const {
    std::lock_guard<std::mutex> g(mu_);
    out.insert(out.end(), {{"background_pace_lifts", pace_.lifts()},
                           {"background_pace_lifted", pace_.lifted() ? 1u : 0u}});
  }

 private:
  const std::shared_ptr<LiftableRateLimiter> limiter_;
  std::atomic<rocksdb::DB*> db_{nullptr};
  std::atomic<uint64_t> flush_at_{1};
  std::atomic<uint64_t> looks_{0};
  mutable std::mutex mu_;  // guards what follows
  uint64_t last_look_ = 0;
  BackgroundPace pace_;
  BackgroundLoad load_;
};

// Looks again after each flush and compaction, and at each change of
// RocksDB's write stalls (whose notifications may arrive out of order, so
// only as a cue to look: a stop would otherwise go unseen until the next
// paced flush or compaction ends, the writes that look being stopped).
class PaceEvents : public rocksdb::EventListener {
 public:
  explicit PaceEvents(std::shared_ptr<PaceControl> pace) : pace_(std::move(pace)) {}
  void OnFlushCompleted(rocksdb::DB*, const rocksdb::FlushJobInfo&) override { pace_->Update(); }
  void OnCompactionCompleted(rocksdb::DB*, const rocksdb::CompactionJobInfo&) override {
    pace_->Update();
  }
  void OnStallConditionsChanged(const rocksdb::WriteStallInfo&) override { pace_->Update(); }

 private:
  std::shared_ptr<PaceControl> pace_;
};

class RocksDbEngine : public Engine {
 public:
  RocksDbEngine(std::shared_ptr<PrefilledLogFileSystem> logs, std::unique_ptr<rocksdb::Env> env,
                std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
                const RocksDbOptions& options, std::mt19937_64 rng,
                std::shared_ptr<SyncFailure> sync_failure, std::shared_ptr<WritesStopped> stopped,
                std::shared_ptr<BackgroundErrors> errors,
                std::shared_ptr<std::atomic<bool>> mark_due, std::shared_ptr<PaceControl> pace,
                std::shared_ptr<LogSyncGate> gate)
      : sync_failure_(std::move(sync_failure)),
        stopped_(std::move(stopped)),
        errors_(std::move(errors)),
        mark_due_(std::move(mark_due)),
        pace_(std::move(pace)),
        logs_(std::move(logs)),
        env_(std::move(env)),
        db_(std::move(db)),
        handles_(std::move(handles)),
        write_buffer_bytes_(options.write_buffer_bytes),
        wait_for_flushes_(options.wait_for_flushes),
        mark_memtables_(options.mark_memtables),
        check_bytes_(std::min<uint64_t>(kFlushCheckBytes, options.write_buffer_bytes / 16)),
        gate_(std::move(gate)),
        sync_hook_(options.sync_hook_for_tests),
        rng_(rng),
        flush_at_(Draw()) {
    errors_->Attach(db_.get(), handles_);
    if (pace_) {
      pace_->SetFlushAt(flush_at_);
      pace_->Attach(db_.get());
      pace_->Update();
    }
  }

  ~RocksDbEngine() override {
    // Close waits for the flushes and compactions, whose notifications look.
    if (pace_) pace_->Attach(nullptr);
    errors_->Attach(nullptr, {});
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    rocksdb::Status s = db_->Close();
    (void)s;
  }

  Result<std::optional<std::string>> Get(Space space, std::string_view key) override {
    return Read(rocksdb::ReadOptions(), space, key);
  }

  Result<std::optional<std::string>> GetCached(Space space, std::string_view key) override {
    rocksdb::ReadOptions ro;
    ro.read_tier = rocksdb::kBlockCacheTier;
    return Read(ro, space, key);
  }

  Status Write(const WriteBatch& batch, bool sync) override {
    DYNAMO_RETURN_IF_ERROR(Writable());
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    Status s = Written(Apply(wo, batch), sync, "write");
    if (s.ok()) MaybeSwitchMemtable();
    return s;
  }

  Status WriteNoStall(const WriteBatch& batch) override {
    DYNAMO_RETURN_IF_ERROR(Writable());
    std::unique_lock<LogSyncGate> appending(*gate_, std::try_to_lock);
    if (!appending.owns_lock()) {
      writes_behind_log_sync_.fetch_add(batch.ops().size(), std::memory_order_relaxed);
      return Status::Busy("the log is being synced");
    }
    rocksdb::WriteOptions wo;
    wo.no_slowdown = true;
    return Written(Apply(wo, batch), false, "write");
  }

  Result<ScanResult> Scan(Space space, const ScanOptions& options) override {
    rocksdb::ReadOptions ro;
    ro.fill_cache = options.fill_cache;
    std::string upper = PrefixEnd(options.prefix);
    rocksdb::Slice upper_slice(upper);
    if (!upper.empty()) ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, Family(space)));
    if (options.after.empty() || options.after < options.prefix) {
      it->Seek(options.prefix);
    } else {
      it->Seek(options.after);
      if (it->Valid() && it->key() == rocksdb::Slice(options.after)) it->Next();
    }
    ScanResult out;
    size_t bytes = 0;
    for (; it->Valid(); it->Next()) {
      if (!it->key().starts_with(options.prefix)) break;
      if (!out.entries.empty() &&
          (out.entries.size() >= options.max_entries || bytes >= options.max_bytes)) {
        return out;
      }
      bytes += it->key().size() + it->value().size();
      out.entries.emplace_back(it->key().ToString(), it->value().ToString());
    }
    if (!it->status().ok()) return FromRocks(it->status(), "scan");
    out.done = true;
    return out;
  }

  Status DeletePrefix(Space space, std::string_view prefix, bool sync) override {
    DYNAMO_RETURN_IF_ERROR(Writable());
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    std::string end = PrefixEnd(prefix);
    if (end.empty()) {
      // Only for an empty or all-0xff prefix: delete key by key.
      WriteBatch batch;
      ScanOptions scan;
      scan.prefix = std::string(prefix);
      scan.max_entries = SIZE_MAX;
      scan.max_bytes = SIZE_MAX;
      Result<ScanResult> all = Scan(space, scan);
      if (!all.ok()) return all.status();
      for (auto& [k, v] : all->entries) batch.Delete(space, k);
      return Write(batch, sync);
    }
    MarkMemtableIfDue(true);
    return Written(db_->DeleteRange(wo, Family(space), ToSlice(prefix), end), sync, "delete range");
  }

  Status Sync() override {
    gate_->Hold();
    Status s = Writable();
    if (s.ok()) {
      if (sync_hook_) sync_hook_();
      s = sync_failure_->Keep(FromRocks(db_->SyncWAL(), "sync"));
    }
    gate_->Release();
    return s;
  }

  bool MaintenanceDue() const override {
    return unchecked_bytes_.load(std::memory_order_relaxed) >= check_bytes_;
  }
  void Maintain() override { MaybeSwitchMemtable(); }

  std::string_view name() const override { return "rocksdb"; }

  void AppendCounters(EngineCounters& out) const override {
    out.push_back(
        {"writes_behind_log_sync", writes_behind_log_sync_.load(std::memory_order_relaxed)});
    if (pace_) pace_->AppendCounters(out);
    if (!logs_) return;
    const PrefilledLogStats s = logs_->stats();
    out.insert(out.end(), {{"logs_grown", s.grown_logs},
                           {"logs_prefilled", s.prefilled_logs},
                           {"log_spare_failures", s.spare_failures},
                           {"log_spares_made", s.spares_made}});
  }

 private:
  // OK unless a sync failed (for good) or RocksDB's writes are stopped.
  Status Writable() const {
    DYNAMO_RETURN_IF_ERROR(sync_failure_->Check());
    return stopped_->Check();
  }

  Result<std::optional<std::string>> Read(const rocksdb::ReadOptions& ro, Space space,
                                          std::string_view key) {
    std::string value;
    rocksdb::Status s = db_->Get(ro, Family(space), ToSlice(key), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (s.IsIncomplete()) return Status::Busy("not in memory");
    if (!s.ok()) return FromRocks(s, "get");
    return std::optional<std::string>(std::move(value));
  }

  // A write's outcome. A synced one's failure is a failed sync, kept for
  // good, unless its log append met a full disk: that synced nothing (a log
  // sync that fails is kept by SyncWatch), and the engine's writes stop
  // until RocksDB has recovered, or for good (BackgroundErrors).
  Status Written(const rocksdb::Status& s, bool sync, std::string_view what) {
    if (s.IsIncomplete()) return Status::Busy("writes are being throttled");
    Status out = FromRocks(s, what);
    return sync && !s.IsNoSpace() ? sync_failure_->Keep(std::move(out)) : out;
  }

  rocksdb::Status Apply(const rocksdb::WriteOptions& wo, const WriteBatch& batch) {
    MarkMemtableIfDue(!wo.no_slowdown);
    rocksdb::WriteBatch wb;
    for (const WriteBatch::Op& op : batch.ops()) {
      rocksdb::Status s = op.value ? wb.Put(Family(op.space), op.key, *op.value)
                                   : wb.Delete(Family(op.space), op.key);
      if (!s.ok()) return s;
    }
    // The data keys of a batch go into one memtable together: let its skip
    // list overlap their cache misses (ScopedInsertHint).
    std::vector<std::string_view> data_keys;
    for (const WriteBatch::Op& op : batch.ops()) {
      if (op.space == Space::kData) data_keys.push_back(op.key);
    }
    std::optional<ScopedInsertHint> hint;
    if (data_keys.size() > 1) hint.emplace(data_keys);
    rocksdb::Status s = db_->Write(wo, &wb);
    if (s.ok()) CountWritten(batch);
    return s;
  }

  size_t Draw() {
    return StaggeredWriteBufferBytes(write_buffer_bytes_,
                                     std::uniform_real_distribution<double>(0.0, 1.0)(rng_));
  }

  void CountWritten(const WriteBatch& batch) {
    uint64_t bytes = 0;
    for (const WriteBatch::Op& op : batch.ops()) {
      if (op.space == Space::kData) bytes += op.key.size() + (op.value ? op.value->size() : 0);
    }
    if (bytes) unchecked_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  }

  // Blocking calls only (switching a memtable creates a log file): Write,
  // and Maintain for what WriteNoStall wrote. Every
  // check_bytes_ written to the data space, looks at its memtable and
  // switches it once it reaches this memtable's drawn size, unless one is
  // still waiting for its flush (a second would stall writes; RocksDB's own
  // limit, above every draw, stays the backstop).
  void MaybeSwitchMemtable() {
    if (unchecked_bytes_.load(std::memory_order_relaxed) < check_bytes_) return;
    std::lock_guard<std::mutex> g(flush_mu_);
    const uint64_t seen = unchecked_bytes_.load(std::memory_order_relaxed);
    if (seen < check_bytes_) return;  // another thread looked meanwhile
    unchecked_bytes_.fetch_sub(seen, std::memory_order_relaxed);
    rocksdb::ColumnFamilyHandle* data = Family(Space::kData);
    uint64_t size = 0, waiting = 0;
    if (!db_->GetIntProperty(data, rocksdb::DB::Properties::kCurSizeActiveMemTable, &size)) return;
    if (size < last_size_) SetFlushAt(Draw());  // RocksDB switched it by itself
    last_size_ = size;
    if (pace_) pace_->Update();
    if (size < flush_at_) return;
    if (!db_->GetIntProperty(data, rocksdb::DB::Properties::kNumImmutableMemTable, &waiting) ||
        waiting > 0) {
      return;
    }
    rocksdb::FlushOptions fo;
    fo.wait = wait_for_flushes_;
    fo.allow_write_stall = true;
    // With the small spaces: a log goes once every space written into it
    // has flushed (kLiveLogWriteBuffers).
    if (db_->Flush(fo, handles_).ok()) {
      SetFlushAt(Draw());
      last_size_ = 0;
    }
  }

  // Before the first logged write after the open or a memtable switch: keeps
  // the small meta space's memtable from being empty, so that a log write
  // that meets a full disk is one RocksDB recovers from (BackgroundErrors).
  // A deletion of a key nothing holds, not logged: it reads as nothing,
  // takes no disk, and a crash loses nothing with it. One that could not be
  // made (RocksDB slowing writes, for a caller that may not wait) is due
  // again at the next write.
  void MarkMemtableIfDue(bool may_wait) {
    if (!mark_memtables_ || !mark_due_->load(std::memory_order_acquire) ||
        !mark_due_->exchange(false, std::memory_order_acq_rel)) {
      return;
    }
    rocksdb::WriteOptions wo;
    wo.disableWAL = true;
    wo.no_slowdown = !may_wait;
    if (!db_->Delete(wo, Family(Space::kMeta), kMemtableMarker).ok()) {
      mark_due_->store(true, std::memory_order_release);
    }
  }

  void SetFlushAt(size_t bytes) {
    flush_at_ = bytes;
    if (pace_) pace_->SetFlushAt(bytes);
  }

  rocksdb::ColumnFamilyHandle* Family(Space space) { return handles_[static_cast<size_t>(space)]; }
  static rocksdb::Slice ToSlice(std::string_view s) { return {s.data(), s.size()}; }

  std::shared_ptr<SyncFailure> sync_failure_;  // shared with BackgroundErrors
  std::shared_ptr<WritesStopped> stopped_;     // shared with BackgroundErrors
  std::shared_ptr<BackgroundErrors> errors_;
  std::shared_ptr<std::atomic<bool>> mark_due_;  // shared with BackgroundErrors
  std::shared_ptr<PaceControl> pace_;          // null: unpaced; shared with PaceEvents
  // Outlive the database: the file system owns the logs' spare.
  std::shared_ptr<PrefilledLogFileSystem> logs_;  // null: logs grow
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  const size_t write_buffer_bytes_;
  const bool wait_for_flushes_;
  const bool mark_memtables_;
  const uint64_t check_bytes_;
  std::atomic<uint64_t> unchecked_bytes_{0};
  std::shared_ptr<LogSyncGate> gate_;  // shared with SyncWatch
  std::function<void()> sync_hook_;
  std::atomic<uint64_t> writes_behind_log_sync_{0};
  std::mutex flush_mu_;  // guards what follows
  std::mt19937_64 rng_;
  size_t flush_at_;  // this memtable's drawn size
  uint64_t last_size_ = 0;
};

}  // namespace

size_t StaggeredWriteBufferBytes(size_t bytes, double draw) {
  const double scale =
      1.0 - kWriteBufferSpread + 2 * kWriteBufferSpread * std::clamp(draw, 0.0, 1.0);
  return static_cast<size_t>(static_cast<double>(bytes) * scale);
}

Result<std::unique_ptr<Engine>> OpenRocksDb(const std::string& dir, const RocksDbOptions& options) {
  Result<bool> finished = FinishInterruptedScrub(dir);
  if (!finished.ok()) return finished.status();
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  db_options.max_open_files = kRocksDbOpenFilesMax;
  // Foreground first (the paper's admission control, for RocksDB's own
  // background work): flushes and compactions write their files out a
  // megabyte at a time instead of in one burst at the end, which would queue
  // the coordinator's log sync behind tens of megabytes of writeback, and
  // their threads run at the lowest I/O priority and compactions at a low
  // CPU priority, so the event loop preempts them.
  db_options.bytes_per_sync = kBackgroundBytesPerSync;
  // RocksDB's own (left unset it would take the background pace's).
  db_options.delayed_write_rate = kDelayedWriteBytesPerSec;
  db_options.max_total_wal_size = kLiveLogWriteBuffers * options.write_buffer_bytes;
  // Every flush takes every space with writes in one memtable switch, so
  // flushing the small spaces with the data space makes one new log, not
  // one per space.
  db_options.atomic_flush = true;
  // The memtable marker is not logged; RocksDB would flush every memtable at
  // each close for it (the logs hold everything else).
  db_options.avoid_flush_during_shutdown = true;
  rocksdb::Env* env = rocksdb::Env::Default();
  env->LowerThreadPoolIOPriority(rocksdb::Env::LOW);
  env->LowerThreadPoolIOPriority(rocksdb::Env::HIGH);
  (void)env->LowerThreadPoolCPUPriority(rocksdb::Env::LOW, rocksdb::CpuPriority::kLow);
  std::shared_ptr<PrefilledLogFileSystem> logs;
  std::shared_ptr<rocksdb::FileSystem> base =
      options.file_system ? options.file_system : env->GetFileSystem();
  auto sync_failure = std::make_shared<SyncFailure>();
  if (options.prefilled_log_bytes_max > 0) {
    PrefilledLogOptions lo;
    lo.spare_bytes_max = options.prefilled_log_bytes_max;
    // A log lasts about one data memtable, and a spare is a quarter larger.
    const uint64_t largest_memtable = StaggeredWriteBufferBytes(options.write_buffer_bytes, 1.0);
    lo.first_spare_bytes = largest_memtable + largest_memtable / 4;
    lo.keep_zeros_at_close = options.delete_bytes_per_sec > 0;
    lo.warn = options.warn;
    logs = PrefilledLogFileSystem::Make(base, dir, std::move(lo));
    base = logs;
  }
  auto gate = std::make_shared<LogSyncGate>();
  std::unique_ptr<rocksdb::Env> own_env = rocksdb::NewCompositeEnv(std::make_shared<SyncWatch>(
      std::move(base), sync_failure, gate, options.info_log_bytes_max, options.warn));
  db_options.keep_log_file_num = kInfoLogFilesKept;
  db_options.env = own_env.get();
  auto stopped = std::make_shared<WritesStopped>();
  // Due at the open: a memtable RocksDB's recovery flushed is empty.
  auto mark_due = std::make_shared<std::atomic<bool>>(true);
  auto errors = std::make_shared<BackgroundErrors>(sync_failure, stopped, mark_due);
  db_options.listeners.push_back(errors);
  // Also without pacing (rate 0: each file deleted at once), so that what a
  // paced run left in the trash is deleted after this open.
  rocksdb::Status deletions;
  db_options.sst_file_manager.reset(rocksdb::NewSstFileManager(
      db_options.env, db_options.env->GetFileSystem(), nullptr, "",
      static_cast<int64_t>(std::min<uint64_t>(options.delete_bytes_per_sec, INT64_MAX)),
      /*delete_existing_trash=*/true, &deletions, kDeleteTrashRatioMax, kDeleteChunkBytes));
  if (!deletions.ok()) return FromRocks(deletions, "file deletions");
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  if (options.bloom_bits_per_key > 0) {
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(options.bloom_bits_per_key));
  }
  // The node's own memtable skip list (skiplist_rep.h) inserts from one
  // thread at a time.
  db_options.allow_concurrent_memtable_write = false;
  rocksdb::ColumnFamilyOptions cf;
  cf.memtable_factory = NewBytewiseSkipListFactory();
  std::mt19937_64 rng(options.stagger_seed ? options.stagger_seed : std::random_device()());
  cf.write_buffer_size = StaggeredWriteBufferBytes(
      options.write_buffer_bytes, std::uniform_real_distribution<double>(0.0, 1.0)(rng));
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // The data space's memtables are switched by the engine at their drawn
  // sizes; RocksDB's limit sits above the largest draw.
  rocksdb::ColumnFamilyOptions data_cf = cf;
  data_cf.memtable_factory = NewBytewiseSkipListFactory(
      kDataMemtableBuckets, DataMemtableIndexedKeys(options.write_buffer_bytes));
  data_cf.write_buffer_size =
      StaggeredWriteBufferBytes(options.write_buffer_bytes, 1.0) + options.write_buffer_bytes / 8;
  std::shared_ptr<PaceControl> pace;
  if (options.background_write_bytes_per_sec > 0) {
    pace = std::make_shared<PaceControl>(
        options.background_write_bytes_per_sec,
        static_cast<uint64_t>(std::max(1, data_cf.level0_file_num_compaction_trigger)));
    db_options.rate_limiter = pace->limiter();
    db_options.listeners.push_back(std::make_shared<PaceEvents>(pace));
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (size_t i = 0; i < kSpaceCount; ++i) {
    families.emplace_back(kFamilyNames[i], i == static_cast<size_t>(Space::kData) ? data_cf : cf);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, families, &handles, &raw);
  if (!s.ok()) return FromRocks(s, "open " + dir);
  return std::unique_ptr<Engine>(new RocksDbEngine(
      std::move(logs), std::move(own_env), std::unique_ptr<rocksdb::DB>(raw), std::move(handles),
      options, rng, std::move(sync_failure), std::move(stopped), std::move(errors),
      std::move(mark_due), pace, std::move(gate)));
}

}  // namespace dynamo::node
