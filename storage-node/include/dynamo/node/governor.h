// Admission control for background work (paper section 6.5).
//
// Anti-entropy, hint delivery, handoffs and transfers run as steps (one page,
// one exchange). A step starts only when the governor allows it: at most
// `max_in_flight` at once while foreground requests are fast, and while the
// p99 latency of foreground requests over the sliding window is above the
// threshold, only one step per `trickle_ms`, so background work slows down
// but never stops.
//
// Plain value; time comes in as arguments. Thread-safety: none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

namespace dynamo::node {

struct GovernorOptions {
  // Foreground p99 above which background work backs off. Default: 25 ms.
  double p99_threshold_ms = 25;
  // The window the p99 is computed over. Default: 10 s.
  uint64_t window_ms = 10000;
  // Background steps in flight at most while foreground is fast. Default: 4.
  size_t max_in_flight = 4;
  // While backing off, one step may start this often. Default: 1000 ms.
  uint64_t trickle_ms = 1000;
};

class BackgroundGovernor {
 public:
  explicit BackgroundGovernor(GovernorOptions options = {}) : options_(options) {}

  // A foreground request finished after `latency_ms`.
  void RecordForeground(uint64_t now_ms, double latency_ms);
  // Whether a background step may start now. When true, the caller owes one
  // Finished() when the step ends.
  bool TryStart(uint64_t now_ms);
  void Finished();

  // The p99 of foreground latencies in the window; 0 when there are none.
  double ForegroundP99(uint64_t now_ms);
  bool BackingOff(uint64_t now_ms) { return ForegroundP99(now_ms) > options_.p99_threshold_ms; }
  size_t in_flight() const { return in_flight_; }
  uint64_t deferred() const { return deferred_; }

 private:
  static constexpr size_t kSamplesMax = 8192;

  GovernorOptions options_;
  std::deque<std::pair<uint64_t, double>> samples_;  // (time, latency)
  size_t in_flight_ = 0;
  uint64_t last_trickle_ms_ = 0;
  uint64_t deferred_ = 0;
  uint64_t p99_at_ms_ = UINT64_MAX;
  double p99_ = 0;
};

}  // namespace dynamo::node
