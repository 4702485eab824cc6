// dynamo_sim: the simulator's long mode.
//
//   dynamo_sim [--start-seed S] [--seeds N] [--minutes M] [--verbose]
//
// Runs seeds S, S+1, ... until N seeds ran or M minutes passed, printing one
// SEED= line per run; stops at the first failure with status 1. Replay a
// failure with --start-seed SEED --seeds 1 (DYNAMO_SIM_LOG=1 shows node logs).
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "sim/workload.h"

int main(int argc, char** argv) {
  uint64_t start = 1, seeds = 0;
  double minutes = 0;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--start-seed") && i + 1 < argc) start = std::strtoull(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "--seeds") && i + 1 < argc) seeds = std::strtoull(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "--minutes") && i + 1 < argc) minutes = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--verbose")) verbose = true;
    else {
      std::cerr << "usage: dynamo_sim [--start-seed S] [--seeds N] [--minutes M] [--verbose]\n";
      return 2;
    }
  }
  if (seeds == 0 && minutes == 0) seeds = 200;
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t ran = 0;
  for (uint64_t seed = start;; ++seed) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 60;
    if ((seeds && ran >= seeds) || (minutes > 0 && elapsed >= minutes)) break;
    std::cout << "SEED=" << seed << std::endl;
    dynamo::sim::WorkloadReport r = dynamo::sim::RunWorkload(seed, dynamo::sim::ConfigForSeed(seed));
    ++ran;
    if (verbose || !r.ok) std::cout << r.Summary() << std::endl;
    if (!r.ok) return 1;
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 60;
  std::cout << ran << " seeds passed in " << elapsed << " minutes (" << static_cast<uint64_t>(ran / elapsed)
            << " per minute)" << std::endl;
  return 0;
}
