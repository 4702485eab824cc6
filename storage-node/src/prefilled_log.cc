#include "prefilled_log.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
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

rocksdb::IOStatus ErrnoStatus(std::string_view what, const std::string& path, int err) {
  return rocksdb::IOStatus::IOError(std::string(what) + " " + path + ": " + std::strerror(err));
}

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

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IOError("open " + dir + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::IOError("fsync " + dir + ": " + std::strerror(err));
  return Status::OK();
}

// A log made from a spare: written over from offset 0, its size on disk
// unchanged until it outgrows the spare or is closed.
class PrefilledLog : public rocksdb::FSWritableFile {
 public:
  PrefilledLog(std::string path, int fd, std::shared_ptr<std::atomic<uint64_t>> size)
      : path_(std::move(path)), fd_(fd), size_(std::move(size)) {}
  ~PrefilledLog() override {
    if (fd_ >= 0) (void)Close(rocksdb::IOOptions(), nullptr);
  }

  using rocksdb::FSWritableFile::Append;
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions&,
                           rocksdb::IODebugContext*) override {
    const char* p = data.data();
    size_t left = data.size();
    uint64_t offset = size_->load(std::memory_order_relaxed);
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
    size_->store(offset, std::memory_order_release);
    return rocksdb::IOStatus::OK();
  }

  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions&,
                             rocksdb::IODebugContext*) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      return ErrnoStatus("truncate", path_, errno);
    }
    size_->store(size, std::memory_order_release);
    return rocksdb::IOStatus::OK();
  }

  // Cuts the zeros past the last record, so a closed log has its true size.
  rocksdb::IOStatus Close(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
    if (fd_ < 0) return rocksdb::IOStatus::OK();
    rocksdb::IOStatus s;
    if (::ftruncate(fd_, static_cast<off_t>(size_->load(std::memory_order_acquire))) != 0) {
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
    return size_->load(std::memory_order_acquire);
  }

 private:
  const std::string path_;
  int fd_;
  // Shared with the file system, which sizes the next spare from it.
  const std::shared_ptr<std::atomic<uint64_t>> size_;
};

}  // namespace

struct PrefilledLogFileSystem::State {
  std::string dir;
  std::string spare;
  std::string spare_tmp;
  uint64_t spare_bytes_max = 0;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool spare_ready = false;
  uint64_t want_bytes = 0;  // a spare of this size is wanted; 0: none
  double want_pace = 0;     // and written at this many bytes a second
  bool making = false;
  bool stop = false;
  PrefilledLogStats stats;
  // The log made last, and its size so far when made from a spare (else the
  // file's size is its own).
  std::string current_log;
  std::shared_ptr<std::atomic<uint64_t>> current_size;
  std::chrono::steady_clock::time_point current_since;
  std::thread worker;

  // The size of the log made last, as written so far.
  uint64_t CurrentLogBytes() const {
    if (current_size) return current_size->load(std::memory_order_acquire);
    struct stat st;
    if (current_log.empty() || ::stat(current_log.c_str(), &st) != 0) return 0;
    return static_cast<uint64_t>(st.st_size);
  }

  // Writes a spare's zeros, syncs them, then names the file as the spare, so
  // a spare under its name is always whole.
  Status MakeSpare(uint64_t bytes, double pace) {
    const auto start = std::chrono::steady_clock::now();
    int fd = ::open(spare_tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return Status::IOError("create " + spare_tmp + ": " + std::strerror(errno));
    const std::vector<char> zeros(kPrefillStepBytes, 0);
    Status s;
    for (uint64_t offset = 0; offset < bytes && s.ok();) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stop) s = Status::Unavailable("stopping");
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
      std::this_thread::sleep_until(start + std::chrono::duration<double>(offset / pace));
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
      const double pace = want_pace;
      want_bytes = 0;
      making = true;
      lock.unlock();
      Status s = MakeSpare(bytes, pace);
      lock.lock();
      making = false;
      if (s.ok()) {
        spare_ready = true;
        ++stats.spares_made;
      } else {
        ++stats.spare_failures;
        stats.last_error = s.ToString();
      }
      cv.notify_all();
    }
  }
};

std::shared_ptr<PrefilledLogFileSystem> PrefilledLogFileSystem::Make(
    std::shared_ptr<rocksdb::FileSystem> base, std::string dir, uint64_t spare_bytes_max) {
  auto state = std::make_unique<State>();
  state->spare = dir + "/" + kSpareName;
  state->spare_tmp = dir + "/" + kSpareTmpName;
  state->dir = std::move(dir);
  state->spare_bytes_max = spare_bytes_max;
  struct stat st;
  state->spare_ready = ::stat(state->spare.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  State* raw = state.get();
  state->worker = std::thread([raw] { raw->Run(); });
  return std::shared_ptr<PrefilledLogFileSystem>(
      new PrefilledLogFileSystem(std::move(base), std::move(state)));
}

PrefilledLogFileSystem::PrefilledLogFileSystem(std::shared_ptr<rocksdb::FileSystem> base,
                                               std::unique_ptr<State> state)
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
    // The first log: RocksDB holds the directory's lock by now, so a spare
    // left half made by an earlier process can go.
    ::unlink(st.spare_tmp.c_str());
  }
  const uint64_t filled = st.CurrentLogBytes();
  const auto now = std::chrono::steady_clock::now();
  if (!st.making && filled >= kPrefillMinLogBytes) {
    st.want_bytes = std::min(st.spare_bytes_max, filled + filled / 4);
    const double seconds = std::chrono::duration<double>(now - st.current_since).count();
    st.want_pace = std::max<double>(kPrefillMinPace, kPrefillPaceFactor * filled / seconds);
    st.cv.notify_all();
  }
  st.current_log = fname;
  st.current_size.reset();
  st.current_since = now;
  const bool taken = st.spare_ready && ::rename(st.spare.c_str(), fname.c_str()) == 0;
  st.spare_ready = false;
  if (!taken) {
    ++st.stats.grown_logs;
    lock.unlock();
    return target()->NewWritableFile(fname, options, result, dbg);
  }
  ++st.stats.prefilled_logs;
  auto size = std::make_shared<std::atomic<uint64_t>>(0);
  st.current_size = size;
  lock.unlock();
  int fd = ::open(fname.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", fname, errno);
  // The log's name must be durable before a record synced into it counts.
  Status synced = SyncDir(st.dir);
  if (!synced.ok()) {
    ::close(fd);
    return rocksdb::IOStatus::IOError(synced.ToString());
  }
  result->reset(new PrefilledLog(fname, fd, std::move(size)));
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

}  // namespace dynamo::node
