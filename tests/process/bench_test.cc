// dynamo-bench run as a program against real stores: a dynamo cluster, and
// Redis and etcd when they are installed (skipped with a message otherwise).
// Bounded by operation count, except where a server is to die mid-run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <regex>
#include <thread>

#include "process/process_cluster.h"

namespace dynamo::test {
namespace {

namespace fs = std::filesystem;

std::string BenchBinary() { return (fs::read_symlink("/proc/self/exe").parent_path() / "dynamo-bench").string(); }

struct BenchRun {
  int exit_code = -1;
  std::string output;
  std::string json;  // the last line
};

BenchRun RunBench(const std::string& args) {
  BenchRun r;
  FILE* p = ::popen((BenchBinary() + " --quiet --json " + args + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::string trimmed = r.output.substr(0, r.output.find_last_not_of('\n') + 1);
  r.json = trimmed.substr(trimmed.rfind('\n') + 1);
  return r;
}

// The integer field `name` of the op object `op` ("read" or "write").
long Field(const std::string& json, const std::string& op, const std::string& name) {
  const size_t at = json.find("\"" + op + "\":{");
  if (at == std::string::npos) return -1;
  std::smatch m;
  const std::string rest = json.substr(at);
  if (!std::regex_search(rest, m, std::regex("\"" + name + "\":([0-9]+)"))) return -1;
  return std::stol(m[1]);
}

std::optional<std::string> Which(const std::string& program) {
  for (const char* dir : {"/usr/bin", "/usr/sbin", "/usr/local/bin"}) {
    fs::path p = fs::path(dir) / program;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return std::nullopt;
}

// A server process this test started, killed by PID at the end.
class Server {
 public:
  explicit Server(std::vector<std::string> argv) {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> args;
      for (std::string& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      std::freopen("/dev/null", "w", stdout);
      std::freopen("/dev/null", "w", stderr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Server() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

 private:
  pid_t pid_ = -1;
};

// Runs the bench until it connects (the server may still be starting).
BenchRun RunWhenUp(const std::string& args) {
  BenchRun r;
  for (int i = 0; i < 100; ++i) {
    r = RunBench(args);
    if (r.output.find("cannot open") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return r;
}

void ExpectClean(const BenchRun& r, long ops) {
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Field(r.json, "read", "count") + Field(r.json, "write", "count"), ops) << r.json;
  EXPECT_EQ(Field(r.json, "read", "errors"), 0) << r.json;
  EXPECT_EQ(Field(r.json, "write", "errors"), 0) << r.json;
  EXPECT_EQ(Field(r.json, "read", "siblings"), 0) << r.json;
  EXPECT_EQ(Field(r.json, "read", "not_found"), 0) << r.json;
  EXPECT_NE(r.json.find("\"throughput\":"), std::string::npos) << r.json;
}

TEST(BenchProcessTest, DynamoRunsHaveNoErrorsAndNoSiblingsAcrossRuns) {
  ProcessCluster c(3);
  ASSERT_TRUE(c.Start().ok());
  const std::string seed = "--backend dynamo --seed " + c.Address("n1").ToString();
  const std::string common = " --keys 300 --ops 1500 --concurrency 8 --distribution zipfian";
  ExpectClean(RunBench(seed + common + " --workload A"), 1500);
  // A second process knows no contexts: its first write of each key reads it.
  ExpectClean(RunBench(seed + common + " --workload W --no-load --random-seed 9"), 1500);
  // LWW on keys of its own: the causal keys above stay causal (a key written
  // in LWW mode refuses causal writes).
  ExpectClean(RunBench(seed + common + " --workload A --mode lww --key-prefix lww:"), 1500);
  ExpectClean(RunBench(seed + common + " --workload B --no-load --rate 2000"), 1500);
  // Writes acknowledged without a synced copy, in both modes.
  BenchRun unsynced = RunBench(seed + common + " --workload A --unsynced --key-prefix uns:");
  ExpectClean(unsynced, 1500);
  EXPECT_NE(unsynced.json.find("\"dynamo (unsynced)\""), std::string::npos) << unsynced.json;
  ExpectClean(RunBench(seed + common + " --workload W --mode lww --unsynced --key-prefix lwwuns:"),
              1500);
}

TEST(BenchProcessTest, BadFlagsAreRefusedClearly) {
  BenchRun r = RunBench("--backend dynamo");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("needs --seed"), std::string::npos) << r.output;
  r = RunBench("--backend redis --address 127.0.0.1:1 --workload Q");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("workload must be A, B, C or W"), std::string::npos) << r.output;
  r = RunBench("--backend redis --address 127.0.0.1:1 --keys 0");
  EXPECT_NE(r.output.find("keys must be in"), std::string::npos) << r.output;
  // An infinite rate once ran and printed "target_rate":inf, which no JSON
  // reader takes.
  for (const char* rate : {"inf", "1e-9", "-5"}) {
    r = RunBench(std::string("--backend redis --address 127.0.0.1:1 --rate ") + rate);
    EXPECT_EQ(r.exit_code, 2) << rate << ": " << r.output;
    EXPECT_NE(r.output.find("rate must be 0 (closed loop) or from 0.01 to 100000000"),
              std::string::npos)
        << r.output;
  }
}

TEST(BenchProcessTest, AnAddressNothingListensOnIsNamedWithTheReason) {
  // Port 1 on loopback: nothing listens there, so the connect is refused at once.
  for (const char* backend : {"redis --address", "etcd --address", "dynamo --seed"}) {
    BenchRun r = RunBench(std::string("--backend ") + backend + " 127.0.0.1:1 --ops 10");
    EXPECT_EQ(r.exit_code, 2) << backend << ": " << r.output;
    EXPECT_NE(r.output.find("cannot open"), std::string::npos) << r.output;
    // The reason, not the operation timeout a failed connect used to end in.
    EXPECT_NE(r.output.find("refused"), std::string::npos) << r.output;
  }
}

TEST(BenchProcessTest, RedisBackend) {
  std::optional<std::string> redis = Which("redis-server");
  if (!redis) GTEST_SKIP() << "redis-server is not installed (scripts/setup.sh installs it); skipped";
  const uint16_t port = FreePortBlock(1);
  ASSERT_NE(port, 0);
  Server server({*redis, "--port", std::to_string(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"});
  const std::string addr = " --backend redis --address 127.0.0.1:" + std::to_string(port);
  ExpectClean(RunWhenUp(addr + " --keys 300 --ops 2000 --concurrency 8 --workload A"), 2000);
}

// The commands one Redis server has processed, from `redis-cli INFO stats`; -1 when it cannot say.
long RedisCommandsProcessed(const std::string& cli, uint16_t port) {
  const std::string cmd = cli + " -p " + std::to_string(port) + " info stats 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ::pclose(p);
  std::smatch m;
  if (!std::regex_search(out, m, std::regex("total_commands_processed:([0-9]+)"))) return -1;
  return std::stol(m[1]);
}

TEST(BenchProcessTest, ARedisThatDiesMidRunIsCountedAsRefusedWithTheReason) {
  std::optional<std::string> redis = Which("redis-server");
  std::optional<std::string> cli = Which("redis-cli");
  if (!redis || !cli)
    GTEST_SKIP() << "redis-server is not installed (scripts/setup.sh installs it); skipped";
  const uint16_t port = FreePortBlock(1);
  ASSERT_NE(port, 0);
  auto server = std::make_unique<Server>(
      std::vector<std::string>{*redis, "--port", std::to_string(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"});
  const std::string addr = " --backend redis --address 127.0.0.1:" + std::to_string(port);
  ASSERT_EQ(RunWhenUp(addr + " --keys 100 --ops 10 --concurrency 1").exit_code, 0);
  const long before = RedisCommandsProcessed(*cli, port);
  ASSERT_GE(before, 0);
  // A deadline far past the run's end: an operation that waited for it would
  // end the run unfinished, never as a refusal.
  BenchRun run;
  std::thread bench([&] {
    run = RunBench(
        addr +
        " --keys 100 --no-load --workload W --concurrency 4 --duration 8 --timeout-ms 60000");
  });
  // The server dies once the bench is writing to it.
  for (int i = 0; i < 3000 && RedisCommandsProcessed(*cli, port) < before + 1000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  server.reset();
  bench.join();
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_GT(Field(run.json, "write", "count"), 0) << run.json;
  // Reconnects after the death are refused at once, with the reason. The
  // report gives each kind's first message, which is a connection reset
  // when a write was in flight as the server died.
  EXPECT_NE(run.json.find("\"Unavailable\":"), std::string::npos) << run.json;
  EXPECT_TRUE(run.output.find("Connection refused") != std::string::npos ||
              run.output.find("Connection reset by peer") != std::string::npos)
      << run.output;
  EXPECT_EQ(run.json.find("Timeout"), std::string::npos) << run.json;
  EXPECT_EQ(run.json.find("unfinished"), std::string::npos) << run.json;
}

TEST(BenchProcessTest, EtcdBackend) {
  std::optional<std::string> etcd = Which("etcd");
  if (!etcd) GTEST_SKIP() << "etcd is not installed (scripts/setup.sh installs etcd-server); skipped";
  const uint16_t port = FreePortBlock(2);
  ASSERT_NE(port, 0);
  const std::string client = "http://127.0.0.1:" + std::to_string(port);
  const std::string peer = "http://127.0.0.1:" + std::to_string(port + 1);
  const fs::path dir = fs::temp_directory_path() / ("dynamo-bench-etcd-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  {
    Server server({*etcd, "--name", "e1", "--data-dir", dir.string(), "--listen-client-urls", client,
                   "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls",
                   peer, "--initial-cluster", "e1=" + peer, "--log-level", "error"});
    const std::string addr = " --backend etcd --address 127.0.0.1:" + std::to_string(port);
    ExpectClean(RunWhenUp(addr + " --keys 200 --ops 600 --concurrency 4 --workload A"), 600);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dynamo::test
