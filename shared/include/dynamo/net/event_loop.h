// The runtime's event loop: one libuv loop, driven by one thread.
//
// Only the loop thread touches libuv handles. Other threads hand work to it
// with Post, which queues the function and wakes the loop (uv_async_send
// coalesces wake-ups; the queue, not the wake-up, carries the work).
//
// Defer runs work at the end of the current loop iteration, before the loop
// waits for I/O again: everything one iteration produced (replies to a burst
// of requests, storage writes) goes out together.
//
// Creating an EventLoop makes the process ignore SIGPIPE, so a write to a
// peer that went away fails with EPIPE instead of killing the process.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dynamo/status.h"

struct uv_loop_s;
struct uv_async_s;
struct uv_timer_s;
struct uv_prepare_s;
struct uv_check_s;

namespace dynamo::net {

struct Endpoint {
  std::string host;  // an IPv4 or IPv6 literal, or a name to resolve
  uint16_t port = 0;
  std::string ToString() const;  // "host:port", "[v6]:port"
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

// Parses "HOST:PORT" or "[IPV6]:PORT". InvalidArgument with the reason.
Result<Endpoint> ParseEndpoint(std::string_view text);

class EventLoop {
 public:
  EventLoop();
  // Closes every handle still open and runs their close callbacks. Must not
  // run while Run() is executing on another thread.
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs until Stop(). The calling thread becomes the loop thread.
  void Run();
  // Thread-safe. Run() returns after the current callbacks finish.
  void Stop();
  // Thread-safe. `fn` runs on the loop thread, in posting order. Functions
  // posted after the loop stopped for good are dropped.
  void Post(std::function<void()> fn);
  // Loop thread only. `fn` runs once, on the loop thread, after the callbacks
  // of the current iteration and before the loop next waits for I/O; work
  // it defers runs in the same pass. In deferral order.
  void Defer(std::function<void()> fn);
  // Loop time in ms from a monotonic clock, updated once per iteration.
  uint64_t NowMs() const;
  // True on the thread running Run().
  bool InLoopThread() const;
  // True on the thread running Run(), or on any thread while no thread runs
  // it: where the loop's handles and deferred work may be touched (libuv's
  // lists are unlocked). Timers, connections and Defer check it.
  bool OnLoopThreadOrStopped() const;

  uv_loop_s* uv() { return loop_.get(); }

 private:
  static void OnAsync(uv_async_s* handle);
  void Drain();
  void RunDeferred();

  std::unique_ptr<uv_loop_s> loop_;
  std::unique_ptr<uv_async_s> async_;
  // Both run the deferred work: prepare before the loop blocks (work from
  // timers and close callbacks), check right after the I/O callbacks.
  std::unique_ptr<uv_prepare_s> prepare_;
  std::unique_ptr<uv_check_s> check_;
  std::vector<std::function<void()>> deferred_;
  std::vector<std::function<void()>> running_deferred_;
  std::mutex mu_;
  std::vector<std::function<void()>> posted_;
  std::atomic<bool> stop_{false};
  std::atomic<std::thread::id> loop_thread_{};
};

// A one-shot or repeating timer on the loop. Loop thread only. Destroying it
// stops it; the callback never runs after that.
class Timer {
 public:
  explicit Timer(EventLoop& loop);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Fires `fn` after delay_ms, then every repeat_ms if that is non-zero.
  // Restarting replaces the previous schedule and callback.
  void Start(uint64_t delay_ms, uint64_t repeat_ms, std::function<void()> fn);
  void Stop();
  bool active() const;

 private:
  static void OnTimer(uv_timer_s* handle);
  EventLoop& loop_;
  uv_timer_s* handle_;
  std::function<void()> fn_;
};

}  // namespace dynamo::net
