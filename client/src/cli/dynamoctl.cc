// dynamoctl: administer a dynamo cluster and run a local one.
#include <csignal>

#include <CLI/CLI.hpp>
#include <iostream>

#include "admin.h"
#include "data_commands.h"
#include "json.h"
#include "local_cluster.h"

namespace dynamo::cli {
namespace {

int Fail(const Status& s) {
  std::cerr << "dynamoctl: " << s.ToString() << "\n";
  return 1;
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
  app.add_option("--r", r, "replies a read waits for (default 2)")->check(CLI::Range(1, 255));
  app.add_option("--w", w, "acknowledgements a write waits for (default 2)")
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
      "start", "start K nodes in the background and wait for one ring; with --node, restart one node");
  std::string single_node;
  start->add_option("--node", single_node, "restart this node of the cluster under --dir");
  bool scrub = false;
  start->add_flag("--scrub", scrub,
                  "with --node: scrub its data before it serves (dynamo-node --scrub)");
  start->add_option("--nodes", local.nodes, "number of nodes (default 3)");
  start->add_option("--base-port", local.base_port, "port of n1; node i uses base+i-1 (default 7000)");
  start->add_option("--dir", local.dir, "directory for every node's data, log and pid")->required();
  start->add_option("--engine", local.engine, "rocksdb (default) or memory")
      ->check(CLI::IsMember({"rocksdb", "memory"}));
  start->add_option("--partitions", local.partitions, "Q for the new cluster");
  start->add_option("--replicas", local.replicas, "N for the new cluster");
  start->add_option("--node-binary", local.node_binary, "dynamo-node to run (default: beside dynamoctl)");
  start->add_option("--config", local.config_file, "TOML config file passed to every node");
  start->add_option("--log-level", local.log_level, "node log level (default info)");
  uint64_t wait_s = 60;
  start->add_option("--wait", wait_s, "seconds to wait for the ring to converge (default 60)")
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
      ->check(CLI::Range(uint64_t{0}, uint64_t{86'400}));

  CLI11_PARSE(app, argc, argv);

  std::vector<net::Endpoint> seeds;
  if (seed_args.empty()) seed_args.push_back("127.0.0.1:7000");
  for (const std::string& s : seed_args) {
    Result<net::Endpoint> ep = net::ParseEndpoint(s);
    if (!ep.ok()) return Fail(ep.status().Annotate("--seed"));
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
    if (!view.ok()) return Fail(view.status());
    if (status->parsed()) {
      std::cout << (json ? StatusJson(*view) + "\n" : StatusText(*view));
    } else {
      std::cout << (json ? RingJson(view->map) + "\n" : RingText(view->map));
    }
    return 0;
  }
  if (stats->parsed()) {
    std::vector<NodeStatsView> views;
    for (const net::Endpoint& seed : seeds) {
      Result<NodeStatsView> v = FetchStats(seed, timeout_ms);
      if (!v.ok()) return Fail(v.status());
      views.push_back(std::move(*v));
    }
    std::cout << (json ? StatsJson(views) + "\n" : StatsText(views));
    return 0;
  }
  if (leave->parsed() || remove->parsed()) {
    proto::AdminRequest req{leave->parsed() ? proto::AdminOp::kLeave : proto::AdminOp::kRemove,
                            node_id};
    Result<proto::Message> reply = CallAny(seeds, req, timeout_ms);
    if (!reply.ok()) return Fail(reply.status());
    const auto* ar = std::get_if<proto::AdminReply>(&reply->body);
    if (ar == nullptr) return Fail(Status::ProtocolError("unexpected reply"));
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
    Status s = RestartLocalNode(local.dir, single_node, json ? std::cerr : std::cout,
                                scrub ? std::vector<std::string>{"--scrub"}
                                      : std::vector<std::string>{});
    if (!s.ok()) return Fail(s);
    return 0;
  }
  if (kill->parsed()) {
    int sig = kill_signal == "KILL" ? SIGKILL : kill_signal == "TERM" ? SIGTERM
            : kill_signal == "STOP" ? SIGSTOP : SIGCONT;
    Status s = SignalLocalNode(kill_dir, kill_node, sig, json ? std::cerr : std::cout);
    if (!s.ok()) return Fail(s);
    return 0;
  }
  if (start->parsed()) {
    if (scrub) return Fail(Status::InvalidArgument("--scrub restarts one node: give --node"));
    local.wait_ms = wait_s * 1000;
    std::ostream& progress = json ? std::cerr : std::cout;
    Status s = StartLocalCluster(local, progress);
    if (!s.ok()) return Fail(s);
    const std::string seed = LocalLayout(local)[0].address.ToString();
    if (json) {
      Json j;
      j.BeginObject().Key("seed").String(seed).Key("nodes").Uint(local.nodes).Key("dir").String(local.dir).EndObject();
      std::cout << j.str() << "\n";
    } else {
      std::cout << "cluster of " << local.nodes << " nodes is up; seed " << seed << "\n";
    }
    return 0;
  }
  if (stop->parsed()) {
    Status s = StopLocalCluster(stop_dir, stop_wait_s * 1000, json ? std::cerr : std::cout);
    if (!s.ok()) return Fail(s);
    return 0;
  }
  return 0;
}

}  // namespace
}  // namespace dynamo::cli

int main(int argc, char** argv) { return dynamo::cli::Main(argc, argv); }
