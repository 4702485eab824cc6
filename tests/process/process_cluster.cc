#include "process/process_cluster.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

namespace dynamo::test {
namespace {

// `config` with anti_entropy.tree_check_interval_ms set, unless it sets it.
std::string WithTreeChecks(std::string config) {
  if (config.find("tree_check_interval_ms") != std::string::npos) return config;
  const std::string line =
      "tree_check_interval_ms = " + std::to_string(ProcessCluster::kTreeCheckIntervalMs) + "\n";
  const std::string section = "[anti_entropy]\n";
  const size_t at = config.find(section);
  if (at != std::string::npos) return config.insert(at + section.size(), line);
  if (!config.empty() && config.back() != '\n') config += '\n';
  return config + section + line;
}

namespace fs = std::filesystem;

// The daemons of every live ProcessCluster, for the abort handler below: a
// test that aborts (a failed check, a sanitizer report) skips destructors,
// and its nodes would outlive it and load the machine for the tests after it.
constexpr size_t kTrackedMax = 256;
std::array<std::atomic<pid_t>, kTrackedMax> tracked{};

void KillTrackedAndAbort(int sig) {
  for (std::atomic<pid_t>& slot : tracked) {
    const pid_t pid = slot.load();
    if (pid > 0) ::kill(pid, SIGKILL);
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void Track(pid_t pid) {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = KillTrackedAndAbort;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGABRT, &sa, nullptr);
  });
  for (std::atomic<pid_t>& slot : tracked) {
    pid_t empty = 0;
    if (slot.compare_exchange_strong(empty, pid)) return;
  }
}

// Call once `pid` is reaped, before its number can be reused.
void Untrack(pid_t pid) {
  for (std::atomic<pid_t>& slot : tracked) {
    pid_t expected = pid;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

bool PortFree(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

uint64_t NowMs() {
  using namespace std::chrono;
  return static_cast<uint64_t>(duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count());
}

}  // namespace

bool WaitFor(const std::function<bool()>& done, uint64_t timeout_ms, uint64_t poll_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return true;
}

// Ports below the kernel's ephemeral range, so no outgoing connection can
// take one between our check and the node's bind.
uint16_t FreePortBlock(size_t count) {
  unsigned ephemeral_low = 32768, ephemeral_high = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low >> ephemeral_high;
  const unsigned low = 10000;
  const unsigned high = ephemeral_low > low + 1000 ? ephemeral_low - 32 : 65000;
  std::mt19937 rng(static_cast<unsigned>(::getpid()) ^ static_cast<unsigned>(
      std::chrono::steady_clock::now().time_since_epoch().count()));
  for (int attempt = 0; attempt < 200; ++attempt) {
    uint16_t base = static_cast<uint16_t>(low + (rng() % ((high - low) / 16)) * 16);
    bool all = true;
    for (size_t i = 0; i < count && all; ++i) all = PortFree(static_cast<uint16_t>(base + i));
    if (all) return base;
  }
  return 0;
}

ProcessCluster::ProcessCluster(size_t nodes, const std::string& config, const std::string& engine) {
  options_.nodes = nodes;
  options_.base_port = FreePortBlock(nodes + 4);
  options_.engine = engine;
  options_.partitions = 64;
  options_.log_level = "debug";
  options_.dir = (fs::temp_directory_path() /
                  ("dynamo-proc-" + std::to_string(::getpid()) + "-" + std::to_string(options_.base_port)))
                     .string();
  fs::remove_all(options_.dir);
  fs::create_directories(options_.dir);
  options_.config_file = options_.dir + "/node.toml";
  std::ofstream(options_.config_file) << WithTreeChecks(config);
  Result<std::string> binary = cli::FindNodeBinary("");
  binary_ = binary.ok() ? *binary : "";
}

ProcessCluster::~ProcessCluster() {
  for (auto& [id, pid] : pids_) {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      Untrack(pid);
    }
  }
  for (auto& [id, pid] : pids_) {
    std::istringstream log(LogOf(id));
    for (std::string line; std::getline(log, line);) {
      if (line.find("disagreed with storage") != std::string::npos ||
          line.find("a write found nothing stored") != std::string::npos) {
        ADD_FAILURE() << id << ": " << line;
      }
    }
  }
  std::error_code ec;
  if (std::getenv("DYNAMO_KEEP_TEST_DIRS") == nullptr) fs::remove_all(options_.dir, ec);
}

cli::LocalNode ProcessCluster::NodeFor(const std::string& id) const {
  size_t index = std::stoul(id.substr(1));
  cli::LocalClusterOptions o = options_;
  o.nodes = index;
  cli::LocalNode node = cli::LocalLayout(o).back();
  auto env = env_.find(id);
  if (env != env_.end()) {
    for (const auto& [name, entry] : env->second) node.env.push_back(entry);
  }
  // Under ASan an assertion in a node (or in RocksDB) prints its stack. Not
  // in the test process: the sanitizer's abort would pass over the handler
  // that stops its nodes (KillTrackedAndAbort).
  const char* asan = std::getenv("ASAN_OPTIONS");
  if (asan != nullptr && (env == env_.end() || !env->second.contains("ASAN_OPTIONS"))) {
    node.env.push_back(std::string("ASAN_OPTIONS=") + asan + ":handle_abort=1");
  }
  auto placed = placement_.find(id);
  if (placed != placement_.end()) {
    node.netns = placed->second.first;
    node.address.host = placed->second.second;
  }
  return node;
}

void ProcessCluster::SetEnv(const std::string& id, const std::string& entry) {
  const size_t eq = entry.find('=');
  if (eq == std::string::npos) {
    env_[id].erase(entry);
  } else {
    env_[id][entry.substr(0, eq)] = entry;
  }
}

void ProcessCluster::Place(const std::string& id, const std::string& netns, const std::string& host) {
  placement_[id] = {netns, host};
}

void ProcessCluster::Wipe(const std::string& id) {
  DYNAMO_CHECK(!Running(id));
  fs::remove_all(NodeFor(id).data_dir);
}

Result<cli::NodeStatsView> ProcessCluster::Stats(const std::string& id) {
  return cli::FetchStats(Address(id), 3000);
}

uint64_t ProcessCluster::SumStat(const std::string& name) {
  uint64_t sum = 0;
  for (auto& [id, pid] : pids_) {
    if (pid <= 0 || !Running(id)) continue;
    Result<cli::NodeStatsView> s = Stats(id);
    if (s.ok()) sum += s->Get(name);
  }
  return sum;
}

net::Endpoint ProcessCluster::Address(const std::string& id) const { return NodeFor(id).address; }

std::string ProcessCluster::LogOf(const std::string& id) const {
  std::ifstream in(NodeFor(id).log_file);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status ProcessCluster::Spawn(const std::string& id, const std::vector<std::string>& extra_args) {
  if (binary_.empty()) return Status::NotFound("dynamo-node binary not found");
  std::vector<net::Endpoint> seeds;
  if (id != "n1") seeds.push_back(Address("n1"));
  cli::LocalNode node = NodeFor(id);
  node.extra_args = extra_args;
  Result<pid_t> pid = cli::SpawnNode(binary_, options_, node, seeds);
  if (!pid.ok()) return pid.status();
  pids_[id] = *pid;
  Track(*pid);
  return Status::OK();
}

Status ProcessCluster::SpawnExtra(size_t index) { return Spawn("n" + std::to_string(index)); }

Status ProcessCluster::Start(uint64_t wait_ms) {
  Status s = StartNodes(wait_ms);
  if (!s.ok()) {
    // A test checks only that the start failed; say why, and what the nodes
    // logged last.
    std::cerr << "[ cluster ] start failed: " << s.ToString() << "\n";
    for (size_t i = 1; i <= options_.nodes; ++i) {
      const std::string id = "n" + std::to_string(i);
      std::vector<std::string> lines;
      std::stringstream log(LogOf(id));
      for (std::string line; std::getline(log, line);) lines.push_back(std::move(line));
      const size_t shown = std::min<size_t>(lines.size(), kLogLinesOnFailure);
      std::cerr << "[ cluster ] " << id << (Running(id) ? " running" : " not running")
                << ", the last " << shown << " lines of its log:\n";
      for (size_t l = lines.size() - shown; l < lines.size(); ++l) std::cerr << lines[l] << "\n";
    }
  }
  return s;
}

Status ProcessCluster::StartNodes(uint64_t wait_ms) {
  DYNAMO_RETURN_IF_ERROR(Spawn("n1"));
  std::string why;
  DYNAMO_RETURN_IF_ERROR(cli::WaitForConvergence({Address("n1")}, 1, wait_ms, &why));
  std::vector<net::Endpoint> all = {Address("n1")};
  for (size_t i = 2; i <= options_.nodes; ++i) {
    DYNAMO_RETURN_IF_ERROR(Spawn("n" + std::to_string(i)));
    all.push_back(Address("n" + std::to_string(i)));
  }
  return cli::WaitForConvergence(all, options_.nodes, wait_ms, &why);
}

void ProcessCluster::Kill9(const std::string& id) {
  pid_t pid = pids_[id];
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  Untrack(pid);
  pids_[id] = 0;
}

void ProcessCluster::Pause(const std::string& id) {
  if (pids_[id] > 0) ::kill(pids_[id], SIGSTOP);
}

void ProcessCluster::Resume(const std::string& id) {
  if (pids_[id] > 0) ::kill(pids_[id], SIGCONT);
}

int ProcessCluster::WaitExit(const std::string& id, uint64_t timeout_ms) {
  pid_t pid = pids_[id];
  if (pid <= 0) return -1;
  const uint64_t deadline = NowMs() + timeout_ms;
  while (NowMs() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      Untrack(pid);
      pids_[id] = 0;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

int ProcessCluster::Terminate(const std::string& id) {
  pid_t pid = pids_[id];
  if (pid <= 0) return -1;
  ::kill(pid, SIGTERM);
  return WaitExit(id, 30000);
}

bool ProcessCluster::Running(const std::string& id) {
  pid_t pid = pids_[id];
  if (pid <= 0) return false;
  if (::waitpid(pid, nullptr, WNOHANG) == 0) return true;
  // Exited and reaped (or not ours): forget the number, which can be reused.
  Untrack(pid);
  pids_[id] = 0;
  return false;
}

std::vector<net::Endpoint> ProcessCluster::RunningAddresses() {
  std::vector<net::Endpoint> out;
  for (auto& [id, pid] : pids_) {
    if (pid > 0 && Running(id)) out.push_back(Address(id));
  }
  return out;
}

Result<ClusterMap> ProcessCluster::Map(const std::string& via) {
  Result<proto::Message> r = cli::CallNode(Address(via), proto::RingRequest{}, 3000);
  if (!r.ok()) return r.status();
  const auto* rr = std::get_if<proto::RingReply>(&r->body);
  if (!rr) return Status::ProtocolError("not a RingReply");
  return ClusterMap::Deserialize(rr->ring);
}

Status ProcessCluster::Put(const std::string& via, const std::string& key, const std::string& value) {
  Result<ClusterMap> map = Map(via);
  if (!map.ok()) return map.status();
  PartitionId p = map->ring().KeyPartition(key);
  std::vector<NodeId> targets = map->ring().PreferenceList(p);
  for (NodeId& n : map->PendingReplicas(p)) targets.push_back(n);
  Result<proto::Message> r = cli::CallNode(Address(targets[0]), proto::CoordPutRequest{key, {}, value, false}, 3000);
  if (!r.ok()) return r.status();
  const auto* reply = std::get_if<proto::CoordPutReply>(&r->body);
  if (!reply) return Status::ProtocolError("not a CoordPutReply");
  for (size_t i = 1; i < targets.size(); ++i) {
    Result<proto::Message> ack =
        cli::CallNode(Address(targets[i]), proto::ReplicaPutRequest{key, reply->siblings, ""}, 3000);
    if (!ack.ok()) return ack.status();
  }
  return Status::OK();
}

Result<SiblingSet> ProcessCluster::StoredOn(const std::string& id, const std::string& key,
                                            const std::string& stand_in_for) {
  Result<proto::Message> r = cli::CallNode(Address(id), proto::GetRequest{key, stand_in_for}, 3000);
  if (!r.ok()) return r.status();
  if (const auto* e = std::get_if<proto::ErrorReply>(&r->body)) return proto::ToStatus(*e);
  const auto* g = std::get_if<proto::GetReply>(&r->body);
  if (!g) return Status::ProtocolError("not a GetReply");
  return g->siblings;
}

}  // namespace dynamo::test
