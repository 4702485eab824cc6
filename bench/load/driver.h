// Runs a workload against a Backend and measures it: an optional load phase
// (every key written once), a warm-up, then the measured phase, in closed
// loop (`concurrency` operations always in flight) or open loop (operations
// start at `rate` per second; each one's latency counts from its intended
// start, so queueing behind a slow store is measured, not hidden).
//
// Two writes of one key are not in flight together: a write drawn for a
// busy key is redrawn, so a single writer per key makes no siblings. (Up to
// 100 redraws, and none when every key is busy: an open loop far behind its
// schedule with fewer keys than writes waiting.)
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "load/backend.h"
#include "load/report.h"
#include "load/workload.h"

namespace dynamo::bench {

// Most operations an open-loop run lets wait for a free slot; later ones
// fail as "backlog full" instead of growing memory.
inline constexpr size_t kBacklogMax = 1'000'000;
// Random letters that distinct values are sliced from (DriverOptions).
inline constexpr size_t kValuePoolBytes = 1u << 20;
inline constexpr size_t kConcurrencyMax = 10'000;
// A run is bounded: at most a day measured, or this many operations.
inline constexpr double kDurationSMax = 86'400;
inline constexpr uint64_t kOpsMax = 10'000'000'000;
// An open loop's rate, operations per second: from one per 100 s to a
// hundred million (each arrival's time is kept in whole nanoseconds).
inline constexpr double kRateMin = 0.01;
inline constexpr double kRateMax = 1e8;

struct DriverOptions {
  Workload workload = Workload::kA;
  KeyDistribution distribution = KeyDistribution::kUniform;
  uint64_t keys = 100'000;
  std::string key_prefix = kDefaultKeyPrefix;  // see KeyName
  uint32_t value_size = 100;
  // Each write's value a different slice of kValuePoolBytes of random
  // letters, so the store cannot compress values against each other (as
  // with real data); otherwise every write carries the same value.
  bool distinct_values = false;
  size_t concurrency = 50;
  double duration_s = 10;  // measured phase, unless ops is set
  uint64_t ops = 0;        // measured phase length in operations; 0: by duration
  double rate = 0;         // operations per second (kRateMin..kRateMax); 0: closed loop
  double warmup_s = 0;
  bool load = true;        // write every key once first
  uint64_t seed = 1;
  uint64_t drain_ms = 5000;  // how long the end waits for operations in flight
  // Called about once a second with a one-line summary of the last second.
  std::function<void(const std::string&)> progress;
  // Called on the loop thread once, as the measured phase starts (after the
  // load and the warm-up), before its first operation.
  std::function<void()> on_measure;
};

Status ValidateDriverOptions(const DriverOptions& o);

// Blocks the calling thread (not `loop`'s) until the run ends. The backend
// must be open on `loop`.
Result<RunReport> RunLoad(net::EventLoop& loop, Backend& backend, const DriverOptions& options);

}  // namespace dynamo::bench
