#include "dynamo/fifo_vector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>

namespace dynamo {
namespace {

TEST(FifoVectorTest, TakesElementsOutInTheOrderTheyCameIn) {
  FifoVector<std::string> q;
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.slots(), 0u);
  for (int i = 0; i < 5; ++i) q.Push("e" + std::to_string(i));
  EXPECT_EQ(q.size(), 5u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(q.Pop(), "e" + std::to_string(i));
  q.Push("e5");
  for (int i = 3; i < 6; ++i) EXPECT_EQ(q.Pop(), "e" + std::to_string(i));
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.slots(), 0u);
}

// A queue that never runs empty, as the waiters of a key written without
// pause: each element pushed is taken out after a few others, for a long
// time. The slots held stay within twice the elements queued.
TEST(FifoVectorTest, AQueueThatNeverRunsEmptyStaysBounded) {
  for (size_t depth : {1u, 2u, 7u, 64u}) {
    FifoVector<std::unique_ptr<int>> q;
    for (size_t i = 0; i < depth; ++i) q.Push(std::make_unique<int>(static_cast<int>(i)));
    size_t most_slots = 0;
    for (int i = static_cast<int>(depth); i < 100000; ++i) {
      q.Push(std::make_unique<int>(i));
      std::unique_ptr<int> out = q.Pop();
      ASSERT_TRUE(out);
      ASSERT_EQ(*out, i - static_cast<int>(depth));
      EXPECT_EQ(q.size(), depth);
      most_slots = std::max(most_slots, q.slots());
    }
    EXPECT_LE(most_slots, 2 * depth + 1) << "depth " << depth;
  }
}

}  // namespace
}  // namespace dynamo
