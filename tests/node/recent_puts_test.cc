#include "dynamo/node/recent_puts.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <random>
#include <string>
#include <utility>

namespace dynamo::node {
namespace {

TEST(RecentPutsTest, FindsWhatItRememberedByKeyAndOpId) {
  RecentPuts r(16);
  r.Remember("k1", 7, Dot{1, 10});
  r.Remember("k2", 7, Dot{1, 11});
  EXPECT_EQ(r.Find("k1", 7), (Dot{1, 10}));
  EXPECT_EQ(r.Find("k2", 7), (Dot{1, 11}));
  EXPECT_FALSE(r.Find("k1", 8));
  EXPECT_FALSE(r.Find("k3", 7));
  EXPECT_EQ(r.size(), 2u);
}

TEST(RecentPutsTest, ARepeatKeepsItsFirstDot) {
  RecentPuts r(4);
  r.Remember("k", 1, Dot{1, 10});
  r.Remember("k", 1, Dot{1, 12});
  EXPECT_EQ(r.Find("k", 1), (Dot{1, 10}));
  EXPECT_EQ(r.size(), 1u);
}

TEST(RecentPutsTest, ForgetsTheOldestOnceFull) {
  RecentPuts r(3);
  for (uint64_t i = 0; i < 5; ++i) r.Remember("k" + std::to_string(i), i, Dot{1, i});
  EXPECT_EQ(r.size(), 3u);
  EXPECT_FALSE(r.Find("k0", 0));
  EXPECT_FALSE(r.Find("k1", 1));
  for (uint64_t i = 2; i < 5; ++i) EXPECT_EQ(r.Find("k" + std::to_string(i), i), (Dot{1, i}));
}

// Against a plain model, over many wrap-arounds of a small table, where probe
// runs are long and every removal has to move entries back.
TEST(RecentPutsTest, MatchesAFifoModelThroughManyEvictions) {
  constexpr size_t kCapacity = 37;
  RecentPuts r(kCapacity);
  std::deque<std::pair<std::string, uint64_t>> order;
  std::map<std::pair<std::string, uint64_t>, Dot> model;
  std::mt19937_64 rng(42);
  for (uint64_t i = 0; i < 20000; ++i) {
    std::string key = "key" + std::to_string(rng() % 60);
    uint64_t op = rng() % 4;
    Dot dot{rng() % 3, i};
    r.Remember(key, op, dot);
    if (model.emplace(std::pair{key, op}, dot).second) {
      order.emplace_back(key, op);
      if (order.size() > kCapacity) {
        model.erase(order.front());
        order.pop_front();
      }
    }
    ASSERT_EQ(r.size(), model.size());
    if (i % 97 == 0) {
      for (uint64_t k = 0; k < 60; ++k) {
        for (uint64_t o = 0; o < 4; ++o) {
          auto want = model.find({"key" + std::to_string(k), o});
          std::optional<Dot> got = r.Find("key" + std::to_string(k), o);
          if (want == model.end()) {
            ASSERT_FALSE(got) << "key" << k << " op " << o << " at step " << i;
          } else {
            ASSERT_EQ(got, want->second) << "key" << k << " op " << o << " at step " << i;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace dynamo::node
