#include "dynamo/placement.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <random>
#include <string>
#include <vector>

namespace dynamo {
namespace {

std::string Hex(const Md5Digest& d) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (uint8_t b : d) {
    s += kHex[b >> 4];
    s += kHex[b & 15];
  }
  return s;
}

TEST(PlacementTest, Md5KnownVectors) {
  EXPECT_EQ(Hex(Md5("")), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(Hex(Md5("abc")), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(Hex(Md5("The quick brown fox jumps over the lazy dog")),
            "9e107d9d372bb6826bd81d3542a419d6");
  // RFC 1321's test suite, including its two-block message.
  EXPECT_EQ(Hex(Md5("message digest")), "f96b697d7cb7938d525a2f31aaf161d0");
  EXPECT_EQ(Hex(Md5("abcdefghijklmnopqrstuvwxyz")), "c3fcd3d76192e4007dfb496cca67e13b");
  EXPECT_EQ(
      Hex(Md5("12345678901234567890123456789012345678901234567890123456789012345678901234567890")),
      "57edf4a22be3c955ac49da2e2107b67a");
}

TEST(PlacementTest, Md5MatchesLibcryptoAtEveryLengthAroundTheBlocks) {
  std::mt19937_64 rng(7);
  for (size_t len = 0; len <= 300; ++len) {
    for (int round = 0; round < 4; ++round) {
      std::string data(len, '\0');
      for (char& c : data) c = static_cast<char>(rng());
      Md5Digest want;
      unsigned int want_len = 0;
      ASSERT_EQ(EVP_Digest(data.data(), data.size(), want.data(), &want_len, EVP_md5(), nullptr),
                1);
      ASSERT_EQ(want_len, want.size());
      ASSERT_EQ(Hex(Md5(data)), Hex(want)) << "length " << len;
    }
  }
}

TEST(PlacementTest, PositionIsBigEndianMd5) {
  RingPosition p = KeyPosition("abc");
  EXPECT_EQ(static_cast<uint64_t>(p >> 64), 0x900150983cd24fb0ULL);
  EXPECT_EQ(static_cast<uint64_t>(p), 0xd6963f7d28e17f72ULL);
}

TEST(PlacementTest, PartitionIsTopBits) {
  RingPosition p = KeyPosition("abc");  // top byte 0x90 = 1001 0000
  EXPECT_EQ(PartitionOf(p, 1), 0u);
  EXPECT_EQ(PartitionOf(p, 2), 1u);
  EXPECT_EQ(PartitionOf(p, 16), 9u);
  EXPECT_EQ(PartitionOf(p, 1024), 0x900u >> 2);
  for (uint32_t q : {1u, 2u, 64u, 1024u, 4096u, kMaxPartitions}) {
    for (int i = 0; i < 200; ++i) {
      std::string key = "key-" + std::to_string(i);
      EXPECT_EQ(KeyPartition(key, q), PartitionOf(KeyPosition(key), q));
    }
  }
}

TEST(PlacementTest, PartitionStartIsInverse) {
  for (uint32_t q : {1u, 8u, 1024u, kMaxPartitions}) {
    for (PartitionId p : {0u, q / 2, q - 1}) {
      RingPosition start = PartitionStart(p, q);
      EXPECT_EQ(PartitionOf(start, q), p);
      if (start > 0) {
        EXPECT_EQ(PartitionOf(start - 1, q), p == 0 ? q - 1 : p - 1);
      }
    }
  }
}

TEST(PlacementTest, ValidPartitionCounts) {
  EXPECT_TRUE(IsValidPartitionCount(1));
  EXPECT_TRUE(IsValidPartitionCount(1024));
  EXPECT_TRUE(IsValidPartitionCount(kMaxPartitions));
  EXPECT_FALSE(IsValidPartitionCount(0));
  EXPECT_FALSE(IsValidPartitionCount(1000));
  EXPECT_FALSE(IsValidPartitionCount(kMaxPartitions * 2));
}

TEST(PlacementTest, KeysSpreadEvenly) {
  constexpr uint32_t kQ = 64;
  constexpr int kKeys = 64000;
  std::vector<int> count(kQ, 0);
  for (int i = 0; i < kKeys; ++i) ++count[KeyPartition("user:" + std::to_string(i), kQ)];
  for (int c : count) {
    EXPECT_GT(c, 1000 * 0.85);
    EXPECT_LT(c, 1000 * 1.15);
  }
}

TEST(PlacementTest, Hash64IsStableAndSeeded) {
  // Pinned: Merkle bucketing needs the same values on every node and release.
  EXPECT_EQ(Hash64("dynamo"), 0x796cdc9a4a7a77edULL);
  EXPECT_EQ(Hash64(""), 0xa8871e3718ca0053ULL);
  EXPECT_EQ(Hash64("0123456789abcdef0", 7), 0x3075f73947f2c6eeULL);
  EXPECT_NE(Hash64("a"), Hash64("b"));
  EXPECT_NE(Hash64("a", 1), Hash64("a", 2));
  EXPECT_NE(Hash64(std::string(8, 'x')), Hash64(std::string(9, 'x')));
  EXPECT_NE(Hash64(std::string("\0", 1)), Hash64(""));
  std::vector<int> buckets(16, 0);
  for (int i = 0; i < 16000; ++i) ++buckets[Hash64("k" + std::to_string(i)) >> 60];
  for (int b : buckets) {
    EXPECT_GT(b, 850);
    EXPECT_LT(b, 1150);
  }
}

}  // namespace
}  // namespace dynamo
