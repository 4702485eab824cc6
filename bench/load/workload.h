// What dynamo-bench asks of a store: YCSB-style operation mixes over a fixed
// key space, with uniform or zipfian key popularity. No I/O; seeded, so a
// run's operation sequence is reproducible.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "dynamo/status.h"

namespace dynamo::bench {

// A 50/50 read/update, B 95/5, C read-only, W write-only.
enum class Workload { kA, kB, kC, kW };
Result<Workload> ParseWorkload(std::string_view name);
std::string_view WorkloadName(Workload w);
double ReadFraction(Workload w);

enum class KeyDistribution { kUniform, kZipfian };
Result<KeyDistribution> ParseKeyDistribution(std::string_view name);

// Largest key space; keeps the zipfian constant's O(n) setup short.
inline constexpr uint64_t kKeysMax = 100'000'000;
// Largest value one operation writes.
inline constexpr uint32_t kValueBytesMax = 1u << 20;
// Longest key prefix: keys stay far below a node's default 2 KiB key limit.
inline constexpr size_t kKeyPrefixBytesMax = 256;
inline constexpr char kDefaultKeyPrefix[] = "key";

// YCSB's zipfian generator (Gray et al., "Quickly generating billion-record
// synthetic databases"): ranks in [0, n), rank 0 the most popular, with
// exponent theta (0.99 as in YCSB).
class Zipfian {
 public:
  Zipfian(uint64_t n, double theta = 0.99);
  uint64_t Next(std::mt19937_64& rng) const;

 private:
  uint64_t n_;
  double theta_, alpha_, zetan_, eta_, half_pow_theta_;
};

// The name of key i: the prefix, then i in 10 digits, so every key of a run
// has the same size.
std::string KeyName(uint64_t i, std::string_view prefix = kDefaultKeyPrefix);

struct Op {
  bool read = false;
  uint64_t key = 0;
};

// Draws operations: the read/write mix of a workload over `keys` keys. Zipfian
// ranks are scattered over the key space one to one (rank times a
// multiplier coprime with the key count), so every key may be drawn and
// popular keys are not neighbours.
class OpGenerator {
 public:
  OpGenerator(Workload workload, KeyDistribution dist, uint64_t keys, uint64_t seed);
  Op Next();

 private:
  double read_fraction_;
  uint64_t keys_;
  bool zipfian_;
  Zipfian zipf_;
  uint64_t scatter_mul_;
  std::mt19937_64 rng_;
};

}  // namespace dynamo::bench
