#include "core/node_tracker.h"

#include <gtest/gtest.h>

namespace dynamo::client {
namespace {

Route PrimariesAndAFallback() {
  Route r;
  r.replicas = {Target{"a", "a:1", Role::kPrimary, "", false},
                Target{"b", "b:1", Role::kPrimary, "", false},
                Target{"c", "c:1", Role::kFallback, "d", false}};
  return r;
}

TEST(NodeTrackerTest, AFailedNodeBacksOffLongerPerFailureUntilItServes) {
  NodeTracker t(NodeTrackerOptions{100, 250, 100});
  EXPECT_TRUE(t.Healthy("a", 0));
  EXPECT_FALSE(t.AnyBackingOff(0));
  t.Observe("a", NodeSignal::kFailed, 1000);
  EXPECT_FALSE(t.Healthy("a", 1099));
  EXPECT_TRUE(t.AnyBackingOff(1099));
  EXPECT_TRUE(t.Healthy("a", 1100));
  EXPECT_FALSE(t.AnyBackingOff(1100));
  t.Observe("a", NodeSignal::kFailed, 2000);  // second in a row: 200 ms
  EXPECT_FALSE(t.Healthy("a", 2199));
  EXPECT_TRUE(t.Healthy("a", 2200));
  t.Observe("a", NodeSignal::kFailed, 3000);  // 400 ms, capped at 250
  t.Observe("a", NodeSignal::kNone, 3100);    // says nothing about the node
  EXPECT_FALSE(t.Healthy("a", 3249));
  EXPECT_TRUE(t.Healthy("a", 3250));
  t.Observe("a", NodeSignal::kFailed, 4000);
  t.Observe("a", NodeSignal::kServing, 4001);
  EXPECT_TRUE(t.Healthy("a", 4001));
  t.Observe("a", NodeSignal::kFailed, 5000);  // counts from one again
  EXPECT_TRUE(t.Healthy("a", 5100));
  EXPECT_TRUE(t.Healthy("b", 5000));
  // The calls a reset connection had in flight all fail at once: one
  // failure, not six in a row, and nothing more while it backs off.
  for (int call = 0; call < 6; ++call) t.Observe("b", NodeSignal::kFailed, 6000 + call);
  EXPECT_TRUE(t.Healthy("b", 6100));
  t.Observe("b", NodeSignal::kFailed, 6100);  // the next after it: doubled
  EXPECT_FALSE(t.Healthy("b", 6299));
  EXPECT_TRUE(t.Healthy("b", 6300));
}

TEST(NodeTrackerTest, PrimariesHeardJustNowCountAsReached) {
  NodeTracker t(NodeTrackerOptions{100, 250, 100});
  const Route route = PrimariesAndAFallback();
  t.Observe("b", NodeSignal::kServing, 1000);
  t.Observe("c", NodeSignal::kServing, 1000);  // a fallback: never added
  std::vector<std::string> reached = {"a"};
  t.AddHeardPrimaries(route, 1100, &reached);
  EXPECT_EQ(reached, (std::vector<std::string>{"a", "b"}));
  t.AddHeardPrimaries(route, 1100, &reached);  // no duplicates
  EXPECT_EQ(reached, (std::vector<std::string>{"a", "b"}));
  std::vector<std::string> later;
  t.AddHeardPrimaries(route, 1101, &later);  // not heard for over 100 ms
  EXPECT_TRUE(later.empty());
  t.Observe("a", NodeSignal::kFailed, 1101);  // a failure is not hearing
  t.AddHeardPrimaries(route, 1101, &later);
  EXPECT_TRUE(later.empty());
}

}  // namespace
}  // namespace dynamo::client
