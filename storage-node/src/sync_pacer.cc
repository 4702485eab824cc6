#include "sync_pacer.h"

#include <algorithm>

namespace dynamo::node {

SyncPacer::SyncPacer(SyncPacerOptions options) : options_(options), spacing_(options.floor) {
  options_.percent = std::min(options_.percent, kSyncPacerPercentMax);
}

void SyncPacer::OnSync(std::chrono::nanoseconds took) {
  if (options_.percent == 0) return;
  recent_ns_[next_] = std::max<int64_t>(took.count(), 0);
  next_ = (next_ + 1) % recent_ns_.size();
  recorded_ = std::min(recorded_ + 1, recent_ns_.size());
  std::array<int64_t, kSyncPacerWindow> sorted = recent_ns_;
  auto quartile = sorted.begin() + recorded_ / 4;
  std::nth_element(sorted.begin(), quartile, sorted.begin() + recorded_);
  const int64_t share_ns = *quartile * options_.percent / 100;
  const auto share = std::min<std::chrono::microseconds>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::nanoseconds(share_ns)),
      kSyncPacerShareMax);
  spacing_ = std::max(options_.floor, share);
}

}  // namespace dynamo::node
