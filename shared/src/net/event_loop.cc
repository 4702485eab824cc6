#include "dynamo/net/event_loop.h"

#include <uv.h>

#include <csignal>
#include <charconv>

namespace dynamo::net {

std::string Endpoint::ToString() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<Endpoint> ParseEndpoint(std::string_view text) {
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Status::InvalidArgument("address '" + std::string(text) + "' is not [IPV6]:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return Status::InvalidArgument("address '" + std::string(text) + "' is not HOST:PORT");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return Status::InvalidArgument("write IPv6 addresses as [IPV6]:PORT");
    }
  }
  if (host.empty()) return Status::InvalidArgument("address '" + std::string(text) + "' has no host");
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || port.empty() || value > 65535) {
    return Status::InvalidArgument("address '" + std::string(text) + "' has an invalid port");
  }
  return Endpoint{std::string(host), static_cast<uint16_t>(value)};
}

EventLoop::EventLoop()
    : loop_(std::make_unique<uv_loop_t>()),
      async_(std::make_unique<uv_async_t>()),
      prepare_(std::make_unique<uv_prepare_t>()),
      check_(std::make_unique<uv_check_t>()) {
  std::signal(SIGPIPE, SIG_IGN);
  DYNAMO_CHECK(uv_loop_init(loop_.get()) == 0);
  DYNAMO_CHECK(uv_async_init(loop_.get(), async_.get(), &EventLoop::OnAsync) == 0);
  async_->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(async_.get()));
  DYNAMO_CHECK(uv_prepare_init(loop_.get(), prepare_.get()) == 0);
  DYNAMO_CHECK(uv_check_init(loop_.get(), check_.get()) == 0);
  prepare_->data = this;
  check_->data = this;
  DYNAMO_CHECK(uv_prepare_start(prepare_.get(), [](uv_prepare_t* h) {
                 static_cast<EventLoop*>(h->data)->RunDeferred();
               }) == 0);
  DYNAMO_CHECK(uv_check_start(check_.get(), [](uv_check_t* h) {
                 static_cast<EventLoop*>(h->data)->RunDeferred();
               }) == 0);
  uv_unref(reinterpret_cast<uv_handle_t*>(prepare_.get()));
  uv_unref(reinterpret_cast<uv_handle_t*>(check_.get()));
}

EventLoop::~EventLoop() {
  uv_close(reinterpret_cast<uv_handle_t*>(async_.get()), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(prepare_.get()), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(check_.get()), nullptr);
  // Lets pending closes finish: their callbacks release the objects that own
  // other handles (a connection's timer), which close those handles.
  auto finish_closes = [this] {
    for (int i = 0; i < 1000; ++i) {
      int closing = 0;
      uv_walk(
          loop_.get(),
          [](uv_handle_t* h, void* n) { *static_cast<int*>(n) += uv_is_closing(h) ? 1 : 0; },
          &closing);
      if (closing == 0) break;
      uv_run(loop_.get(), UV_RUN_NOWAIT);
    }
  };
  // Functions posted or deferred but never run may own handles (an
  // operation's timer): release them while those handles are open, so their
  // owners close them, and before the sweep below closes what is left.
  auto drop_pending = [this] {
    for (int i = 0; i < 1000; ++i) {
      std::vector<std::function<void()>> dropped;
      {
        std::lock_guard lock(mu_);
        dropped.swap(posted_);
      }
      if (dropped.empty() && deferred_.empty()) break;
      std::vector<std::function<void()>> deferred;
      deferred.swap(deferred_);
      dropped.clear();
      deferred.clear();
    }
  };
  finish_closes();
  drop_pending();
  finish_closes();
  // Whatever is still open was leaked by its owner; close it so the loop can end.
  uv_walk(
      loop_.get(),
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  while (uv_run(loop_.get(), UV_RUN_DEFAULT) != 0) {
  }
  drop_pending();
  int rc = uv_loop_close(loop_.get());
  DYNAMO_CHECK(rc == 0);
}

void EventLoop::Run() {
  loop_thread_ = std::this_thread::get_id();
  // The async handle keeps the loop alive while Run is active.
  uv_ref(reinterpret_cast<uv_handle_t*>(async_.get()));
  Drain();
  while (!stop_) uv_run(loop_.get(), UV_RUN_DEFAULT);
  // Work posted before Stop() that no drain took yet (Stop() came while the
  // loop ran earlier work) still runs here, on the loop thread.
  Drain();
  uv_unref(reinterpret_cast<uv_handle_t*>(async_.get()));
  stop_ = false;
  loop_thread_ = std::thread::id{};
}

void EventLoop::Stop() {
  stop_ = true;
  uv_async_send(async_.get());
}

void EventLoop::Post(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    posted_.push_back(std::move(fn));
  }
  uv_async_send(async_.get());
}

void EventLoop::Defer(std::function<void()> fn) {
  DYNAMO_CHECK(OnLoopThreadOrStopped());
  deferred_.push_back(std::move(fn));
}

void EventLoop::RunDeferred() {
  while (!deferred_.empty()) {
    running_deferred_.swap(deferred_);
    for (auto& fn : running_deferred_) fn();
    running_deferred_.clear();
  }
}

uint64_t EventLoop::NowMs() const { return uv_now(loop_.get()); }

bool EventLoop::InLoopThread() const { return loop_thread_.load() == std::this_thread::get_id(); }

bool EventLoop::OnLoopThreadOrStopped() const {
  const std::thread::id runner = loop_thread_.load();
  return runner == std::thread::id{} || runner == std::this_thread::get_id();
}

void EventLoop::OnAsync(uv_async_t* handle) {
  auto* self = static_cast<EventLoop*>(handle->data);
  self->Drain();
  if (self->stop_) uv_stop(self->loop_.get());
}

void EventLoop::Drain() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

Timer::Timer(EventLoop& loop) : loop_(loop), handle_(new uv_timer_t) {
  DYNAMO_CHECK(uv_timer_init(loop.uv(), handle_) == 0);
  handle_->data = this;
}

Timer::~Timer() {
  // libuv's handle lists are unlocked: a close from another thread while the
  // loop runs can drop the handle from them, and the loop never ends.
  DYNAMO_CHECK(loop_.OnLoopThreadOrStopped());
  uv_timer_stop(handle_);
  handle_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(handle_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

void Timer::Start(uint64_t delay_ms, uint64_t repeat_ms, std::function<void()> fn) {
  fn_ = std::move(fn);
  uv_timer_start(handle_, &Timer::OnTimer, delay_ms, repeat_ms);
}

void Timer::Stop() { uv_timer_stop(handle_); }

bool Timer::active() const {
  return uv_is_active(reinterpret_cast<const uv_handle_t*>(handle_)) != 0;
}

void Timer::OnTimer(uv_timer_t* handle) {
  auto* self = static_cast<Timer*>(handle->data);
  if (self == nullptr) return;
  // Copy: the callback may restart or destroy the timer.
  std::function<void()> fn = self->fn_;
  fn();
}

}  // namespace dynamo::net
