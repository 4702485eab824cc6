#include "dynamo/hash_index.h"

#include <gtest/gtest.h>

#include <string>

namespace dynamo {
namespace {

TEST(HashIndexTest, LikelyPositionIsTheHomeSlotsWhenItsHashBitsMatch) {
  HashIndex index(8);  // 32 slots
  const uint64_t home = 5, same_home = home + (uint64_t{1} << 20), elsewhere = 9;
  index.Insert(home, 100);
  index.Insert(same_home, 200);  // probes on to the next slot
  EXPECT_EQ(index.LikelyPosition(home), 100u);
  // Its own home slot holds another hash: a lookup would probe on.
  EXPECT_EQ(index.LikelyPosition(same_home), HashIndex::kNone);
  EXPECT_EQ(index.LikelyPosition(elsewhere), HashIndex::kNone);
  index.Prefetch(elsewhere);
  EXPECT_EQ(index.Find(same_home, [](uint32_t p) { return p == 200; }), 6u);
}

TEST(HashIndexTest, PositionsFromZeroToTheLargestAreFoundAndErased) {
  HashIndex index(8);
  const uint32_t positions[] = {0, 1, UINT32_MAX - 1};
  for (uint32_t p : positions) index.Insert(p * 31 + 3, p);
  for (uint32_t p : positions) {
    size_t slot = index.Find(p * 31 + 3, [p](uint32_t q) { return q == p; });
    ASSERT_NE(slot, HashIndex::kNone) << p;
    EXPECT_EQ(index.position(slot), p);
    EXPECT_EQ(index.LikelyPosition(p * 31 + 3), p);
  }
  index.Erase(index.Find(3, [](uint32_t q) { return q == 0; }));
  EXPECT_EQ(index.Find(3, [](uint32_t) { return true; }), HashIndex::kNone);
  EXPECT_EQ(index.size(), 2u);
}

TEST(HashIndexTest, ACopyKeepsItsEntriesAndClearEmptiesEverySlot) {
  HashIndex index(100);
  for (uint32_t p = 0; p < 100; ++p) index.Insert(p * 7919, p);
  HashIndex copy = index;
  index.Clear();
  EXPECT_EQ(index.size(), 0u);
  for (uint32_t p = 0; p < 100; ++p) {
    EXPECT_EQ(index.Find(p * 7919, [](uint32_t) { return true; }), HashIndex::kNone);
    size_t slot = copy.Find(p * 7919, [p](uint32_t q) { return q == p; });
    ASSERT_NE(slot, HashIndex::kNone) << p;
  }
  index.Insert(5, 42);  // a cleared index takes entries again
  EXPECT_EQ(index.position(index.Find(5, [](uint32_t) { return true; })), 42u);
}

TEST(HashedTableTest, PrefetchEntryNamesTheEntryALookupWouldFind) {
  HashedTable<std::string> table;
  const uint32_t a = table.Add(11, "a");
  table.Add(12, "b");
  table.PrefetchSlot(11);
  const std::string* e = table.PrefetchEntry(11);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e, &table.at(a));
  EXPECT_EQ(table.PrefetchEntry(13), nullptr);
  table.Erase(a);
  EXPECT_EQ(table.PrefetchEntry(11), nullptr);
}

}  // namespace
}  // namespace dynamo
