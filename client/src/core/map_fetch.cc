#include "core/map_fetch.h"

#include <algorithm>
#include <string>

namespace dynamo::client {

MapFetch::MapFetch(size_t candidates, uint64_t timeout_ms)
    : candidates_(candidates),
      timeout_ms_(std::max<uint64_t>(timeout_ms, 1)),
      stagger_ms_(std::max<uint64_t>(std::min(kMapFetchStaggerMs, timeout_ms_ / 2), 1)) {}

std::vector<size_t> MapFetch::Start(uint64_t now_ms) {
  deadline_ms_ = now_ms + timeout_ms_;
  if (candidates_ == 0) {
    outcome_ = Status::Unavailable("no node to ask for the cluster map");
    return {};
  }
  return AskNext(now_ms);
}

std::vector<size_t> MapFetch::AskNext(uint64_t now_ms) {
  if (done() || asked_ >= candidates_) return {};
  next_ask_ms_ = now_ms + stagger_ms_;
  return {asked_++};
}

std::vector<size_t> MapFetch::OnFailure(size_t i, Status error, uint64_t now_ms) {
  if (done() || i >= asked_) return {};
  ++failed_;
  last_error_ = std::move(error);
  if (now_ms >= deadline_ms_) {
    FailAtDeadline();
  } else if (failed_ >= candidates_) {
    outcome_ = last_error_.Annotate("cannot load the cluster map");
  }
  return AskNext(now_ms);
}

void MapFetch::OnAnswer(size_t i) {
  if (!done() && i < asked_) outcome_ = Status::OK();
}

std::vector<size_t> MapFetch::OnTimer(uint64_t now_ms) {
  if (done()) return {};
  if (now_ms >= deadline_ms_) {
    FailAtDeadline();
    return {};
  }
  if (now_ms >= next_ask_ms_) return AskNext(now_ms);
  return {};
}

uint64_t MapFetch::timer_ms() const {
  return asked_ < candidates_ ? std::min(next_ask_ms_, deadline_ms_) : deadline_ms_;
}

uint64_t MapFetch::remaining_ms(uint64_t now_ms) const {
  return deadline_ms_ > now_ms ? deadline_ms_ - now_ms : 1;
}

void MapFetch::FailAtDeadline() {
  std::string what = "cannot load the cluster map: no node gave it within " +
                     std::to_string(timeout_ms_) + " ms (asked " + std::to_string(asked_) + " of " +
                     std::to_string(candidates_) + ")";
  if (!last_error_.ok()) what += "; the last error: " + last_error_.ToString();
  outcome_ = Status::Unavailable(what);
}

}  // namespace dynamo::client
