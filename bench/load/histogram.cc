#include "load/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace dynamo::bench {

size_t Histogram::BucketOf(uint64_t ns) {
  constexpr uint64_t kLinear = uint64_t{1} << (kSubBits + 1);
  if (ns < kLinear) return static_cast<size_t>(ns);
  ns = std::min(ns, kMaxNs - 1);
  const int exp = std::bit_width(ns) - 1 - kSubBits;  // >= 1
  const uint64_t sub = ns >> exp;                      // in [64, 128)
  return static_cast<size_t>(kLinear + (static_cast<uint64_t>(exp) - 1) * (uint64_t{1} << kSubBits) +
                             (sub - (uint64_t{1} << kSubBits)));
}

uint64_t Histogram::UpperBound(size_t bucket) {
  constexpr uint64_t kLinear = uint64_t{1} << (kSubBits + 1);
  if (bucket < kLinear) return bucket;
  const uint64_t rel = bucket - kLinear;
  const uint64_t exp = rel / (uint64_t{1} << kSubBits) + 1;
  const uint64_t sub = rel % (uint64_t{1} << kSubBits) + (uint64_t{1} << kSubBits);
  return ((sub + 1) << exp) - 1;
}

void Histogram::Record(uint64_t ns) {
  ++buckets_[BucketOf(ns)];
  ++count_;
  max_ = std::max(max_, ns);
  sum_ += ns;
}

void Histogram::Merge(const Histogram& other) {
  for (size_t i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
  sum_ += other.sum_;
}

uint64_t Histogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  if (q >= 1) return max_;
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_))));
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::min(UpperBound(i), max_);
  }
  return max_;
}

std::vector<Histogram::Point> Histogram::Spectrum() const {
  std::vector<Point> points;
  if (count_ == 0) return points;
  for (double tail = 0.5; tail * static_cast<double>(count_) >= 1; tail /= 2) {
    points.push_back({1 - tail, Percentile(1 - tail)});
  }
  points.push_back({1, max_});
  return points;
}

}  // namespace dynamo::bench
