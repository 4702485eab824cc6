#include "dynamo/node/governor.h"

#include <gtest/gtest.h>

namespace dynamo::node {
namespace {

TEST(GovernorTest, BoundedShareWhileForegroundIsFast) {
  BackgroundGovernor g(GovernorOptions{25, 10000, 2, 1000});
  for (int i = 0; i < 500; ++i) g.RecordForeground(1000 + i, 1.0);
  EXPECT_TRUE(g.TryStart(2000));
  EXPECT_TRUE(g.TryStart(2000));
  EXPECT_FALSE(g.TryStart(2000));  // at most 2 in flight
  g.Finished();
  EXPECT_TRUE(g.TryStart(2001));
  EXPECT_EQ(g.in_flight(), 2u);
  EXPECT_EQ(g.deferred(), 1u);
}

TEST(GovernorTest, BacksOffToATrickleWhenP99RisesAndRecovers) {
  BackgroundGovernor g(GovernorOptions{25, 10000, 4, 1000});
  for (int i = 0; i < 1000; ++i) g.RecordForeground(1000 + i, i % 50 == 0 ? 80.0 : 2.0);  // p99 = 80
  EXPECT_GT(g.ForegroundP99(2000), 25);
  EXPECT_TRUE(g.BackingOff(2000));
  EXPECT_TRUE(g.TryStart(2000));    // the trickle
  EXPECT_FALSE(g.TryStart(2000));   // one at a time
  g.Finished();
  EXPECT_FALSE(g.TryStart(2500));   // not before trickle_ms
  EXPECT_TRUE(g.TryStart(3000));
  g.Finished();
  // Once the slow requests leave the window, the full share returns.
  for (int i = 0; i < 1000; ++i) g.RecordForeground(12000 + i, 2.0);
  EXPECT_FALSE(g.BackingOff(13500));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(g.TryStart(13500));
}

TEST(GovernorTest, NoSamplesMeansNoBackoff) {
  BackgroundGovernor g;
  EXPECT_EQ(g.ForegroundP99(5), 0);
  EXPECT_TRUE(g.TryStart(5));
}

}  // namespace
}  // namespace dynamo::node
