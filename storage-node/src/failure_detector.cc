#include "dynamo/node/failure_detector.h"

#include <algorithm>
#include <cmath>

namespace dynamo::node {

void PhiAccrual::Heartbeat(uint64_t now_ms) {
  if (started_ && now_ms > last_ms_) {
    double interval = static_cast<double>(now_ms - last_ms_);
    intervals_.push_back(interval);
    sum_ += interval;
    sum_sq_ += interval * interval;
    if (intervals_.size() > options_->window) {
      double old = intervals_.front();
      intervals_.pop_front();
      sum_ -= old;
      sum_sq_ -= old * old;
    }
  }
  if (!started_ || now_ms > last_ms_) last_ms_ = now_ms;
  started_ = true;
}

double PhiAccrual::PhiSince(uint64_t last_ms, uint64_t now_ms) const {
  if (!started_ || now_ms <= last_ms) return 0;
  double mean = options_->first_interval_ms;
  double std_dev = options_->first_interval_ms / 4;
  if (!intervals_.empty()) {
    double n = static_cast<double>(intervals_.size());
    mean = sum_ / n;
    std_dev = std::sqrt(std::max(0.0, sum_sq_ / n - mean * mean));
  }
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
