// Fault tests with real daemons, one per row of the fault table in
// docs/reliability.md. Each test prints a "[ fault ]" line with the figures
// the table reports. DYNAMO_FAULT_SEED picks the churn schedule (default 1).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "dynamo/client.h"
#include "dynamo/proto/codec.h"
#include "process/inspect_all.h"
#include "process/process_cluster.h"

namespace dynamo::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kFastConfig =
    "[gossip]\ninterval_ms = 200\n"
    "[anti_entropy]\ncycle_pause_ms = 1000\n"
    "[transfer]\nhandoff_delay_ms = 1000\n";

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void SleepMs(uint64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

uint64_t FaultSeed() {
  const char* s = std::getenv("DYNAMO_FAULT_SEED");
  return s != nullptr ? std::strtoull(s, nullptr, 10) : 1;
}

std::vector<std::string> Seeds(ProcessCluster& c, size_t n) {
  std::vector<std::string> out;
  for (size_t i = 1; i <= n; ++i) out.push_back(c.Address("n" + std::to_string(i)).ToString());
  return out;
}

std::vector<std::string> NodeIds(size_t n) {
  std::vector<std::string> out;
  for (size_t i = 1; i <= n; ++i) out.push_back("n" + std::to_string(i));
  return out;
}

std::unique_ptr<Client> Open(ProcessCluster& c, size_t n, std::function<void(ClientOptions&)> tweak = {}) {
  ClientOptions o;
  o.seeds = Seeds(c, n);
  o.timeout_ms = 2000;
  o.refresh_interval_ms = 1000;
  if (tweak) tweak(o);
  Result<std::unique_ptr<Client>> client = Client::Open(o);
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return client.ok() ? std::move(*client) : nullptr;
}

std::vector<NodeId> Primaries(Client& client, const std::string& key) {
  std::vector<NodeId> out;
  for (const Placement& p : client.Where(key)) {
    if (p.role == "primary") out.push_back(p.id);
  }
  return out;
}

// Whether a key's replicas, as Inspect reports them, are as they should be.
using ReplicaCheck = std::function<bool(const std::string& key, const std::vector<ReplicaVersions>&)>;

// The keys whose replicas fail `check`, asked with a few threads at once.
std::vector<std::string> Failing(Client& client, const std::vector<std::string>& keys, const ReplicaCheck& check) {
  constexpr size_t kThreads = 4;
  std::vector<std::vector<std::string>> failing(kThreads);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < keys.size(); i += kThreads) {
        if (!check(keys[i], InspectAll(client, keys[i]))) failing[t].push_back(keys[i]);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  std::vector<std::string> out;
  for (auto& f : failing) out.insert(out.end(), f.begin(), f.end());
  return out;
}

// Re-checks the failing keys until none is left or `timeout_ms` passes;
// returns the keys still failing.
std::vector<std::string> Converge(Client& client, std::vector<std::string> keys, const ReplicaCheck& check,
                                  uint64_t timeout_ms, const std::function<bool()>& also = {}) {
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    keys = Failing(client, keys, check);
    const bool rest = !also || also();
    if ((keys.empty() && rest) || Clock::now() >= deadline) return keys;
    SleepMs(250);
  }
}

// Every replica answered and holds exactly `value`.
bool HoldsOnly(const std::vector<ReplicaVersions>& replicas, size_t n, const std::string& value) {
  if (replicas.size() != n) return false;
  for (const ReplicaVersions& rv : replicas) {
    if (!rv.error.empty() || rv.versions.size() != 1 || rv.versions[0].tombstone ||
        rv.versions[0].value != value) {
      return false;
    }
  }
  return true;
}

std::string Describe(Client& client, const std::string& key) {
  std::ostringstream os;
  os << key << ":";
  for (const ReplicaVersions& rv : InspectAll(client, key)) {
    os << " " << rv.node << "=[";
    if (!rv.error.empty()) os << "error " << rv.error;
    for (const auto& v : rv.versions) os << (v.tombstone ? "<tombstone>" : v.value) << "@" << v.dot << " ";
    os << "]";
  }
  return os.str();
}

uint64_t NodesHoldingHints(ProcessCluster& c, size_t n) {
  uint64_t holders = 0;
  for (const std::string& id : NodeIds(n)) {
    Result<cli::NodeStatsView> s = c.Stats(id);
    holders += s.ok() ? s->Get("hint_owners") : 1;
  }
  return holders;
}

// Writes keys prefix0, prefix1, ... (value "v<i>") with up to `in_flight`
// writes at once until `target` are acknowledged, `max_attempts` were made or
// `max_seconds` passed. Returns the acknowledged keys.
struct LoadResult {
  std::vector<std::string> acked;
  size_t attempts = 0;
  size_t failed = 0;
  uint64_t hints = 0;  // hinted copies the acknowledgements report
};
// Writes unique keys until `target` are acknowledged and `more` (when given)
// returns false, within `max_attempts` and `max_seconds`.
LoadResult WriteUniqueKeys(Client& client, const std::string& prefix, size_t target, size_t max_attempts,
                           double max_seconds, size_t in_flight, size_t value_bytes = 32,
                           const std::function<bool()>& more = nullptr) {
  std::mutex mu;
  std::condition_variable cv;
  size_t running = 0;
  LoadResult out;
  const Clock::time_point start = Clock::now();
  std::vector<std::unique_ptr<Receipt>> receipts;
  std::unique_lock<std::mutex> lock(mu);
  auto wanted = [&](size_t pending) { return out.acked.size() + pending < target || (more && more()); };
  while (wanted(0) && out.attempts < max_attempts && SecondsSince(start) < max_seconds) {
    if (running >= in_flight || !wanted(running)) {
      cv.wait_for(lock, std::chrono::milliseconds(50));
      continue;
    }
    const std::string key = prefix + std::to_string(out.attempts++);
    std::string value = "v" + key.substr(prefix.size());
    value.resize(std::max(value.size(), value_bytes), '.');
    ++running;
    auto receipt = std::make_shared<Receipt>();
    WriteOptions wo;
    wo.receipt = receipt.get();
    lock.unlock();
    client.PutAsync(key, value, wo, [&, key, receipt](Result<std::string> r) {
      std::lock_guard<std::mutex> g(mu);
      if (r.ok()) {
        out.acked.push_back(key);
        out.hints += receipt->hints;
      } else {
        ++out.failed;
      }
      --running;
      cv.notify_all();
    });
    lock.lock();
  }
  cv.wait(lock, [&] { return running == 0; });
  return out;
}

std::string ValueOf(const std::string& prefix, const std::string& key, size_t value_bytes = 32) {
  std::string value = "v" + key.substr(prefix.size());
  value.resize(std::max(value.size(), value_bytes), '.');
  return value;
}

// Flips the middle byte of the largest table file in RocksDB directory
// `dir` (of a stopped node, or one that has it open), naming it and its size.
void FlipAByteOfTheLargestTable(const std::string& dir, std::filesystem::path* table,
                                uintmax_t* size) {
  table->clear();
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    if (f.path().extension() == ".sst" &&
        (table->empty() || f.file_size() > std::filesystem::file_size(*table))) {
      *table = f.path();
    }
  }
  ASSERT_FALSE(table->empty());
  *size = std::filesystem::file_size(*table);
  std::fstream f(*table, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(*size / 2));
  char byte = 0;
  f.get(byte);
  f.seekp(static_cast<std::streamoff>(*size / 2));
  f.put(static_cast<char>(byte ^ 0x5a));
}

// Flushes that RocksDB's info logs under every node's data directory
// record, across restarts and rotations (LOG.old.*). A lower bound: RocksDB
// keeps kInfoLogFilesKept of those files, so a node restarted more often
// has lost its oldest.
size_t FlushesLogged(const ProcessCluster& c, size_t nodes) {
  size_t flushes = 0;
  for (const std::string& id : NodeIds(nodes)) {
    const std::filesystem::path dir = c.options().dir + "/" + id + "/data/rocksdb";
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (entry.path().filename().string().rfind("LOG", 0) != 0) continue;
      std::ifstream in(entry.path());
      for (std::string line; std::getline(in, line);) {
        flushes += line.find("\"event\": \"flush_finished\"") != std::string::npos;
      }
    }
  }
  return flushes;
}

TEST(FaultTest, KillNineChurnLosesNoAcknowledgedWrite) {
  constexpr size_t kNodes = 5, kWrites = 20000, kMinKills = 5, kValueBytes = 1000;
  // With 2 MiB memtables and 1,000-byte values each node switches memtables,
  // flushes, writes logs over spares and deletes old ones while it is killed.
  ProcessCluster c(kNodes, std::string(kFastConfig) + "[storage]\nwrite_buffer_bytes = 2097152\n");
  ASSERT_TRUE(c.Start().ok());
  auto client = Open(c, kNodes);
  ASSERT_TRUE(client);

  const uint64_t seed = FaultSeed();
  std::cout << "[ fault ] churn seed " << seed << " (DYNAMO_FAULT_SEED)\n";
  std::atomic<bool> stop{false};
  std::atomic<size_t> kills{0};
  std::thread chaos([&] {
    std::mt19937_64 rng(seed);
    std::map<std::string, Clock::time_point> down;  // id -> restart time
    Clock::time_point next_kill = Clock::now() + std::chrono::seconds(2);
    while (!stop) {
      const Clock::time_point now = Clock::now();
      for (auto it = down.begin(); it != down.end();) {
        if (it->second <= now) {
          EXPECT_TRUE(c.Spawn(it->first).ok());
          it = down.erase(it);
        } else {
          ++it;
        }
      }
      if (now >= next_kill) {
        std::vector<std::string> up;
        for (const std::string& id : NodeIds(kNodes)) {
          if (!down.count(id)) up.push_back(id);
        }
        const std::string victim = up[rng() % up.size()];
        c.Kill9(victim);
        ++kills;
        down[victim] = now + std::chrono::milliseconds(1000 + rng() % 2001);
        next_kill += std::chrono::seconds(2);
      }
      SleepMs(20);
    }
    for (auto& [id, when] : down) EXPECT_TRUE(c.Spawn(id).ok());
  });

  const Clock::time_point start = Clock::now();
  // Writes go on until enough nodes were killed, however fast they are.
  LoadResult load = WriteUniqueKeys(*client, "churn:", kWrites, kWrites * 10, 600, 16, kValueBytes,
                                    [&] { return kills < kMinKills; });
  const double write_s = SecondsSince(start);
  stop = true;
  chaos.join();
  EXPECT_GE(load.acked.size(), kWrites) << "the load loop hit its bound";

  std::string why;
  ASSERT_TRUE(cli::WaitForConvergence(c.RunningAddresses(), kNodes, 60000, &why).ok()) << why;
  const Clock::time_point quiet = Clock::now();
  auto on_all_primaries = [](const std::string& key, const std::vector<ReplicaVersions>& rs) {
    return HoldsOnly(rs, 3, ValueOf("churn:", key, kValueBytes));
  };
  std::vector<std::string> missing =
      Converge(*client, load.acked, on_all_primaries, 300000, [&] { return NodesHoldingHints(c, kNodes) == 0; });
  const double converge_s = SecondsSince(quiet);
  size_t lost = 0;
  for (const std::string& key : missing) {
    bool anywhere = false;
    for (const ReplicaVersions& rv : InspectAll(*client, key)) {
      for (const auto& v : rv.versions) anywhere |= v.value == ValueOf("churn:", key, kValueBytes);
    }
    lost += !anywhere;
  }
  for (size_t i = 0; i < std::min<size_t>(missing.size(), 5); ++i) ADD_FAILURE() << Describe(*client, missing[i]);
  EXPECT_EQ(lost, 0u);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys short of 3 copies on their primaries";
  EXPECT_EQ(NodesHoldingHints(c, kNodes), 0u);
  EXPECT_GE(kills, kMinKills) << "the load loop hit its bound";
  const size_t flushes = FlushesLogged(c, kNodes);
  EXPECT_GE(flushes, kNodes) << "too few flushes for the kills to meet any";
  std::cout << "[ fault ] churn: " << load.attempts << " writes (" << load.acked.size()
            << " acknowledged, " << load.failed << " failed) in " << write_s << " s with " << kills
            << " kill -9; acknowledged lost " << lost << "; every key on its 3 primaries "
            << converge_s << " s after the last restart; " << flushes << " memtable flushes\n";
}

TEST(FaultTest, TwoPrimariesDownForThirtySecondsGetEveryHint) {
  constexpr size_t kNodes = 5;
  // Anti-entropy rounds an hour apart: what the returning primaries get,
  // they get from the hints.
  ProcessCluster c(kNodes,
                   "[gossip]\ninterval_ms = 200\n[anti_entropy]\ncycle_pause_ms = 3600000\n");
  ASSERT_TRUE(c.Start().ok());
  auto client = Open(c, kNodes);
  ASSERT_TRUE(client);
  const std::vector<NodeId> range = Primaries(*client, "range");
  ASSERT_EQ(range.size(), 3u);
  std::vector<std::string> keys;
  for (int i = 0; keys.size() < 600 && i < 200000; ++i) {
    std::string k = "hinted:" + std::to_string(i);
    if (Primaries(*client, k) == range) keys.push_back(k);
  }
  ASSERT_EQ(keys.size(), 600u);

  c.Kill9(range[1]);
  c.Kill9(range[2]);
  const Clock::time_point outage = Clock::now();
  std::vector<std::string> acked;
  uint64_t hinted_copies = 0;
  for (size_t i = 0; i < keys.size() && SecondsSince(outage) < 25; ++i) {
    Receipt receipt;
    WriteOptions wo;
    wo.receipt = &receipt;
    if (client->Put(keys[i], "paid:" + keys[i], wo).ok()) {
      acked.push_back(keys[i]);
      hinted_copies += receipt.hints;
    }
    SleepMs(25);
  }
  EXPECT_GE(acked.size(), keys.size() * 9 / 10);
  EXPECT_GE(hinted_copies, acked.size());  // every acknowledgement came through a fallback
  const uint64_t hints_stored = c.SumStat("hints_stored");
  EXPECT_GE(hints_stored, 2 * acked.size());  // a copy for each absent primary
  SleepMs(static_cast<uint64_t>(std::max(0.0, 30000 - SecondsSince(outage) * 1000)));
  const double outage_s = SecondsSince(outage);
  ASSERT_TRUE(c.Spawn(range[1]).ok());
  ASSERT_TRUE(c.Spawn(range[2]).ok());
  const Clock::time_point back = Clock::now();

  auto everywhere = [](const std::string& key, const std::vector<ReplicaVersions>& rs) {
    return HoldsOnly(rs, 3, "paid:" + key);
  };
  std::vector<std::string> missing =
      Converge(*client, acked, everywhere, 120000, [&] { return NodesHoldingHints(c, kNodes) == 0; });
  const double converge_s = SecondsSince(back);
  for (size_t i = 0; i < std::min<size_t>(missing.size(), 5); ++i) ADD_FAILURE() << Describe(*client, missing[i]);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys short of 3 copies";
  EXPECT_EQ(NodesHoldingHints(c, kNodes), 0u);
  const uint64_t delivered = c.SumStat("hints_delivered");
  EXPECT_GE(delivered, hints_stored);
  std::cout << "[ fault ] two of three primaries (" << range[1] << ", " << range[2] << ") down " << outage_s
            << " s: " << acked.size() << " of " << keys.size() << " writes acknowledged, " << hints_stored
            << " hinted copies stored, " << delivered << " delivered; acknowledged lost " << missing.size()
            << "; every key on its 3 primaries " << converge_s << " s after they returned\n";
}

TEST(FaultTest, PausedNodeLosesNoAcknowledgedWriteAndServesNoStaleRead) {
  constexpr size_t kNodes = 5;
  constexpr uint64_t kPauseMs = 10000;
  constexpr size_t kReadsMax = 4000;
  const std::string prefix = "paused:";
  ProcessCluster c(kNodes, "[gossip]\ninterval_ms = 200\n[anti_entropy]\ncycle_pause_ms = 1000\n");
  ASSERT_TRUE(c.Start().ok());
  auto client = Open(c, kNodes);
  ASSERT_TRUE(client);
  const std::string paused = "n3";
  std::atomic<bool> writing{true};
  LoadResult load;
  std::thread writer([&] {
    load = WriteUniqueKeys(*client, prefix, 0, 200000, 60, 8, 32, [&] { return writing.load(); });
  });
  SleepMs(2000);
  c.Pause(paused);
  SleepMs(kPauseMs);
  writing = false;
  writer.join();
  c.Resume(paused);
  const Clock::time_point resumed = Clock::now();
  ASSERT_GT(load.acked.size(), 100u);
  std::vector<std::string> on_paused;
  for (const std::string& key : load.acked) {
    const std::vector<NodeId> primaries = Primaries(*client, key);
    if (std::find(primaries.begin(), primaries.end(), paused) != primaries.end())
      on_paused.push_back(key);
  }
  ASSERT_FALSE(on_paused.empty());
  // Once it runs again, the paused node answers for keys it missed: a read
  // (R=2) must still return the acknowledged value and nothing older.
  SleepMs(1000);
  std::vector<std::string> sample;
  for (size_t i = 0; i < on_paused.size(); i += (on_paused.size() + kReadsMax - 1) / kReadsMax) {
    sample.push_back(on_paused[i]);
  }
  std::atomic<size_t> stale{0};
  {
    std::vector<std::thread> readers;
    for (size_t t = 0; t < 4; ++t) {
      readers.emplace_back([&, t] {
        for (size_t i = t; i < sample.size(); i += 4) {
          Result<GetResult> r = client->Get(sample[i]);
          if (!r.ok() || r->values.size() != 1 || r->values[0] != ValueOf(prefix, sample[i]))
            ++stale;
        }
      });
    }
    for (std::thread& th : readers) th.join();
  }
  EXPECT_EQ(stale.load(), 0u);
  // While it was stopped, writes went around it: only those already sent to
  // it as their coordinator failed.
  EXPECT_LE(load.failed, load.attempts / 20);
  EXPECT_GT(load.hints, 0u);

  auto stored = [&](const std::string& key, const std::vector<ReplicaVersions>& rs) {
    return HoldsOnly(rs, 3, ValueOf(prefix, key));
  };
  std::vector<std::string> missing = Converge(*client, load.acked, stored, 120000,
                                              [&] { return NodesHoldingHints(c, kNodes) == 0; });
  const double converge_s = SecondsSince(resumed);
  for (size_t i = 0; i < std::min<size_t>(missing.size(), 5); ++i)
    ADD_FAILURE() << Describe(*client, missing[i]);
  EXPECT_TRUE(missing.empty()) << missing.size() << " acknowledged keys short of 3 copies";
  EXPECT_TRUE(c.Running(paused));
  // Every node, the paused one included, sees all five alive again.
  for (const std::string& id : NodeIds(kNodes)) {
    EXPECT_TRUE(WaitFor(
        [&] {
          Result<cli::NodeStatsView> s = c.Stats(id);
          return s.ok() && s->Get("catching_up") == 0;
        },
        30000))
        << id;
  }
  EXPECT_TRUE(WaitFor(
      [&] {
        std::vector<MemberInfo> members = client->Members();
        return members.size() == kNodes &&
               std::all_of(members.begin(), members.end(),
                           [](const MemberInfo& m) { return m.state == "up"; });
      },
      30000));
  std::cout << "[ fault ] " << paused << " stopped (SIGSTOP) for " << kPauseMs / 1000.0
            << " s under load: " << load.acked.size() << " of " << load.attempts
            << " writes acknowledged (" << load.failed << " failed), " << on_paused.size()
            << " of them with " << paused << " as a primary, " << load.hints << " hinted copies; "
            << sample.size() << " of those read 1 s after it continued: " << stale
            << " stale or failed; acknowledged lost " << missing.size()
            << "; every key on its 3 primaries and no hint left " << converge_s
            << " s after it resumed\n";
}

// A membership change with 6,000 keys of 1 KiB loaded and writes going on
// throughout; transfers are paced small (8 keys a page, one at a time) so
// that a kill lands in the middle of one, and memtables of 2 MiB make the
// nodes flush and switch logs throughout.
class RingChangeUnderLoad {
 public:
  static constexpr size_t kValueBytes = 1024;
  static constexpr size_t kLoaded = 6000;

  explicit RingChangeUnderLoad(size_t nodes)
      : nodes_(nodes),
        c_(nodes,
           std::string(kFastConfig) +
               "page_entries = 8\nin_flight = 1\n[storage]\nwrite_buffer_bytes = 2097152\n") {}

  ProcessCluster& cluster() { return c_; }
  Client& client() { return *client_; }

  // Starts the cluster, loads the keys and starts the background writer.
  ::testing::AssertionResult Start() {
    if (!c_.Start().ok()) return ::testing::AssertionFailure() << "cluster did not start";
    client_ = Open(c_, nodes_, [](ClientOptions& o) { o.refresh_interval_ms = 300; });
    if (!client_) return ::testing::AssertionFailure() << "client did not open";
    loaded_ = WriteUniqueKeys(*client_, kLoadPrefix, kLoaded, kLoaded + 1000, 120, 16, kValueBytes);
    if (loaded_.acked.size() != kLoaded) return ::testing::AssertionFailure() << "load fell short";
    formed_ = c_.SumStat("transfers_done");  // the cluster's formation made some
    writer_ = std::thread([this] {
      during_ = WriteUniqueKeys(*client_, kWritePrefix, 0, 200000, 120, 4, kValueBytes,
                                [this] { return writing_.load(); });
    });
    return ::testing::AssertionSuccess();
  }

  // Once the change under way has made two partition transfers, kills
  // `id` with -9 and restarts it a second later. Failure when no transfer
  // was seen or the restart failed.
  ::testing::AssertionResult KillMidTransferAndRestart(const std::string& id) {
    const bool started =
        WaitFor([&] { return c_.SumStat("transfers_done") >= formed_ + 2; }, 60000, 10);
    transfers_at_kill_ = c_.SumStat("transfers_done") - formed_;
    pending_at_kill_ = Pending();
    c_.Kill9(id);
    if (!started) return ::testing::AssertionFailure() << "no partition transfer within 60 s";
    SleepMs(1000);
    if (!c_.Spawn(id).ok())
      return ::testing::AssertionFailure() << "restart of " << id << " failed";
    restarted_ = Clock::now();
    return ::testing::AssertionSuccess();
  }
  // Whether the change was still under way when the node was killed.
  bool PendingAtKill() const { return pending_at_kill_; }
  double SecondsSinceRestart() const { return SecondsSince(restarted_); }

  // Whether n1 sees a membership change still under way.
  bool Pending() {
    Result<ClusterMap> map = c_.Map("n1");
    return map.ok() && map->next().has_value();
  }

  // Stops the writer; returns the acknowledged keys (loaded and written)
  // that are not exactly on 3 replicas within 120 s.
  std::vector<std::string> StopAndCheck() {
    writing_ = false;
    writer_.join();
    std::vector<std::string> acked = loaded_.acked;
    acked.insert(acked.end(), during_.acked.begin(), during_.acked.end());
    acked_ = acked.size();
    auto stored = [](const std::string& key, const std::vector<ReplicaVersions>& rs) {
      const bool during = key.rfind(kWritePrefix, 0) == 0;
      return HoldsOnly(rs, 3, ValueOf(during ? kWritePrefix : kLoadPrefix, key, kValueBytes));
    };
    std::vector<std::string> missing = Converge(*client_, acked, stored, 120000);
    for (size_t i = 0; i < std::min<size_t>(missing.size(), 5); ++i)
      ADD_FAILURE() << Describe(*client_, missing[i]);
    flushes_ = FlushesLogged(c_, nodes_ + 1);  // a joiner's too
    EXPECT_GE(flushes_, nodes_) << "too few flushes for the change to meet any";
    return missing;
  }

  std::string Summary(size_t lost) const {
    return "killed -9 after " + std::to_string(transfers_at_kill_) + " partition transfers" +
           (pending_at_kill_ ? " (change still pending)" : "") + ", restarted 1 s later; " +
           std::to_string(acked_) + " acknowledged writes (" +
           std::to_string(during_.acked.size()) + " during the change, " +
           std::to_string(during_.failed) + " failed), acknowledged lost " + std::to_string(lost) +
           "; " + std::to_string(flushes_) + " memtable flushes";
  }

  ~RingChangeUnderLoad() {
    writing_ = false;
    if (writer_.joinable()) writer_.join();
  }

 private:
  static constexpr const char* kLoadPrefix = "ring:";
  static constexpr const char* kWritePrefix = "ring-during:";

  size_t nodes_;
  ProcessCluster c_;
  std::unique_ptr<Client> client_;
  LoadResult loaded_, during_;
  std::atomic<bool> writing_{true};
  std::thread writer_;
  size_t acked_ = 0, flushes_ = 0;
  uint64_t formed_ = 0, transfers_at_kill_ = 0;
  bool pending_at_kill_ = false;
  Clock::time_point restarted_;
};

TEST(FaultTest, JoinerKilledMidTransferFinishesTheJoinAndLosesNothing) {
  RingChangeUnderLoad t(3);
  ASSERT_TRUE(t.Start());
  ProcessCluster& c = t.cluster();
  ASSERT_TRUE(c.SpawnExtra(4).ok());
  ASSERT_TRUE(t.KillMidTransferAndRestart("n4"));
  EXPECT_TRUE(t.PendingAtKill()) << "the join had finished before the kill";
  std::string why;
  ASSERT_TRUE(
      cli::WaitForConvergence({c.Address("n1"), c.Address("n2"), c.Address("n3"), c.Address("n4")},
                              4, 120000, &why)
          .ok())
      << why;
  ASSERT_TRUE(WaitFor([&] { return !t.Pending(); }, 120000));
  const double join_s = t.SecondsSinceRestart();
  std::vector<std::string> missing = t.StopAndCheck();
  EXPECT_TRUE(missing.empty()) << missing.size() << " acknowledged keys short of 3 copies";
  Client::RingInfo ring = t.client().Ring();
  const auto owned = std::count(ring.owners.begin(), ring.owners.end(), "n4");
  EXPECT_GT(owned, 0);
  std::cout << "[ fault ] joiner n4: join finished " << join_s
            << " s after the restart, n4 first owner of " << owned << " of " << ring.partitions
            << " partitions; " << t.Summary(missing.size()) << "\n";
}

TEST(FaultTest, LeaverKilledMidTransferFinishesTheLeaveAndLosesNothing) {
  RingChangeUnderLoad t(4);
  ASSERT_TRUE(t.Start());
  ProcessCluster& c = t.cluster();
  Result<proto::Message> left =
      cli::CallNode(c.Address("n1"), proto::AdminRequest{proto::AdminOp::kLeave, "n4"}, 5000);
  ASSERT_TRUE(left.ok() && std::holds_alternative<proto::AdminReply>(left->body));
  ASSERT_TRUE(t.KillMidTransferAndRestart("n4"));
  EXPECT_TRUE(t.PendingAtKill()) << "the leave had finished before the kill";
  // It goes on leaving: once its partitions moved it hands off and exits.
  EXPECT_EQ(c.WaitExit("n4", 120000), 0);
  ASSERT_TRUE(WaitFor([&] { return !t.Pending(); }, 120000));
  const double leave_s = t.SecondsSinceRestart();
  std::vector<std::string> missing = t.StopAndCheck();
  EXPECT_TRUE(missing.empty()) << missing.size() << " acknowledged keys short of 3 copies";
  Client::RingInfo ring = t.client().Ring();
  EXPECT_EQ(std::count(ring.owners.begin(), ring.owners.end(), "n4"), 0);
  std::cout << "[ fault ] leaver n4: it left and exited " << leave_s << " s after the restart; "
            << t.Summary(missing.size()) << "\n";
}

// D5: once a node's fsync has failed, the data it wrote since its last good
// sync may be gone from the page cache, so it must acknowledge nothing more.
// The other two replicas go on taking writes. Anti-entropy is off, so what
// n1 and n3 hold came from the writes themselves. So are tree checks: the
// writes whose sync failed are applied but not recorded, which a check
// would rightly report.
TEST(FaultTest, NodeWhoseFsyncFailedAcknowledgesNoWriteAfterIt) {
  const std::string prefix = "fsync:";
  ProcessCluster c(3,
                   "[gossip]\ninterval_ms = 200\n"
                   "[anti_entropy]\ncycle_pause_ms = 3600000\ntree_check_interval_ms = 0\n");
  const std::string bad = "n2";
  const std::string trigger = c.options().dir + "/fail-fsync";
  const std::string bin = std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
  c.SetEnv(bad, "LD_PRELOAD=" + bin + "/libdynamo_fail_fsync.so");
  c.SetEnv(bad, "DYNAMO_FAIL_FSYNC_TRIGGER=" + trigger);
  ASSERT_TRUE(c.Start().ok());
  auto client = Open(c, 3);
  ASSERT_TRUE(client);
  LoadResult before = WriteUniqueKeys(*client, prefix, 500, 600, 60, 8);
  ASSERT_EQ(before.acked.size(), 500u);

  std::ofstream(trigger) << "fail\n";
  LoadResult after = WriteUniqueKeys(*client, prefix + "after:", 2000, 4000, 60, 8);
  EXPECT_EQ(after.acked.size(), 2000u);
  // The client backs off the failed node as coordinator after its first
  // storage error (each such write is in doubt: its log record may survive).
  EXPECT_LE(after.failed, after.attempts / 20);
  // Asked directly, it answers writes of both kinds with the storage error.
  Result<proto::Message> coord =
      cli::CallNode(c.Address(bad), proto::CoordPutRequest{"direct", {}, "v", false}, 5000);
  EXPECT_EQ(coord.status().code(), StatusCode::kIOError) << coord.status().ToString();
  SiblingSet set = CoordinatorUpdate({}, 77, 1, WriteIntent{{}, "direct", false, 1})->siblings;
  Result<proto::Message> replica =
      cli::CallNode(c.Address(bad), proto::ReplicaPutRequest{"direct", set, ""}, 5000);
  EXPECT_EQ(replica.status().code(), StatusCode::kIOError) << replica.status().ToString();
  // Every write acknowledged after the failure is on both other replicas.
  size_t short_of_two = 0;
  for (const std::string& key : after.acked) {
    for (const char* id : {"n1", "n3"}) {
      Result<SiblingSet> s = c.StoredOn(id, key);
      const bool held =
          s.ok() && s->size() == 1 && (*s)[0].value == ValueOf(prefix + "after:", key);
      if (!held && short_of_two++ < 5) ADD_FAILURE() << key << " acknowledged but not on " << id;
    }
  }
  EXPECT_EQ(short_of_two, 0u);
  // Reads still answer from the other two.
  size_t read_ok = 0;
  for (size_t i = 0; i < before.acked.size(); i += 5) {
    Result<GetResult> r = client->Get(before.acked[i]);
    read_ok += r.ok() && r->values.size() == 1 && r->values[0] == ValueOf(prefix, before.acked[i]);
  }
  EXPECT_EQ(read_ok, before.acked.size() / 5);
  EXPECT_TRUE(c.Running(bad));
  std::cout << "[ fault ] " << bad << "'s fsync fails (EIO) from a point on: " << after.acked.size()
            << " of " << after.attempts << " writes acknowledged after it (" << after.failed
            << " failed), " << short_of_two << " of them short of a copy on both other replicas; "
            << bad << " refused a direct CoordPut and ReplicaPut; " << read_ok << " of "
            << before.acked.size() / 5 << " reads of earlier keys correct\n";
}

// A tmpfs of `size` mounted over `dir` in a mount namespace of the test
// process's own (its nodes start in it), unmounted at the end of the scope;
// not mounted without the privilege to mount (`error` says why).
class SmallDisk {
 public:
  SmallDisk(std::string dir, const std::string& size) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    mounted_ = ::unshare(CLONE_NEWNS) == 0 &&
               ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
               ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    if (!mounted_) error_ = errno;
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  std::string error() const { return std::strerror(error_); }
  uint64_t FreeBytes() const {
    struct statvfs fs {};
    return ::statvfs(dir_.c_str(), &fs) == 0 ? uint64_t{fs.f_bavail} * fs.f_frsize : 0;
  }
  // Grows a file to take all but `leave` bytes of the free space.
  bool Fill(uint64_t leave) {
    const int fd = ::open(Ballast().c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    struct stat st {};
    const uint64_t free = FreeBytes();
    const bool ok = ::fstat(fd, &st) == 0 && free > leave &&
                    ::posix_fallocate(fd, st.st_size, static_cast<off_t>(free - leave)) == 0;
    ::close(fd);
    return ok;
  }
  void Free() { std::filesystem::remove(Ballast()); }

 private:
  std::string Ballast() const { return dir_ + "/ballast"; }
  std::string dir_;
  bool mounted_ = false;
  int error_ = 0;
};

// Four nodes with `storage.free_bytes_min` and 4 MiB memtables; n2 keeps
// its data on a SmallDisk of 96 MiB.
struct SmallDiskCluster {
  static constexpr const char* kFull = "n2";
  static constexpr size_t kValueBytes = 1000;
  explicit SmallDiskCluster(uint64_t free_bytes_min)
      : c(4,
          "[gossip]\ninterval_ms = 200\n"
          "[anti_entropy]\ncycle_pause_ms = 1000\n"
          "[storage]\nwrite_buffer_bytes = 4194304\nfree_bytes_min = " +
              std::to_string(free_bytes_min) + "\n"),
        disk(c.options().dir + "/" + kFull + "/data", "96m") {}
  // The full node goes before its disk is unmounted.
  ~SmallDiskCluster() { c.Kill9(kFull); }
  // Starts the nodes and opens a client whose writes spread over the nodes
  // by key (so n2 coordinates some), then writes 300 keys under `prefix`.
  void Start(const std::string& prefix) {
    ASSERT_TRUE(c.Start().ok());
    client = Open(c, 4, [](ClientOptions& o) { o.coordinator = Coordinator::kFastestReplica; });
    ASSERT_TRUE(client);
    before = WriteUniqueKeys(*client, prefix, 300, 400, 60, 8, kValueBytes);
    ASSERT_EQ(before.acked.size(), 300u);
  }
  // The full node's counter `name`; UINT64_MAX if it did not answer.
  uint64_t Stat(const std::string& name) {
    Result<cli::NodeStatsView> s = c.Stats(kFull);
    return s.ok() ? s->Get(name, UINT64_MAX) : UINT64_MAX;
  }
  ProcessCluster c;
  SmallDisk disk;
  std::unique_ptr<Client> client;
  LoadResult before;
};

// D6: the disk under one node's data fills up (a tmpfs of 96 MiB in a
// mount namespace of the test's own, a ballast file taking all but 16 MiB,
// under storage.free_bytes_min of 32 MiB). The node refuses new data before
// its storage meets ENOSPC: every write is acknowledged through the other
// replicas and stand-ins, none in doubt; reads are correct. Once the
// ballast is deleted the node takes writes again and is repaired by hints
// and anti-entropy, without a restart.
TEST(FaultTest, NodeWhoseDiskFillsRefusesNewDataAndTakesItAgainOnceSpaceIsFreed) {
  const std::string prefix = "disk:";
  constexpr uint64_t kFreeMin = 32u << 20;
  SmallDiskCluster small(kFreeMin);
  if (!small.disk.mounted()) GTEST_SKIP() << "needs root to mount a tmpfs: " << small.disk.error();
  ASSERT_NO_FATAL_FAILURE(small.Start(prefix));
  ProcessCluster& c = small.c;
  SmallDisk& disk = small.disk;
  Client* client = small.client.get();
  const std::string full = SmallDiskCluster::kFull;

  ASSERT_TRUE(disk.Fill(16u << 20));
  const uint64_t free_when_full = disk.FreeBytes();
  ASSERT_LT(free_when_full, kFreeMin);
  ASSERT_TRUE(WaitFor([&] { return small.Stat("disk_low") == 1; }, 10000)) << c.LogOf(full);
  const uint64_t coordinated_before = small.Stat("coord_puts");
  EXPECT_GT(coordinated_before, 0u);
  // Asked directly, it refuses a write before applying it (not in doubt).
  Result<proto::Message> direct =
      cli::CallNode(c.Address(full), proto::CoordPutRequest{"direct", {}, "v", false}, 5000);
  const Status refusal = direct.status();
  EXPECT_EQ(refusal.code(), StatusCode::kIOError) << refusal.ToString();
  EXPECT_FALSE(refusal.in_doubt()) << refusal.ToString();
  EXPECT_NE(refusal.message().find("storage.free_bytes_min"), std::string_view::npos);

  LoadResult after = WriteUniqueKeys(*client, prefix + "after:", 2000, 2200, 120, 8, 1000);
  EXPECT_EQ(after.acked.size(), 2000u);
  EXPECT_EQ(after.failed, 0u);
  const uint64_t refused = small.Stat("requests_refused_disk_low");
  EXPECT_GT(refused, 0u);
  size_t on_full = 0, replicated_by_full = 0;
  std::vector<std::string> wanted_on_full;
  for (const std::string& key : after.acked) {
    const std::vector<NodeId> primaries = Primaries(*client, key);
    if (std::find(primaries.begin(), primaries.end(), full) == primaries.end()) continue;
    ++replicated_by_full;
    wanted_on_full.push_back(key);
    Result<SiblingSet> s = c.StoredOn(full, key);
    on_full += s.ok() && !s->empty();
  }
  EXPECT_GT(replicated_by_full, 0u);
  EXPECT_EQ(on_full, 0u);
  size_t read_ok = 0;
  for (size_t i = 0; i < after.acked.size(); i += 4) {
    Result<GetResult> r = client->Get(after.acked[i]);
    read_ok += r.ok() && r->values.size() == 1 &&
               r->values[0] == ValueOf(prefix + "after:", after.acked[i], 1000);
  }
  EXPECT_EQ(read_ok, (after.acked.size() + 3) / 4);
  EXPECT_TRUE(c.Running(full));
  const uint64_t free_at_end_of_load = disk.FreeBytes();

  disk.Free();
  ASSERT_TRUE(WaitFor([&] { return small.Stat("disk_low") == 0; }, 10000)) << c.LogOf(full);
  const auto freed = Clock::now();
  size_t repaired = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        repaired = 0;
        for (const std::string& key : wanted_on_full) {
          Result<SiblingSet> s = c.StoredOn(full, key);
          repaired +=
              s.ok() && s->size() == 1 && (*s)[0].value == ValueOf(prefix + "after:", key, 1000);
        }
        return repaired == wanted_on_full.size();
      },
      90000, 500))
      << repaired << " of " << wanted_on_full.size() << " repaired\n"
      << c.LogOf(full);
  const double repair_s = SecondsSince(freed);
  EXPECT_EQ(small.Stat("coord_puts"), coordinated_before);
  // A client that did not see the refusals (this one backs n2 off for up to
  // 5 s after each) has it coordinate again.
  auto fresh = Open(c, 4, [](ClientOptions& o) { o.coordinator = Coordinator::kFastestReplica; });
  ASSERT_TRUE(fresh);
  LoadResult later = WriteUniqueKeys(*fresh, prefix + "later:", 300, 400, 60, 8, 1000);
  EXPECT_EQ(later.acked.size(), 300u);
  EXPECT_EQ(later.failed, 0u);
  EXPECT_GT(small.Stat("coord_puts"), coordinated_before);
  // The node met no full disk: its storage never failed a write.
  const std::string log = c.LogOf(full);
  EXPECT_EQ(log.find("No space left"), std::string::npos) << log;
  EXPECT_NE(log.find("disk is nearly full"), std::string::npos);
  std::cout << "[ fault ] " << full << "'s disk held " << free_when_full / 1024
            << " KiB free (limit " << kFreeMin / 1024 << " KiB; " << free_at_end_of_load / 1024
            << " KiB after the load): " << after.acked.size() << " of " << after.attempts
            << " writes acknowledged (" << after.failed << " failed), " << refused
            << " requests refused by " << full << ", 0 of " << replicated_by_full
            << " of its keys written to it, " << read_ok
            << " reads correct; space freed: " << repaired << " keys repaired in " << repair_s
            << " s, then " << later.acked.size() << " of " << later.attempts
            << " writes acknowledged\n";
}

// D6 without the guard (storage.free_bytes_min = 0): one node's storage
// meets the full disk itself (its log appends and flushes fail with ENOSPC,
// a tmpfs with 1 MiB left). The node keeps running and serving: its writes
// fail, the client has them acknowledged by the other replicas and
// stand-ins, reads are correct. Once the ballast is deleted its storage
// recovers (RocksDB polls the free space) and it takes writes again,
// without a restart. It failed in some runs before a log written over a
// spare reported ENOSPC as RocksDB does (the node took no writes until
// restarted), before the Merkle tree followed a write applied and then
// failed (the tree disagreed with storage), and, about one run in
// twenty-five, before RocksDB's info log dropped what the disk could not
// take (the node aborted on RocksDB's assertion at its next line).
TEST(FaultTest, NodeWhoseStorageMeetsAFullDiskKeepsRunningAndTakesWritesAgainOnceSpaceIsFreed) {
  const std::string prefix = "enospc:";
  constexpr size_t kValueBytes = SmallDiskCluster::kValueBytes;
  SmallDiskCluster small(0);
  if (!small.disk.mounted()) GTEST_SKIP() << "needs root to mount a tmpfs: " << small.disk.error();
  ASSERT_NO_FATAL_FAILURE(small.Start(prefix));
  ProcessCluster& c = small.c;
  SmallDisk& disk = small.disk;
  Client* client = small.client.get();
  const std::string full = SmallDiskCluster::kFull;
  const LoadResult& before = small.before;
  ASSERT_TRUE(disk.Fill(1u << 20));
  const uint64_t free_when_full = disk.FreeBytes();

  // Until the node's storage has failed writes for a while (a log grown
  // past its spare's zeros meets the full disk), and a bounded count. The
  // disk is filled again as the node deletes the logs its flushes freed.
  uint64_t errors = 0;
  size_t checks = 0;
  LoadResult during =
      WriteUniqueKeys(*client, prefix + "during:", 1, 20000, 180, 8, kValueBytes, [&] {
        if (++checks % 200 == 0) {
          (void)disk.Fill(1u << 20);
          errors = small.Stat("storage_errors");
        }
        return errors < 50;
      });
  ASSERT_GE(errors, 50u) << "the storage never met the full disk\n" << c.LogOf(full);
  ASSERT_TRUE(c.Running(full)) << c.LogOf(full);
  EXPECT_LE(during.failed, during.attempts / 100) << during.failed << " of " << during.attempts;
  size_t read_ok = 0;
  for (size_t i = 0; i < during.acked.size(); i += 10) {
    Result<GetResult> r = client->Get(during.acked[i]);
    read_ok += r.ok() && r->values.size() == 1 &&
               r->values[0] == ValueOf(prefix + "during:", during.acked[i], kValueBytes);
  }
  EXPECT_EQ(read_ok, (during.acked.size() + 9) / 10);
  size_t kept = 0, replicated_by_full = 0;
  for (const std::string& key : before.acked) {
    const std::vector<NodeId> primaries = Primaries(*client, key);
    if (std::find(primaries.begin(), primaries.end(), full) == primaries.end()) continue;
    ++replicated_by_full;
    Result<SiblingSet> s = c.StoredOn(full, key);
    kept += s.ok() && s->size() == 1 && (*s)[0].value == ValueOf(prefix, key, kValueBytes);
  }
  EXPECT_EQ(kept, replicated_by_full) << "of the keys written before the disk filled";

  disk.Free();
  const auto freed = Clock::now();
  // Its storage takes writes again: keys written after it recovered are
  // stored on it, through the writes themselves or the repairs after them.
  size_t round = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        const LoadResult later = WriteUniqueKeys(
            *client, prefix + "later" + std::to_string(round++) + ":", 50, 60, 20, 8, kValueBytes);
        for (const std::string& key : later.acked) {
          const std::vector<NodeId> primaries = Primaries(*client, key);
          if (std::find(primaries.begin(), primaries.end(), full) == primaries.end()) continue;
          Result<SiblingSet> s = c.StoredOn(full, key);
          if (s.ok() && !s->empty()) return true;
        }
        return false;
      },
      90000, 1000))
      << c.LogOf(full);
  const double recovered_s = SecondsSince(freed);
  EXPECT_TRUE(c.Running(full));
  const std::string log = c.LogOf(full);
  EXPECT_NE(log.find("No space left"), std::string::npos) << log;
  std::cout << "[ fault ] " << full << "'s storage met a full disk (" << free_when_full / 1024
            << " KiB free): " << during.acked.size() << " of " << during.attempts
            << " writes acknowledged (" << during.failed << " failed) beside " << errors
            << " storage errors on it, " << read_ok
            << " reads correct; space freed: it stored writes again after " << recovered_s
            << " s, without a restart\n";
}

// R12: the nodes' wall clocks run +60 s, -60 s and +1 s off (an LD_PRELOAD
// shim, tests/process/skew_clock.cc). Causal mode orders versions by their
// clocks and never by time: each write, coordinated by each node in turn
// with the previous write's context, supersedes the one before.
TEST(FaultTest, SkewedNodeClocksDoNotReorderCausalWrites) {
  constexpr int kRounds = 30;
  ProcessCluster c(3, kFastConfig);
  const std::string bin = std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
  const std::map<std::string, int64_t> skew_ms = {{"n1", 60000}, {"n2", -60000}, {"n3", 1000}};
  for (const auto& [id, ms] : skew_ms) {
    c.SetEnv(id, "LD_PRELOAD=" + bin + "/libdynamo_skew_clock.so");
    c.SetEnv(id, "DYNAMO_SKEW_MS=" + std::to_string(ms));
  }
  ASSERT_TRUE(c.Start().ok());
  const std::string key = "skewed";
  const std::vector<std::string> nodes = {"n1", "n2", "n3"};
  VersionVector context;
  int64_t worst_stamp_error_ms = 0, last_stamp = 0;
  for (int i = 0; i < kRounds; ++i) {
    const std::string& via = nodes[i % 3];
    const std::string value = "v" + std::to_string(i);
    const int64_t wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
    Result<proto::Message> r =
        cli::CallNode(c.Address(via), proto::CoordPutRequest{key, context, value, false}, 5000);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const auto* reply = std::get_if<proto::CoordPutReply>(&r->body);
    ASSERT_NE(reply, nullptr);
    ASSERT_EQ(reply->siblings.size(), 1u) << "round " << i << " via " << via;
    EXPECT_EQ(reply->siblings[0].value, value);
    // The coordinator stamped its own skewed clock, or the stamp of the
    // version it superseded where that is later (a write is never stamped
    // before what it supersedes).
    const int64_t stamp = static_cast<int64_t>(reply->siblings[0].timestamp_ms);
    const int64_t stamp_error = stamp - std::max(wall_ms + skew_ms.at(via), last_stamp);
    last_stamp = stamp;
    worst_stamp_error_ms = std::max(worst_stamp_error_ms, std::abs(stamp_error));
    for (const std::string& other : nodes) {
      if (other == via) continue;
      Result<proto::Message> ack =
          cli::CallNode(c.Address(other), proto::ReplicaPutRequest{key, reply->siblings, ""}, 5000);
      ASSERT_TRUE(ack.ok() && std::holds_alternative<proto::Ack>(ack->body))
          << ack.status().ToString();
    }
    context = ContextOf(reply->siblings);
  }
  EXPECT_LT(worst_stamp_error_ms, 5000);
  for (const std::string& id : nodes) {
    Result<SiblingSet> s = c.StoredOn(id, key);
    ASSERT_TRUE(s.ok());
    ASSERT_EQ(s->size(), 1u) << id;
    EXPECT_EQ((*s)[0].value, "v" + std::to_string(kRounds - 1)) << id;
  }
  // The SDK's read-modify-write on the same cluster: every append survives.
  auto client = Open(c, 3);
  ASSERT_TRUE(client);
  std::string expected;
  for (int i = 0; i < kRounds; ++i) {
    Result<GetResult> got = client->Get("appends");
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_LE(got->values.size(), 1u);
    WriteOptions wo;
    wo.context = got->context;
    expected += "," + std::to_string(i);
    ASSERT_TRUE(
        client->Put("appends", (got->found ? got->values[0] : "") + "," + std::to_string(i), wo)
            .ok());
  }
  Result<GetResult> last = client->Get("appends");
  ASSERT_TRUE(last.ok());
  ASSERT_EQ(last->values.size(), 1u);
  EXPECT_EQ(last->values[0], expected);
  std::cout << "[ fault ] clocks skewed +60 s, -60 s, +1 s: " << kRounds
            << " writes coordinated by each node in turn each superseded the last (stamps within "
            << worst_stamp_error_ms
            << " ms of each node's skewed clock, or of the stamp superseded where later); "
            << kRounds << " SDK read-modify-writes kept every append\n";
}

// W4: thousands of connections that open and never send. At
// node.max_connections (1,024) a new connection replaces the one idle
// longest, so the node stays reachable for new clients and peers.
TEST(FaultTest, ThousandsOfSilentConnectionsDoNotLockANodeOut) {
  constexpr size_t kSilent = 1500;
  rlimit rl{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < kSilent + 512)
    GTEST_SKIP() << "needs " << kSilent + 512 << " open files, ulimit allows " << rl.rlim_cur;
  ProcessCluster c(3, kFastConfig);
  ASSERT_TRUE(c.Start().ok());
  const net::Endpoint target = c.Address("n1");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(target.port);
  ASSERT_EQ(::inet_pton(AF_INET, target.host.c_str(), &addr.sin_addr), 1);
  std::vector<int> silent;
  for (size_t i = 0; i < kSilent; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << i;
    silent.push_back(fd);
  }
  SleepMs(1500);  // every silent connection now idle longer than the node's 1 s threshold
  // New connections are served: an admin call, and a client that connects now.
  Result<cli::NodeStatsView> stats = c.Stats("n1");
  EXPECT_TRUE(stats.ok()) << stats.status().ToString();
  auto client = Open(c, 1);
  ASSERT_TRUE(client);
  size_t served = 0;
  for (int i = 0; i < 20; ++i) {
    const std::string key = "reachable:" + std::to_string(i);
    Result<std::string> put = client->Put(key, "v");
    Result<GetResult> got = client->Get(key);
    served += put.ok() && got.ok() && got->values == std::vector<std::string>{"v"};
  }
  EXPECT_EQ(served, 20u);
  size_t closed_by_node = 0;
  for (int fd : silent) {
    char byte;
    closed_by_node += ::recv(fd, &byte, 1, MSG_DONTWAIT) == 0;
    ::close(fd);
  }
  EXPECT_GT(closed_by_node, kSilent - 1024);
  std::cout << "[ fault ] " << kSilent
            << " silent connections to n1 (node.max_connections 1024): " << closed_by_node
            << " closed by the node; afterwards a new admin call "
            << (stats.ok() ? "served" : "refused") << ", a new client served " << served
            << " of 20 writes and reads\n";
}

// D4: one flipped byte in a node's table file. The node stops rather than
// serve or spread what it cannot verify: building its Merkle trees at start
// meets the bad block's checksum, and it exits naming the file. Reads
// meanwhile come from the other replicas. Its next start scrubs: it keeps
// every partition that reads back whole and anti-entropy refills the rest.
// A second corruption while the first one's damaged copy is still kept waits
// for the operator's --scrub.
TEST(FaultTest, FlippedByteInATableFileIsNeverServedAndAScrubKeepsTheRest) {
  constexpr int kExitCorruptData = 4;  // storage-node's kExitCorruptData
  const std::string prefix = "flip:";
  constexpr size_t kKeys = 3000, kValueBytes = 200;
  // Every tree checked against storage every 2 s, while the keys are written too.
  ProcessCluster c(3,
                   "[gossip]\ninterval_ms = 200\n"
                   "[anti_entropy]\ncycle_pause_ms = 1000\ntree_check_interval_ms = 2000\n"
                   "[transfer]\nhandoff_delay_ms = 1000\n");
  ASSERT_TRUE(c.Start().ok());
  auto client = Open(c, 3);
  ASSERT_TRUE(client);
  LoadResult load = WriteUniqueKeys(*client, prefix, kKeys, kKeys + 500, 60, 16, kValueBytes);
  ASSERT_EQ(load.acked.size(), kKeys);
  const std::string bad = "n2";
  const std::string data = c.options().dir + "/" + bad + "/data";
  // Stops the node, restarts it once so that its log is replayed into a table
  // file (RocksDB flushes on recovery), then, stopped again or once its trees
  // are built, flips a byte in the middle of its largest table file.
  auto flip = [&](bool running, std::filesystem::path* table, uintmax_t* size) {
    ASSERT_EQ(c.Terminate(bad), 0);
    ASSERT_TRUE(c.Spawn(bad).ok());
    ASSERT_TRUE(WaitFor(
        [&] {
          Result<cli::NodeStatsView> s = c.Stats(bad);
          return s.ok() && s->Get("trees_ready") == 1;
        },
        30000));
    if (!running) ASSERT_EQ(c.Terminate(bad), 0);
    ASSERT_NO_FATAL_FAILURE(FlipAByteOfTheLargestTable(data + "/rocksdb", table, size));
  };
  auto kept_aside = [&] {
    size_t n = 0;
    for (const auto& f : std::filesystem::directory_iterator(data)) {
      n += f.path().filename().string().starts_with("rocksdb.corrupt-");
    }
    return n;
  };
  std::filesystem::path largest;
  uintmax_t size = 0;
  ASSERT_NO_FATAL_FAILURE(flip(false, &largest, &size));
  ASSERT_TRUE(c.Spawn(bad).ok());
  const int exit_code = c.WaitExit(bad, 30000);
  const std::string log = c.LogOf(bad);
  ASSERT_EQ(exit_code, kExitCorruptData) << log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
  EXPECT_NE(log.find("Corruption"), std::string::npos);
  EXPECT_NE(log.find(largest.filename().string()), std::string::npos);

  size_t correct = 0;
  for (const std::string& key : load.acked) {
    Result<GetResult> r = client->Get(key);
    correct += r.ok() && r->values == std::vector<std::string>{ValueOf(prefix, key, kValueBytes)};
  }
  EXPECT_EQ(correct, kKeys);

  // The next start scrubs by itself (storage.scrub_after_corruption).
  ASSERT_TRUE(c.Spawn(bad).ok());
  const Clock::time_point back = Clock::now();
  ASSERT_TRUE(WaitFor([&] { return c.Stats(bad).ok(); }, 60000)) << c.LogOf(bad);
  const std::string scrub_log = c.LogOf(bad);
  EXPECT_NE(scrub_log.find("scrubbing (storage.scrub_after_corruption)"), std::string::npos);
  const std::regex summary(R"(scrub: (\d+) entries \(\d+ bytes\) read back intact, (\d+) )"
                           R"(partitions with data whole; left out: (\d+) partitions)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(scrub_log, m, summary)) << scrub_log;
  const uint64_t kept_entries = std::stoull(m[1]), kept_partitions = std::stoull(m[2]),
                 lost_partitions = std::stoull(m[3]);
  EXPECT_GE(lost_partitions, 1u);
  EXPECT_GT(kept_partitions, 10 * lost_partitions);
  EXPECT_EQ(kept_aside(), 1u);
  auto everywhere = [&](const std::string& key, const std::vector<ReplicaVersions>& rs) {
    return HoldsOnly(rs, 3, ValueOf(prefix, key, kValueBytes));
  };
  std::vector<std::string> missing = Converge(*client, load.acked, everywhere, 120000);
  for (size_t i = 0; i < std::min<size_t>(missing.size(), 5); ++i)
    ADD_FAILURE() << Describe(*client, missing[i]);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys short of 3 copies";
  const double refilled_s = SecondsSince(back);

  // The nodes that ran through the load checked their trees meanwhile, and
  // no write was taken for a disagreement.
  for (const char* id : {"n1", "n3"}) {
    Result<cli::NodeStatsView> s = c.Stats(id);
    ASSERT_TRUE(s.ok()) << id;
    EXPECT_GT(s->Get("trees_checked"), 0u) << id;
    EXPECT_EQ(s->Get("tree_keys_corrected", 1), 0u) << id;
  }

  // A second corruption, while the node runs and no request reads the bad
  // block: its tree check does, and stops it. The first one's damaged copy
  // is still kept, so the node refuses to scrub by itself, and scrubs when
  // told to.
  ASSERT_NO_FATAL_FAILURE(flip(true, &largest, &size));
  const Clock::time_point flipped = Clock::now();
  ASSERT_EQ(c.WaitExit(bad, 30000), kExitCorruptData) << c.LogOf(bad);
  const double found_s = SecondsSince(flipped);
  EXPECT_NE(c.LogOf(bad).find(largest.filename().string()), std::string::npos);
  ASSERT_TRUE(c.Spawn(bad).ok());
  ASSERT_EQ(c.WaitExit(bad, 30000), kExitCorruptData);
  EXPECT_NE(c.LogOf(bad).find("an earlier scrub's damaged copy is still kept"), std::string::npos)
      << c.LogOf(bad);
  ASSERT_TRUE(c.Spawn(bad, {"--scrub"}).ok());
  ASSERT_TRUE(WaitFor([&] { return c.Stats(bad).ok(); }, 60000)) << c.LogOf(bad);
  EXPECT_EQ(kept_aside(), 2u);
  missing = Converge(*client, load.acked, everywhere, 120000);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys short of 3 copies";
  std::cout << "[ fault ] one byte flipped in " << bad << "'s " << largest.filename().string()
            << " (" << size << " bytes): it stopped while building its Merkle trees (exit status "
            << exit_code << ", the file named in its log); " << correct << " of " << kKeys
            << " reads correct meanwhile; its next start scrubbed: it kept " << kept_entries
            << " entries in " << kept_partitions << " partitions and left out " << lost_partitions
            << "; every key on its 3 replicas " << refilled_s
            << " s later; a second byte flipped while it ran was found by its tree check "
            << found_s << " s later, and it waited for --scrub, then the same\n";
}

// Anti-entropy moves sets of any size within the frame limit: with 16 KiB
// frames, a wiped node pulls back 200 keys of 7,000 bytes (a Fetch of its
// 256-key batch would answer 1.4 MB in one frame; a peer answers what fits
// and the rest is asked for again, and repairs are pushed in as many
// messages as they need).
TEST(FaultTest, AntiEntropyRestoresValuesThatFillItsFrames) {
  constexpr size_t kKeys = 200, kValueBytes = 7000;
  ProcessCluster c(3, std::string(kFastConfig) +
                          "[limits]\nvalue_bytes_max = 8192\nkey_bytes_max = 1024\n"
                          "frame_bytes_max = 16384\n");
  ASSERT_TRUE(c.Start().ok());
  auto client = Open(c, 3);
  ASSERT_TRUE(client);
  LoadResult load = WriteUniqueKeys(*client, "big:", kKeys, kKeys * 2, 120, 8, kValueBytes);
  ASSERT_EQ(load.acked.size(), kKeys);
  auto replicated = [&](const std::string& key, const std::vector<ReplicaVersions>& rs) {
    return HoldsOnly(rs, 3, ValueOf("big:", key, kValueBytes));
  };
  ASSERT_TRUE(Converge(*client, load.acked, replicated, 120000).empty());
  c.Kill9("n3");
  c.Wipe("n3");
  ASSERT_TRUE(c.Spawn("n3").ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        Result<cli::NodeStatsView> s = c.Stats("n3");
        return s.ok() && s->Get("catching_up", 1) == 0 && s->Get("epoch") > 0;
      },
      120000))
      << "the wiped node never finished catching up";
  std::vector<std::string> missing = Converge(*client, load.acked, replicated, 60000);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys not restored";
}

// D4 at a start: one node holds 640 keys in 64 partitions (a few to a
// partition, so every block of its table holds some partition's first key,
// which reading its state at start probes). A flipped byte stops that start
// with exit status 4 and leaves the scrub mark, so the next start scrubs.
TEST(FaultTest, CorruptionMetWhileReadingTheNodesStateLeavesTheScrubMark) {
  constexpr int kExitCorruptData = 4;  // storage-node's kExitCorruptData
  ProcessCluster c(1);
  ASSERT_TRUE(c.Start().ok());
  for (int i = 0; i < 640; ++i) {
    ASSERT_TRUE(c.Put("n1", "state:" + std::to_string(i), std::string(100, 'v')).ok());
  }
  const std::string data = c.options().dir + "/n1/data";
  ASSERT_EQ(c.Terminate("n1"), 0);
  ASSERT_TRUE(c.Spawn("n1").ok());  // replays its log into a table file
  ASSERT_TRUE(WaitFor([&] { return c.Stats("n1").ok(); }, 30000)) << c.LogOf("n1");
  ASSERT_EQ(c.Terminate("n1"), 0);
  std::filesystem::path table;
  uintmax_t size = 0;
  ASSERT_NO_FATAL_FAILURE(FlipAByteOfTheLargestTable(data + "/rocksdb", &table, &size));
  ASSERT_TRUE(c.Spawn("n1").ok());
  EXPECT_EQ(c.WaitExit("n1", 30000), kExitCorruptData) << c.LogOf("n1");
  EXPECT_NE(c.LogOf("n1").find("reading the node's state"), std::string::npos) << c.LogOf("n1");
  EXPECT_TRUE(std::filesystem::exists(data + "/rocksdb.scrub-needed"));
  ASSERT_TRUE(c.Spawn("n1").ok());
  ASSERT_TRUE(WaitFor([&] { return c.Stats("n1").ok(); }, 60000)) << c.LogOf("n1");
  EXPECT_NE(c.LogOf("n1").find("scrubbing (storage.scrub_after_corruption)"), std::string::npos);
}

// A crash while a scrub swapped the databases (after the damaged one was put
// aside, before the copy took its place and the mark was cleared): the next
// start finishes that scrub. Before, it took the scrub's own kept-aside copy
// for an earlier scrub's and refused to start (exit 4), restart after restart.
TEST(FaultTest, AScrubInterruptedWhileSwappingIsFinishedAtTheNextStart) {
  ProcessCluster c(1);
  ASSERT_TRUE(c.Start().ok());
  ASSERT_TRUE(c.Put("n1", "kept", "v").ok());
  ASSERT_EQ(c.Terminate("n1"), 0);
  const std::string db = c.options().dir + "/n1/data/rocksdb";
  const std::string aside = db + ".corrupt-20261205T000000Z";
  std::filesystem::rename(db, aside);
  std::filesystem::copy(aside, db + ".scrub", std::filesystem::copy_options::recursive);
  { std::ofstream(db + ".scrub-needed") << aside; }
  ASSERT_TRUE(c.Spawn("n1").ok());
  ASSERT_TRUE(WaitFor([&] { return c.Stats("n1").ok(); }, 60000)) << c.LogOf("n1");
  EXPECT_NE(c.LogOf("n1").find("finishing the scrub a crash interrupted"), std::string::npos)
      << c.LogOf("n1");
  EXPECT_FALSE(std::filesystem::exists(db + ".scrub-needed"));
  EXPECT_FALSE(std::filesystem::exists(db + ".scrub"));
  EXPECT_TRUE(std::filesystem::exists(aside));
  Result<SiblingSet> kept = c.StoredOn("n1", "kept");
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  ASSERT_EQ(kept->size(), 1u);
  EXPECT_EQ((*kept)[0].value, "v");
}

TEST(FaultTest, WipedNodeIsRestoredByAntiEntropy) {
  constexpr size_t kNodes = 5, kKeys = 3000, kValueBytes = 200;
  ProcessCluster c(kNodes, kFastConfig);
  ASSERT_TRUE(c.Start().ok());
  auto client = Open(c, kNodes);
  ASSERT_TRUE(client);
  LoadResult load = WriteUniqueKeys(*client, "wipe:", kKeys, kKeys * 2, 300, 16, kValueBytes);
  ASSERT_EQ(load.acked.size(), kKeys);
  auto replicated = [&](const std::string& key, const std::vector<ReplicaVersions>& rs) {
    return HoldsOnly(rs, 3, ValueOf("wipe:", key, kValueBytes));
  };
  ASSERT_TRUE(Converge(*client, load.acked, replicated, 120000).empty());

  const std::string victim = "n3";
  std::vector<std::string> victim_keys;
  size_t missing_bytes = 0;
  for (const std::string& key : load.acked) {
    std::vector<NodeId> p = Primaries(*client, key);
    if (std::find(p.begin(), p.end(), victim) == p.end()) continue;
    victim_keys.push_back(key);
    Result<SiblingSet> stored = c.StoredOn(victim, key);
    ASSERT_TRUE(stored.ok()) << stored.status().ToString();
    missing_bytes += proto::EncodeSiblingSet(*stored).size();
  }
  auto ae_bytes = [&] { return c.SumStat("ae_bytes_fetched") + c.SumStat("ae_bytes_pushed"); };
  c.Kill9(victim);
  const uint64_t before = ae_bytes();
  c.Wipe(victim);
  ASSERT_TRUE(c.Spawn(victim).ok());
  const Clock::time_point restart = Clock::now();

  // Reads go on meanwhile: the wiped node refuses them until it caught up.
  size_t reads = 0, reads_ok = 0;
  auto caught_up = [&] {
    for (size_t i = 0; i < 20; ++i) {
      const std::string& key = victim_keys[(reads * 7919) % victim_keys.size()];
      Result<GetResult> r = client->Get(key);
      ++reads;
      reads_ok += r.ok() && r->values == std::vector<std::string>{ValueOf("wipe:", key, kValueBytes)};
    }
    Result<cli::NodeStatsView> s = c.Stats(victim);
    return s.ok() && s->Get("catching_up", 1) == 0 && s->Get("epoch") > 0;
  };
  ASSERT_TRUE(WaitFor(caught_up, 120000, 50)) << "the wiped node never finished catching up";
  std::vector<std::string> missing = Converge(*client, victim_keys, replicated, 60000);
  const double restore_s = SecondsSince(restart);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys not restored";
  const uint64_t moved = ae_bytes() - before;
  const double ratio = static_cast<double>(moved) / static_cast<double>(missing_bytes);
  EXPECT_EQ(reads_ok, reads);
  EXPECT_LE(ratio, 1.2);
  std::cout << "[ fault ] wiped " << victim << ": " << victim_keys.size() << " keys (" << missing_bytes
            << " bytes) restored in " << restore_s << " s; anti-entropy moved " << moved
            << " bytes, " << ratio << " x the bytes missing; " << reads_ok << " of " << reads
            << " reads meanwhile answered correctly\n";
}

TEST(FaultTest, WriteCoordinatedByAReplicaThatLostTheKeySurvives) {
  // The wiped node starts its catch-up round one gossip interval (2 s) after
  // it started, and the others' next rounds are a minute away: the writes
  // below reach it while it lacks v1.
  ProcessCluster c(3, "[gossip]\ninterval_ms = 2000\n[anti_entropy]\ncycle_pause_ms = 60000\n");
  ASSERT_TRUE(c.Start().ok());
  auto client = Open(c, 3);
  ASSERT_TRUE(client);
  const std::string key = "lost-clock";
  const std::string a = "n2";  // coordinates every write; n1 is the seed it rejoins through
  const std::vector<NodeId> primaries = Primaries(*client, key);
  ASSERT_EQ(primaries.size(), 3u);
  auto coordinate = [&](proto::CoordPutRequest req) {
    Result<proto::Message> r = cli::CallNode(c.Address(a), std::move(req), 3000);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::get<proto::CoordPutReply>(r->body) : proto::CoordPutReply{};
  };
  auto replicate = [&](const SiblingSet& set) {
    for (const NodeId& n : primaries) {
      if (n == a) continue;
      Result<proto::Message> ack = cli::CallNode(c.Address(n), proto::ReplicaPutRequest{key, set, ""}, 3000);
      EXPECT_TRUE(ack.ok()) << n << ": " << ack.status().ToString();
    }
  };
  const proto::CoordPutReply v1 = coordinate(proto::CoordPutRequest{key, {}, "v1", false});
  ASSERT_EQ(v1.siblings.size(), 1u);
  replicate(v1.siblings);

  c.Kill9(a);
  c.Wipe(a);
  ASSERT_TRUE(c.Spawn(a).ok());
  ASSERT_TRUE(WaitFor([&] {
    Result<cli::NodeStatsView> s = c.Stats(a);
    return s.ok() && s->Get("epoch") > 0;
  }, 30000, 10));
  // A blind write first: its reply shows `a` holds nothing but it.
  const proto::CoordPutReply v3 = coordinate(proto::CoordPutRequest{key, {}, "v3", false});
  ASSERT_EQ(v3.siblings.size(), 1u) << "the wiped node already had v1 back; the case was not exercised";
  // Then a successor of v1 with a context that names v1's dot.
  proto::CoordPutRequest successor{key, ContextOf(v1.siblings), "v2", false};
  const proto::CoordPutReply v2 = coordinate(successor);
  EXPECT_NE(v2.dot.actor, v1.dot.actor) << "a wiped node must not reuse its old actor id";
  EXPECT_FALSE(ContextOf(v1.siblings).Covers(v2.dot)) << "the new write looks already seen";
  replicate(v2.siblings);
  const Dot v2_dot = v2.dot, v3_dot = v3.dot;

  // After anti-entropy: v2 replaced v1 everywhere, and v3 stands beside it.
  auto settled = [&](const std::string&, const std::vector<ReplicaVersions>& rs) {
    if (rs.size() != 3) return false;
    for (const ReplicaVersions& rv : rs) {
      std::multiset<std::string> values;
      for (const auto& v : rv.versions) values.insert(v.value);
      if (!rv.error.empty() || values != std::multiset<std::string>{"v2", "v3"}) return false;
    }
    return true;
  };
  EXPECT_TRUE(Converge(*client, {key}, settled, 60000).empty()) << Describe(*client, key);
  Result<GetResult> after = client->Get(key);
  ASSERT_TRUE(after.ok());
  std::multiset<std::string> got(after->values.begin(), after->values.end());
  EXPECT_EQ(got, (std::multiset<std::string>{"v2", "v3"}));
  std::cout << "[ fault ] lost clock: " << a << " rejoined with a new actor (" << v1.dot.actor << " -> "
            << v2_dot.actor << "); its writes v2 (" << v2_dot.counter << ") and v3 (" << v3_dot.counter
            << ") survive on all 3 replicas\n";
}

TEST(FaultTest, DeletesDuringAnOutageDoNotResurrect) {
  constexpr size_t kNodes = 5, kKeys = 300;
  ProcessCluster c(
      kNodes,
      "[gossip]\ninterval_ms = 200\n"
      "[anti_entropy]\ncycle_pause_ms = 1000\ntombstone_grace_ms = 2000\nclock_skew_max_ms = 500\n"
      "purge_interval_ms = 500\n");
  ASSERT_TRUE(c.Start().ok());
  auto client = Open(c, kNodes);
  ASSERT_TRUE(client);
  LoadResult load = WriteUniqueKeys(*client, "del:", kKeys, kKeys * 2, 120, 8);
  ASSERT_EQ(load.acked.size(), kKeys);
  auto replicated = [](const std::string& key, const std::vector<ReplicaVersions>& rs) {
    return HoldsOnly(rs, 3, ValueOf("del:", key));
  };
  ASSERT_TRUE(Converge(*client, load.acked, replicated, 60000).empty());

  const std::string away = "n4";
  c.Kill9(away);
  const Clock::time_point outage = Clock::now();
  size_t deleted = 0;
  for (const std::string& key : load.acked) {
    Result<GetResult> r = client->Get(key);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    WriteOptions wo;
    wo.context = r->context;
    deleted += client->Delete(key, wo).ok();
  }
  EXPECT_EQ(deleted, kKeys);
  SleepMs(4000);  // past the grace period: `away` catches up when it returns
  ASSERT_TRUE(c.Spawn(away).ok());
  const double outage_s = SecondsSince(outage);
  const Clock::time_point back = Clock::now();

  auto gone = [](const std::string&, const std::vector<ReplicaVersions>& rs) {
    if (rs.size() != 3) return false;
    for (const ReplicaVersions& rv : rs) {
      if (!rv.error.empty() || !rv.versions.empty()) return false;
    }
    return true;
  };
  std::vector<std::string> left = Converge(*client, load.acked, gone, 120000);
  const double purge_s = SecondsSince(back);
  for (size_t i = 0; i < std::min<size_t>(left.size(), 5); ++i) ADD_FAILURE() << Describe(*client, left[i]);
  EXPECT_TRUE(left.empty()) << left.size() << " keys still hold versions";
  // Several more anti-entropy rounds: nothing comes back.
  size_t resurrected = 0;
  const Clock::time_point watch = Clock::now();
  while (SecondsSince(watch) < 5) {
    for (const std::string& key : load.acked) {
      Result<GetResult> r = client->Get(key);
      resurrected += r.ok() && r->found;
    }
  }
  EXPECT_EQ(resurrected, 0u);
  const uint64_t purged = c.SumStat("tombstones_purged");
  EXPECT_GT(purged, 0u);
  std::cout << "[ fault ] deletes during a " << outage_s << " s outage of " << away << ": " << deleted
            << " keys deleted, tombstones purged on every replica " << purge_s << " s after it returned ("
            << purged << " purged); resurrected " << resurrected << "\n";
}

// Two network namespaces joined by a veth pair, created by the test: the
// link is cut and restored to partition the cluster.
class NetnsPair {
 public:
  static constexpr const char* kHostA = "10.213.0.1";
  static constexpr const char* kHostB = "10.213.0.2";

  NetnsPair() : a_("dyn" + std::to_string(::getpid()) + "a"), b_("dyn" + std::to_string(::getpid()) + "b") {}
  ~NetnsPair() {
    Run("ip netns del " + a_);
    Run("ip netns del " + b_);
  }

  // Empty on success, else why the namespaces could not be made.
  std::string Create() {
    if (::geteuid() != 0) return "not running as root";
    if (Run("ip -V") != 0) return "no ip command (iproute2)";
    for (const std::string& cmd : {"ip netns add " + a_, "ip netns add " + b_,
                                   "ip -n " + a_ + " link add va type veth peer name vb netns " + b_,
                                   "ip -n " + a_ + " addr add " + std::string(kHostA) + "/24 dev va",
                                   "ip -n " + b_ + " addr add " + std::string(kHostB) + "/24 dev vb",
                                   "ip -n " + a_ + " link set lo up", "ip -n " + b_ + " link set lo up",
                                   "ip -n " + a_ + " link set va up", "ip -n " + b_ + " link set vb up"}) {
      if (Run(cmd) != 0) return "'" + cmd + "' failed";
    }
    return "";
  }
  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }

  void Cut(bool cut) {
    const std::string state = cut ? "down" : "up";
    Run("ip -n " + a_ + " link set va " + state);
    Run("ip -n " + b_ + " link set vb " + state);
  }

  static bool HasNft() { return Run("nft --version") == 0; }

  // Drops `percent` of the packets one side sends to the other (`from_a`:
  // A's to B), each drawn at random; 100 is a one-way partition, the other
  // direction still delivering. The sender's namespace counts both: what it
  // dropped, what arrived from the other side.
  bool Drop(bool from_a, int percent) {
    const std::string other = from_a ? kHostB : kHostA;
    const std::string nft = "ip netns exec " + Side(from_a) + " nft ";
    const std::string t = std::string(" inet ") + kTable + " ";
    const std::string chance =
        percent >= 100 ? "" : " numgen random mod 100 '<' " + std::to_string(percent);
    for (const std::string& cmd :
         {nft + "add table" + t,
          nft + "'add chain" + t + "out { type filter hook output priority 0; }'",
          nft + "'add chain" + t + "in { type filter hook input priority 0; }'",
          nft + "add rule" + t + "out ip daddr " + other + chance + " counter drop",
          nft + "add rule" + t + "in ip saddr " + other + " counter"}) {
      if (Run(cmd) != 0) return false;
    }
    return true;
  }
  void Heal(bool from_a) {
    Run("ip netns exec " + Side(from_a) + " nft delete table inet " + kTable);
  }
  // Packets dropped from `from_a`'s side and packets that arrived there from
  // the other side, so far.
  std::pair<uint64_t, uint64_t> DropCounts(bool from_a) {
    uint64_t dropped = 0, arrived = 0;
    const std::string cmd = "ip netns exec " + Side(from_a) + " nft list table inet " + kTable;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) return {0, 0};
    char line[512];
    while (std::fgets(line, sizeof(line), p) != nullptr) {
      const char* at = std::strstr(line, "packets ");
      if (at == nullptr) continue;
      const uint64_t n = std::strtoull(at + 8, nullptr, 10);
      (std::strstr(line, "daddr") != nullptr ? dropped : arrived) += n;
    }
    ::pclose(p);
    return {dropped, arrived};
  }

  // n1-n3 on side A, the others on side B.
  void PlaceSplit(ProcessCluster& c, size_t nodes) const {
    for (const std::string& id : NodeIds(nodes)) {
      const bool side_a = id <= "n3";
      c.Place(id, side_a ? a_ : b_, side_a ? kHostA : kHostB);
    }
  }

  // Runs body(i) for clients 0..n-1, each on its own thread in side A's
  // namespace when on_a(i) holds, else in side B's.
  std::vector<std::thread> Clients(size_t n, const std::function<bool(size_t)>& on_a,
                                   const std::function<void(size_t)>& body) const {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < n; ++i) threads.push_back(In(on_a(i) ? a_ : b_, [body, i] { body(i); }));
    return threads;
  }

  // Runs `fn` on a new thread inside namespace `ns`; threads it starts (a
  // client's I/O thread) stay there.
  static std::thread In(const std::string& ns, std::function<void()> fn) {
    return std::thread([ns, fn = std::move(fn)] {
      const int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
      const bool entered = fd >= 0 && ::setns(fd, CLONE_NEWNET) == 0;
      if (fd >= 0) ::close(fd);
      if (!entered) {
        ADD_FAILURE() << "cannot enter network namespace " << ns;
        return;
      }
      fn();
    });
  }

 private:
  static constexpr const char* kTable = "dynfault";
  static int Run(const std::string& cmd) {
    return std::system(("(" + cmd + ") >/dev/null 2>&1").c_str());
  }
  const std::string& Side(bool a) const { return a ? a_ : b_; }
  std::string a_, b_;
};

std::set<std::string> Items(const std::vector<std::string>& values) {
  std::set<std::string> items;
  for (const std::string& v : values) {
    std::stringstream ss(v);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (!item.empty()) items.insert(item);
    }
  }
  return items;
}

std::string Join(const std::set<std::string>& items) {
  std::string out;
  for (const std::string& i : items) out += (out.empty() ? "" : ",") + i;
  return out;
}

TEST(FaultTest, SetAddsFromFiveClientsSurviveRepeatingPartitions) {
  NetnsPair net;
  const std::string why = net.Create();
  if (!why.empty()) {
    GTEST_SKIP() << "partition test needs root and `ip netns` (" << why << "); skipped";
  }
  constexpr size_t kNodes = 5, kClients = 5, kAddsPerClient = 60, kCycles = 6;
  constexpr uint64_t kHalfCycleMs = 1500;
  // Adds spread over the whole schedule of cuts and heals.
  constexpr uint64_t kAddPauseMs = 2 * kHalfCycleMs * kCycles / kAddsPerClient;
  ProcessCluster c(kNodes, std::string("[node]\nallow_remote = true\n") + kFastConfig);
  net.PlaceSplit(c, kNodes);
  const std::string key = "set";
  std::mutex mu;
  std::set<std::string> acked;
  // Siblings stay at most one per client plus one per write that may have
  // been applied unacknowledged (failed in doubt) and one per read that
  // missed the reader's own acknowledged add: the write after it stands
  // beside that add rather than superseding it.
  size_t failed_adds = 0, in_doubt_adds = 0, stale_reads = 0, max_siblings = 0, cuts = 0;
  double converge_s = 0;
  NetnsPair::In(net.a(), [&] {
    ASSERT_TRUE(c.Start().ok());
    std::atomic<bool> stop{false};
    // Three clients beside n1-n3, two beside n4 and n5.
    std::vector<std::thread> clients = net.Clients(
        kClients, [](size_t i) { return i < 3; },
        [&](size_t i) {
          auto client = Open(c, kNodes, [](ClientOptions& o) {
            o.timeout_ms = 1000;
            o.resolver = [](const std::vector<std::string>& v) { return Join(Items(v)); };
          });
          ASSERT_TRUE(client);
          std::set<std::string> mine;  // this client's acknowledged adds
          for (size_t j = 0; j < kAddsPerClient && !stop; ++j) {
            const std::string item = "c" + std::to_string(i) + "-" + std::to_string(j);
            for (int attempt = 0; attempt < 20 && !stop; ++attempt) {
              Result<GetResult> r = client->Get(key);
              if (!r.ok()) {
                SleepMs(100);
                continue;
              }
              std::set<std::string> items = Items(r->values);
              const bool stale =
                  !std::includes(items.begin(), items.end(), mine.begin(), mine.end());
              items.insert(item);
              WriteOptions wo;
              wo.context = r->context;
              Result<std::string> put = client->Put(key, Join(items), wo);
              std::lock_guard<std::mutex> g(mu);
              stale_reads += stale;
              if (put.ok()) {
                acked.insert(item);
                mine.insert(item);
                break;
              }
              ++failed_adds;
              in_doubt_adds += put.status().in_doubt();
            }
            SleepMs(kAddPauseMs);
          }
        });
    auto inspector = Open(c, kNodes);
    ASSERT_TRUE(inspector);
    auto sample_siblings = [&] {
      for (const ReplicaVersions& rv : InspectAll(*inspector, key))
        max_siblings = std::max(max_siblings, rv.versions.size());
    };
    for (size_t cycle = 0; cycle < kCycles; ++cycle) {
      SleepMs(kHalfCycleMs);
      sample_siblings();
      net.Cut(true);
      // The cut is real: the far side does not answer.
      cuts += !cli::CallNode(c.Address("n4"), proto::StatsRequest{}, 300).ok();
      SleepMs(kHalfCycleMs);
      sample_siblings();
      net.Cut(false);
    }
    stop = true;
    for (std::thread& t : clients) t.join();

    auto reader = Open(c, kNodes);
    ASSERT_TRUE(reader);
    std::string detail;
    ASSERT_TRUE(cli::WaitForConvergence(c.RunningAddresses(), kNodes, 60000, &detail).ok()) << detail;
    const Clock::time_point healed = Clock::now();
    // Every replica ends with the same versions, and their union holds
    // every acknowledged add.
    auto merged_everywhere = [&](const std::string&, const std::vector<ReplicaVersions>& rs) {
      if (rs.size() != 3) return false;
      std::set<std::string> first;
      for (size_t r = 0; r < rs.size(); ++r) {
        if (!rs[r].error.empty()) return false;
        std::set<std::string> dots;
        for (const auto& v : rs[r].versions) dots.insert(v.dot);
        if (r == 0) first = dots;
        if (dots != first) return false;
        max_siblings = std::max(max_siblings, rs[r].versions.size());
      }
      return true;
    };
    EXPECT_TRUE(Converge(*reader, {key}, merged_everywhere, 60000).empty()) << Describe(*reader, key);
    converge_s = SecondsSince(healed);
    std::vector<std::string> values;
    const std::vector<ReplicaVersions> replicas = InspectAll(*reader, key);
    for (const auto& v : replicas[0].versions) values.push_back(v.value);
    const std::set<std::string> stored = Items(values);
    size_t lost = 0;
    for (const std::string& item : acked) lost += !stored.count(item);
    EXPECT_EQ(lost, 0u);
  }).join();
  EXPECT_EQ(cuts, kCycles);
  EXPECT_LE(max_siblings, kClients + in_doubt_adds + stale_reads);
  EXPECT_GE(acked.size(), kClients * kAddsPerClient / 4);
  std::cout << "[ fault ] five clients adding to one set under " << cuts
            << " partitions: " << acked.size() << " adds acknowledged, " << failed_adds
            << " attempts failed (" << in_doubt_adds << " in doubt), " << stale_reads
            << " reads missed the reader's own adds; at most " << max_siblings
            << " siblings; acknowledged adds lost " << (HasFailure() ? "see failures" : "0")
            << "; replicas agree " << converge_s << " s after the last heal\n";
}

// What four clients, two in each namespace of `net`, saw while `faults`
// ran on the test's thread: each writes unique keys to a 5-node cluster split
// over the two namespaces (and reads its last acknowledged key back), every
// call with a 1 s deadline. Afterwards a reader waits until every
// acknowledged key is on its 3 replicas and no hints are left.
struct FaultedRun {
  size_t calls = 0, failed = 0;
  size_t late = 0;  // calls that ended more than kCallSlackMs after their deadline
  uint64_t slowest_ms = 0;
  std::vector<std::string> acked, missing;
  double converge_s = 0;
  static constexpr uint64_t kTimeoutMs = 1000, kCallSlackMs = 1000;

  // The bounds every such run keeps, and its [ fault ] line after `what`.
  void ExpectBoundsAndReport(const std::string& what) const {
    EXPECT_EQ(late, 0u) << "slowest call " << slowest_ms << " ms";
    EXPECT_GT(acked.size(), 100u);
    EXPECT_EQ(missing.size(), 0u);
    std::cout << "[ fault ] " << what << ": " << calls << " client calls, " << failed
              << " failed, slowest " << slowest_ms << " ms (timeout " << kTimeoutMs << " ms); "
              << acked.size() << " writes acknowledged, " << missing.size()
              << " lost; replicas and hints settled " << converge_s
              << " s after the faults ended\n";
  }
};

FaultedRun WriteThroughNetworkFaults(NetnsPair& net, const std::string& prefix,
                                     const std::function<void()>& faults) {
  constexpr size_t kNodes = 5, kClients = 4, kWritesMax = 20000;
  constexpr uint64_t kSettleMs = 1500;
  ProcessCluster c(kNodes, std::string("[node]\nallow_remote = true\n") + kFastConfig);
  net.PlaceSplit(c, kNodes);
  std::mutex mu;
  FaultedRun run;
  NetnsPair::In(net.a(), [&] {
    ASSERT_TRUE(c.Start().ok());
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients = net.Clients(
        kClients, [](size_t i) { return i % 2 == 0; },
        [&](size_t i) {
          auto client =
              Open(c, kNodes, [](ClientOptions& o) { o.timeout_ms = FaultedRun::kTimeoutMs; });
          ASSERT_TRUE(client);
          std::string last;
          auto timed = [&](auto&& call) {
            const Clock::time_point start = Clock::now();
            const bool ok = call();
            const auto ms = static_cast<uint64_t>(
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start)
                    .count());
            std::lock_guard<std::mutex> g(mu);
            ++run.calls;
            run.failed += !ok;
            run.late += ms > FaultedRun::kTimeoutMs + FaultedRun::kCallSlackMs;
            run.slowest_ms = std::max(run.slowest_ms, ms);
            return ok;
          };
          for (size_t j = 0; j < kWritesMax && !stop; ++j) {
            const std::string key = prefix + std::to_string(i) + "-" + std::to_string(j);
            if (timed([&] { return client->Put(key, ValueOf(prefix, key)).ok(); })) {
              std::lock_guard<std::mutex> g(mu);
              run.acked.push_back(key);
              last = key;
            }
            if (!last.empty()) timed([&] { return client->Get(last).ok(); });
            SleepMs(5);
          }
        });
    SleepMs(kSettleMs);
    faults();
    stop = true;
    for (std::thread& t : clients) t.join();
    const Clock::time_point healed = Clock::now();
    auto reader = Open(c, kNodes);
    ASSERT_TRUE(reader);
    auto stored = [&](const std::string& key, const std::vector<ReplicaVersions>& rs) {
      return HoldsOnly(rs, 3, ValueOf(prefix, key));
    };
    run.missing = Converge(*reader, run.acked, stored, 120000,
                           [&] { return NodesHoldingHints(c, kNodes) == 0; });
    run.converge_s = SecondsSince(healed);
    for (size_t i = 0; i < std::min<size_t>(run.missing.size(), 5); ++i)
      ADD_FAILURE() << Describe(*reader, run.missing[i]);
  }).join();
  return run;
}

// Empty when `net` is made and nft is there, else why not.
std::string PrepareFilteredPair(NetnsPair& net) {
  std::string why = net.Create();
  if (why.empty() && !NetnsPair::HasNft()) why = "no nft command (nftables)";
  return why;
}

// One-way partitions: each side in turn loses every packet it sends to the
// other, while what the other sends still arrives (a node then applies
// requests whose answers never get back). Every client call ends within its
// deadline, and no acknowledged write is lost.
TEST(FaultTest, OneWayPartitionsEndEveryCallInItsTimeoutAndLoseNothing) {
  NetnsPair net;
  if (std::string why = PrepareFilteredPair(net); !why.empty()) {
    GTEST_SKIP() << "one-way partition test needs root, `ip netns` and `nft` (" << why
                 << "); skipped";
  }
  constexpr size_t kCuts = 4;
  constexpr uint64_t kCutMs = 3000, kHealMs = 1500;
  std::vector<std::pair<uint64_t, uint64_t>> counts;  // per cut: dropped, arrived
  const FaultedRun run = WriteThroughNetworkFaults(net, "oneway:", [&] {
    for (size_t cut = 0; cut < kCuts; ++cut) {
      const bool from_a = cut % 2 == 0;
      EXPECT_TRUE(net.Drop(from_a, 100));
      SleepMs(kCutMs);
      counts.push_back(net.DropCounts(from_a));
      net.Heal(from_a);
      SleepMs(kHealMs);
    }
  });
  ASSERT_EQ(counts.size(), kCuts);
  for (size_t cut = 0; cut < kCuts; ++cut) {
    // The cut dropped traffic, and the other direction kept delivering.
    EXPECT_GT(counts[cut].first, 0u) << "cut " << cut;
    EXPECT_GT(counts[cut].second, 0u) << "cut " << cut;
  }
  run.ExpectBoundsAndReport(std::to_string(kCuts) + " one-way partitions of " +
                            std::to_string(kCutMs) + " ms, alternating sides");
}

// Random packet loss on the real network stack, both ways between the
// namespaces (nft drops each packet with the given chance): TCP retransmits,
// calls slow down or time out, and still every call ends within its deadline
// and no acknowledged write is lost.
TEST(FaultTest, RandomPacketLossEndsEveryCallInItsTimeoutAndLosesNothing) {
  NetnsPair net;
  if (std::string why = PrepareFilteredPair(net); !why.empty()) {
    GTEST_SKIP() << "packet loss test needs root, `ip netns` and `nft` (" << why << "); skipped";
  }
  constexpr int kLossPercent[] = {5, 20};
  constexpr uint64_t kLossMs = 4000, kHealMs = 1500;
  std::vector<std::pair<uint64_t, uint64_t>> counts;  // per period and side: dropped, arrived
  const FaultedRun run = WriteThroughNetworkFaults(net, "loss:", [&] {
    for (int percent : kLossPercent) {
      EXPECT_TRUE(net.Drop(true, percent));
      EXPECT_TRUE(net.Drop(false, percent));
      SleepMs(kLossMs);
      for (bool from_a : {true, false}) {
        counts.push_back(net.DropCounts(from_a));
        net.Heal(from_a);
      }
      SleepMs(kHealMs);
    }
  });
  ASSERT_EQ(counts.size(), 2 * std::size(kLossPercent));
  for (size_t i = 0; i < counts.size(); ++i) {
    // Some packets were dropped, and most still arrived.
    EXPECT_GT(counts[i].first, 0u) << "period " << i / 2 << " side " << i % 2;
    EXPECT_GT(counts[i].second, counts[i].first) << "period " << i / 2 << " side " << i % 2;
  }
  run.ExpectBoundsAndReport("random packet loss both ways (" + std::to_string(kLossPercent[0]) +
                            "% then " + std::to_string(kLossPercent[1]) + "%, " +
                            std::to_string(kLossMs) + " ms each)");
}

}  // namespace
}  // namespace dynamo::test
