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
