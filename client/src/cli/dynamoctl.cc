// dynamoctl: administer a dynamo cluster and run a local one.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <iostream>
#include <sstream>
#include <string_view>

#include "admin.h"
#include "data_commands.h"
#include "json.h"
#include "local_cluster.h"

namespace dynamo::cli {
namespace {

// Numbers in decimal only: CLI11 reads "07000" as octal and "0x10" as hex.
// Leading zeros are dropped before it reads them.
const CLI::Validator kDecimal(
    [](std::string& text) -> std::string {
      if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) {
        return "'" + text + "' is not a decimal number";
      }
      text.erase(0, std::min(text.find_first_not_of('0'), text.size() - 1));
      return "";
    },
    "DECIMAL");

void PrintJson(const Json& j) { std::cout << j.str() << "\n"; }

// The options of a stopped cluster `start` is asked to start again: those
// recorded in dir/cluster.conf, with the ones given on the command line
// that may change (the binary, the config file, the log level, the wait).
// A given layout (nodes, ports, engine, Q, N) must be the recorded one.
Result<LocalClusterOptions> StartAgain(const LocalClusterOptions& given,
                                       const LocalClusterOptions& recorded, const CLI::App& start) {
  LocalClusterOptions o = recorded;
  auto same = [&](const char* flag, auto given_value, auto recorded_value) -> Status {
    if (start.count(flag) == 0 || given_value == recorded_value) return Status::OK();
    std::ostringstream why;
    why << "the cluster under " << given.dir << " was started with " << flag << " "
        << recorded_value << " (its cluster.conf); give the same or leave " << flag
        << " out (a new cluster needs a new --dir)";
    return Status::InvalidArgument(why.str());
  };
  DYNAMO_RETURN_IF_ERROR(same("--nodes", given.nodes, recorded.nodes));
  DYNAMO_RETURN_IF_ERROR(same("--base-port", given.base_port, recorded.base_port));
  DYNAMO_RETURN_IF_ERROR(same("--engine", given.engine, recorded.engine));
  DYNAMO_RETURN_IF_ERROR(same("--partitions", given.partitions, recorded.partitions));
  DYNAMO_RETURN_IF_ERROR(same("--replicas", given.replicas, recorded.replicas));
  if (start.count("--node-binary")) o.node_binary = given.node_binary;
  if (start.count("--config")) o.config_file = given.config_file;
  if (start.count("--log-level")) o.log_level = given.log_level;
  o.wait_ms = given.wait_ms;
  return o;
}

int Main(int argc, char** argv) {
  CLI::App app{"dynamoctl: administer a dynamo cluster"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand
  std::vector<std::string> seed_args;
  bool json = false;
  uint64_t timeout_ms = 3000;
  app.add_option("--seed", seed_args, "HOST:PORT of a node to ask (repeatable; default 127.0.0.1:7000)");
  app.add_flag("--json", json, "print JSON for scripts");
  app.add_option("--timeout", timeout_ms, "request timeout in ms (default 3000)")
      ->transform(kDecimal)
      ->check(CLI::Range(uint64_t{1}, uint64_t{3'600'000}));

  auto* status = app.add_subcommand("status", "members and their state as the node asked sees them");
  auto* ring = app.add_subcommand("ring", "partition ownership and any change in progress");
  auto* stats = app.add_subcommand("stats", "counters of each --seed node (hints, anti-entropy, requests)");
  std::string node_id;
  auto* leave = app.add_subcommand("leave", "make a node hand its partitions off and exit");
  leave->add_option("ID", node_id, "node id")->required();
  auto* remove = app.add_subcommand("remove", "drop a dead node; others refill its partitions");
  remove->add_option("ID", node_id, "node id")->required();

  DataCommand data;
  int r = 0, w = 0;
  app.add_option("--r", r, "replies a read waits for (default 2)")
      ->transform(kDecimal)
      ->check(CLI::Range(1, 255));
  app.add_option("--w", w, "acknowledgements a write waits for (default 2)")
      ->transform(kDecimal)
      ->check(CLI::Range(1, 255));
  auto* get = app.add_subcommand("get", "read a key: values, context (exit status 2 if not found)");
  get->add_option("KEY", data.key, "the key")->required();
  auto* put = app.add_subcommand("put", "write a key (the value from stdin when not given)");
  put->add_option("KEY", data.key, "the key")->required();
  std::string value;
  auto* value_opt = put->add_option("VALUE", value, "the value");
  put->add_option("--context", data.context_b64, "context from the get this write follows");
  const char* unsynced_help =
      "acknowledge once W replicas applied it, without waiting for a synced copy (lost only if "
      "every "
      "holder loses power or its kernel within the nodes' sync interval)";
  put->add_flag("--unsynced", data.unsynced, unsynced_help);
  auto* del = app.add_subcommand("delete", "delete a key (a tombstone write)");
  del->add_option("KEY", data.key, "the key")->required();
  del->add_option("--context", data.context_b64, "context from the get this delete follows");
  del->add_flag("--unsynced", data.unsynced, unsynced_help);
  auto* where = app.add_subcommand("where", "a key's preference list and fallbacks, with node states");
  where->add_option("KEY", data.key, "the key")->required();
  auto* inspect = app.add_subcommand("inspect", "every replica's stored versions of a key");
  inspect->add_option("KEY", data.key, "the key")->required();

  auto* cluster = app.add_subcommand("cluster", "a local development cluster");
  cluster->require_subcommand(1);
  cluster->fallthrough();
  LocalClusterOptions local;
  auto* start = cluster->add_subcommand(
      "start",
      "start K nodes in the background and wait for one ring; on a directory holding a stopped "
      "cluster, start it again as recorded in its cluster.conf; with --node, restart one node");
  std::string single_node;
  start->add_option("--node", single_node, "restart this node of the cluster under --dir");
  bool scrub = false;
  start->add_flag("--scrub", scrub,
                  "with --node: scrub its data before it serves (dynamo-node --scrub)");
  start->add_option("--nodes", local.nodes, "number of nodes, 1 to 64 (default 3)")
      ->transform(kDecimal);
  start
      ->add_option("--base-port", local.base_port,
                   "port of n1; node i uses base+i-1 (default 7000)")
      ->transform(kDecimal);
  start->add_option("--dir", local.dir, "directory for every node's data, log and pid")->required();
  start->add_option("--engine", local.engine, "rocksdb (default) or memory")
      ->check(CLI::IsMember({"rocksdb", "memory"}));
  start->add_option("--partitions", local.partitions, "Q for the new cluster")->transform(kDecimal);
  start->add_option("--replicas", local.replicas, "N for the new cluster")->transform(kDecimal);
  start->add_option("--node-binary", local.node_binary, "dynamo-node to run (default: beside dynamoctl)");
  start->add_option("--config", local.config_file, "TOML config file passed to every node");
  start->add_option("--log-level", local.log_level, "node log level (default info)");
  uint64_t wait_s = 60;
  start->add_option("--wait", wait_s, "seconds to wait for the ring to converge (default 60)")
      ->transform(kDecimal)
      ->check(CLI::Range(uint64_t{1}, uint64_t{86'400}));
  std::string stop_dir;
  uint64_t stop_wait_s = 30;
  std::string kill_node, kill_signal = "KILL";
  std::string kill_dir;
  auto* kill = cluster->add_subcommand("kill", "send a signal (default KILL, i.e. kill -9) to one node");
  kill->add_option("--dir", kill_dir, "the directory given to start")->required();
  kill->add_option("--node", kill_node, "node id, e.g. n3")->required();
  kill->add_option("--signal", kill_signal, "KILL, TERM, STOP or CONT")
      ->check(CLI::IsMember({"KILL", "TERM", "STOP", "CONT"}));
  auto* stop = cluster->add_subcommand("stop", "SIGTERM every node started under --dir and wait");
  stop->add_option("--dir", stop_dir, "the directory given to start")->required();
  stop->add_option("--wait", stop_wait_s, "seconds to wait for the nodes to stop (default 30)")
      ->transform(kDecimal)
      ->check(CLI::Range(uint64_t{0}, uint64_t{86'400}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints its text and exits 0; a usage error with --json is one
    // error object on stdout and status 1, as every other failure. (The flag
    // is looked for in argv: a parse that failed may not have set it.)
    const bool json_asked = std::any_of(
        argv + 1, argv + argc, [](const char* a) { return std::string_view(a) == "--json"; });
    if (e.get_exit_code() == 0 || !json_asked) return app.exit(e);
    return Fail(Status::InvalidArgument(e.what()), true);
  }

  std::vector<net::Endpoint> seeds;
  if (seed_args.empty()) seed_args.push_back("127.0.0.1:7000");
  for (const std::string& s : seed_args) {
    Result<net::Endpoint> ep = net::ParseEndpoint(s);
    if (!ep.ok()) return Fail(ep.status().Annotate("--seed"), json);
    seeds.push_back(*ep);
  }

  for (CLI::App* sub : {get, put, del, where, inspect}) {
    if (!sub->parsed()) continue;
    data.name = sub->get_name();
    data.json = json;
    data.r = r;
    data.w = w;
    if (sub == put && value_opt->count() > 0) data.value = value;
    return RunDataCommand(seed_args, timeout_ms, data);
  }

  if (status->parsed() || ring->parsed()) {
    Result<StatusView> view = FetchStatus(seeds, timeout_ms);
    if (!view.ok()) return Fail(view.status(), json);
    if (status->parsed()) {
      std::cout << (json ? StatusJson(*view) + "\n" : StatusText(*view));
    } else {
      std::cout << (json ? RingJson(view->map) + "\n" : RingText(view->map));
    }
    return 0;
  }
  if (stats->parsed()) {
    // Every node asked is reported: one that failed does not hide the others.
    std::vector<NodeStatsView> views;
    Status failed;
    for (const net::Endpoint& seed : seeds) {
      Result<NodeStatsView> v = FetchStats(seed, timeout_ms);
      if (v.ok()) {
        views.push_back(std::move(*v));
      } else {
        views.push_back(NodeStatsView{seed.ToString(), 0, {}, v.status().ToString()});
        std::cerr << "dynamoctl: " << v.status().ToString() << "\n";
        failed = v.status();
      }
    }
    std::cout << (json ? StatsJson(views) + "\n" : StatsText(views));
    return failed.ok() ? 0 : 1;
  }
  if (leave->parsed() || remove->parsed()) {
    proto::AdminRequest req{leave->parsed() ? proto::AdminOp::kLeave : proto::AdminOp::kRemove,
                            node_id};
    Result<proto::Message> reply = CallAny(seeds, req, timeout_ms);
    if (!reply.ok()) return Fail(reply.status(), json);
    const auto* ar = std::get_if<proto::AdminReply>(&reply->body);
    if (ar == nullptr) return Fail(Status::ProtocolError("unexpected reply"), json);
    if (json) {
      Json j;
      j.BeginObject().Key("epoch").Uint(ar->epoch).Key("message").String(ar->message).EndObject();
      std::cout << j.str() << "\n";
    } else {
      std::cout << ar->message << "\n";
    }
    return 0;
  }
  if (start->parsed() && !single_node.empty()) {
    // One node restarts as recorded: a layout flag would not apply.
    for (const char* flag : {"--nodes", "--base-port", "--engine", "--partitions", "--replicas",
                             "--config", "--log-level"}) {
      if (start->count(flag)) {
        return Fail(Status::InvalidArgument(std::string(flag) +
                                            " does not apply with --node: the node restarts as "
                                            "recorded in the directory's cluster.conf"),
                    json);
      }
    }
    RestartOptions restart;
    if (scrub) restart.extra_args = {"--scrub"};
    restart.node_binary = local.node_binary;
    restart.wait_ms = wait_s * 1000;
    Status s = RestartLocalNode(local.dir, single_node, json ? std::cerr : std::cout, restart);
    if (!s.ok()) return Fail(s, json);
    if (json) PrintJson(Json().BeginObject().Key("started").String(single_node).EndObject());
    return 0;
  }
  if (kill->parsed()) {
    int sig = kill_signal == "KILL" ? SIGKILL : kill_signal == "TERM" ? SIGTERM
            : kill_signal == "STOP" ? SIGSTOP : SIGCONT;
    Status s = SignalLocalNode(kill_dir, kill_node, sig, json ? std::cerr : std::cout);
    if (!s.ok()) return Fail(s, json);
    if (json) {
      PrintJson(Json()
                    .BeginObject()
                    .Key("signalled")
                    .String(kill_node)
                    .Key("signal")
                    .String(kill_signal)
                    .EndObject());
    }
    return 0;
  }
  if (start->parsed()) {
    if (scrub) return Fail(Status::InvalidArgument("--scrub restarts one node: give --node"), json);
    local.wait_ms = wait_s * 1000;
    Result<LocalClusterOptions> recorded = ReadLocalClusterConf(local.dir);
    if (recorded.ok()) {
      Result<LocalClusterOptions> again = StartAgain(local, *recorded, *start);
      if (!again.ok()) return Fail(again.status(), json);
      local = std::move(*again);
    } else if (recorded.status().code() != StatusCode::kNotFound) {
      return Fail(recorded.status(), json);
    }
    std::ostream& progress = json ? std::cerr : std::cout;
    Status s = StartLocalCluster(local, progress);
    if (!s.ok()) return Fail(s, json);
    // The start may have found nodes that left: the record names them.
    if (Result<LocalClusterOptions> now = ReadLocalClusterConf(local.dir); now.ok()) local = *now;
    std::string seed;
    size_t up = 0;
    for (const LocalNode& n : LocalLayout(local)) {
      if (std::find(local.departed.begin(), local.departed.end(), n.id) != local.departed.end()) {
        continue;
      }
      if (seed.empty()) seed = n.address.ToString();
      ++up;
    }
    if (json) {
      PrintJson(Json()
                    .BeginObject()
                    .Key("seed")
                    .String(seed)
                    .Key("nodes")
                    .Uint(up)
                    .Key("dir")
                    .String(local.dir)
                    .EndObject());
    } else {
      std::cout << "cluster of " << up << " nodes is up; seed " << seed << "\n";
    }
    return 0;
  }
  if (stop->parsed()) {
    Status s = StopLocalCluster(stop_dir, stop_wait_s * 1000, json ? std::cerr : std::cout);
    if (!s.ok()) return Fail(s, json);
    if (json) PrintJson(Json().BeginObject().Key("stopped").String(stop_dir).EndObject());
    return 0;
  }
  return 0;
}

}  // namespace
}  // namespace dynamo::cli

int main(int argc, char** argv) {
  const int status = dynamo::cli::Main(argc, argv);
  // Output a script reads must not be cut short silently (a full disk, a
  // closed pipe).
  std::cout.flush();
  if (!std::cout) {
    std::cerr << "dynamoctl: cannot write the output\n";
    return 1;
  }
  return status;
}
