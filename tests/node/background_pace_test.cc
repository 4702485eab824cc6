#include "background_pace.h"

#include <gtest/gtest.h>

namespace dynamo::node {
namespace {

constexpr uint64_t kTrigger = 4;

BackgroundLoad Load(uint64_t unflushed, double fill, uint64_t level0, bool slowed = false) {
  return BackgroundLoad{unflushed, fill, level0, slowed};
}

TEST(BackgroundPaceTest, PacedWhileFlushesAndCompactionsKeepUp) {
  BackgroundPace pace(kTrigger);
  EXPECT_FALSE(pace.Lifted(Load(0, 0.9, 3)));
  EXPECT_FALSE(pace.Lifted(Load(1, 0.1, 3)));  // a flush started with the new memtable
  EXPECT_FALSE(pace.Lifted(Load(1, 0.49, kTrigger)));
  EXPECT_FALSE(pace.Lifted(Load(0, 0.6, 2 * kTrigger - 1)));
  EXPECT_EQ(pace.lifts(), 0u);
}

TEST(BackgroundPaceTest, LiftedWhenAFlushIsLateUntilItIsDone) {
  BackgroundPace pace(kTrigger);
  EXPECT_FALSE(pace.Lifted(Load(1, 0.2, 1)));
  EXPECT_TRUE(pace.Lifted(Load(1, 0.5, 1)));  // the next memtable half full
  EXPECT_TRUE(pace.Lifted(Load(1, 0.7, 1)));
  EXPECT_TRUE(pace.Lifted(Load(0, 0.7, 2)));   // flushed, but the next flush is due
  EXPECT_FALSE(pace.Lifted(Load(0, 0.1, 2)));  // and done
  EXPECT_TRUE(pace.Lifted(Load(2, 0.0, 2)));   // two waiting
  EXPECT_FALSE(pace.Lifted(Load(0, 0.1, 3)));
  EXPECT_EQ(pace.lifts(), 2u);
}

TEST(BackgroundPaceTest, LiftedWhileLevelZeroPilesUpUntilCompactionsCatchUp) {
  BackgroundPace pace(kTrigger);
  EXPECT_TRUE(pace.Lifted(Load(0, 0.1, 2 * kTrigger)));
  EXPECT_TRUE(pace.Lifted(Load(0, 0.2, kTrigger + 1)));  // compacting, not there yet
  EXPECT_TRUE(pace.Lifted(Load(1, 0.1, kTrigger)));      // a flush still running
  EXPECT_FALSE(pace.Lifted(Load(0, 0.2, kTrigger)));
  EXPECT_FALSE(pace.lifted());
  EXPECT_EQ(pace.lifts(), 1u);
}

TEST(BackgroundPaceTest, LiftedWhileRocksDbSlowsWrites) {
  BackgroundPace pace(kTrigger);
  EXPECT_TRUE(pace.Lifted(Load(0, 0.0, 0, /*slowed=*/true)));
  EXPECT_TRUE(pace.Lifted(Load(0, 0.0, 0, /*slowed=*/true)));
  EXPECT_FALSE(pace.Lifted(Load(0, 0.0, 0)));
  EXPECT_EQ(pace.lifts(), 1u);
}

}  // namespace
}  // namespace dynamo::node
