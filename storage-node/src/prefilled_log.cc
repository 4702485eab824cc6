#include "prefilled_log.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "dynamo/status.h"

namespace dynamo::node {
namespace {

constexpr const char* kSpareName = "PREFILLED-LOG";
constexpr const char* kSpareTmpName = "PREFILLED-LOG.tmp";
// ioprio_set(2): the idle class, for the calling thread.
constexpr int kIoprioWhoProcess = 1;
constexpr int kIoprioClassIdle = 3;
constexpr int kIoprioClassShift = 13;

// RocksDB names its logs NNNNNN.log in the log directory.
bool IsLogIn(const std::string& dir, const std::string& fname) {
  if (fname.size() <= dir.size() + 1 || fname.compare(0, dir.size(), dir) != 0 ||
      fname[dir.size()] != '/') {
    return false;
  }
  std::string_view base(fname);
  base.remove_prefix(dir.size() + 1);
  constexpr std::string_view kSuffix = ".log";
  if (base.size() <= kSuffix.size() || !base.ends_with(kSuffix)) return false;
  base.remove_suffix(kSuffix.size());
  return std::all_of(base.begin(), base.end(), [](char c) { return c >= '0' && c <= '9'; });
}

using Clock = LogProgress::Clock;

// A log made from a spare: written over from offset 0, its size on disk
// unchanged until it outgrows the spare or is closed (or, keeping its zeros,
// deleted).
class PrefilledLog : public rocksdb::FSWritableFile {
 public:
  PrefilledLog(std::string path, int fd, std::shared_ptr<LogProgress> progress, bool keep_zeros)
      : path_(std::move(path)), fd_(fd), progress_(std::move(progress)), keep_zeros_(keep_zeros) {}
  ~PrefilledLog() override {
    if (fd_ >= 0) (void)Close(rocksdb::IOOptions(), nullptr);
  }

  using rocksdb::FSWritableFile::Append;
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions&,
                           rocksdb::IODebugContext*) override {
    const char* p = data.data();
    size_t left = data.size();
    uint64_t offset = progress_->bytes();
    while (left > 0) {
      ssize_t n = ::pwrite(fd_, p, left, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("write", path_, errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
      offset += static_cast<uint64_t>(n);
    }
    progress_->Wrote(offset);
    return rocksdb::IOStatus::OK();
  }

  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions&,
                             rocksdb::IODebugContext*) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      return ErrnoStatus("truncate", path_, errno);
    }
    progress_->Wrote(size);
    return rocksdb::IOStatus::OK();
  }

  // Cuts the zeros past the last record, so a closed log has its true size,
  // unless it keeps them (see PrefilledLogOptions::keep_zeros_at_close).
  rocksdb::IOStatus Close(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    if (fd_ < 0) return rocksdb::IOStatus::OK();
    rocksdb::IOStatus s;
    if (!keep_zeros_ && ::ftruncate(fd_, static_cast<off_t>(progress_->bytes())) != 0) {
      s = ErrnoStatus("truncate", path_, errno);
    }
    if (::close(fd_) != 0 && s.ok()) s = ErrnoStatus("close", path_, errno);
    fd_ = -1;
    return s;
  }

  rocksdb::IOStatus Flush(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::OK();
  }

  rocksdb::IOStatus Sync(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    if (::fdatasync(fd_) != 0) return ErrnoStatus("fdatasync", path_, errno);
    return rocksdb::IOStatus::OK();
  }

  rocksdb::IOStatus Fsync(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    if (::fsync(fd_) != 0) return ErrnoStatus("fsync", path_, errno);
    return rocksdb::IOStatus::OK();
  }

  bool IsSyncThreadSafe() const override { return true; }

  uint64_t GetFileSize(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    return progress_->bytes();
  }

 private:
  const std::string path_;
  int fd_;
  // Shared with the file system, which sizes and paces the next spare by it.
  const std::shared_ptr<LogProgress> progress_;
  const bool keep_zeros_;
};

}  // namespace

void LogProgress::Wrote(uint64_t bytes) {
  const uint64_t before = bytes_.load(std::memory_order_relaxed);
  bytes_.store(bytes, std::memory_order_release);
  const uint64_t first = before / kMarkBytes + 1;
  const uint64_t last = bytes / kMarkBytes;
  if (last < first) return;
  const Clock::time_point now = now_();
  for (uint64_t m = std::max(first, last >= kMarks ? last - kMarks + 1 : 1); m <= last; ++m) {
    marks_[m % kMarks].store(now.time_since_epoch().count(), std::memory_order_release);
  }
}

double LogProgress::Rate() const {
  const Clock::time_point now = now_();
  auto seconds_since = [now](Clock::time_point from) {
    return std::max(1e-3, std::chrono::duration<double>(now - from).count());
  };
  const uint64_t b = bytes();
  const uint64_t last = b / kMarkBytes;
  if (last < 2) return static_cast<double>(b) / seconds_since(made_);
  const uint64_t first = last >= kMarks ? last - kMarks + 1 : 1;
  const Clock::time_point at(
      Clock::duration(marks_[first % kMarks].load(std::memory_order_acquire)));
  return static_cast<double>(b - first * kMarkBytes) / seconds_since(at);
}

struct PrefilledLogFileSystem::State {
  std::string dir;
  std::string spare;
  std::string spare_tmp;
  PrefilledLogOptions options;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool spare_ready = false;
  uint64_t want_bytes = 0;  // a spare of this size is wanted; 0: none
  bool making = false;
  bool stop = false;
  PrefilledLogStats stats;
  // The log made last, and how far it has been written.
  std::string current_log;
  std::shared_ptr<LogProgress> current;
  std::thread worker;

  // Asks for a spare at `bytes`. Holding mu.
  void Want(uint64_t bytes) {
    want_bytes = std::min(options.spare_bytes_max, bytes);
    cv.notify_all();
  }

  // Bytes a second for a spare's zeros: twice the rate the log being written
  // went lately, so a spare asked for while the log was slow (the first
  // mebibyte after a start, idle time included) speeds up with it. Holding mu.
  double Pace() const {
    return std::max<double>(kPrefillMinPace,
                            kPrefillPaceFactor * (current ? current->Rate() : 0.0));
  }

  // A growing log passed kPrefillMinLogBytes.
  void GrownLogFilled(const std::string& fname) {
    std::lock_guard<std::mutex> lock(mu);
    if (fname != current_log || spare_ready || making || want_bytes > 0 || stop) return;
    Want(options.first_spare_bytes);
  }

  // Writes a spare's zeros, syncs them, then names the file as the spare, so
  // a spare under its name is always whole.
  Status MakeSpare(uint64_t bytes) {
    int fd = ::open(spare_tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return Status::IOError("create " + spare_tmp + ": " + std::strerror(errno));
    const std::vector<char> zeros(kPrefillStepBytes, 0);
    Status s;
    for (uint64_t offset = 0; offset < bytes && s.ok();) {
      const auto step = Clock::now();
      double pace = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stop) s = Status::Unavailable("stopping");
        pace = Pace();
      }
      if (!s.ok()) break;
      const size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), bytes - offset));
      ssize_t w = ::pwrite(fd, zeros.data(), n, static_cast<off_t>(offset));
      if (w < 0) {
        if (errno == EINTR) continue;
        s = Status::IOError("write " + spare_tmp + ": " + std::strerror(errno));
        break;
      }
      (void)::sync_file_range(fd, static_cast<off_t>(offset), w, SYNC_FILE_RANGE_WRITE);
      offset += static_cast<uint64_t>(w);
      std::this_thread::sleep_until(step + std::chrono::duration<double>(w / pace));
    }
    if (s.ok() && ::fdatasync(fd) != 0) {
      s = Status::IOError("fdatasync " + spare_tmp + ": " + std::strerror(errno));
    }
    ::close(fd);
    if (s.ok() && ::rename(spare_tmp.c_str(), spare.c_str()) != 0) {
      s = Status::IOError("rename " + spare_tmp + ": " + std::strerror(errno));
    }
    if (!s.ok()) ::unlink(spare_tmp.c_str());
    return s;
  }

  void Run() {
    (void)::pthread_setname_np(::pthread_self(), "prefill-log");
    // The zeros wait for every other I/O of the node.
    (void)::syscall(SYS_ioprio_set, kIoprioWhoProcess, 0, kIoprioClassIdle << kIoprioClassShift);
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [this] { return stop || want_bytes > 0; });
      if (stop) return;
      const uint64_t bytes = want_bytes;
      want_bytes = 0;
      making = true;
      lock.unlock();
      Status s = MakeSpare(bytes);
      lock.lock();
      if (s.ok()) {
        spare_ready = true;
        ++stats.spares_made;
      } else if (!stop) {
        ++stats.spare_failures;
        stats.last_error = s.ToString();
        if (options.warn) {
          // Still making: WaitForSpare returns once the warning is out.
          lock.unlock();
          options.warn("no spare log file of zeros, logs grow: " + s.ToString());
          lock.lock();
        }
      }
      making = false;
      cv.notify_all();
    }
  }
};

// A log made with no spare, growing as it is written. Past
// kPrefillMinLogBytes it asks for a spare, so the next log need not grow too.
class PrefilledLogFileSystem::GrownLog : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  GrownLog(std::unique_ptr<rocksdb::FSWritableFile> log, std::string path,
           std::shared_ptr<LogProgress> progress, std::shared_ptr<State> state)
      : FSWritableFileOwnerWrapper(std::move(log)),
        path_(std::move(path)),
        progress_(std::move(progress)),
        state_(std::move(state)) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    Count(data.size());
    return target()->Append(data, options, dbg);
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    Count(data.size());
    return target()->Append(data, options, info, dbg);
  }

 private:
  void Count(size_t bytes) {
    const uint64_t before = progress_->bytes();
    progress_->Wrote(before + bytes);
    if (before < kPrefillMinLogBytes && before + bytes >= kPrefillMinLogBytes) {
      state_->GrownLogFilled(path_);
    }
  }

  const std::string path_;
  const std::shared_ptr<LogProgress> progress_;
  const std::shared_ptr<State> state_;
};

std::shared_ptr<PrefilledLogFileSystem> PrefilledLogFileSystem::Make(
    std::shared_ptr<rocksdb::FileSystem> base, std::string dir, PrefilledLogOptions options) {
  auto state = std::make_shared<State>();
  state->spare = dir + "/" + kSpareName;
  state->spare_tmp = dir + "/" + kSpareTmpName;
  state->dir = std::move(dir);
  state->options = std::move(options);
  State* raw = state.get();
  state->worker = std::thread([raw] { raw->Run(); });
  return std::shared_ptr<PrefilledLogFileSystem>(
      new PrefilledLogFileSystem(std::move(base), std::move(state)));
}

PrefilledLogFileSystem::PrefilledLogFileSystem(std::shared_ptr<rocksdb::FileSystem> base,
                                               std::shared_ptr<State> state)
    : rocksdb::FileSystemWrapper(std::move(base)), state_(std::move(state)) {}

PrefilledLogFileSystem::~PrefilledLogFileSystem() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  state_->worker.join();
}

rocksdb::IOStatus PrefilledLogFileSystem::NewWritableFile(
    const std::string& fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result, rocksdb::IODebugContext* dbg) {
  State& st = *state_;
  if (options.use_direct_writes || options.use_mmap_writes || !IsLogIn(st.dir, fname)) {
    return target()->NewWritableFile(fname, options, result, dbg);
  }
  std::unique_lock<std::mutex> lock(st.mu);
  if (st.current_log.empty() && !st.making) {
    // The first log: RocksDB holds the directory's lock by now, so what an
    // earlier process left can go: a half-made spare, and a spare, which may
    // be a log whose rename a crash undid after records went into it.
    ::unlink(st.spare_tmp.c_str());
    ::unlink(st.spare.c_str());
  }
  const uint64_t filled = st.current ? st.current->bytes() : 0;
  if (!st.making && filled >= kPrefillMinLogBytes) st.Want(filled + filled / 4);
  auto progress = std::make_shared<LogProgress>();
  st.current_log = fname;
  st.current = progress;
  const bool taken = st.spare_ready && ::rename(st.spare.c_str(), fname.c_str()) == 0;
  st.spare_ready = false;
  if (!taken) {
    ++st.stats.grown_logs;
    lock.unlock();
    std::unique_ptr<rocksdb::FSWritableFile> log;
    rocksdb::IOStatus s = target()->NewWritableFile(fname, options, &log, dbg);
    if (s.ok()) result->reset(new GrownLog(std::move(log), fname, std::move(progress), state_));
    return s;
  }
  ++st.stats.prefilled_logs;
  lock.unlock();
  // No directory sync here, on the write path: RocksDB syncs the directory
  // before the first sync of any new log returns, so the log's name is
  // durable before a record synced into it counts.
  int fd = ::open(fname.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", fname, errno);
  result->reset(new PrefilledLog(fname, fd, std::move(progress), st.options.keep_zeros_at_close));
  return rocksdb::IOStatus::OK();
}

void PrefilledLogFileSystem::WaitForSpare() {
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait(lock, [this] { return !state_->making && state_->want_bytes == 0; });
}

PrefilledLogStats PrefilledLogFileSystem::stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->stats;
}

rocksdb::IOStatus ErrnoStatus(std::string_view what, const std::string& path, int err) {
  const std::string context = std::string(what) + " " + path;
  if (err == ENOSPC) {
    rocksdb::IOStatus s = rocksdb::IOStatus::NoSpace(context, std::strerror(err));
    s.SetRetryable(true);
    return s;
  }
  return rocksdb::IOStatus::IOError(context, std::strerror(err));
}

}  // namespace dynamo::node
