#include "core/map_fetch.h"

#include <gtest/gtest.h>

namespace dynamo::client {
namespace {

using Asks = std::vector<size_t>;

// A candidate that never answers delays the next by the stagger, not by the
// whole timeout, and the first answer ends the load.
TEST(MapFetchTest, ASilentCandidateDelaysTheNextOnlyByTheStagger) {
  MapFetch f(3, 1000);
  EXPECT_EQ(f.Start(5000), Asks{0});
  EXPECT_EQ(f.timer_ms(), 5000 + kMapFetchStaggerMs);
  EXPECT_EQ(f.OnTimer(5000 + kMapFetchStaggerMs - 1), Asks{});
  EXPECT_EQ(f.OnTimer(5000 + kMapFetchStaggerMs), Asks{1});
  EXPECT_EQ(f.remaining_ms(5000 + kMapFetchStaggerMs), 1000 - kMapFetchStaggerMs);
  f.OnAnswer(1);
  ASSERT_TRUE(f.done());
  EXPECT_TRUE(f.status().ok());
  EXPECT_EQ(f.OnTimer(5000 + 2 * kMapFetchStaggerMs), Asks{});
  EXPECT_EQ(f.OnFailure(0, Status::Timeout("late"), 6000), Asks{});
  EXPECT_TRUE(f.status().ok());
}

// A failure asks the next at once; once every candidate failed the load
// fails with the last error.
TEST(MapFetchTest, AFailureAsksTheNextAtOnceAndAllFailedEndsTheLoad) {
  MapFetch f(2, 1000);
  EXPECT_EQ(f.Start(0), Asks{0});
  EXPECT_EQ(f.OnFailure(0, Status::Unavailable("refused"), 10), Asks{1});
  EXPECT_EQ(f.timer_ms(), 1000u);  // nobody left to ask: only the deadline
  EXPECT_EQ(f.OnTimer(10 + kMapFetchStaggerMs), Asks{});
  EXPECT_FALSE(f.done());
  EXPECT_EQ(f.OnFailure(1, Status::Unavailable("refused too"), 20), Asks{});
  ASSERT_TRUE(f.done());
  EXPECT_EQ(f.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(f.status().message().find("cannot load the cluster map: refused too"),
            std::string::npos)
      << f.status().ToString();
}

// However many candidates are silent, the load ends at the timeout
// (Client::Open's contract), Unavailable, naming the last error seen.
TEST(MapFetchTest, SilentCandidatesEndTheLoadAtTheTimeout) {
  MapFetch f(20, 1000);
  Asks asked = f.Start(0);
  uint64_t now = 0;
  while (!f.done()) {
    ASSERT_LE(f.timer_ms(), 1000u);
    now = f.timer_ms();
    for (size_t i : f.OnTimer(now)) asked.push_back(i);
  }
  EXPECT_EQ(now, 1000u);
  EXPECT_EQ(asked.size(), 10u);  // one per stagger, 0 at the start
  EXPECT_EQ(f.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(f.status().message().find("within 1000 ms (asked 10 of 20)"), std::string::npos)
      << f.status().ToString();

  MapFetch g(2, 1000);
  g.Start(0);
  g.OnFailure(0, Status::Corruption("bad map"), 1);
  EXPECT_TRUE(g.OnTimer(1000).empty());
  ASSERT_TRUE(g.done());
  EXPECT_EQ(g.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(g.status().message().find("the last error: Corruption: bad map"), std::string::npos)
      << g.status().ToString();

  // The requests' own timeouts end at the deadline too, often just before
  // its timer: the same outcome.
  MapFetch h(1, 1000);
  h.Start(0);
  EXPECT_TRUE(h.OnFailure(0, Status::Timeout("no reply"), 1000).empty());
  ASSERT_TRUE(h.done());
  EXPECT_EQ(h.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(h.status().message().find("(asked 1 of 1); the last error: Timeout: no reply"),
            std::string::npos)
      << h.status().ToString();
}

TEST(MapFetchTest, NoCandidateFailsAtOnceAndAShortTimeoutStaggersWithinIt) {
  MapFetch none(0, 1000);
  EXPECT_TRUE(none.Start(0).empty());
  ASSERT_TRUE(none.done());
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);

  MapFetch quick(3, 10);
  quick.Start(0);
  EXPECT_EQ(quick.timer_ms(), 5u);
  EXPECT_EQ(quick.OnTimer(5), Asks{1});
  EXPECT_EQ(quick.remaining_ms(12), 1u);
}

}  // namespace
}  // namespace dynamo::client
