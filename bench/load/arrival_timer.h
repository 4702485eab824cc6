// A one-shot timer on the driver's loop with nanosecond resolution (a Linux
// timerfd watched by the loop), for open-loop arrivals: libuv's own timers
// tick in whole milliseconds, which would start operations up to a
// millisecond late and add that to every latency measured from the intended
// start. The driver spaces its wake-ups (kArrivalSpacingNs in driver.cc).
//
// Thread-safety: loop thread only, like net::Timer.
#pragma once

#include <cstdint>
#include <functional>

#include "dynamo/net/event_loop.h"
#include "dynamo/status.h"

struct uv_poll_s;

namespace dynamo::bench {

class ArrivalTimer {
 public:
  // `fire` runs on the loop thread each time an armed deadline passes.
  static Result<std::unique_ptr<ArrivalTimer>> Create(net::EventLoop& loop,
                                                      std::function<void()> fire);
  ~ArrivalTimer();
  ArrivalTimer(const ArrivalTimer&) = delete;
  ArrivalTimer& operator=(const ArrivalTimer&) = delete;

  // Makes the timer fire once by `deadline_ns` on std::chrono::steady_clock
  // (at once if it passed): at the earliest deadline asked for since it last
  // fired. Asking for a later one than is already set makes no system call,
  // so a caller may ask after every event.
  void ArmBy(uint64_t deadline_ns);

 private:
  ArrivalTimer(int fd, std::function<void()> fire) : fd_(fd), fire_(std::move(fire)) {}
  int fd_;
  uv_poll_s* poll_ = nullptr;
  std::function<void()> fire_;
  uint64_t armed_ns_ = 0;  // the deadline set; 0: none
};

}  // namespace dynamo::bench
