#include "local_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
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
// dynamo-node's exit status when it finds it has left the cluster or was
// removed from it (docs/cluster.md).
constexpr int kExitRemoved = 3;

uint64_t NowMs() {
  using namespace std::chrono;
  return static_cast<uint64_t>(duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count());
}

std::optional<pid_t> ReadPid(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!std::getline(in, text)) return std::nullopt;
  pid_t pid = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc() || end != text.data() + text.size() || pid <= 0) return std::nullopt;
  return pid;
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

std::string Errno(int err) { return std::strerror(err); }

// The last non-empty line of a log, read from its last kLogTailBytes.
constexpr std::streamoff kLogTailBytes = 64 << 10;
std::string LastLine(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  const std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - kLogTailBytes));
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

// Writes `text` to `path` whole or not at all: a temporary file, synced,
// renamed over it.
Status WriteFileAtomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError("cannot create " + tmp.string() + ": " + Errno(errno));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return Status::IOError("cannot write " + tmp.string() + ": " + Errno(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return Status::IOError("cannot write " + tmp.string() + ": " + Errno(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::IOError("cannot rename " + tmp.string() + ": " + Errno(errno));
  }
  return Status::OK();
}

fs::path ConfPath(const std::string& dir) { return fs::path(dir) / "cluster.conf"; }

// dir/cluster.conf records how the cluster was started, so it and single
// nodes can be started again later (paths made absolute: the next command
// may run elsewhere).
Status WriteClusterConf(const LocalClusterOptions& o, const std::string& binary) {
  auto absolute = [](const std::string& p) {
    std::error_code ec;
    return p.empty() ? p : fs::absolute(p, ec).string();
  };
  std::ostringstream f;
  f << "nodes=" << o.nodes << "\nbase_port=" << o.base_port << "\nengine=" << o.engine
    << "\npartitions=" << o.partitions << "\nreplicas=" << o.replicas
    << "\nconfig_file=" << absolute(o.config_file) << "\nlog_level=" << o.log_level
    << "\nnode_binary=" << absolute(binary) << "\ndeparted=";
  for (size_t i = 0; i < o.departed.size(); ++i) f << (i ? "," : "") << o.departed[i];
  f << "\n";
  return WriteFileAtomically(ConfPath(o.dir), f.str());
}

// The layout's bounds, for the options of a new cluster and a recorded one.
Status CheckLayout(const LocalClusterOptions& o) {
  if (o.nodes < 1 || o.nodes > kLocalNodesMax) {
    return Status::InvalidArgument("--nodes must be from 1 to " + std::to_string(kLocalNodesMax));
  }
  if (static_cast<size_t>(o.base_port) + o.nodes > 65536 || o.base_port < 1024) {
    return Status::InvalidArgument(
        "--base-port must leave room for every node below 65536 and be >= 1024");
  }
  // The nodes' own checks, made before anything is recorded: a bad value
  // found by the first node left a record that every later start had to
  // match.
  if (o.partitions != 0 && !IsValidPartitionCount(o.partitions)) {
    return Status::InvalidArgument("--partitions must be a power of two from 1 to " +
                                   std::to_string(kMaxPartitions));
  }
  if (o.partitions != 0 && o.nodes > o.partitions) {
    return Status::InvalidArgument("--nodes must be at most --partitions");
  }
  if (o.replicas > kMaxReplicas) {
    return Status::InvalidArgument("--replicas must be from 1 to " + std::to_string(kMaxReplicas));
  }
  return Status::OK();
}

// An exclusive hold on dir/.lock for one start or stop at a time (not
// inherited by the nodes started meanwhile).
class DirLock {
 public:
  static Result<std::unique_ptr<DirLock>> Take(const std::string& dir) {
    const fs::path path = fs::path(dir) / ".lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Status::IOError("cannot open " + path.string() + ": " + Errno(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) {
        return Status::Busy("another dynamoctl is starting or stopping the cluster under " + dir);
      }
      return Status::IOError("cannot lock " + path.string() + ": " + Errno(err));
    }
    return std::unique_ptr<DirLock>(new DirLock(fd));
  }
  ~DirLock() { ::close(fd_); }
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  int fd_;
};

// Why child `pid` ended, once it has: its exit status or signal, and its
// log's last line.
// When child `pid` has ended: how, with its log's last line. *exit_status
// gets its exit status (-1 when a signal ended it).
std::optional<std::string> EndedChild(pid_t pid, const std::string& log_file,
                                      int* exit_status = nullptr) {
  int status = 0;
  if (::waitpid(pid, &status, WNOHANG) != pid) return std::nullopt;
  if (exit_status) *exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::string why = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                        : "exit status " + std::to_string(WEXITSTATUS(status));
  const std::string last = LastLine(log_file);
  return why + (last.empty() ? "" : ": " + last);
}

}  // namespace

Result<LocalClusterOptions> ReadLocalClusterConf(const std::string& dir) {
  std::ifstream f(ConfPath(dir));
  if (!f) return Status::NotFound("no local cluster in " + dir + " (missing cluster.conf)");
  LocalClusterOptions o;
  o.dir = dir;
  std::string line;
  auto number = [&](const std::string& k, const std::string& v, uint64_t max) -> Result<uint64_t> {
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size() || n > max) {
      return Status::Corruption(ConfPath(dir).string() + ": bad " + k + " '" + v + "'");
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
    if (k == "departed") {
      std::stringstream ids(v);
      for (std::string id; std::getline(ids, id, ',');) {
        if (!id.empty()) o.departed.push_back(id);
      }
    }
  }
  if (Status s = CheckLayout(o); !s.ok()) {
    return Status::Corruption(ConfPath(dir).string() + ": " + std::string(s.message()));
  }
  return o;
}

std::vector<LocalNode> LocalLayout(const LocalClusterOptions& options) {
  std::vector<LocalNode> out;
  for (size_t i = 1; i <= options.nodes; ++i) {
    LocalNode n = NodeUnder(options.dir, "n" + std::to_string(i));
    n.address = net::Endpoint{"127.0.0.1", static_cast<uint16_t>(options.base_port + i - 1)};
    out.push_back(std::move(n));
  }
  return out;
}

LocalNode NodeUnder(const std::string& dir, const std::string& id) {
  LocalNode n;
  n.id = id;
  n.dir = (fs::path(dir) / id).string();
  n.data_dir = (fs::path(n.dir) / kNodeDataDir).string();
  n.log_file = (fs::path(n.dir) / "node.log").string();
  n.pid_file = (fs::path(n.dir) / "node.pid").string();
  return n;
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
    if (netns < 0) {
      return Status::IOError("cannot open network namespace " + path + ": " + Errno(errno));
    }
  }
  int log = ::open(node.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    const int err = errno;
    if (netns >= 0) ::close(netns);
    return Status::IOError("cannot open " + node.log_file + ": " + Errno(err));
  }
  // Written to the log by a child that could not become the node (the
  // message made before the fork: the child only writes).
  const std::string exec_failed = "dynamoctl: cannot run " + binary + ": ";
  const std::string setns_failed = "dynamoctl: cannot enter network namespace " + node.netns + ": ";
  pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(log);
    if (netns >= 0) ::close(netns);
    return Status::IOError("fork failed: " + Errno(err));
  }
  if (pid == 0) {
    auto die = [log](const std::string& what, int status) {
      const char* why = ::strerror(errno);
      [[maybe_unused]] ssize_t n = ::write(log, what.data(), what.size());
      n = ::write(log, why, ::strlen(why));
      n = ::write(log, "\n", 1);
      ::_exit(status);
    };
    if (netns >= 0 && ::setns(netns, CLONE_NEWNET) != 0) die(setns_failed, 126);
    ::setsid();
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    ::execve(argv[0], argv.data(), envp.data());
    die(exec_failed, 127);
  }
  ::close(log);
  if (netns >= 0) ::close(netns);
  if (Status s = WriteFileAtomically(node.pid_file, std::to_string(pid) + "\n"); !s.ok()) {
    // A node no pid file names could not be stopped by `cluster stop`.
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return s;
  }
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

std::optional<pid_t> FindNodeProcess(const std::string& data_dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    pid_t pid = 0;
    auto [end, err] = std::from_chars(name.data(), name.data() + name.size(), pid);
    if (err != std::errc() || end != name.data() + name.size()) continue;
    if (IsNodeProcess(pid, data_dir)) return pid;
  }
  return std::nullopt;
}

std::optional<pid_t> RunningNode(const LocalNode& node) {
  std::optional<pid_t> pid = ReadPid(node.pid_file);
  if (pid && IsNodeProcess(*pid, node.data_dir)) return pid;
  std::error_code ec;
  if (!fs::is_directory(node.data_dir, ec)) return std::nullopt;
  return FindNodeProcess(node.data_dir);
}

Status WaitForConvergence(const std::vector<net::Endpoint>& nodes, size_t expected,
                          uint64_t timeout_ms, std::string* detail,
                          const std::function<Status()>& alive) {
  const uint64_t deadline = NowMs() + timeout_ms;
  std::string why;
  while (true) {
    if (alive) DYNAMO_RETURN_IF_ERROR(alive());
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
  if (options.dir.empty()) return Status::InvalidArgument("--dir is required");
  DYNAMO_RETURN_IF_ERROR(CheckLayout(options));
  Result<std::string> binary = FindNodeBinary(options.node_binary);
  if (!binary.ok()) return binary.status();
  std::error_code mkdir_error;
  fs::create_directories(options.dir, mkdir_error);
  if (mkdir_error) {
    return Status::IOError("cannot create " + options.dir + ": " + mkdir_error.message());
  }
  Result<std::unique_ptr<DirLock>> lock = DirLock::Take(options.dir);
  if (!lock.ok()) return lock.status();
  const std::vector<LocalNode> all = LocalLayout(options);
  for (const LocalNode& n : all) {
    if (std::optional<pid_t> pid = RunningNode(n)) {
      return Status::InvalidArgument(n.id + " is already running (pid " + std::to_string(*pid) +
                                     "); run 'dynamoctl cluster stop --dir " + options.dir + "' first");
    }
  }
  LocalClusterOptions record = options;
  auto departed = [&record](const std::string& id) {
    return std::find(record.departed.begin(), record.departed.end(), id) != record.departed.end();
  };
  std::vector<LocalNode> layout;
  for (const LocalNode& n : all) {
    if (departed(n.id)) {
      out << n.id << " left the cluster; not started\n";
    } else {
      layout.push_back(n);
    }
  }
  if (layout.empty()) {
    return Status::InvalidArgument("every node of the cluster under " + options.dir +
                                   " has left it; a new cluster needs a new --dir");
  }
  for (const LocalNode& n : layout) {
    if (!PortFree(n.address)) {
      return Status::InvalidArgument("port " + std::to_string(n.address.port) + " for " + n.id +
                                     " is in use; choose another --base-port");
    }
  }
  // A directory where any node has data holds a stopped cluster (the first
  // node's may be gone: it left, and its directory was deleted): its nodes
  // already know the ring, so all start before the wait.
  const bool restart = std::any_of(all.begin(), all.end(), [](const LocalNode& n) {
    std::error_code exists_error;
    return fs::exists(n.data_dir, exists_error);
  });
  DYNAMO_RETURN_IF_ERROR(WriteClusterConf(record, *binary));
  const uint64_t deadline = NowMs() + options.wait_ms;
  auto remaining = [&] { return deadline - std::min(deadline, NowMs()); };
  struct Started {
    const LocalNode* node;
    pid_t pid;
    bool reaped = false;  // exited, and waited for
  };
  std::vector<Started> started;
  // Our own children: a node that ended during the start fails it at once,
  // unless, in a restart, it exited because it has left the cluster: it is
  // recorded as departed, and the wait starts again without it.
  bool departure = false;
  auto check_alive = [&]() -> Status {
    for (Started& child : started) {
      if (child.reaped) continue;
      int exit_status = 0;
      if (std::optional<std::string> why =
              EndedChild(child.pid, child.node->log_file, &exit_status)) {
        child.reaped = true;
        if (restart && exit_status == kExitRemoved) {
          record.departed.push_back(child.node->id);
          DYNAMO_RETURN_IF_ERROR(WriteClusterConf(record, *binary));
          out << child.node->id << " has left the cluster (" << *why
              << "); recorded, and not started again\n";
          departure = true;
          return Status::Aborted(child.node->id + " has left the cluster");
        }
        return Status::Aborted(child.node->id + " exited during startup (" + *why + ")");
      }
    }
    return Status::OK();
  };
  // A start that fails stops the nodes it launched (its own children)
  // rather than leaving them running.
  auto fail = [&](Status why) {
    for (const Started& child : started) {
      if (!child.reaped) ::kill(child.pid, SIGTERM);
    }
    for (const auto& [node, pid, reaped] : started) {
      if (!reaped) {
        const uint64_t stop_deadline = NowMs() + kStopAfterFailedStartMs;
        while (::waitpid(pid, nullptr, WNOHANG) == 0 && NowMs() < stop_deadline) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (::kill(pid, 0) == 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
          ::kill(pid, SIGKILL);
          ::waitpid(pid, nullptr, 0);
        }
      }
      // Only a pid file this start wrote: another's names its own node.
      std::optional<pid_t> recorded = ReadPid(node->pid_file);
      std::error_code ec;
      if (recorded && *recorded == pid) fs::remove(node->pid_file, ec);
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
    started.push_back(Started{&layout[i], *pid});
    out << "started " << layout[i].id << " on " << layout[i].address.ToString() << " (pid " << *pid
        << ", log " << layout[i].log_file << ")\n";
    if (i == 0 && !restart) {
      // The first node creates the cluster; the others join through it.
      std::string why;
      Status s = WaitForConvergence({seed}, 1, remaining(), &why, check_alive);
      if (!s.ok()) {
        if (!s.IsTimeout()) return fail(s);
        return fail(Status::Timeout(layout[0].id + " did not come up: " + why + " (see " +
                                    layout[0].log_file + ")"));
      }
    }
  }
  while (true) {
    std::vector<net::Endpoint> addresses;
    for (const Started& child : started) {
      if (!departed(child.node->id)) addresses.push_back(child.node->address);
    }
    if (addresses.empty()) {
      return fail(Status::InvalidArgument("every node of the cluster under " + options.dir +
                                          " has left it; a new cluster needs a new --dir"));
    }
    departure = false;
    std::string why;
    Status s = WaitForConvergence(addresses, addresses.size(), remaining(), &why, check_alive);
    if (s.ok()) return Status::OK();
    if (!departure) return fail(s);
  }
}

Status RestartLocalNode(const std::string& dir, const std::string& id, std::ostream& out,
                        const RestartOptions& restart) {
  Result<LocalClusterOptions> options = ReadLocalClusterConf(dir);
  if (!options.ok()) return options.status();
  Result<std::unique_ptr<DirLock>> lock = DirLock::Take(dir);
  if (!lock.ok()) return lock.status();
  std::string binary = options->node_binary;
  if (!restart.node_binary.empty()) {
    Result<std::string> given = FindNodeBinary(restart.node_binary);
    if (!given.ok()) return given.status();
    binary = *given;
  }
  std::vector<LocalNode> layout = LocalLayout(*options);
  LocalNode* node = nullptr;
  for (LocalNode& n : layout) {
    if (n.id == id) node = &n;
  }
  if (node == nullptr) return Status::InvalidArgument("no node " + id + " in the cluster under " + dir);
  if (std::find(options->departed.begin(), options->departed.end(), id) !=
      options->departed.end()) {
    return Status::InvalidArgument(id + " left the cluster under " + dir +
                                   "; it cannot be started again on its data");
  }
  if (std::optional<pid_t> pid = RunningNode(*node)) {
    return Status::InvalidArgument(id + " is already running (pid " + std::to_string(*pid) + ")");
  }
  std::vector<net::Endpoint> seeds;
  for (const LocalNode& n : layout) {
    if (n.id != id && RunningNode(n)) seeds.push_back(n.address);
  }
  node->extra_args = restart.extra_args;
  Result<pid_t> started = SpawnNode(binary, *options, *node, seeds);
  if (!started.ok()) return started.status();
  out << "started " << id << " on " << node->address.ToString() << " (pid " << *started << ")\n";
  const uint64_t deadline = NowMs() + restart.wait_ms;
  while (NowMs() < deadline) {
    int exit_status = 0;
    if (std::optional<std::string> why = EndedChild(*started, node->log_file, &exit_status)) {
      if (exit_status == kExitRemoved) {
        options->departed.push_back(id);
        DYNAMO_RETURN_IF_ERROR(WriteClusterConf(*options, options->node_binary));
        return Status::Aborted(id + " has left the cluster (" + *why + "); recorded in " +
                               ConfPath(dir).string());
      }
      return Status::Aborted(id + " exited (" + *why + ")");
    }
    // Up once it answers as a member: a node that has left answers for a
    // moment, until it hears so, and then exits.
    Result<StatusView> view = FetchStatus({node->address}, kProbeTimeoutMs);
    if (view.ok() &&
        std::any_of(view->members.begin(), view->members.end(),
                    [&](const MemberView& m) { return m.id == id && m.state == "up"; })) {
      return Status::OK();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status::Timeout(id + " did not answer within " + std::to_string(restart.wait_ms) +
                         " ms (see " + node->log_file + "); it is left running");
}

Status SignalLocalNode(const std::string& dir, const std::string& id, int signal, std::ostream& out) {
  std::optional<pid_t> pid = RunningNode(NodeUnder(dir, id));
  if (!pid) return Status::NotFound(id + " is not running under " + dir);
  if (::kill(*pid, signal) != 0) {
    return Status::IOError("cannot signal " + id + " (pid " + std::to_string(*pid) +
                           "): " + Errno(errno));
  }
  out << "sent signal " << signal << " to " << id << " (pid " << *pid << ")\n";
  return Status::OK();
}

Status StopLocalCluster(const std::string& dir, uint64_t timeout_ms, std::ostream& out) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::NotFound("no cluster directory " + dir);
  Result<std::unique_ptr<DirLock>> lock = DirLock::Take(dir);
  if (!lock.ok()) return lock.status();
  struct Running {
    std::string id;
    pid_t pid;
    std::string data_dir;
  };
  std::vector<Running> running;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const LocalNode node = NodeUnder(dir, entry.path().filename().string());
    const std::string& data_dir = node.data_dir;
    // A node whose pid file was lost (a start killed before writing it), or
    // names a process that ended, is still found by its data directory.
    std::optional<pid_t> pid = RunningNode(node);
    if (!pid) {
      if (ReadPid(node.pid_file)) fs::remove(node.pid_file, ec);
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
