// A node's handling of replica writes without the network: one NodeCore over
// the RocksDB engine and the value cache, fed encoded requests the way a
// connection hands them over. Its storage actions run the way the storage
// worker runs them on the event loop: every `batch` requests (the requests
// one loop iteration handles), their reads from the cache (or the memtable),
// with or without prefetching their keys first, then their writes as one
// engine write, no sync.
// Replies are encoded into a buffer as a connection would.
//
// What it leaves out: system calls other than RocksDB's log writes, the
// storage thread, syncs, and other processes. What it keeps: decoding, key
// locks, the value cache, merging, encoding, RocksDB's write path and the
// memtable, the Merkle trees. One process on one core, so figures move far
// less from run to run than a cluster's.
//
//   dynamo_node_bench --benchmark_repetitions=3
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dynamo/check.h"
#include "dynamo/node/cached_engine.h"
#include "dynamo/node/keys.h"
#include "dynamo/node/node_core.h"
#include "dynamo/node/node_state.h"
#include "dynamo/node/rocksdb_engine.h"
#include "dynamo/proto/codec.h"
#include "load/workload.h"
#include "prefilled_log.h"

namespace dynamo::node {
namespace {

constexpr uint64_t kKeys = 100000;
constexpr size_t kValueBytes = 100;
constexpr uint64_t kMeasuredPuts = 300000;
constexpr size_t kValueCacheBytes = 64u << 20;
constexpr ActorId kClientActor = 0xc11e47;
constexpr uint64_t kSyncBenchWrites = 5000;
constexpr size_t kSyncBenchRecordBytes = 200;
constexpr uint64_t kSyncBenchLogBytes = 8u << 20;

// The body of the frame of an LWW ReplicaPut of key `i` stamped `stamp`.
std::string ReplicaPutFrame(uint64_t request_id, uint64_t i, uint64_t stamp) {
  Version v;
  v.dot = Dot{kClientActor, stamp};
  v.lww = true;
  v.timestamp_ms = stamp / 1000;
  v.value = std::string(kValueBytes, static_cast<char>('a' + stamp % 26));
  std::string frame = proto::EncodeFrame(proto::Message{
      request_id, proto::ReplicaPutRequest{bench::KeyName(i), SiblingSet{v}, "", true}});
  return frame.substr(proto::kFrameHeaderBytes);
}

class Harness {
 public:
  Harness(size_t batch, bool prefetch) : batch_(batch), prefetch_(prefetch) {
    char tmpl[] = "/tmp/dynamo-node-bench.XXXXXX";
    DYNAMO_CHECK(mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    Result<std::unique_ptr<Engine>> opened = OpenRocksDb(dir_ + "/rocksdb", RocksDbOptions{});
    DYNAMO_CHECK(opened.ok());
    engine_ = std::make_unique<CachedEngine>(std::move(*opened), kValueCacheBytes);
    NodeOptions options;
    options.id = "n1";
    options.address = "127.0.0.1:7000";
    Result<NodeState> state = LoadNodeState(*engine_, options, dir_, 42);
    DYNAMO_CHECK(state.ok());
    core_ = std::make_unique<NodeCore>(options, std::move(*state), 7);
    core_->Start(now_);
    Pump();
    Flush();
    DYNAMO_CHECK(core_->map().has_value());
  }

  ~Harness() {
    core_.reset();
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  // One request as a connection delivers it; every `batch` requests the
  // writes they made so far go to the engine as one batch.
  void Handle(std::string_view body) {
    Result<proto::Message> msg = proto::DecodeMessage(body, proto::Limits{});
    DYNAMO_CHECK(msg.ok());
    core_->OnRequest(now_, 1, std::move(*msg));
    Pump();
    if (++since_flush_ == batch_) Flush();
  }

  void Flush() {
    since_flush_ = 0;
    while (!reads_.empty() || !writers_.empty()) {
      RunReads();
      if (writers_.empty()) continue;
      Status s = engine_->WriteNoStall(pending_);
      if (s.code() == StatusCode::kBusy) s = engine_->Write(pending_, false);
      DYNAMO_CHECK(s.ok());
      pending_ = WriteBatch();
      std::vector<uint64_t> done;
      done.swap(writers_);
      for (uint64_t token : done) core_->OnStorageDone(now_, token, StorageResult{});
      Pump();
    }
    if (replies_.size() > (1u << 20)) replies_.clear();
  }

  uint64_t acks() const { return acks_; }

 private:
  void Pump() {
    while (true) {
      std::vector<Action> actions = core_->TakeActions();
      if (actions.empty()) return;
      for (Action& action : actions) {
        if (auto* reply = std::get_if<ReplyAction>(&action)) {
          if (std::holds_alternative<proto::Ack>(reply->body)) ++acks_;
          proto::AppendFrame(proto::Message{reply->request_id, std::move(reply->body)}, &replies_);
        } else if (auto* st = std::get_if<StorageAction>(&action)) {
          Run(st->token, std::move(st->op));
        } else if (auto* call = std::get_if<CallAction>(&action)) {
          core_->OnCallDone(now_, call->token, Status::Unavailable("no peers in this benchmark"));
        }
      }
    }
  }

  void RunReads() {
    while (!reads_.empty()) {
      std::vector<std::pair<uint64_t, ReadOp>> reads;
      reads.swap(reads_);
      if (prefetch_) {
        std::vector<std::string_view> keys;
        for (const auto& [token, read] : reads) {
          if (read.space == Space::kData) keys.push_back(read.key);
        }
        engine_->PrefetchData(keys);
      }
      for (auto& [token, read] : reads) {
        Result<std::optional<std::string>> v = engine_->GetCached(read.space, read.key);
        if (!v.ok() && v.status().code() == StatusCode::kBusy)
          v = engine_->Get(read.space, read.key);
        StorageResult r;
        if (v.ok()) {
          r.value = std::move(*v);
        } else {
          r.status = v.status();
        }
        core_->OnStorageDone(now_, token, std::move(r));
      }
      Pump();
    }
  }

  void Run(uint64_t token, StorageOp op) {
    if (auto* read = std::get_if<ReadOp>(&op)) {
      reads_.emplace_back(token, std::move(*read));
    } else if (auto* write = std::get_if<WriteOp>(&op)) {
      pending_.Append(std::move(write->batch));
      writers_.push_back(token);
    } else {
      StorageResult r;
      r.status = Status::Unavailable("no scans in this benchmark");
      core_->OnStorageDone(now_, token, std::move(r));
    }
  }

  const size_t batch_;
  const bool prefetch_;
  std::vector<std::pair<uint64_t, ReadOp>> reads_;
  std::string dir_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<NodeCore> core_;
  Now now_{1000, 1'700'000'000'000};
  WriteBatch pending_;
  std::vector<uint64_t> writers_;
  size_t since_flush_ = 0;
  std::string replies_;
  uint64_t acks_ = 0;
};

// LWW ReplicaPuts of uniformly drawn keys, each newer than what the node
// holds, after every key was written once. Arguments: requests per loop
// iteration; 1 to prefetch their reads' keys (as the storage worker does),
// 0 not to.
void BM_NodeReplicaPut(benchmark::State& state) {
  Harness h(static_cast<size_t>(state.range(0)), state.range(1) != 0);
  uint64_t stamp = 1;
  for (uint64_t i = 0; i < kKeys; ++i) h.Handle(ReplicaPutFrame(i, i, stamp++));
  h.Flush();
  std::vector<std::string> frames;
  frames.reserve(kMeasuredPuts);
  uint64_t x = 88172645463325252ull;
  for (uint64_t n = 0; n < kMeasuredPuts; ++n) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    frames.push_back(ReplicaPutFrame(kKeys + n, x % kKeys, stamp++));
  }
  const uint64_t acks_before = h.acks();
  size_t next = 0;
  for (auto _ : state) h.Handle(frames[next++]);
  h.Flush();
  DYNAMO_CHECK(h.acks() - acks_before == next);
  state.SetItemsProcessed(static_cast<int64_t>(next));
}
BENCHMARK(BM_NodeReplicaPut)
    ->Args({1, 0})
    ->Args({8, 0})
    ->Args({8, 1})
    ->Iterations(kMeasuredPuts)
    ->Unit(benchmark::kNanosecond);

// Point reads through RocksDB alone (no value cache), as the storage thread
// makes them when the value cache misses: kEngineGetKeys keys written twice
// each in batches, with small memtables so that they sit in several table
// files across levels, then reads of random keys. Arguments: bloom filter
// bits per key (0: none); 1 to read keys that exist, 0 keys that do not
// (what a key's first write reads).
constexpr uint64_t kEngineGetKeys = 400000;
constexpr size_t kEngineGetMemtableBytes = 8u << 20;
void BM_EngineGet(benchmark::State& state) {
  char tmpl[] = "/tmp/dynamo-get-bench.XXXXXX";
  DYNAMO_CHECK(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  RocksDbOptions options;
  options.bloom_bits_per_key = static_cast<double>(state.range(0));
  options.write_buffer_bytes = kEngineGetMemtableBytes;
  options.stagger_seed = 7;
  Result<std::unique_ptr<Engine>> opened = OpenRocksDb(dir + "/rocksdb", options);
  DYNAMO_CHECK(opened.ok());
  std::unique_ptr<Engine> engine = std::move(*opened);
  auto key = [](uint64_t i, bool present) {
    return DataKey(static_cast<PartitionId>(i % 1024), bench::KeyName(i, present ? "key" : "new"));
  };
  const std::string value(kValueBytes + 40, 'v');
  for (int round = 0; round < 2; ++round) {
    WriteBatch batch;
    for (uint64_t i = 0; i < kEngineGetKeys; ++i) {
      batch.Put(Space::kData, key(i, true), value);
      if (batch.ops().size() == 64) {
        DYNAMO_CHECK(engine->Write(batch, false).ok());
        batch = WriteBatch();
      }
    }
    if (!batch.empty()) DYNAMO_CHECK(engine->Write(batch, false).ok());
  }
  std::mt19937_64 rng(11);
  const bool present = state.range(1) != 0;
  // A quarter of a pass warms the block cache, as a running node's is.
  for (uint64_t i = 0; i < kEngineGetKeys / 4; ++i) {
    (void)engine->Get(Space::kData, key(rng() % kEngineGetKeys, present));
  }
  for (auto _ : state) {
    Result<std::optional<std::string>> got =
        engine->Get(Space::kData, key(rng() % kEngineGetKeys, present));
    DYNAMO_CHECK(got.ok() && got->has_value() == present);
  }
  engine.reset();
  std::filesystem::remove_all(dir);
  state.SetLabel(std::string(state.range(0) > 0 ? "bloom, " : "no filter, ") +
                 (present ? "present" : "absent"));
}
BENCHMARK(BM_EngineGet)
    ->Args({0, 1})
    ->Args({10, 1})
    ->Args({0, 0})
    ->Args({10, 0})
    ->Iterations(200000)
    ->Unit(benchmark::kNanosecond);

// Appends of one ReplicaPut-sized record to a RocksDB log file, each synced
// (fdatasync): what a log sync costs (process CPU time) and takes (real time)
// on this disk, without RocksDB. Argument: 1 for a log made from a spare of
// zeros (prefilled_log.h), which a sync writes over without the log's inode;
// 0 for a log that grows as it is written.
void BM_SyncedLogWrite(benchmark::State& state) {
  const std::string dir =
      std::filesystem::temp_directory_path() / ("dynamo-sync-bench-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  PrefilledLogOptions options;
  options.spare_bytes_max = state.range(0) != 0 ? kSyncBenchLogBytes : 0;
  options.first_spare_bytes = kSyncBenchLogBytes;
  std::shared_ptr<PrefilledLogFileSystem> fs =
      PrefilledLogFileSystem::Make(rocksdb::FileSystem::Default(), dir, std::move(options));
  const rocksdb::IOOptions io;
  auto make_log = [&](int number) {
    std::unique_ptr<rocksdb::FSWritableFile> log;
    const std::string name = dir + "/00000" + std::to_string(number) + ".log";
    DYNAMO_CHECK(fs->NewWritableFile(name, rocksdb::FileOptions(), &log, nullptr).ok());
    return log;
  };
  std::unique_ptr<rocksdb::FSWritableFile> log = make_log(1);
  if (state.range(0) != 0) {
    // A full first log makes the next two logs prefilled ones, the third
    // with no spare being written behind it.
    DYNAMO_CHECK(log->Append(std::string(kSyncBenchLogBytes / 2, 'f'), io, nullptr).ok());
    fs->WaitForSpare();
    log = make_log(2);
    fs->WaitForSpare();
    log = make_log(3);
    DYNAMO_CHECK(fs->stats().prefilled_logs == 2);
  }
  const std::string record(kSyncBenchRecordBytes, 'r');
  for (auto _ : state) {
    DYNAMO_CHECK(log->Append(record, io, nullptr).ok());
    DYNAMO_CHECK(log->Sync(io, nullptr).ok());
  }
  DYNAMO_CHECK(log->Close(io, nullptr).ok());
  log.reset();
  fs.reset();
  std::filesystem::remove_all(dir);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetLabel(state.range(0) != 0 ? "prefilled log" : "growing log");
}
BENCHMARK(BM_SyncedLogWrite)
    ->Arg(0)
    ->Arg(1)
    ->Iterations(kSyncBenchWrites)
    ->MeasureProcessCPUTime()
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace dynamo::node

BENCHMARK_MAIN();
