// A latency histogram with bounded relative error, for dynamo-bench.
//
// Values are nanoseconds. Buckets are log-linear (as in HdrHistogram): exact
// below 128 ns, then 64 buckets per power of two, so a reported percentile
// is within 1/64 (1.6%) of the true value. Memory is fixed (kBuckets
// counters) whatever the number of samples; values above kMaxNs are counted
// in the last bucket and still reach max_ns() exactly.
//
// Not thread-safe: one histogram per thread, then Merge.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dynamo::bench {

class Histogram {
 public:
  static constexpr uint64_t kMaxNs = uint64_t{1} << 40;  // about 18 minutes
  static constexpr int kSubBits = 6;
  static constexpr size_t kBuckets = (40 - kSubBits) * (size_t{1} << kSubBits) + (size_t{1} << (kSubBits + 1));

  void Record(uint64_t ns);
  void Merge(const Histogram& other);
  void Reset() { *this = Histogram(); }

  uint64_t count() const { return count_; }
  uint64_t max_ns() const { return max_; }
  double mean_ns() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0; }
  // The value at quantile q in [0, 1]: the smallest bucket bound with at
  // least ceil(q * count) samples at or below it (max_ns() for q == 1).
  // 0 when empty.
  uint64_t Percentile(double q) const;

  struct Point {
    double quantile;
    uint64_t ns;
  };
  // (quantile, value) points for a percentile plot: quantiles 1/2, 3/4,
  // 7/8, ... while the tail holds at least one sample, then the maximum.
  std::vector<Point> Spectrum() const;

 private:
  static size_t BucketOf(uint64_t ns);
  static uint64_t UpperBound(size_t bucket);

  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
  uint64_t max_ = 0;
  uint64_t sum_ = 0;
};

}  // namespace dynamo::bench
