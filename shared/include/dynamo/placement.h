// Key placement: where a key lives on the 128-bit ring.
//
// A key's ring position is the MD5 of its bytes read as a big-endian 128-bit
// integer (paper section 4.2). The ring is cut into Q equal partitions, Q a
// power of two, so a position's partition is its top log2(Q) bits.
//
// Also here: Hash64, a fast, stable (same result on every platform and
// process) 64-bit hash for Merkle bucketing and digests. Not cryptographic.
//
// Thread-safety: all functions are thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include <boost/multiprecision/cpp_int.hpp>

namespace dynamo {

using RingPosition = boost::multiprecision::uint128_t;
using PartitionId = uint32_t;

inline constexpr uint32_t kDefaultPartitions = 1024;
inline constexpr uint32_t kMaxPartitions = 1u << 16;

using Md5Digest = std::array<uint8_t, 16>;

// MD5 of `data` (RFC 1321).
Md5Digest Md5(std::string_view data);

// The ring position of `key`: MD5(key) as a big-endian 128-bit integer.
RingPosition KeyPosition(std::string_view key);

// True when `partitions` is a power of two in [1, kMaxPartitions].
bool IsValidPartitionCount(uint32_t partitions);

// The partition holding `position`. Precondition: IsValidPartitionCount(partitions).
PartitionId PartitionOf(const RingPosition& position, uint32_t partitions);

// The partition holding `key`; faster than PartitionOf(KeyPosition(key)).
PartitionId KeyPartition(std::string_view key, uint32_t partitions);

// The first ring position of `partition`; the partition covers
// [PartitionStart(p), PartitionStart(p + 1)).
RingPosition PartitionStart(PartitionId partition, uint32_t partitions);

// Stable 64-bit hash of `data`.
uint64_t Hash64(std::string_view data, uint64_t seed = 0);

// A 64-bit mixing function (bijective), for combining hashes.
constexpr uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace dynamo
