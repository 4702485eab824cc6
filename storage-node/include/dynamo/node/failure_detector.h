// Phi-accrual failure detection (Hayashibara et al.), in the form Akka uses:
// heartbeat inter-arrival times are modelled as a normal distribution, and
// phi = -log10(P(a heartbeat is still to come after this long)). A peer is
// suspected once phi passes a threshold; the threshold trades detection time
// against false alarms, independent of the heartbeat rate.
//
// Plain value; time comes in as arguments. Thread-safety: none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>

namespace dynamo::node {

struct FailureDetectorOptions {
  // Suspect a peer when phi exceeds this. Default: 8 (about 1 in 10^8 that a
  // live peer is suspected, under the model).
  double phi_threshold = 8.0;
  // Floor on the standard deviation, so very regular heartbeats do not make
  // the detector hair-triggered. Default: 200 ms.
  double min_std_dev_ms = 200;
  // Pause a live peer may take on top of its usual interval (GC, load).
  // Default: 1000 ms.
  double acceptable_pause_ms = 1000;
  // Intervals remembered. Default: 100.
  size_t window = 100;
  // Interval assumed before any is measured (the node sets it to its
  // gossip interval). Default: 1000 ms.
  double first_interval_ms = 1000;
};

class PhiAccrual {
 public:
  explicit PhiAccrual(const FailureDetectorOptions& options) : options_(&options) {}

  // Intervals in a row that ended with the peer suspected and are not
  // learned; the next one is.
  static constexpr uint32_t kUnlearnedInARowMax = 3;

  // A heartbeat arrived at `now_ms`. The interval since the last one is
  // learned unless the peer was suspected when it came (up to
  // kUnlearnedInARowMax in a row).
  void Heartbeat(uint64_t now_ms);
  // Suspicion at `now_ms`; 0 before the first heartbeat.
  double Phi(uint64_t now_ms) const { return PhiSince(last_ms_, now_ms); }
  // Suspicion at `now_ms` if the last sign of life was at `last_ms` (which
  // may be later than the last heartbeat, e.g. a direct exchange).
  double PhiSince(uint64_t last_ms, uint64_t now_ms) const;
  double threshold() const { return options_->phi_threshold; }
  uint64_t last_heartbeat_ms() const { return last_ms_; }
  bool started() const { return started_; }

 private:
  void Record(double interval);

  const FailureDetectorOptions* options_;
  std::deque<double> intervals_;
  double sum_ = 0;
  double sum_sq_ = 0;
  uint64_t last_ms_ = 0;
  uint32_t unlearned_in_a_row_ = 0;
  bool started_ = false;
};

}  // namespace dynamo::node
