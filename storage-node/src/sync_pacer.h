// How far apart a node's storage thread starts its log syncs (StorageWorker).
//
// A sync starts no sooner than spacing() after the last one started; the
// synced writes that arrive meanwhile share it. The spacing is the larger of
// a fixed floor and a share of the disk's typical sync time, the lower
// quartile of the last kSyncPacerWindow syncs (what the disk takes, less
// the waits for a core around it under load; a few stalls do not move it),
// with that share capped at kSyncPacerShareMax. Syncs spaced at twice
// their own time keep the disk flushing at most about half the time under
// load, while on a disk that syncs in microseconds the spacing stays
// microseconds.
//
// Plain logic, no clock of its own: the caller times each sync.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace dynamo::node {

inline constexpr size_t kSyncPacerWindow = 16;
// Largest spacing the share of the sync time gives (the floor may be more).
inline constexpr std::chrono::microseconds kSyncPacerShareMax{2000};
// Largest share of the typical sync time, in percent.
inline constexpr uint32_t kSyncPacerPercentMax = 1000;

struct SyncPacerOptions {
  // Fixed least spacing (storage.sync_spacing_us); zero: none.
  std::chrono::microseconds floor{0};
  // Spacing as a percentage of the typical sync time
  // (storage.sync_spacing_percent); zero: none. At most kSyncPacerPercentMax.
  uint32_t percent = 0;
};

class SyncPacer {
 public:
  explicit SyncPacer(SyncPacerOptions options);

  // Whether syncs are spaced at all (a floor or a percentage is set).
  bool enabled() const { return options_.floor.count() > 0 || options_.percent > 0; }
  // Records that a sync took `took`.
  void OnSync(std::chrono::nanoseconds took);
  // The least time between the starts of two syncs now.
  std::chrono::microseconds spacing() const { return spacing_; }

 private:
  SyncPacerOptions options_;
  std::array<int64_t, kSyncPacerWindow> recent_ns_{};
  size_t recorded_ = 0;  // how many of recent_ns_ hold a sync's time
  size_t next_ = 0;      // the slot the next sync's time goes to
  std::chrono::microseconds spacing_;
};

}  // namespace dynamo::node
