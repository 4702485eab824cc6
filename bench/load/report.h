// The figures of one dynamo-bench run and how they are printed: a text
// table for people, one JSON object for scripts, a gnuplot script for the
// latency-percentile plot. No I/O.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "load/histogram.h"

namespace dynamo::bench {

struct OpStats {
  Histogram latency;  // successful operations only
  uint64_t errors = 0;
  std::map<std::string, uint64_t> errors_by_kind;
  std::map<std::string, std::string> first_error;  // by kind: the first such error's message
  uint64_t not_found = 0;  // reads that found no value
  uint64_t siblings = 0;   // reads that returned more than one value

  // Counts `n` errors of `kind`; the first of each kind keeps its message.
  void RecordError(const std::string& kind, std::string_view message = {}, uint64_t n = 1);
  void Merge(const OpStats& other);
};

struct RunReport {
  std::string backend;
  std::string workload;
  std::string distribution;
  uint64_t keys = 0;
  uint32_t value_size = 0;
  bool distinct_values = false;
  size_t concurrency = 0;
  double target_rate = 0;  // operations per second; 0: closed loop
  double seconds = 0;      // the measured phase
  uint64_t loaded = 0;     // keys written by the load phase
  uint64_t load_errors = 0;
  OpStats read, write;

  // Successful operations per second of the measured phase.
  double Throughput() const;
};

std::string ReportText(const RunReport& r);
// One line, no trailing newline: backend, workload, throughput (ops/s), and
// "read"/"write" objects with count, errors, errors_by_kind, first_error, not_found,
// siblings, p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mean_ms.
std::string ReportJson(const RunReport& r);
// A gnuplot script that draws latency by percentile (log scale) for reads and
// writes into `png_path`, its data inline.
std::string PlotScript(const RunReport& r, const std::string& png_path);

}  // namespace dynamo::bench
