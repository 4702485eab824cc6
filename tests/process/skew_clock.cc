// LD_PRELOAD shim for fault tests: the process's wall clock runs
// DYNAMO_SKEW_MS milliseconds (may be negative) off the machine's, as on a
// host whose clock drifted. Monotonic clocks are left alone.
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include <cstdint>

namespace {

int64_t SkewNs() {
  static const int64_t skew = [] {
    const char* ms = ::getenv("DYNAMO_SKEW_MS");
    return ms == nullptr ? int64_t{0} : static_cast<int64_t>(::strtoll(ms, nullptr, 10)) * 1000000;
  }();
  return skew;
}

void Shift(struct timespec* ts) {
  int64_t ns = static_cast<int64_t>(ts->tv_sec) * 1000000000 + ts->tv_nsec + SkewNs();
  ts->tv_sec = static_cast<time_t>(ns / 1000000000);
  ts->tv_nsec = static_cast<long>(ns % 1000000000);
  if (ts->tv_nsec < 0) {
    ts->tv_nsec += 1000000000;
    --ts->tv_sec;
  }
}

template <typename Fn>
Fn Real(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" int clock_gettime(clockid_t clock, struct timespec* ts) {
  static const auto real = Real<int (*)(clockid_t, struct timespec*)>("clock_gettime");
  if (real == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  const int r = real(clock, ts);
  if (r == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) Shift(ts);
  return r;
}

// As glibc's: `tv` is declared nonnull there, and a timezone comes back zeroed.
extern "C" int gettimeofday(struct timeval* tv, void* tz) {
  if (tz != nullptr) *static_cast<struct timezone*>(tz) = {};
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
  tv->tv_sec = ts.tv_sec;
  tv->tv_usec = ts.tv_nsec / 1000;
  return 0;
}

extern "C" time_t time(time_t* out) {
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return static_cast<time_t>(-1);
  if (out != nullptr) *out = ts.tv_sec;
  return ts.tv_sec;
}
