#include "load/workload.h"

#include <cmath>
#include <cstdio>
#include <numeric>

namespace dynamo::bench {

Result<Workload> ParseWorkload(std::string_view name) {
  if (name == "A" || name == "a") return Workload::kA;
  if (name == "B" || name == "b") return Workload::kB;
  if (name == "C" || name == "c") return Workload::kC;
  if (name == "W" || name == "w") return Workload::kW;
  return Status::InvalidArgument("workload must be A, B, C or W, not '" + std::string(name) + "'");
}

std::string_view WorkloadName(Workload w) {
  switch (w) {
    case Workload::kA: return "A";
    case Workload::kB: return "B";
    case Workload::kC: return "C";
    case Workload::kW: return "W";
  }
  return "?";
}

double ReadFraction(Workload w) {
  switch (w) {
    case Workload::kA: return 0.5;
    case Workload::kB: return 0.95;
    case Workload::kC: return 1.0;
    case Workload::kW: return 0.0;
  }
  return 0;
}

Result<KeyDistribution> ParseKeyDistribution(std::string_view name) {
  if (name == "uniform") return KeyDistribution::kUniform;
  if (name == "zipfian") return KeyDistribution::kZipfian;
  return Status::InvalidArgument("key distribution must be uniform or zipfian, not '" + std::string(name) + "'");
}

namespace {

double Zeta(uint64_t n, double theta) {
  double sum = 0;
  for (uint64_t i = 1; i <= n; ++i) sum += 1.0 / std::pow(static_cast<double>(i), theta);
  return sum;
}

// A multiplier for ranks mod `n` that makes rank -> key one to one (coprime
// with n), far from 1 so that neighbouring ranks land far apart.
uint64_t ScatterMultiplier(uint64_t n) {
  if (n <= 2) return 1;
  uint64_t a = 0x9e3779b97f4a7c15ULL % n;
  while (a < 2 || std::gcd(a, n) != 1) a = (a + 1) % n;
  return a;
}

}  // namespace

Zipfian::Zipfian(uint64_t n, double theta) : n_(n < 1 ? 1 : n), theta_(theta) {
  zetan_ = Zeta(n_, theta_);
  const double zeta2 = Zeta(2, theta_);
  alpha_ = 1.0 / (1.0 - theta_);
  eta_ = (1 - std::pow(2.0 / static_cast<double>(n_), 1 - theta_)) / (1 - zeta2 / zetan_);
  half_pow_theta_ = 1 + std::pow(0.5, theta_);
}

uint64_t Zipfian::Next(std::mt19937_64& rng) const {
  const double u = std::uniform_real_distribution<double>(0, 1)(rng);
  const double uz = u * zetan_;
  if (uz < 1) return 0;
  if (uz < half_pow_theta_) return n_ > 1 ? 1 : 0;
  const auto rank = static_cast<uint64_t>(static_cast<double>(n_) * std::pow(eta_ * u - eta_ + 1, alpha_));
  return rank < n_ ? rank : n_ - 1;
}

std::string KeyName(uint64_t i, std::string_view prefix) {
  // Decimal, zero-padded to 10 digits ("%010llu" without the formatter's cost).
  char digits[20];
  size_t n = 0;
  do {
    digits[sizeof digits - 1 - n++] = static_cast<char>('0' + i % 10);
    i /= 10;
  } while (i != 0);
  for (; n < 10; ++n) digits[sizeof digits - 1 - n] = '0';
  std::string name;
  name.reserve(prefix.size() + n);
  name.append(prefix).append(digits + sizeof digits - n, n);
  return name;
}

OpGenerator::OpGenerator(Workload workload, KeyDistribution dist, uint64_t keys, uint64_t seed)
    : read_fraction_(ReadFraction(workload)),
      keys_(keys < 1 ? 1 : keys),
      zipfian_(dist == KeyDistribution::kZipfian),
      zipf_(zipfian_ ? keys_ : 1),
      scatter_mul_(ScatterMultiplier(keys_)),
      rng_(seed) {}

Op OpGenerator::Next() {
  Op op;
  op.read = read_fraction_ >= 1 ||
            (read_fraction_ > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < read_fraction_);
  op.key = zipfian_ ? static_cast<uint64_t>(static_cast<unsigned __int128>(zipf_.Next(rng_)) *
                                            scatter_mul_ % keys_)
                    : rng_() % keys_;
  return op;
}

}  // namespace dynamo::bench
