#include "local_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "admin.h"
#include "dynamo/cluster_map.h"

namespace dynamo::cli {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kProbeTimeoutMs = 1000;
constexpr const char* kNodeDataDir = "data";  // under each node's directory
// How long a failed start waits for each node it launched to stop on SIGTERM.
constexpr uint64_t kStopAfterFailedStartMs = 10000;

uint64_t NowMs() {
  using namespace std::chrono;
  return static_cast<uint64_t>(duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count());
}

std::optional<pid_t> ReadPid(const std::string& path) {
  std::ifstream in(path);
  long pid = 0;
  if (!(in >> pid) || pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

bool PortFree(const net::Endpoint& ep) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(ep.port);
  ::inet_pton(AF_INET, ep.host.c_str(), &addr.sin_addr);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

std::string LastLine(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

// dir/cluster.conf records how the cluster was started, so single nodes
// can be restarted later.
void WriteClusterConf(const LocalClusterOptions& o, const std::string& binary) {
  std::ofstream f(fs::path(o.dir) / "cluster.conf", std::ios::trunc);
  f << "nodes=" << o.nodes << "\nbase_port=" << o.base_port << "\nengine=" << o.engine
    << "\npartitions=" << o.partitions << "\nreplicas=" << o.replicas
    << "\nconfig_file=" << o.config_file << "\nlog_level=" << o.log_level
    << "\nnode_binary=" << binary << "\n";
}

Result<LocalClusterOptions> ReadClusterConf(const std::string& dir) {
  std::ifstream f(fs::path(dir) / "cluster.conf");
  if (!f) return Status::NotFound("no local cluster in " + dir + " (missing cluster.conf)");
  LocalClusterOptions o;
  o.dir = dir;
  std::string line;
  auto number = [&](const std::string& k, const std::string& v, uint64_t max) -> Result<uint64_t> {
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size() || n > max) {
      return Status::Corruption((fs::path(dir) / "cluster.conf").string() + ": bad " + k + " '" +
                                v + "'");
    }
    return n;
  };
  while (std::getline(f, line)) {
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    if (k == "nodes" || k == "base_port" || k == "partitions" || k == "replicas") {
      Result<uint64_t> n = number(k, v, k == "base_port" ? 65535 : UINT32_MAX);
      if (!n.ok()) return n.status();
      if (k == "nodes") o.nodes = *n;
      if (k == "base_port") o.base_port = static_cast<uint16_t>(*n);
      if (k == "partitions") o.partitions = static_cast<uint32_t>(*n);
      if (k == "replicas") o.replicas = static_cast<uint32_t>(*n);
    }
    if (k == "engine") o.engine = v;
    if (k == "config_file") o.config_file = v;
    if (k == "log_level") o.log_level = v;
    if (k == "node_binary") o.node_binary = v;
  }
  return o;
}

}  // namespace

std::vector<LocalNode> LocalLayout(const LocalClusterOptions& options) {
  std::vector<LocalNode> out;
  for (size_t i = 1; i <= options.nodes; ++i) {
    LocalNode n;
    n.id = "n" + std::to_string(i);
    n.address = net::Endpoint{"127.0.0.1", static_cast<uint16_t>(options.base_port + i - 1)};
    n.dir = (fs::path(options.dir) / n.id).string();
    n.data_dir = (fs::path(n.dir) / kNodeDataDir).string();
    n.log_file = (fs::path(n.dir) / "node.log").string();
    n.pid_file = (fs::path(n.dir) / "node.pid").string();
    out.push_back(std::move(n));
  }
  return out;
}

Result<std::string> FindNodeBinary(const std::string& hint) {
  if (!hint.empty()) {
    if (::access(hint.c_str(), X_OK) == 0) return hint;
    return Status::NotFound("--node-binary " + hint + " is not an executable");
  }
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path beside = self.parent_path() / "dynamo-node";
    if (::access(beside.c_str(), X_OK) == 0) return beside.string();
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    fs::path candidate = fs::path(dir) / "dynamo-node";
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return Status::NotFound("dynamo-node not found beside dynamoctl or on PATH; use --node-binary");
}

Result<pid_t> SpawnNode(const std::string& binary, const LocalClusterOptions& options,
                        const LocalNode& node, const std::vector<net::Endpoint>& seeds) {
  std::error_code ec;
  fs::create_directories(node.data_dir, ec);
  if (ec) return Status::IOError("cannot create " + node.data_dir + ": " + ec.message());
  std::vector<std::string> args = {binary,       "--id",       node.id,
                                   "--listen",   node.address.ToString(),
                                   "--data-dir", node.data_dir,
                                   "--engine",   options.engine,
                                   "--log-level", options.log_level};
  for (const net::Endpoint& s : seeds) {
    args.push_back("--seed");
    args.push_back(s.ToString());
  }
  if (options.partitions) args.insert(args.end(), {"--partitions", std::to_string(options.partitions)});
  if (options.replicas) args.insert(args.end(), {"--replicas", std::to_string(options.replicas)});
  if (!options.config_file.empty()) args.insert(args.end(), {"--config", options.config_file});
  args.insert(args.end(), node.extra_args.begin(), node.extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The environment, with node.env's entries replacing any of the same name.
  std::vector<std::string> extra_env = node.env;
  auto overridden = [&](std::string_view entry) {
    for (const std::string& e : extra_env) {
      const size_t eq = e.find('=');
      if (entry.substr(0, eq + 1) == std::string_view(e).substr(0, eq + 1)) return true;
    }
    return false;
  };
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!overridden(*e)) envp.push_back(*e);
  }
  for (std::string& e : extra_env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int netns = -1;
  if (!node.netns.empty()) {
    const std::string path = "/run/netns/" + node.netns;
    netns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (netns < 0) return Status::IOError("cannot open network namespace " + path);
  }
  int log = ::open(node.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    if (netns >= 0) ::close(netns);
    return Status::IOError("cannot open " + node.log_file);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log);
    if (netns >= 0) ::close(netns);
    return Status::IOError("fork failed");
  }
  if (pid == 0) {
    if (netns >= 0 && ::setns(netns, CLONE_NEWNET) != 0) ::_exit(126);
    ::setsid();
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(log);
  if (netns >= 0) ::close(netns);
  std::ofstream(node.pid_file, std::ios::trunc) << pid << "\n";
  return pid;
}

namespace {

// True while `pid` exists and has not exited (a zombie has).
bool ProcessRunning(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream status("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(status, line);
  size_t close = line.rfind(')');
  return !(close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z');
}

}  // namespace

bool IsNodeProcess(pid_t pid, const std::string& data_dir) {
  if (!ProcessRunning(pid)) return false;
  const fs::path proc = "/proc/" + std::to_string(pid);
  std::ifstream cmd(proc / "cmdline");
  std::vector<std::string> args;
  for (std::string arg; std::getline(cmd, arg, '\0');) args.push_back(std::move(arg));
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] != "--data-dir") continue;
    fs::path named = args[i + 1];
    if (named.is_relative()) named = proc / "cwd" / named;  // as the process resolves it
    std::error_code ec;
    return fs::equivalent(named, data_dir, ec);
  }
  return false;
}

Status WaitForConvergence(const std::vector<net::Endpoint>& nodes, size_t expected,
                          uint64_t timeout_ms, std::string* detail) {
  const uint64_t deadline = NowMs() + timeout_ms;
  std::string why;
  while (true) {
    why.clear();
    std::optional<uint64_t> hash;
    for (const net::Endpoint& n : nodes) {
      Result<StatusView> view = FetchStatus({n}, kProbeTimeoutMs);
      if (!view.ok()) {
        why = n.ToString() + " does not answer: " + view.status().ToString();
        break;
      }
      const ClusterMap& map = view->map;
      if (map.next()) {
        why = n.ToString() + " sees a change in progress (" + std::to_string(map.Awaiting().size()) +
              " transfers left)";
        break;
      }
      if (map.ring().nodes().size() != expected) {
        why = n.ToString() + " sees " + std::to_string(map.ring().nodes().size()) + " of " +
              std::to_string(expected) + " nodes in the ring";
        break;
      }
      if (hash && *hash != map.ContentHash()) {
        why = "nodes disagree on the ring";
        break;
      }
      hash = map.ContentHash();
      for (const MemberView& m : view->members) {
        if (m.state != "up") why = n.ToString() + " sees " + m.id + " " + m.state;
      }
      if (!why.empty()) break;
    }
    if (why.empty()) return Status::OK();
    if (NowMs() >= deadline) {
      if (detail) *detail = why;
      return Status::Timeout("cluster did not converge: " + why);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

Status StartLocalCluster(const LocalClusterOptions& options, std::ostream& out) {
  if (options.nodes < 1 || options.nodes > 64) {
    return Status::InvalidArgument("--nodes must be from 1 to 64");
  }
  if (options.dir.empty()) return Status::InvalidArgument("--dir is required");
  if (static_cast<size_t>(options.base_port) + options.nodes > 65536 || options.base_port < 1024) {
    return Status::InvalidArgument("--base-port must leave room for every node below 65536 and be >= 1024");
  }
  Result<std::string> binary = FindNodeBinary(options.node_binary);
  if (!binary.ok()) return binary.status();
  std::vector<LocalNode> layout = LocalLayout(options);
  for (const LocalNode& n : layout) {
    std::optional<pid_t> pid = ReadPid(n.pid_file);
    if (pid && IsNodeProcess(*pid, n.data_dir)) {
      return Status::InvalidArgument(n.id + " is already running (pid " + std::to_string(*pid) +
                                     "); run 'dynamoctl cluster stop --dir " + options.dir + "' first");
    }
  }
  std::vector<net::Endpoint> addresses;
  for (const LocalNode& n : layout) {
    if (!PortFree(n.address)) {
      return Status::InvalidArgument("port " + std::to_string(n.address.port) + " for " + n.id +
                                     " is in use; choose another --base-port");
    }
    addresses.push_back(n.address);
  }
  // A directory whose first node has data holds a stopped cluster: its
  // nodes already know the ring, so all start before the wait.
  std::error_code exists_error;
  const bool restart = fs::exists(layout[0].data_dir, exists_error);
  std::error_code mkdir_error;
  fs::create_directories(options.dir, mkdir_error);
  WriteClusterConf(options, *binary);
  std::vector<std::pair<const LocalNode*, pid_t>> started;
  auto check_alive = [&]() -> Status {
    for (auto& [node, pid] : started) {
      // Our own children: until exec they still look like this program.
      if (!ProcessRunning(pid)) {
        return Status::Aborted(node->id + " exited during startup: " + LastLine(node->log_file));
      }
    }
    return Status::OK();
  };
  // A start that fails stops the nodes it launched (its own children)
  // rather than leaving them running.
  auto fail = [&](Status why) {
    for (auto& [node, pid] : started) ::kill(pid, SIGTERM);
    for (auto& [node, pid] : started) {
      const uint64_t deadline = NowMs() + kStopAfterFailedStartMs;
      while (::waitpid(pid, nullptr, WNOHANG) == 0 && NowMs() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (::kill(pid, 0) == 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
      std::error_code ec;
      fs::remove(node->pid_file, ec);
    }
    if (started.empty()) return why;
    return Status(why.code(),
                  std::string(why.message()) + " (the nodes this start launched were stopped)");
  };
  const net::Endpoint seed = layout[0].address;
  for (size_t i = 0; i < layout.size(); ++i) {
    std::vector<net::Endpoint> seeds;
    if (i > 0) seeds.push_back(seed);
    Result<pid_t> pid = SpawnNode(*binary, options, layout[i], seeds);
    if (!pid.ok()) return fail(pid.status());
    started.emplace_back(&layout[i], *pid);
    out << "started " << layout[i].id << " on " << layout[i].address.ToString() << " (pid " << *pid
        << ", log " << layout[i].log_file << ")\n";
    if (i == 0 && !restart) {
      // The first node creates the cluster; the others join through it.
      std::string why;
      Status s = WaitForConvergence({seed}, 1, options.wait_ms, &why);
      if (!s.ok()) {
        if (Status dead = check_alive(); !dead.ok()) return fail(dead);
        return fail(Status::Timeout(layout[0].id + " did not come up: " + why + " (see " +
                                    layout[0].log_file + ")"));
      }
    }
  }
  std::string why;
  Status s = WaitForConvergence(addresses, layout.size(), options.wait_ms, &why);
  if (!s.ok()) {
    if (Status dead = check_alive(); !dead.ok()) return fail(dead);
    return fail(s);
  }
  return Status::OK();
}

Status RestartLocalNode(const std::string& dir, const std::string& id, std::ostream& out,
                        const std::vector<std::string>& extra_args) {
  Result<LocalClusterOptions> options = ReadClusterConf(dir);
  if (!options.ok()) return options.status();
  std::vector<LocalNode> layout = LocalLayout(*options);
  LocalNode* node = nullptr;
  for (LocalNode& n : layout) {
    if (n.id == id) node = &n;
  }
  if (node == nullptr) return Status::InvalidArgument("no node " + id + " in the cluster under " + dir);
  std::optional<pid_t> pid = ReadPid(node->pid_file);
  if (pid && IsNodeProcess(*pid, node->data_dir)) {
    return Status::InvalidArgument(id + " is already running (pid " + std::to_string(*pid) + ")");
  }
  std::vector<net::Endpoint> seeds;
  for (const LocalNode& n : layout) {
    std::optional<pid_t> other = ReadPid(n.pid_file);
    if (n.id != id && other && IsNodeProcess(*other, n.data_dir)) seeds.push_back(n.address);
  }
  node->extra_args = extra_args;
  Result<pid_t> started = SpawnNode(options->node_binary, *options, *node, seeds);
  if (!started.ok()) return started.status();
  out << "started " << id << " on " << node->address.ToString() << " (pid " << *started << ")\n";
  const uint64_t deadline = NowMs() + options->wait_ms;
  while (NowMs() < deadline) {
    if (!ProcessRunning(*started)) return Status::Aborted(id + " exited: " + LastLine(node->log_file));
    if (FetchStatus({node->address}, kProbeTimeoutMs).ok()) return Status::OK();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status::Timeout(id + " did not answer");
}

Status SignalLocalNode(const std::string& dir, const std::string& id, int signal, std::ostream& out) {
  std::optional<pid_t> pid = ReadPid((fs::path(dir) / id / "node.pid").string());
  if (!pid || !IsNodeProcess(*pid, (fs::path(dir) / id / kNodeDataDir).string())) {
    return Status::NotFound(id + " is not running under " + dir);
  }
  if (::kill(*pid, signal) != 0) return Status::IOError("kill failed");
  out << "sent signal " << signal << " to " << id << " (pid " << *pid << ")\n";
  return Status::OK();
}

Status StopLocalCluster(const std::string& dir, uint64_t timeout_ms, std::ostream& out) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::NotFound("no cluster directory " + dir);
  struct Running {
    std::string id;
    pid_t pid;
    std::string data_dir;
  };
  std::vector<Running> running;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    fs::path pid_file = entry.path() / "node.pid";
    std::optional<pid_t> pid = ReadPid(pid_file.string());
    if (!pid) continue;
    const std::string data_dir = (entry.path() / kNodeDataDir).string();
    if (!IsNodeProcess(*pid, data_dir)) {
      fs::remove(pid_file, ec);
      continue;
    }
    ::kill(*pid, SIGTERM);
    ::kill(*pid, SIGCONT);  // a node paused by 'cluster kill --signal STOP' acts on it
    running.push_back({entry.path().filename().string(), *pid, data_dir});
  }
  const uint64_t deadline = NowMs() + timeout_ms;
  Status result;
  for (const auto& [id, pid, data_dir] : running) {
    while (IsNodeProcess(pid, data_dir) && NowMs() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (IsNodeProcess(pid, data_dir)) {
      out << id << " (pid " << pid << ") did not stop within " << timeout_ms << " ms\n";
      result = Status::Timeout("some nodes did not stop");
    } else {
      out << "stopped " << id << " (pid " << pid << ")\n";
      fs::remove(fs::path(dir) / id / "node.pid", ec);
    }
  }
  if (running.empty()) out << "no running nodes under " << dir << "\n";
  return result;
}

}  // namespace dynamo::cli
