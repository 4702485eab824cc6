// Process tests: real dynamo-node daemons on loopback.
#include <arpa/inet.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>
#include <tuple>

#include "dynamo/proto/codec.h"
#include "process/process_cluster.h"

namespace dynamo::test {
namespace {

// Quicker timers for tests that wait on membership changes.
constexpr const char* kFastConfig =
    "[gossip]\ninterval_ms = 200\n[transfer]\nhandoff_delay_ms = 1000\n";

uint64_t NowMs() {
  using namespace std::chrono;
  return static_cast<uint64_t>(duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count());
}

// Waits until `pred` holds, polling; false after `timeout_ms`.
bool Eventually(const std::function<bool()>& pred, uint64_t timeout_ms) {
  const uint64_t deadline = NowMs() + timeout_ms;
  while (NowMs() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

std::string StateOf(ProcessCluster& c, const std::string& via, const std::string& id) {
  Result<cli::StatusView> v = cli::FetchStatus({c.Address(via)}, 2000);
  if (!v.ok()) return "?";
  for (const cli::MemberView& m : v->members) {
    if (m.id == id) return m.state;
  }
  return "absent";
}

// Runs a program beside the test binary and returns its stdout and exit code.
std::pair<std::string, int> RunTool(const std::string& args) {
  std::string self = std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
  std::string cmd = self + "/" + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && fgets(buf, sizeof(buf), p)) out += buf;
  int status = p ? ::pclose(p) : -1;
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// Every key is held by every node of its preference list, asked node by node.
void ExpectReplicated(ProcessCluster& c, const std::string& via, const std::vector<std::string>& keys) {
  Result<ClusterMap> map = c.Map(via);
  ASSERT_TRUE(map.ok());
  ASSERT_FALSE(map->next().has_value());
  // A node reads a partition it took over at the switch once it synced it
  // with the replicas it replaced.
  ASSERT_TRUE(Eventually([&] { return c.SumStat("switch_sync_partitions") == 0; }, 30000));
  for (const std::string& key : keys) {
    for (const NodeId& id : map->ring().PreferenceList(map->ring().KeyPartition(key))) {
      Result<SiblingSet> s = c.StoredOn(id, key);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      ASSERT_EQ(s->size(), 1u) << key << " on " << id;
      EXPECT_EQ((*s)[0].value, "value-" + key);
    }
  }
}

std::vector<std::string> PutKeys(ProcessCluster& c, int n) {
  std::vector<std::string> keys;
  for (int i = 0; i < n; ++i) {
    keys.push_back("key-" + std::to_string(i));
    Status s = c.Put("n1", keys.back(), "value-" + keys.back());
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  return keys;
}

// The negative control of the check every process test makes when its
// cluster goes away: a node log line saying a tree check found storage
// disagreeing with its trees fails the test.
TEST(ProcessTest, ATreeDisagreementInANodeLogFailsTheTest) {
  EXPECT_NONFATAL_FAILURE(
      {
        ProcessCluster c(1);
        EXPECT_TRUE(c.Start().ok());
        std::ofstream(c.options().dir + "/n1/node.log", std::ios::app)
            << "warning [n1] the Merkle tree of partition 3 disagreed with storage on 1 keys\n";
      },
      "disagreed with storage");
}

TEST(ProcessTest, ThreeAndFiveNodesFormOneRing) {
  for (size_t n : {3u, 5u}) {
    ProcessCluster c(n, kFastConfig);
    const uint64_t start = NowMs();
    Status s = c.Start();
    ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << c.LogOf("n2");
    std::cout << "[ proc ] " << n << " daemons formed one ring in " << NowMs() - start << " ms\n";
    auto [out, code] = RunTool("dynamoctl --seed " + c.Address("n2").ToString() + " status --json");
    ASSERT_EQ(code, 0) << out;
    EXPECT_EQ(out.find("{\"epoch\":"), 0u) << out;
    for (size_t i = 1; i <= n; ++i) {
      std::string id = "n" + std::to_string(i);
      EXPECT_NE(out.find("{\"id\":\"" + id + "\",\"address\":\"" + c.Address(id).ToString() +
                         "\",\"state\":\"up\",\"partitions\":"),
                std::string::npos)
          << out;
    }
    // The engine's counters come with the node's: the first log grew.
    Result<cli::NodeStatsView> stats = c.Stats("n1");
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_GE(stats->Get("logs_grown", 0), 1u);
    EXPECT_EQ(stats->Get("log_spare_failures", 99), 0u);
    EXPECT_NE(stats->Get("value_cache_misses", UINT64_MAX), UINT64_MAX);
    // The storage thread's: the ring was synced before the node acted on it.
    EXPECT_GE(stats->Get("log_syncs", 0), 1u);
    EXPECT_LE(stats->Get("log_syncs_spaced", UINT64_MAX), stats->Get("log_syncs", 0));
    // The default spacing is a share of the sync time, capped at 2 ms.
    EXPECT_LE(stats->Get("log_sync_spacing_us", UINT64_MAX), 2000u);
    // The listener's: at least the connection asking, and its buffers.
    EXPECT_GE(stats->Get("connections_open", 0), 1u);
    EXPECT_EQ(stats->Get("connections_refused", 99), 0u);
    EXPECT_EQ(stats->Get("connections_evicted", 99), 0u);
    EXPECT_GT(stats->Get("connection_buffer_bytes", 0), 0u);
  }
}

TEST(ProcessTest, KillNineIsSeenDownThenUpWithDataIntact) {
  ProcessCluster c(3);  // production gossip timing
  ASSERT_TRUE(c.Start().ok());
  std::vector<std::string> keys = PutKeys(c, 50);
  const uint64_t killed = NowMs();
  c.Kill9("n2");
  ASSERT_TRUE(Eventually([&] { return StateOf(c, "n1", "n2") == "down" && StateOf(c, "n3", "n2") == "down"; },
                         10000))
      << "n2 not seen down within 10 s";
  const uint64_t detect = NowMs() - killed;
  ASSERT_TRUE(c.Spawn("n2").ok());
  const uint64_t restarted = NowMs();
  ASSERT_TRUE(Eventually([&] { return StateOf(c, "n1", "n2") == "up" && StateOf(c, "n3", "n2") == "up"; },
                         10000))
      << "n2 not seen up within 10 s of its restart";
  std::cout << "[ proc ] kill -9 seen as down after " << detect << " ms, restart seen as up after "
            << NowMs() - restarted << " ms\n";
  // Its RocksDB data survived the kill.
  for (const std::string& key : keys) {
    Result<SiblingSet> s = c.StoredOn("n2", key);
    ASSERT_TRUE(s.ok());
    ASSERT_EQ(s->size(), 1u) << key;
  }
  EXPECT_NE(c.LogOf("n2").find("resuming in a cluster of 3 nodes"), std::string::npos);
}

TEST(ProcessTest, LeaveAndJoinMovePartitionsAndData) {
  ProcessCluster c(4, kFastConfig);
  ASSERT_TRUE(c.Start().ok());
  std::vector<std::string> keys = PutKeys(c, 200);
  auto [out, code] = RunTool("dynamoctl --seed " + c.Address("n1").ToString() + " leave n2");
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(c.WaitExit("n2", 60000), 0) << c.LogOf("n2");
  std::string why;
  ASSERT_TRUE(cli::WaitForConvergence({c.Address("n1"), c.Address("n3"), c.Address("n4")}, 3, 60000, &why).ok())
      << why;
  ExpectReplicated(c, "n1", keys);

  ASSERT_TRUE(c.SpawnExtra(5).ok());
  ASSERT_TRUE(cli::WaitForConvergence(
                  {c.Address("n1"), c.Address("n3"), c.Address("n4"), c.Address("n5")}, 4, 60000, &why)
                  .ok())
      << why;
  ExpectReplicated(c, "n5", keys);
  // The nodes that gave partitions up drop their copies after the handoff.
  ASSERT_TRUE(Eventually(
      [&] {
        Result<ClusterMap> map = c.Map("n1");
        if (!map.ok()) return false;
        for (const std::string& key : keys) {
          std::vector<NodeId> pref = map->ring().PreferenceList(map->ring().KeyPartition(key));
          for (const char* id : {"n1", "n3", "n4", "n5"}) {
            if (std::find(pref.begin(), pref.end(), id) != pref.end()) continue;
            Result<SiblingSet> s = c.StoredOn(id, key, pref[0]);
            if (!s.ok() || !s->empty()) return false;
          }
        }
        return true;
      },
      30000));
}

TEST(ProcessTest, RemoveRefillsADeadNodesPartitions) {
  ProcessCluster c(5, kFastConfig);
  ASSERT_TRUE(c.Start().ok());
  std::vector<std::string> keys = PutKeys(c, 150);
  c.Kill9("n4");
  ASSERT_TRUE(Eventually([&] { return StateOf(c, "n1", "n4") == "down"; }, 10000));
  // n1 may see n4 up again for a moment after it saw it down: gossip from a
  // node that heard n4's last heartbeats later counts as news of it. So the
  // remove, refused while n1 sees n4 up, is tried until it is taken.
  std::string out;
  ASSERT_TRUE(Eventually(
      [&] {
        int code = 0;
        std::tie(out, code) =
            RunTool("dynamoctl --seed " + c.Address("n1").ToString() + " remove n4 --json");
        return code == 0;
      },
      10000))
      << out;
  EXPECT_NE(out.find("\"message\":\"n4 removed"), std::string::npos) << out;
  std::string why;
  ASSERT_TRUE(cli::WaitForConvergence({c.Address("n1"), c.Address("n2"), c.Address("n3"), c.Address("n5")},
                                      4, 60000, &why)
                  .ok())
      << why;
  ExpectReplicated(c, "n2", keys);
}

// Sends raw bytes; returns what came back before the peer closed (or 1 s).
std::string RawExchange(const net::Endpoint& ep, const std::string& bytes, bool* closed) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(ep.port);
  ::inet_pton(AF_INET, ep.host.c_str(), &addr.sin_addr);
  *closed = false;
  std::string got;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size())) {
    const uint64_t deadline = NowMs() + 1000;
    while (NowMs() < deadline) {
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      char buf[4096];
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0) {
        *closed = true;
        break;
      }
      got.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return got;
}

TEST(ProcessTest, MalformedAndOversizeInputLeavesTheNodeServing) {
  ProcessCluster c(1);
  ASSERT_TRUE(c.Start().ok());
  const net::Endpoint ep = c.Address("n1");
  bool closed = false;
  std::string garbage = RawExchange(ep, std::string("\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1", 9), &closed);
  EXPECT_TRUE(closed);
  EXPECT_FALSE(garbage.empty());  // an ErrorReply before the close
  RawExchange(ep, std::string("\x7f\xff\xff\xff", 4), &closed);  // declares 2 GiB
  EXPECT_TRUE(closed);
  RawExchange(ep, std::string("\x00\x00\x00\x02\x91", 5), &closed);  // truncated body, then EOF
  // An over-size key is refused with an error naming the limit, the connection stays.
  Result<proto::Message> big = cli::CallNode(ep, proto::GetRequest{std::string(5000, 'k')}, 2000);
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("key_bytes_max (2048)"), std::string_view::npos);
  Result<proto::Message> huge =
      cli::CallNode(ep, proto::CoordPutRequest{"k", {}, std::string((1 << 20) + 10, 'v'), false}, 2000);
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("value_bytes_max"), std::string_view::npos);
  // Still serving.
  ASSERT_TRUE(c.Put("n1", "after", "value-after").ok());
  Result<SiblingSet> s = c.StoredOn("n1", "after");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size(), 1u);
  EXPECT_TRUE(c.Running("n1"));
}

TEST(ProcessTest, OneDaemonPerDataDirectoryAndCleanStop) {
  ProcessCluster c(1);
  ASSERT_TRUE(c.Start().ok());
  ASSERT_TRUE(c.Put("n1", "k", "value-k").ok());
  // A second daemon on the same directory is refused with a clear error.
  ProcessCluster other(1);
  std::string cmd = "dynamo-node --id n1 --listen " + other.Address("n1").ToString() + " --data-dir " +
                    c.options().dir + "/n1/data";
  auto [out, code] = RunTool(cmd);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("is in use by another dynamo-node"), std::string::npos) << out;
  // SIGTERM: clean exit 0, data intact on restart.
  EXPECT_EQ(c.Terminate("n1"), 0) << c.LogOf("n1");
  EXPECT_NE(c.LogOf("n1").find("stopped"), std::string::npos);
  ASSERT_TRUE(c.Spawn("n1").ok());
  std::string why;
  ASSERT_TRUE(cli::WaitForConvergence({c.Address("n1")}, 1, 20000, &why).ok()) << why;
  Result<SiblingSet> s = c.StoredOn("n1", "k");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->size(), 1u);
}

TEST(ProcessTest, RefusesUnsafeOrInvalidConfiguration) {
  auto [remote, code1] = RunTool("dynamo-node --id x --listen 0.0.0.0:1 --data-dir /tmp/dynamo-never");
  EXPECT_EQ(code1, 1);
  EXPECT_NE(remote.find("no authentication"), std::string::npos) << remote;
  std::string cfg = std::filesystem::temp_directory_path() / ("dynamo-bad-" + std::to_string(::getpid()) + ".toml");
  { std::ofstream(cfg) << "[gossip]\nintervall_ms = 5\n"; }
  auto [typo, code2] = RunTool("dynamo-node --id x --data-dir /tmp/dynamo-never --config " + cfg);
  EXPECT_EQ(code2, 1);
  EXPECT_NE(typo.find("unknown key 'gossip.intervall_ms'"), std::string::npos) << typo;
  { std::ofstream(cfg) << "[limits]\nkey_bytes_max = -3\n"; }
  auto [range, code3] = RunTool("dynamo-node --id x --data-dir /tmp/dynamo-never --config " + cfg);
  EXPECT_EQ(code3, 1);
  EXPECT_NE(range.find("limits.key_bytes_max"), std::string::npos) << range;
  { std::ofstream(cfg) << "[storage]\nsync_spacing_us = 1000001\n"; }
  auto [spacing, code5] =
      RunTool("dynamo-node --id x --data-dir /tmp/dynamo-never --config " + cfg);
  EXPECT_EQ(code5, 1);
  EXPECT_NE(spacing.find("storage.sync_spacing_us"), std::string::npos) << spacing;
  { std::ofstream(cfg) << "[storage]\nsync_spacing_percent = 1001\n"; }
  auto [percent, code6] =
      RunTool("dynamo-node --id x --data-dir /tmp/dynamo-never --config " + cfg);
  EXPECT_EQ(code6, 1);
  EXPECT_NE(percent.find("storage.sync_spacing_percent"), std::string::npos) << percent;
  // Merkle trees deep enough, over enough partitions, to take 150 GiB.
  { std::ofstream(cfg) << "[anti_entropy]\nmerkle_depth = 16\n"; }
  auto [deep, code7] =
      RunTool("dynamo-node --id x --data-dir /tmp/dynamo-never --partitions 65536 --config " + cfg);
  EXPECT_EQ(code7, 1);
  EXPECT_NE(deep.find("MiB of Merkle trees"), std::string::npos) << deep;
  // The memory engine on a directory holding a rocksdb database would ignore
  // its data (and without --seed create a cluster).
  const std::string kept =
      std::filesystem::temp_directory_path() / ("dynamo-kept-" + std::to_string(::getpid()));
  std::filesystem::create_directories(kept + "/rocksdb");
  auto [memory, code_memory] = RunTool("dynamo-node --id x --engine memory --data-dir " + kept);
  std::filesystem::remove_all(kept);
  EXPECT_EQ(code_memory, 1);
  EXPECT_NE(memory.find("holds a rocksdb database"), std::string::npos) << memory;
  // A number that is not one, and values of another type, are refused too.
  for (const char* bad :
       {"[gossip]\nphi_threshold = nan\n", "[gossip]\nacceptable_pause_ms = inf\n",
        "[node]\nmax_connections = true\n", "[storage]\ncoord_put_sync = 2\n",
        "[limits]\nkey_bytes_max = 100.0\n", "[storage]\nbackground_write_bytes_per_sec = 4096\n",
        "[storage]\ninfo_log_bytes_max = 4096\n",
        // Closing idle connections before the clients do races their requests.
        "[node]\nidle_timeout_ms = 30000\n"}) {
    { std::ofstream(cfg) << bad; }
    auto [out, code] = RunTool("dynamo-node --id x --data-dir /tmp/dynamo-never --config " + cfg);
    EXPECT_EQ(code, 1) << bad;
    EXPECT_NE(out.find("must be"), std::string::npos) << bad << out;
  }
  { std::ofstream(cfg) << "[node]\nallow_remote = true\n"; }
  // Every spelling of "all addresses", and a port the node would only learn
  // once bound, which its peers could never reach.
  for (const char* all : {"0.0.0.0:1", "[0:0:0:0:0:0:0:0]:7000", "[::ffff:0.0.0.0]:7000"}) {
    auto [out, code] = RunTool(std::string("dynamo-node --id x --listen ") + all +
                               " --data-dir /tmp/dynamo-never --config " + cfg);
    EXPECT_EQ(code, 1) << all;
    EXPECT_NE(out.find("not all of them"), std::string::npos) << all << out;
  }
  auto [port0, code8] =
      RunTool("dynamo-node --id x --listen 127.0.0.1:0 --data-dir /tmp/dynamo-never");
  EXPECT_EQ(code8, 1);
  EXPECT_NE(port0.find("not 0"), std::string::npos) << port0;
  std::filesystem::remove(cfg);
  for (const char* zero : {"--partitions 0", "--replicas 0"}) {
    auto [out, code] =
        RunTool(std::string("dynamo-node --id x --data-dir /tmp/dynamo-never ") + zero);
    EXPECT_EQ(code, 1) << zero;
    EXPECT_NE(out.find("must be"), std::string::npos) << zero << out;
  }
  auto [help, code4] = RunTool("dynamo-node --help");
  EXPECT_EQ(code4, 0);
  EXPECT_NE(help.find("handoff_delay_ms"), std::string::npos);
  EXPECT_NE(help.find("--seed"), std::string::npos);
}

// Nodes run from a binary of another name (--node-binary: a sanitizer
// build, a wrapper) are still the cluster's: stop ends them, a node paused
// with SIGSTOP included, rather than calling them not running and
// forgetting their pids.
TEST(ProcessTest, DynamoctlStopsNodesOfAnyBinaryAndPausedOnes) {
  ProcessCluster ports(2);
  const std::string dir = ports.options().dir + "/ccm";
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
  const std::string binary = ports.options().dir + "/node-under-another-name";
  std::filesystem::copy_file(self + "/dynamo-node", binary);
  struct StopAtEnd {
    std::string dir;
    ~StopAtEnd() { RunTool("dynamoctl cluster stop --dir " + dir); }
  } stop_at_end{dir};
  auto [out, code] = RunTool("dynamoctl cluster start --nodes 2 --partitions 16 --base-port " +
                             std::to_string(ports.options().base_port) + " --dir " + dir +
                             " --node-binary " + binary);
  ASSERT_EQ(code, 0) << out;
  pid_t pids[2] = {0, 0};
  std::ifstream(dir + "/n1/node.pid") >> pids[0];
  std::ifstream(dir + "/n2/node.pid") >> pids[1];
  ASSERT_GT(pids[0], 0);
  ASSERT_GT(pids[1], 0);
  EXPECT_TRUE(cli::IsNodeProcess(pids[0], dir + "/n1/data"));
  EXPECT_FALSE(cli::IsNodeProcess(pids[0], dir + "/n2/data"));
  auto [paused, code_paused] =
      RunTool("dynamoctl cluster kill --dir " + dir + " --node n2 --signal STOP");
  ASSERT_EQ(code_paused, 0) << paused;
  auto [stopped, code_stop] = RunTool("dynamoctl cluster stop --dir " + dir);
  EXPECT_EQ(code_stop, 0) << stopped;
  EXPECT_NE(stopped.find("stopped n1"), std::string::npos) << stopped;
  EXPECT_NE(stopped.find("stopped n2"), std::string::npos) << stopped;
  EXPECT_FALSE(cli::IsNodeProcess(pids[0], dir + "/n1/data"));
  EXPECT_FALSE(cli::IsNodeProcess(pids[1], dir + "/n2/data"));
}

// A start that fails after launching nodes (here the ring cannot converge
// within --wait: gossip every 30 s) stops what it launched: a second start
// on the same directory and ports then works.
TEST(ProcessTest, AFailedDynamoctlStartStopsTheNodesItLaunched) {
  ProcessCluster ports(3);
  const std::string dir = ports.options().dir + "/ccm";
  const std::string config = ports.options().dir + "/slow-gossip.toml";
  std::ofstream(config) << "[gossip]\ninterval_ms = 30000\n";
  struct StopAtEnd {
    std::string dir;
    ~StopAtEnd() { RunTool("dynamoctl cluster stop --dir " + dir); }
  } stop_at_end{dir};
  const std::string start = "dynamoctl cluster start --nodes 3 --partitions 16 --base-port " +
                            std::to_string(ports.options().base_port) + " --dir " + dir;
  auto [failed, code_failed] = RunTool(start + " --wait 2 --config " + config);
  ASSERT_NE(code_failed, 0) << failed;
  EXPECT_NE(failed.find("were stopped"), std::string::npos) << failed;
  // A node that exits at once (its config file is missing) fails the start
  // at once, with its exit status, rather than after --wait.
  const std::string other = ports.options().dir + "/ccm-bad";
  auto [dead, code_dead] = RunTool("dynamoctl cluster start --nodes 2 --base-port " +
                                   std::to_string(ports.options().base_port) + " --dir " + other +
                                   " --wait 600 --config " + ports.options().dir + "/missing.toml");
  EXPECT_EQ(code_dead, 1) << dead;
  EXPECT_NE(dead.find("n1 exited during startup (exit status 1"), std::string::npos) << dead;
  // The failed start's nodes left their data: this start is a restart,
  // which would keep the recorded config unless given another.
  const std::string plain = ports.options().dir + "/plain.toml";
  std::ofstream(plain) << "";
  auto [again, code_again] = RunTool(start + " --config " + plain);
  EXPECT_EQ(code_again, 0) << again;
}

// A `dynamoctl cluster` directory in a ProcessCluster's block of ports,
// gossip every 200 ms, its nodes stopped at the end.
struct LocalCcm {
  ProcessCluster ports{3};
  const std::string dir = ports.options().dir + "/ccm";
  const std::string config = ports.options().dir + "/fast.toml";
  const std::string base = std::to_string(ports.options().base_port);
  LocalCcm() { std::ofstream(config) << kFastConfig; }
  ~LocalCcm() { RunTool("dynamoctl cluster stop --dir " + dir); }
  // `cluster start` of 3 nodes of 16 partitions.
  std::pair<std::string, int> Start() const {
    return RunTool("dynamoctl cluster start --nodes 3 --partitions 16 --base-port " + base +
                   " --dir " + dir + " --config " + config);
  }
  // Asks node `id` to leave, and waits until its process is gone.
  void Leave(const std::string& id) const {
    pid_t pid = 0;
    std::ifstream(dir + "/" + id + "/node.pid") >> pid;
    ASSERT_GT(pid, 0);
    auto [left, code_left] = RunTool("dynamoctl --seed 127.0.0.1:" + base + " leave " + id);
    ASSERT_EQ(code_left, 0) << left;
    ASSERT_TRUE(
        Eventually([&] { return !cli::IsNodeProcess(pid, dir + "/" + id + "/data"); }, 60000));
  }
};

// docs/cluster.md's own sequence: start, leave n3, stop, start again. The
// node that left exits at once with status 3 when started on its data, which
// failed the whole start and stopped the others; it is now recorded as gone,
// and the cluster comes back without it. Also: a pid file that names a
// process that ended does not hide a running node from `stop`, and a bad
// --partitions is refused before anything is recorded.
TEST(ProcessTest, ALocalClusterStartsAgainWithoutTheNodesThatLeft) {
  const LocalCcm ccm;
  const std::string& dir = ccm.dir;
  const std::string& base = ccm.base;
  auto [bad, code_bad] = RunTool(
      "dynamoctl cluster start --nodes 3 --partitions 1000 --base-port " + base + " --dir " + dir);
  EXPECT_EQ(code_bad, 1) << bad;
  EXPECT_NE(bad.find("power of two"), std::string::npos) << bad;
  EXPECT_FALSE(std::filesystem::exists(dir + "/cluster.conf"));

  auto [out, code] = ccm.Start();
  ASSERT_EQ(code, 0) << out;
  ASSERT_NO_FATAL_FAILURE(ccm.Leave("n3"));

  // n1's pid file names a process that has ended.
  pid_t gone = ::fork();
  if (gone == 0) ::_exit(0);
  ASSERT_GT(gone, 0);
  ::waitpid(gone, nullptr, 0);
  std::ofstream(dir + "/n1/node.pid", std::ios::trunc) << gone << "\n";
  auto [stopped, code_stop] = RunTool("dynamoctl cluster stop --dir " + dir);
  EXPECT_EQ(code_stop, 0) << stopped;
  EXPECT_NE(stopped.find("stopped n1"), std::string::npos) << stopped;
  EXPECT_NE(stopped.find("stopped n2"), std::string::npos) << stopped;

  auto [again, code_again] = RunTool("dynamoctl cluster start --dir " + dir);
  ASSERT_EQ(code_again, 0) << again;
  EXPECT_NE(again.find("n3 has left the cluster"), std::string::npos) << again;
  auto [ring, code_ring] = RunTool("dynamoctl --seed 127.0.0.1:" + base + " ring");
  EXPECT_EQ(code_ring, 0) << ring;
  EXPECT_NE(ring.find("\nn2 "), std::string::npos) << ring;
  EXPECT_EQ(ring.find("\nn3 "), std::string::npos) << ring;
  auto [single, code_single] = RunTool("dynamoctl cluster start --dir " + dir + " --node n3");
  EXPECT_EQ(code_single, 1) << single;
  EXPECT_NE(single.find("n3 left the cluster"), std::string::npos) << single;
  auto [stopped_again, code_stop_again] = RunTool("dynamoctl cluster stop --dir " + dir);
  EXPECT_EQ(code_stop_again, 0) << stopped_again;
  auto [third, code_third] = RunTool("dynamoctl cluster start --dir " + dir);
  ASSERT_EQ(code_third, 0) << third;
  EXPECT_NE(third.find("n3 left the cluster; not started"), std::string::npos) << third;
  EXPECT_NE(third.find("cluster of 2 nodes is up"), std::string::npos) << third;
  auto [json_stop, code_json_stop] = RunTool("dynamoctl cluster stop --json --dir " + dir);
  EXPECT_EQ(code_json_stop, 0) << json_stop;
  EXPECT_NE(json_stop.find("{\"stopped\":"), std::string::npos) << json_stop;
}

// The first node left, was recorded as gone, and its directory was deleted:
// the cluster's data is in the other nodes' directories, so a start is a
// restart (it took the second node for the first of a new cluster, and
// waited in vain for it to see a ring of one).
TEST(ProcessTest, ALocalClusterStartsAgainWhenTheFirstNodeLeftAndItsDirectoryIsGone) {
  const LocalCcm ccm;
  const std::string& dir = ccm.dir;
  auto [out, code] = ccm.Start();
  ASSERT_EQ(code, 0) << out;
  ASSERT_NO_FATAL_FAILURE(ccm.Leave("n1"));
  for (int round = 0; round < 2; ++round) {
    auto [stopped, code_stop] = RunTool("dynamoctl cluster stop --dir " + dir);
    ASSERT_EQ(code_stop, 0) << stopped;
    if (round == 1) std::filesystem::remove_all(dir + "/n1");
    auto [again, code_again] = RunTool("dynamoctl cluster start --dir " + dir);
    ASSERT_EQ(code_again, 0) << "round " << round << ": " << again;
    EXPECT_NE(again.find("cluster of 2 nodes is up"), std::string::npos) << again;
  }
}

TEST(ProcessTest, DynamoctlLocalClusterStartAndStop) {
  ProcessCluster ports(3);  // only for a free port block and a directory
  const std::string dir = ports.options().dir + "/ccm";
  struct StopAtEnd {  // nodes a failed step left running
    std::string dir;
    ~StopAtEnd() { RunTool("dynamoctl cluster stop --dir " + dir); }
  } stop_at_end{dir};
  auto [out, code] = RunTool("dynamoctl cluster start --nodes 3 --partitions 64 --base-port " +
                             std::to_string(ports.options().base_port) + " --dir " + dir + " --json");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"seed\":\"127.0.0.1:" + std::to_string(ports.options().base_port) + "\""),
            std::string::npos)
      << out;
  for (const char* id : {"n1", "n2", "n3"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + id + "/node.pid")) << id;
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + id + "/node.log")) << id;
  }
  auto [again, code_again] = RunTool("dynamoctl cluster start --nodes 3 --base-port " +
                                     std::to_string(ports.options().base_port) + " --dir " + dir);
  EXPECT_NE(code_again, 0);
  EXPECT_NE(again.find("already running"), std::string::npos) << again;
  auto [ring, code_ring] = RunTool("dynamoctl --seed 127.0.0.1:" + std::to_string(ports.options().base_port) + " ring");
  EXPECT_EQ(code_ring, 0);
  EXPECT_NE(ring.find("64 partitions, 3 replicas"), std::string::npos) << ring;
  const std::string seed =
      "dynamoctl --seed 127.0.0.1:" + std::to_string(ports.options().base_port);
  // A value on standard input is read up to the limit, and a read error is
  // an error, not an empty value.
  auto [endless, code_endless] = RunTool(seed + " put big < /dev/zero");
  EXPECT_EQ(code_endless, 1) << endless;
  EXPECT_NE(endless.find("exceeds value_bytes_max"), std::string::npos) << endless;
  auto [unreadable, code_unreadable] = RunTool(seed + " put k < " + dir);
  EXPECT_EQ(code_unreadable, 1) << unreadable;
  EXPECT_NE(unreadable.find("cannot read the value"), std::string::npos) << unreadable;
  // Every node asked is reported, the one that failed too, each counter
  // apart from its value however long its name.
  auto [stats, code_stats] = RunTool(seed + " --seed 127.0.0.1:1 stats");
  EXPECT_EQ(code_stats, 1) << stats;
  EXPECT_NE(stats.find("requests_refused_not_replica "), std::string::npos) << stats;
  EXPECT_NE(stats.find("127.0.0.1:1"), std::string::npos) << stats;
  auto [stopped, code_stop] = RunTool("dynamoctl cluster stop --dir " + dir);
  EXPECT_EQ(code_stop, 0) << stopped;
  EXPECT_NE(stopped.find("stopped n1"), std::string::npos) << stopped;
  EXPECT_FALSE(std::filesystem::exists(dir + "/n1/node.pid"));

  // The same directory again: the stopped cluster comes back with its ring,
  // as its cluster.conf recorded it; a layout that is not that one is
  // refused, and the record kept.
  auto [other_size, code_other_size] =
      RunTool("dynamoctl cluster start --dir " + dir + " --nodes 5");
  EXPECT_EQ(code_other_size, 1) << other_size;
  EXPECT_NE(other_size.find("was started with --nodes 3"), std::string::npos) << other_size;
  auto [hex, code_hex] = RunTool("dynamoctl cluster start --dir " + dir + " --nodes 0x3");
  EXPECT_NE(code_hex, 0) << hex;
  EXPECT_NE(hex.find("not a decimal number"), std::string::npos) << hex;
  // Numbers are decimal, leading zeros and all (not octal).
  auto [restarted, code_restart] =
      RunTool("dynamoctl cluster start --dir " + dir + " --base-port 0" +
              std::to_string(ports.options().base_port));
  ASSERT_EQ(code_restart, 0) << restarted;
  auto [ring_again, code_ring_again] =
      RunTool("dynamoctl --seed 127.0.0.1:" + std::to_string(ports.options().base_port) + " ring");
  EXPECT_EQ(code_ring_again, 0);
  EXPECT_NE(ring_again.find("64 partitions, 3 replicas"), std::string::npos) << ring_again;

  // One node stopped and started again with a scrub of its data.
  auto [term, code_term] = RunTool("dynamoctl cluster kill --dir " + dir + " --node n2 --signal TERM");
  ASSERT_EQ(code_term, 0) << term;
  pid_t n2 = 0;
  std::ifstream(dir + "/n2/node.pid") >> n2;
  ASSERT_GT(n2, 0);
  for (int i = 0; i < 200 && cli::IsNodeProcess(n2, dir + "/n2/data"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(cli::IsNodeProcess(n2, dir + "/n2/data"));
  auto [whole, code_whole] = RunTool("dynamoctl cluster start --dir " + dir + " --scrub");
  EXPECT_NE(code_whole, 0);
  EXPECT_NE(whole.find("give --node"), std::string::npos) << whole;
  auto [layout, code_layout] =
      RunTool("dynamoctl cluster start --dir " + dir + " --node n2 --nodes 3");
  EXPECT_NE(code_layout, 0);
  EXPECT_NE(layout.find("does not apply with --node"), std::string::npos) << layout;
  auto [scrubbed, code_scrubbed] =
      RunTool("dynamoctl cluster start --dir " + dir + " --node n2 --scrub");
  ASSERT_EQ(code_scrubbed, 0) << scrubbed;
  std::string n2_log;
  {
    std::ifstream in(dir + "/n2/node.log");
    n2_log.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_NE(n2_log.find("scrub: reading back every entry"), std::string::npos) << n2_log;
  EXPECT_NE(n2_log.find("nothing unreadable"), std::string::npos) << n2_log;

  auto [stopped_again, code_stop_again] = RunTool("dynamoctl cluster stop --dir " + dir);
  EXPECT_EQ(code_stop_again, 0) << stopped_again;
  EXPECT_NE(stopped_again.find("stopped n3"), std::string::npos) << stopped_again;
}

}  // namespace
}  // namespace dynamo::test
