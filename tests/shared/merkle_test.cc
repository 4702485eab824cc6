#include "dynamo/merkle.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "dynamo/proto/codec.h"

namespace dynamo {
namespace {

using KeyMap = std::map<std::string, uint64_t>;

MerkleTree Build(const KeyMap& keys, uint32_t depth = kDefaultMerkleDepth) {
  MerkleTree t(depth);
  for (const auto& [k, d] : keys) t.Put(k, d);
  return t;
}

struct Exchange {
  std::vector<std::string> keys;
  size_t rounds = 0;
  size_t bytes = 0;  // request and reply frames, as encoded on the wire
  uint64_t fetch_keys_max = 0;  // most remote keys one request fetched
};

// Runs the comparison protocol between two trees, through the wire codec.
Exchange Compare(const MerkleTree& local, const MerkleTree& remote,
                 MerkleComparisonOptions opts = {}) {
  MerkleComparison cmp(&local, opts);
  Exchange ex;
  while (auto req = cmp.NextRequest()) {
    proto::Message request{1, proto::AeCompareRequest{7, *req}};
    std::string frame = proto::EncodeFrame(request);
    ex.bytes += frame.size();
    Result<proto::Message> got =
        proto::DecodeMessage(std::string_view(frame).substr(4), proto::Limits{});
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    const auto& decoded = std::get<proto::AeCompareRequest>(got->body);
    uint64_t fetched = 0;
    for (const MerkleNodeId& node : decoded.request.fetch) fetched += remote.Summary(node)->count;
    ex.fetch_keys_max = std::max(ex.fetch_keys_max, fetched);
    Result<MerkleReply> answer = remote.Answer(decoded.request);
    EXPECT_TRUE(answer.ok()) << answer.status().ToString();
    std::string reply_frame = proto::EncodeFrame({1, proto::AeCompareReply{3, *answer}});
    ex.bytes += reply_frame.size();
    Result<proto::Message> reply =
        proto::DecodeMessage(std::string_view(reply_frame).substr(4), proto::Limits{});
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    EXPECT_TRUE(cmp.HandleReply(std::get<proto::AeCompareReply>(reply->body).reply).ok());
  }
  EXPECT_TRUE(cmp.done());
  ex.keys = cmp.DifferingKeys();
  ex.rounds = cmp.rounds();
  return ex;
}

std::vector<std::string> ExpectedDiff(const KeyMap& a, const KeyMap& b) {
  std::set<std::string> out;
  for (const auto& [k, d] : a) {
    auto it = b.find(k);
    if (it == b.end() || it->second != d) out.insert(k);
  }
  for (const auto& [k, d] : b) {
    if (!a.count(k)) out.insert(k);
  }
  return {out.begin(), out.end()};
}

KeyMap RandomKeys(std::mt19937_64& rng, size_t n) {
  KeyMap m;
  for (size_t i = 0; i < n; ++i) m["key-" + std::to_string(rng())] = rng();
  return m;
}

TEST(MerkleTreeTest, PutRemoveGet) {
  MerkleTree t;
  EXPECT_EQ(t.Root(), MerkleSummary{});
  t.Put("a", 1);
  t.Put("b", 2);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.Get("a"), 1u);
  EXPECT_FALSE(t.Get("c").has_value());
  MerkleSummary two = t.Root();
  t.Put("a", 5);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_NE(t.Root(), two);
  t.Put("a", 1);
  EXPECT_EQ(t.Root(), two);
  EXPECT_TRUE(t.Remove("b"));
  EXPECT_FALSE(t.Remove("b"));
  EXPECT_TRUE(t.Remove("a"));
  EXPECT_EQ(t.Root(), MerkleSummary{});
}

TEST(MerkleTreeTest, RootIsIndependentOfOrderAndDepth) {
  std::mt19937_64 rng(1);
  KeyMap keys = RandomKeys(rng, 500);
  MerkleTree forward = Build(keys, 8);
  MerkleTree other(3);
  for (auto it = keys.rbegin(); it != keys.rend(); ++it) other.Put(it->first, it->second);
  EXPECT_EQ(forward.Root(), other.Root());
  EXPECT_EQ(Build(keys, 0).Root(), forward.Root());
  // Summaries are defined by key-hash prefixes, so any level agrees across depths.
  for (uint32_t level : {1u, 5u, 8u, 11u, 20u}) {
    for (uint64_t i = 0; i < std::min<uint64_t>(4, uint64_t{1} << level); ++i) {
      MerkleNodeId n{level, i};
      EXPECT_EQ(*forward.Summary(n), *other.Summary(n)) << level;
    }
  }
}

TEST(MerkleTreeTest, ChildrenSumToParentAcrossKeptDepth) {
  std::mt19937_64 rng(2);
  MerkleTree t = Build(RandomKeys(rng, 3000), 4);
  for (uint32_t level = 0; level < 12; ++level) {
    MerkleNodeId node{level, 0};
    MerkleSummary parent = *t.Summary(node);
    std::vector<MerkleSummary> kids = *t.Expand(node, 3);
    MerkleSummary sum;
    for (const MerkleSummary& k : kids) {
      sum.hash ^= k.hash;
      sum.count += k.count;
    }
    EXPECT_EQ(sum, parent) << "level " << level;
    EXPECT_EQ(t.KeysUnder(node)->size(), parent.count);
  }
}

// Random puts and removes on a shallow tree (many keys per leaf): the keys
// under every node, their digests and the counts match a model.
TEST(MerkleTreeTest, MatchesAModelThroughPutsAndRemoves) {
  MerkleTree tree(2);
  std::map<std::string, uint64_t> model;
  std::mt19937_64 rng(9);
  for (int i = 0; i < 5000; ++i) {
    std::string key = "k" + std::to_string(rng() % 400);
    if (rng() % 3 == 0) {
      EXPECT_EQ(tree.Remove(key), model.erase(key) == 1);
    } else {
      uint64_t digest = rng() % 4;
      tree.Put(key, digest);
      model[key] = digest;
    }
    if (i % 500 != 0) continue;
    std::vector<MerkleKey> want;
    for (const auto& [k, d] : model) want.push_back(MerkleKey{k, d});
    ASSERT_EQ(*tree.KeysUnder(MerkleNodeId{0, 0}), want);
    size_t under_children = 0;
    for (uint64_t leaf = 0; leaf < 4; ++leaf) {
      auto keys = tree.KeysUnder(MerkleNodeId{2, leaf});
      under_children += keys->size();
      EXPECT_EQ(tree.Summary(MerkleNodeId{2, leaf})->count, keys->size());
      for (const MerkleKey& k : *keys) EXPECT_EQ(tree.Get(k.key), k.digest);
    }
    EXPECT_EQ(under_children, model.size());
    EXPECT_EQ(tree.size(), model.size());
  }
}

TEST(MerkleTreeTest, RejectsInvalidNodes) {
  MerkleTree t;
  EXPECT_FALSE(t.Summary({3, 8}).ok());
  EXPECT_FALSE(t.Summary({65, 0}).ok());
  EXPECT_FALSE(t.Expand({0, 0}, kMaxMerkleExpandLevels + 1).ok());
  EXPECT_FALSE(t.Expand({62, 0}, 3).ok());
  EXPECT_TRUE(t.Expand({60, 0}, 4).ok());
  EXPECT_TRUE(t.Summary({64, UINT64_MAX}).ok());
}

TEST(MerkleComparisonTest, IdenticalTreesTakeOneRound) {
  std::mt19937_64 rng(3);
  KeyMap keys = RandomKeys(rng, 2000);
  Exchange ex = Compare(Build(keys), Build(keys, 5));
  EXPECT_TRUE(ex.keys.empty());
  EXPECT_EQ(ex.rounds, 1u);
}

// The foundation issue's property: comparison finds exactly the differing
// keys for randomized divergence.
TEST(MerkleComparisonTest, FindsExactlyTheDifferingKeys) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    std::mt19937_64 rng(seed);
    KeyMap base = RandomKeys(rng, rng() % 3000);
    KeyMap a = base, b = base;
    size_t changes = rng() % 60;
    for (size_t i = 0; i < changes; ++i) {
      KeyMap& side = rng() % 2 ? a : b;
      switch (rng() % 3) {
        case 0: side["new-" + std::to_string(rng())] = rng(); break;
        case 1: if (!side.empty()) side.erase(std::next(side.begin(), rng() % side.size())); break;
        case 2: if (!side.empty()) std::next(side.begin(), rng() % side.size())->second ^= 1; break;
      }
    }
    MerkleComparisonOptions opts;
    opts.bucket_keys_max = 1 + rng() % 32;
    opts.levels_per_round = 1 + rng() % 8;
    opts.nodes_per_request_max = 1 + rng() % 64;
    Exchange ex = Compare(Build(a, rng() % 10), Build(b, rng() % 10), opts);
    EXPECT_EQ(ex.keys, ExpectedDiff(a, b)) << "seed " << seed;
  }
}

TEST(MerkleComparisonTest, EmptySides) {
  std::mt19937_64 rng(4);
  KeyMap keys = RandomKeys(rng, 700);
  EXPECT_EQ(Compare(Build(keys), MerkleTree()).keys.size(), 700u);
  EXPECT_EQ(Compare(MerkleTree(), Build(keys)).keys.size(), 700u);
  EXPECT_TRUE(Compare(MerkleTree(), MerkleTree()).keys.empty());
}

// A side holding none of a bucket the other holds many keys of expands it
// rather than fetching all at once: no request fetches more than
// fetch_keys_max keys (a peer refuses more).
TEST(MerkleComparisonTest, NoRequestFetchesMoreThanItsLimit) {
  std::mt19937_64 rng(5);
  KeyMap keys = RandomKeys(rng, 20000);
  KeyMap some(keys.begin(), std::next(keys.begin(), 300));
  for (const KeyMap& local : {KeyMap{}, some}) {
    MerkleComparisonOptions opts;
    opts.fetch_keys_max = 1000;
    Exchange ex = Compare(Build(local), Build(keys), opts);
    EXPECT_EQ(ex.keys.size(), keys.size() - local.size());
    EXPECT_LE(ex.fetch_keys_max, 1000u);
    EXPECT_GT(ex.fetch_keys_max, 500u);  // fetches are still packed together
  }
}

// Bytes exchanged grow with the differences, not with the keys held.
TEST(MerkleComparisonTest, ExchangeGrowsWithDifferencesNotKeys) {
  auto measure = [](size_t keys, size_t diffs) {
    std::mt19937_64 rng(keys * 31 + diffs);
    KeyMap a = RandomKeys(rng, keys);
    KeyMap b = a;
    auto it = b.begin();
    for (size_t i = 0; i < diffs; ++i, std::advance(it, keys / diffs)) it->second ^= 1;
    Exchange ex = Compare(Build(a), Build(b));
    EXPECT_EQ(ex.keys.size(), diffs);
    return ex.bytes;
  };
  const size_t small = measure(1000, 10);
  const size_t large = measure(100000, 10);
  const size_t many = measure(100000, 1000);
  std::cout << "[ bytes ] 10 diffs in 1k keys: " << small << ", 10 diffs in 100k keys: " << large
            << ", 1000 diffs in 100k keys: " << many << "\n";
  // 100x the keys costs a few more levels, not 100x the bytes.
  EXPECT_LT(large, small * 3);
  // 100x the differences costs about 100x the bytes.
  EXPECT_GT(many, large * 30);
  // And per difference it stays small: under 1 KiB at 100k keys.
  EXPECT_LT(large / 10, 1024u);
}

TEST(MerkleComparisonTest, RejectsMismatchedReply) {
  MerkleTree t;
  t.Put("a", 1);
  MerkleComparison cmp(&t);
  ASSERT_TRUE(cmp.NextRequest().has_value());
  EXPECT_FALSE(cmp.NextRequest().has_value());  // one outstanding at a time
  MerkleReply bad;
  bad.summaries.resize(5);
  EXPECT_EQ(cmp.HandleReply(bad).code(), StatusCode::kProtocolError);
  EXPECT_TRUE(cmp.done());
  EXPECT_FALSE(cmp.HandleReply(MerkleReply{}).ok());
}

// A peer's key listed under a fetched node it does not hash into would be
// taken as one of the partition's.
TEST(MerkleComparisonTest, RejectsAFetchedKeyOutsideItsNode) {
  MerkleTree local;
  MerkleTree remote;
  for (int i = 0; i < 40; ++i) {  // more than a bucket: the root is expanded
    local.Put("same" + std::to_string(i), 7);
    remote.Put("same" + std::to_string(i), 7);
  }
  local.Put("a", 1);
  remote.Put("a", 2);
  MerkleComparison cmp(&local);
  std::optional<MerkleRequest> req;
  while ((req = cmp.NextRequest()) && req->fetch.empty()) {
    ASSERT_TRUE(cmp.HandleReply(*remote.Answer(*req)).ok());
  }
  ASSERT_TRUE(req.has_value());
  const MerkleNodeId node = req->fetch[0];
  ASSERT_GT(node.level, 0u);
  MerkleReply reply = *remote.Answer(*req);
  std::string outside;
  for (int i = 0; outside.empty(); ++i) {
    const std::string k = "k" + std::to_string(i);
    if ((MerkleTree::KeyHash(k) >> (kMerkleHashBits - node.level)) != node.index) outside = k;
  }
  reply.keys[0].push_back(MerkleKey{outside, 3});
  std::sort(reply.keys[0].begin(), reply.keys[0].end(),
            [](const MerkleKey& a, const MerkleKey& b) { return a.key < b.key; });
  EXPECT_EQ(cmp.HandleReply(reply).code(), StatusCode::kProtocolError);
  EXPECT_TRUE(cmp.DifferingKeys().empty());
}

}  // namespace
}  // namespace dynamo
