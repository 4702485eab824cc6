#include "dynamo/node/governor.h"

#include <algorithm>
#include <vector>

namespace dynamo::node {

namespace {
// The p99 is recomputed at most this often.
constexpr uint64_t kP99RefreshMs = 100;
}  // namespace

void BackgroundGovernor::RecordForeground(uint64_t now_ms, double latency_ms) {
  samples_.emplace_back(now_ms, latency_ms);
  if (samples_.size() > kSamplesMax) samples_.pop_front();
}

double BackgroundGovernor::ForegroundP99(uint64_t now_ms) {
  if (p99_at_ms_ != UINT64_MAX && now_ms < p99_at_ms_ + kP99RefreshMs && now_ms >= p99_at_ms_) {
    return p99_;
  }
  while (!samples_.empty() && samples_.front().first + options_.window_ms < now_ms) samples_.pop_front();
  p99_at_ms_ = now_ms;
  if (samples_.empty()) {
    p99_ = 0;
    return p99_;
  }
  std::vector<double> latencies;
  latencies.reserve(samples_.size());
  for (const auto& [t, l] : samples_) latencies.push_back(l);
  const size_t k = std::min(latencies.size() - 1, latencies.size() * 99 / 100);
  std::nth_element(latencies.begin(), latencies.begin() + static_cast<std::ptrdiff_t>(k), latencies.end());
  p99_ = latencies[k];
  return p99_;
}

bool BackgroundGovernor::TryStart(uint64_t now_ms) {
  if (BackingOff(now_ms)) {
    if (in_flight_ == 0 && now_ms >= last_trickle_ms_ + options_.trickle_ms) {
      last_trickle_ms_ = now_ms;
      ++in_flight_;
      return true;
    }
    ++deferred_;
    return false;
  }
  if (in_flight_ >= options_.max_in_flight) {
    ++deferred_;
    return false;
  }
  ++in_flight_;
  return true;
}

void BackgroundGovernor::Finished() {
  if (in_flight_ > 0) --in_flight_;
}

}  // namespace dynamo::node
