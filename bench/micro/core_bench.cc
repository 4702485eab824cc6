// Micro-benchmarks of the hot paths in shared/: key placement, sibling merge,
// message encode+decode, Merkle updates. See bench/README.md for figures.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "dynamo/merkle.h"
#include "dynamo/placement.h"
#include "dynamo/proto/codec.h"
#include "dynamo/ring.h"
#include "dynamo/version.h"

namespace dynamo {
namespace {

std::vector<std::string> Keys(size_t n) {
  std::vector<std::string> keys;
  for (size_t i = 0; i < n; ++i) keys.push_back("user:" + std::to_string(i * 7919));
  return keys;
}

void BM_Md5(benchmark::State& state) {
  std::vector<std::string> keys = Keys(1024);
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(Md5(keys[i++ & 1023]));
}
BENCHMARK(BM_Md5);

// A key to its preference list: MD5, partition, precomputed list.
void BM_KeyToPreferenceList(benchmark::State& state) {
  std::vector<NodeId> nodes;
  for (int i = 1; i <= 8; ++i) nodes.push_back("n" + std::to_string(i));
  Ring ring = *Ring::Create(nodes, 1024, 3);
  std::vector<std::string> keys = Keys(1024);
  size_t i = 0;
  for (auto _ : state) {
    std::span<const NodeIndex> pref = ring.PreferenceIndices(ring.KeyPartition(keys[i++ & 1023]));
    benchmark::DoNotOptimize(pref.data());
  }
}
BENCHMARK(BM_KeyToPreferenceList);

// Merging an incoming set into a local one with `siblings` concurrent
// versions; the incoming set replaces one of them with a newer write.
void BM_SiblingMerge(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  SiblingSet local;
  for (int i = 0; i < n; ++i) {
    WriteIntent w;
    w.value = std::string(100, static_cast<char>('a' + i));
    local = CoordinatorUpdate(local, 1000 + i, 1, w)->siblings;
  }
  SiblingSet incoming = local;
  WriteIntent w;
  w.context.Add(local[0].dot, 0);
  w.value = std::string(100, 'z');
  incoming = CoordinatorUpdate(incoming, 999, 1, w)->siblings;
  for (auto _ : state) {
    SiblingSet merged = MergeSiblings(local, incoming);
    benchmark::DoNotOptimize(merged.data());
  }
  state.SetLabel(std::to_string(n) + " siblings");
}
BENCHMARK(BM_SiblingMerge)->Arg(1)->Arg(3)->Arg(10);

proto::Message PutMessage(bool replica) {
  Version v;
  v.dot = Dot{0x5eed5eed5eedULL, 123456};
  v.context.Add(Dot{0x1111, 10}, 1700000000000);
  v.context.Add(Dot{0x2222, 20}, 1700000000000);
  v.timestamp_ms = 1700000000000;
  v.value = std::string(100, 'v');
  if (replica) return {42, proto::ReplicaPutRequest{"user:123456", {v}, ""}};
  return {42, proto::CoordPutRequest{"user:123456", v.context, v.value, false}};
}

// Encode and decode of a put with a 100-byte value, frame header included.
void BM_EncodeDecodePut(benchmark::State& state) {
  proto::Message m = PutMessage(state.range(0) == 1);
  proto::Limits limits;
  std::string buf;
  for (auto _ : state) {
    buf.clear();
    proto::AppendFrame(m, &buf);
    Result<proto::Message> back =
        proto::DecodeMessage(std::string_view(buf).substr(proto::kFrameHeaderBytes), limits);
    benchmark::DoNotOptimize(back.ok());
  }
  state.SetLabel(state.range(0) == 1 ? "ReplicaPut" : "CoordPut");
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * buf.size()));
}
BENCHMARK(BM_EncodeDecodePut)->Arg(0)->Arg(1);

// Replacing the digest of a key already in a tree of 100k keys.
void BM_MerkleLeafUpdate(benchmark::State& state) {
  MerkleTree tree;
  std::vector<std::string> keys = Keys(100000);
  for (const std::string& k : keys) tree.Put(k, 1);
  std::mt19937_64 rng(1);
  uint64_t digest = 2;
  for (auto _ : state) tree.Put(keys[rng() % keys.size()], digest++);
  benchmark::DoNotOptimize(tree.Root());
}
BENCHMARK(BM_MerkleLeafUpdate);

// Inserting and removing a key (a write of a new key, then its purge).
void BM_MerkleInsertRemove(benchmark::State& state) {
  MerkleTree tree;
  std::vector<std::string> keys = Keys(100000);
  for (const std::string& k : keys) tree.Put(k, 1);
  for (auto _ : state) {
    tree.Put("fresh-key", 7);
    tree.Remove("fresh-key");
  }
}
BENCHMARK(BM_MerkleInsertRemove);

}  // namespace
}  // namespace dynamo

BENCHMARK_MAIN();
