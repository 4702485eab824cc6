#include "sync_pacer.h"

#include <gtest/gtest.h>

#include <chrono>

namespace dynamo::node {
namespace {

using std::chrono::microseconds;

SyncPacer Pacer(microseconds floor, uint32_t percent) {
  SyncPacerOptions o;
  o.floor = floor;
  o.percent = percent;
  return SyncPacer(o);
}

TEST(SyncPacerTest, OffByDefaultAndWithNothingSet) {
  SyncPacer p{SyncPacerOptions{}};
  EXPECT_FALSE(p.enabled());
  p.OnSync(microseconds(300));
  EXPECT_EQ(p.spacing(), microseconds(0));
}

TEST(SyncPacerTest, AFloorAloneIsTheSpacing) {
  SyncPacer p = Pacer(microseconds(500), 0);
  EXPECT_TRUE(p.enabled());
  EXPECT_EQ(p.spacing(), microseconds(500));
  p.OnSync(microseconds(10'000));
  EXPECT_EQ(p.spacing(), microseconds(500));
}

TEST(SyncPacerTest, APercentageOfTheTypicalSyncTime) {
  SyncPacer p = Pacer(microseconds(0), 200);
  EXPECT_TRUE(p.enabled());
  EXPECT_EQ(p.spacing(), microseconds(0));  // no sync timed yet
  p.OnSync(microseconds(250));
  EXPECT_EQ(p.spacing(), microseconds(500));
  for (int i = 0; i < 20; ++i) p.OnSync(microseconds(100));
  EXPECT_EQ(p.spacing(), microseconds(200));
}

// The lower quartile: the disk's own time, not the waits for a core that
// stretch some syncs under load.
TEST(SyncPacerTest, TheLowerQuartileOfTheRecentSyncs) {
  SyncPacer p = Pacer(microseconds(0), 200);
  for (int i = 0; i < 5; ++i) p.OnSync(microseconds(200));
  for (int i = 0; i < 11; ++i) p.OnSync(microseconds(900));
  EXPECT_EQ(p.spacing(), microseconds(400));
  p.OnSync(microseconds(900));  // the oldest 200 leaves the window
  EXPECT_EQ(p.spacing(), microseconds(1800));
}

TEST(SyncPacerTest, AFewStallsDoNotMoveTheSpacing) {
  SyncPacer p = Pacer(microseconds(0), 200);
  for (size_t i = 0; i < kSyncPacerWindow; ++i) p.OnSync(microseconds(240));
  for (int i = 0; i < 5; ++i) p.OnSync(microseconds(8'000));
  EXPECT_EQ(p.spacing(), microseconds(480));
  // A disk that turns slow for good moves it within a window, up to the cap.
  for (size_t i = 0; i < kSyncPacerWindow; ++i) p.OnSync(microseconds(8'000));
  EXPECT_EQ(p.spacing(), kSyncPacerShareMax);
}

TEST(SyncPacerTest, TheLargerOfTheFloorAndTheShareApplies) {
  SyncPacer p = Pacer(microseconds(300), 200);
  p.OnSync(microseconds(100));
  EXPECT_EQ(p.spacing(), microseconds(300));
  for (int i = 0; i < 3; ++i) p.OnSync(microseconds(400));
  EXPECT_EQ(p.spacing(), microseconds(800));
  // The cap bounds the share, not a floor set above it.
  SyncPacer high = Pacer(microseconds(5'000), 200);
  high.OnSync(microseconds(1'000));
  EXPECT_EQ(high.spacing(), microseconds(5'000));
}

TEST(SyncPacerTest, APercentageAboveTheLimitIsClamped) {
  SyncPacer p = Pacer(microseconds(0), kSyncPacerPercentMax * 10);
  p.OnSync(microseconds(100));
  EXPECT_EQ(p.spacing(), microseconds(100) * kSyncPacerPercentMax / 100);
}

TEST(SyncPacerTest, AMicrosecondDiskKeepsAMicrosecondSpacing) {
  SyncPacer p = Pacer(microseconds(0), 200);
  for (int i = 0; i < 40; ++i) p.OnSync(std::chrono::nanoseconds(15'000));
  EXPECT_EQ(p.spacing(), microseconds(30));
}

}  // namespace
}  // namespace dynamo::node
