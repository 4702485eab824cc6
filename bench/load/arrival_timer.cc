#include "load/arrival_timer.h"

#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>

namespace dynamo::bench {

Result<std::unique_ptr<ArrivalTimer>> ArrivalTimer::Create(net::EventLoop& loop,
                                                           std::function<void()> fire) {
  // steady_clock is CLOCK_MONOTONIC with libstdc++ on Linux.
  int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) return Status::IOError(std::string("timerfd_create: ") + std::strerror(errno));
  std::unique_ptr<ArrivalTimer> t(new ArrivalTimer(fd, std::move(fire)));
  t->poll_ = new uv_poll_t;
  if (int rc = uv_poll_init(loop.uv(), t->poll_, fd); rc != 0) {
    delete t->poll_;
    t->poll_ = nullptr;
    return Status::IOError(std::string("uv_poll_init: ") + uv_strerror(rc));
  }
  t->poll_->data = t.get();
  uv_poll_start(t->poll_, UV_READABLE, [](uv_poll_t* h, int status, int) {
    auto* self = static_cast<ArrivalTimer*>(h->data);
    if (self == nullptr || status < 0) return;
    uint64_t expirations = 0;
    if (::read(self->fd_, &expirations, sizeof expirations) != sizeof expirations) return;
    self->armed_ns_ = 0;
    self->fire_();
  });
  return t;
}

ArrivalTimer::~ArrivalTimer() {
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  }
  ::close(fd_);
}

void ArrivalTimer::ArmBy(uint64_t deadline_ns) {
  // A zero it_value disarms: one nanosecond fires at once.
  const uint64_t at = deadline_ns > 0 ? deadline_ns : 1;
  if (armed_ns_ != 0 && armed_ns_ <= at) return;
  armed_ns_ = at;
  itimerspec spec{};
  spec.it_value.tv_sec = static_cast<time_t>(at / 1'000'000'000);
  spec.it_value.tv_nsec = static_cast<long>(at % 1'000'000'000);
  ::timerfd_settime(fd_, TFD_TIMER_ABSTIME, &spec, nullptr);
}

}  // namespace dynamo::bench
