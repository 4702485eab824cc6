#include "dynamo/placement.h"

#include <bit>
#include <cstring>

#include "dynamo/check.h"

namespace dynamo {
namespace {

// MD5 (RFC 1321), one-shot. Ours rather than libcrypto's: through OpenSSL 3's
// EVP interface the digest of a short key cost about 1,500 instructions, most
// of it the interface, and every operation of the client and every request a
// node serves computes one.
constexpr uint32_t kMd5Sine[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
constexpr int kMd5Shift[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};

inline uint32_t LoadLittle32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  return v;
}

// One of MD5's four rounds: 16 steps, each mixing one message word.
template <int kRound>
inline void Md5Round(uint32_t& a, uint32_t& b, uint32_t& c, uint32_t& d, const uint32_t m[16]) {
  for (int i = 16 * kRound; i < 16 * kRound + 16; ++i) {
    uint32_t f;
    int g;
    if constexpr (kRound == 0) {
      f = d ^ (b & (c ^ d));
      g = i;
    } else if constexpr (kRound == 1) {
      f = c ^ (d & (b ^ c));
      g = (5 * i + 1) & 15;
    } else if constexpr (kRound == 2) {
      f = b ^ c ^ d;
      g = (3 * i + 5) & 15;
    } else {
      f = c ^ (b | ~d);
      g = (7 * i) & 15;
    }
    const uint32_t rotated = std::rotl(a + f + kMd5Sine[i] + m[g], kMd5Shift[kRound][i & 3]);
    a = d;
    d = c;
    c = b;
    b += rotated;
  }
}

void Md5Block(uint32_t state[4], const uint8_t* block) {
  uint32_t m[16];
  for (int i = 0; i < 16; ++i) m[i] = LoadLittle32(block + 4 * i);
  uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
  Md5Round<0>(a, b, c, d, m);
  Md5Round<1>(a, b, c, d, m);
  Md5Round<2>(a, b, c, d, m);
  Md5Round<3>(a, b, c, d, m);
  state[0] += a;
  state[1] += b;
  state[2] += c;
  state[3] += d;
}

inline uint64_t LoadLittle64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

}  // namespace

Md5Digest Md5(std::string_view data) {
  uint32_t state[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t left = data.size();
  for (; left >= 64; left -= 64, p += 64) Md5Block(state, p);
  // The rest, a 0x80 byte, zeros, and the length in bits (little-endian) in
  // the last 8 bytes of one block, or of a second when the rest is 56 or more.
  uint8_t tail[128] = {};
  std::memcpy(tail, p, left);
  tail[left] = 0x80;
  const size_t tail_size = left < 56 ? 64 : 128;
  uint64_t bits = uint64_t{data.size()} * 8;
  for (int i = 0; i < 8; ++i) tail[tail_size - 8 + i] = static_cast<uint8_t>(bits >> (8 * i));
  Md5Block(state, tail);
  if (tail_size == 128) Md5Block(state, tail + 64);
  Md5Digest out;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<uint8_t>(state[i] >> (8 * j));
  }
  return out;
}

RingPosition KeyPosition(std::string_view key) {
  Md5Digest d = Md5(key);
  RingPosition pos = 0;
  for (uint8_t byte : d) pos = (pos << 8) | byte;
  return pos;
}

bool IsValidPartitionCount(uint32_t partitions) {
  return partitions >= 1 && partitions <= kMaxPartitions && std::has_single_bit(partitions);
}

PartitionId PartitionOf(const RingPosition& position, uint32_t partitions) {
  DYNAMO_CHECK(IsValidPartitionCount(partitions));
  if (partitions == 1) return 0;
  unsigned bits = static_cast<unsigned>(std::countr_zero(partitions));
  return static_cast<PartitionId>(position >> (128 - bits));
}

PartitionId KeyPartition(std::string_view key, uint32_t partitions) {
  DYNAMO_CHECK(IsValidPartitionCount(partitions));
  if (partitions == 1) return 0;
  Md5Digest d = Md5(key);
  uint32_t top = (uint32_t{d[0]} << 24) | (uint32_t{d[1]} << 16) | (uint32_t{d[2]} << 8) | d[3];
  unsigned bits = static_cast<unsigned>(std::countr_zero(partitions));
  return top >> (32 - bits);
}

RingPosition PartitionStart(PartitionId partition, uint32_t partitions) {
  DYNAMO_CHECK(IsValidPartitionCount(partitions) && partition < partitions);
  if (partitions == 1) return 0;
  unsigned bits = static_cast<unsigned>(std::countr_zero(partitions));
  return RingPosition(partition) << (128 - bits);
}

uint64_t Hash64(std::string_view data, uint64_t seed) {
  constexpr uint64_t kMul = 0x9e3779b97f4a7c15ULL;
  uint64_t h = Mix64((seed + 0x243f6a8885a308d3ULL) ^ (data.size() * kMul));
  const char* p = data.data();
  size_t n = data.size();
  while (n >= 8) {
    h = Mix64(h ^ LoadLittle64(p)) * kMul + 0x632be59bd9b4e019ULL;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t tail = 0;
    for (size_t i = 0; i < n; ++i) tail |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
    h = Mix64(h ^ tail ^ (uint64_t{n} << 59)) * kMul;
  }
  return Mix64(h);
}

}  // namespace dynamo
