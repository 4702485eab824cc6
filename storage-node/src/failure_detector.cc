#include "dynamo/node/failure_detector.h"

#include <algorithm>
#include <cmath>

namespace dynamo::node {

void PhiAccrual::Heartbeat(uint64_t now_ms) {
  if (!started_) {
    // Two intervals around the assumed one (as Akka seeds its history), so
    // that the first ones measured, maybe a burst of exchanges at a start,
    // do not stand alone for the peer's rate.
    const double first = options_->first_interval_ms;
    Record(first - first / 4);
    Record(first + first / 4);
    last_ms_ = now_ms;
    started_ = true;
    return;
  }
  if (now_ms <= last_ms_) return;
  // A silence already judged a failure (an outage, a pause, a partition)
  // is no heartbeat interval: learned, it would hide the next failure as
  // long (Akka's rule). Unless every interval is one: the peer's rate is
  // slower than assumed.
  if (Phi(now_ms) <= threshold() || ++unlearned_in_a_row_ > kUnlearnedInARowMax) {
    Record(static_cast<double>(now_ms - last_ms_));
    unlearned_in_a_row_ = 0;
  }
  last_ms_ = now_ms;
}

void PhiAccrual::Record(double interval) {
  intervals_.push_back(interval);
  sum_ += interval;
  sum_sq_ += interval * interval;
  if (intervals_.size() > options_->window) {
    const double old = intervals_.front();
    intervals_.pop_front();
    sum_ -= old;
    sum_sq_ -= old * old;
  }
}

double PhiAccrual::PhiSince(uint64_t last_ms, uint64_t now_ms) const {
  if (!started_ || now_ms <= last_ms) return 0;
  const double n = static_cast<double>(intervals_.size());
  double mean = sum_ / n;
  double std_dev = std::sqrt(std::max(0.0, sum_sq_ / n - mean * mean));
  mean += options_->acceptable_pause_ms;
  std_dev = std::max(std_dev, options_->min_std_dev_ms);
  const double y = (static_cast<double>(now_ms - last_ms) - mean) / std_dev;
  // Logistic approximation of the normal CDF's tail (as in Akka).
  const double e = std::exp(-y * (1.5976 + 0.070566 * y * y));
  const double p_later = y > 0 ? e / (1.0 + e) : 1.0 - 1.0 / (1.0 + e);
  if (p_later <= 0) return 1e9;
  return -std::log10(p_later);
}

}  // namespace dynamo::node
