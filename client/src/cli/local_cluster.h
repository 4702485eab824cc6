// A local development cluster of dynamo-node processes, as ccm is for
// Cassandra: node i is "n<i>", listens on 127.0.0.1:<base_port + i - 1>, and
// keeps its data, log and pid under <dir>/n<i>/.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "dynamo/net/event_loop.h"
#include "dynamo/status.h"

namespace dynamo::cli {

// Most nodes a local cluster may have.
inline constexpr size_t kLocalNodesMax = 64;

struct LocalClusterOptions {
  size_t nodes = 3;
  uint16_t base_port = 7000;
  std::string dir;
  std::string engine = "rocksdb";
  uint32_t partitions = 0;  // 0: the node's default
  uint32_t replicas = 0;    // 0: the node's default
  std::string node_binary;  // empty: next to this program, then PATH
  std::string config_file;  // passed to every node
  std::string log_level = "info";
  uint64_t wait_ms = 60000;  // for the ring to converge
  // Nodes that left the cluster or were removed from it (a node exits with
  // status 3 when it finds itself removed): a restart of the cluster does
  // not start them again. Recorded in cluster.conf.
  std::vector<std::string> departed;
};

struct LocalNode {
  std::string id;
  net::Endpoint address;
  std::string dir;       // <dir>/n<i>
  std::string data_dir;  // <dir>/n<i>/data
  std::string log_file;  // <dir>/n<i>/node.log
  std::string pid_file;  // <dir>/n<i>/node.pid
  // Network namespace (a name under /run/netns) to run the node in; empty:
  // this process's own.
  std::string netns;
  // NAME=value entries added to the process's environment.
  std::vector<std::string> env;
  // Arguments appended to the node's command line, e.g. {"--scrub"}.
  std::vector<std::string> extra_args;
};

std::vector<LocalNode> LocalLayout(const LocalClusterOptions& options);
// Node `id`'s paths under `dir` (no address).
LocalNode NodeUnder(const std::string& dir, const std::string& id);
// The dynamo-node to run: `hint` if given, else the one beside this program,
// else the first on PATH. NotFound if none.
Result<std::string> FindNodeBinary(const std::string& hint);
// Starts one node in the background (its own session, output to its log) and
// records its pid. Returns the pid.
Result<pid_t> SpawnNode(const std::string& binary, const LocalClusterOptions& options,
                        const LocalNode& node, const std::vector<net::Endpoint>& seeds);
// True while `pid` runs a node on `data_dir`: its command line names that
// data directory (--data-dir), whatever the binary (--node-binary may name
// another), so a pid reused by another process, or by a node of another
// cluster, is not taken for it.
bool IsNodeProcess(pid_t pid, const std::string& data_dir);
// The node process running on `data_dir`, found by its command line.
std::optional<pid_t> FindNodeProcess(const std::string& data_dir);
// The node running on `node`'s data directory: the pid its pid file names
// if that is it, else the one found by its command line (a pid file left by
// an earlier run, or lost, does not hide it).
std::optional<pid_t> RunningNode(const LocalNode& node);
// Waits until every node in `nodes` answers, all hold the same cluster map
// with no change pending, its ring holds `expected` nodes, and every member
// is up. On timeout, *detail says what was still missing. `alive`, if
// given, is asked before each look: its error ends the wait at once (a
// node that exited).
Status WaitForConvergence(const std::vector<net::Endpoint>& nodes, size_t expected,
                          uint64_t timeout_ms, std::string* detail,
                          const std::function<Status()>& alive = {});
// How the cluster under `dir` was started (dir/cluster.conf). NotFound if
// none was; Corruption if the file is not one this program wrote.
Result<LocalClusterOptions> ReadLocalClusterConf(const std::string& dir);
// Starts the whole cluster and waits for it, options.wait_ms in all, and
// records the options in dir/cluster.conf; progress lines go to `out`. A
// node that exits meanwhile fails the start at once. One start or stop
// runs at a time under a directory (Busy otherwise).
Status StartLocalCluster(const LocalClusterOptions& options, std::ostream& out);
// SIGTERM to every node recorded under `dir`, then waits up to timeout_ms
// for each to exit.
Status StopLocalCluster(const std::string& dir, uint64_t timeout_ms, std::ostream& out);
struct RestartOptions {
  std::vector<std::string> extra_args;  // on its command line, e.g. {"--scrub"}
  std::string node_binary;              // empty: the one recorded
  uint64_t wait_ms = 60000;             // for it to answer
};
// Starts node `id` of the cluster under `dir` again (as recorded in
// dir/cluster.conf), joining through a running node. Waits until it answers;
// fails at once if it exits.
Status RestartLocalNode(const std::string& dir, const std::string& id, std::ostream& out,
                        const RestartOptions& restart = {});
// Sends `signal` to node `id` of the cluster under `dir`, by its recorded pid.
Status SignalLocalNode(const std::string& dir, const std::string& id, int signal, std::ostream& out);

}  // namespace dynamo::cli
