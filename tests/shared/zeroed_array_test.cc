#include "dynamo/zeroed_array.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <utility>

namespace dynamo {
namespace {

struct Pair {
  uint32_t a;
  uint64_t b;
};

TEST(ZeroedArrayTest, StartsAsAllZeroBits) {
  ZeroedArray<Pair> array(size_t{1} << 18);  // 4 MiB: the allocator maps it
  ASSERT_EQ(array.size(), size_t{1} << 18);
  for (size_t i = 0; i < array.size(); i += 997) {
    EXPECT_EQ(array[i].a, 0u);
    EXPECT_EQ(array[i].b, 0u);
  }
  EXPECT_EQ(array[array.size() - 1].b, 0u);
}

TEST(ZeroedArrayTest, CopiesAreDeepAndMovesEmptyTheSource) {
  ZeroedArray<uint64_t> array(4);
  array[1] = 7;
  ZeroedArray<uint64_t> copy = array;
  array[1] = 8;
  EXPECT_EQ(copy[1], 7u);
  copy = array;
  EXPECT_EQ(copy[1], 8u);
  ZeroedArray<uint64_t> moved = std::move(array);
  EXPECT_EQ(moved[1], 8u);
  EXPECT_EQ(array.size(), 0u);  // NOLINT(bugprone-use-after-move): the contract
  ZeroedArray<uint64_t> assigned;
  assigned = std::move(moved);
  EXPECT_EQ(assigned.size(), 4u);
  EXPECT_EQ(moved.size(), 0u);  // NOLINT(bugprone-use-after-move)
}

TEST(ZeroedArrayTest, ClearSetsEveryElementBackToZero) {
  ZeroedArray<uint32_t> array(1000);
  for (size_t i = 0; i < array.size(); ++i) array[i] = static_cast<uint32_t>(i + 1);
  array.Clear();
  for (size_t i = 0; i < array.size(); ++i) ASSERT_EQ(array[i], 0u) << i;
}

TEST(ZeroedArrayTest, AnEmptyArrayHoldsNothing) {
  ZeroedArray<uint32_t> array(0);
  EXPECT_EQ(array.size(), 0u);
  array.Clear();
  ZeroedArray<uint32_t> copy = array;
  EXPECT_EQ(copy.size(), 0u);
}

}  // namespace
}  // namespace dynamo
