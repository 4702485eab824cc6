// dynamo-node: the storage daemon.
#include <fcntl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <random>

#include "config.h"
#include "dynamo/node/cached_engine.h"
#include "dynamo/node/keys.h"
#include "dynamo/node/memory_engine.h"
#include "dynamo/node/node_state.h"
#include "dynamo/node/rocksdb_engine.h"
#include "dynamo/node/scrub.h"
#include "server.h"

namespace dynamo::node {
namespace {

constexpr const char* kLockFile = "dynamo-node.lock";

// Holds an exclusive lock on the data directory for the life of the process.
Result<int> LockDataDir(const std::string& dir) {
  const std::string path = dir + "/" + kLockFile;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    std::string holder = n > 0 ? " (pid " + std::string(buf, static_cast<size_t>(n)) + ")" : "";
    return Status::Busy("data directory " + dir + " is in use by another dynamo-node" + holder);
  }
  std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    spdlog::warn("could not record the pid in {}", path);
  }
  return fd;
}

// Logs why the database could not be opened or scrubbed; the exit status.
int StorageFailed(const std::string& what, const Status& s) {
  if (s.code() != StatusCode::kCorruption) {
    spdlog::error("{}{}", what, s.ToString());
    return 1;
  }
  spdlog::error(
      "{}{}; a scrub cannot save this database: move the data directory aside (or delete it) "
      "and start the node again, and it rejoins empty and anti-entropy refills it from its "
      "replicas (docs/cluster.md)",
      what, s.ToString());
  return kExitCorruptData;
}

// Leaves the mark that has the next start scrub (or ask for --scrub).
int StoppedOnCorruptData(const NodeConfig& config) {
  if (config.engine == "rocksdb") {
    Status marked = MarkScrubNeeded(config.data_dir + "/rocksdb");
    if (!marked.ok()) spdlog::error("cannot leave the scrub mark: {}", marked.ToString());
  }
  return kExitCorruptData;
}

int Main(int argc, char** argv) {
  NodeConfig config;
  CLI::App app{"dynamo-node: a storage node of a dynamo cluster (passive: clients coordinate)"};
  std::string listen = "127.0.0.1:7000", config_file, engine = "rocksdb", log_level = "info";
  std::vector<std::string> seeds;
  uint32_t partitions = 0, replicas = 0;
  bool scrub = false;
  app.add_option("--id", config.node.id, "node name, unique in the cluster ([A-Za-z0-9._-], 1-64)")
      ->required();
  app.add_option("--listen", listen, "HOST:PORT to serve on (default 127.0.0.1:7000; loopback "
                                     "unless node.allow_remote is set)");
  app.add_option("--data-dir", config.data_dir, "directory for this node's data (created if absent)")
      ->required();
  app.add_option("--seed", seeds, "HOST:PORT of a node to join through (repeatable); none: create "
                                  "a new cluster or resume the stored one");
  app.add_option("--engine", engine, "storage engine: rocksdb (default, durable) or memory")
      ->check(CLI::IsMember({"rocksdb", "memory"}));
  app.add_option("--partitions", partitions, "Q, partitions of a new cluster (power of two, "
                                             "default 1024; fixed at creation)");
  app.add_option("--replicas", replicas, "N, copies of each key in a new cluster (default 3)");
  app.add_flag("--scrub", scrub,
               "before serving, read back every stored entry; if any fails its checksum, keep "
               "what reads back intact in a new database (the old one is kept beside it as "
               "rocksdb.corrupt-TIME) and leave each partition with a bad entry to anti-entropy, "
               "which refills it from the replicas (rocksdb engine only; a node that stopped on a "
               "checksum failure does this at its next start anyway, see "
               "storage.scrub_after_corruption)");
  app.add_option("--config", config_file, "TOML file with the keys listed below");
  app.add_option("--log-level", log_level, "trace, debug, info (default), warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.footer("Config file keys ([section] key = value):\n" + ConfigKeysHelp() +
             "\nSIGTERM/SIGINT stop the node cleanly: no new connections, requests in flight "
             "finish, data is synced, exit status 0.");
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("node");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [" + config.node.id + "] %v");
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (!config_file.empty()) {
    Status s = ApplyConfigFile(config_file, &config);
    if (!s.ok()) {
      spdlog::error("{}", s.ToString());
      return 1;
    }
  }
  Result<net::Endpoint> ep = net::ParseEndpoint(listen);
  if (!ep.ok()) {
    spdlog::error("--listen: {}", ep.status().ToString());
    return 1;
  }
  config.listen = *ep;
  config.engine = engine;
  config.log_level = log_level;
  config.node.address = ep->ToString();
  config.node.seeds = seeds;
  for (const std::string& seed : seeds) {
    if (!net::ParseEndpoint(seed).ok()) {
      spdlog::error("--seed {}: not HOST:PORT", seed);
      return 1;
    }
  }
  std::erase(config.node.seeds, config.node.address);
  if (app.count("--partitions") > 0) config.node.partitions = partitions;
  if (app.count("--replicas") > 0) config.node.replicas = replicas;
  // A peer's heartbeats come about once a gossip round.
  config.node.failure_detector.first_interval_ms =
      static_cast<double>(config.node.gossip_interval_ms);
  Status valid = ValidateConfig(config);
  if (!valid.ok()) {
    spdlog::error("{}", valid.ToString());
    return 1;
  }

  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) {
    spdlog::error("cannot create data directory {}: {}", config.data_dir, ec.message());
    return 1;
  }
  Result<int> lock = LockDataDir(config.data_dir);
  if (!lock.ok()) {
    spdlog::error("{}", lock.status().ToString());
    return 1;
  }

  if (scrub && config.engine != "rocksdb") {
    spdlog::error("--scrub needs the rocksdb engine (the memory engine keeps nothing to scrub)");
    return 1;
  }
  std::unique_ptr<Engine> store;
  std::error_code no_rocksdb;
  if (config.engine == "memory" &&
      std::filesystem::exists(config.data_dir + "/rocksdb", no_rocksdb)) {
    // It would ignore the data there, and without --seed create a cluster.
    spdlog::error(
        "--engine memory on {}, which holds a rocksdb database: start it with --engine rocksdb, "
        "or give the memory engine a data directory of its own",
        config.data_dir);
    return 1;
  }
  if (config.engine == "memory") {
    // Nothing outlives the process, so no synced copy to keep (a copy of
    // each write at every sync otherwise).
    MemoryEngineOptions memory;
    memory.keep_synced_copy = false;
    store = std::make_unique<MemoryEngine>(memory);
    spdlog::warn("memory engine: nothing survives a restart");
  } else {
    RocksDbOptions rocksdb = config.rocksdb;
    rocksdb.warn = [](const std::string& message) { spdlog::warn("storage: {}", message); };
    const std::string dir = config.data_dir + "/rocksdb";
    const std::optional<std::string> swapping = InterruptedScrubSwap(dir);
    if (!scrub && swapping) {
      spdlog::warn("finishing the scrub a crash interrupted while it put {} aside", *swapping);
      scrub = true;
    } else if (!scrub && ScrubNeeded(dir)) {
      const std::vector<std::string> aside = KeptAside(dir);
      if (!config.scrub_after_corruption || !aside.empty()) {
        spdlog::error(
            "this node stopped on stored data that failed its checksum{}; check the disk, then "
            "start it with --scrub (docs/cluster.md)",
            aside.empty() ? std::string()
                          : ", and an earlier scrub's damaged copy is still kept (" + aside.back() +
                                "; delete it once looked at)");
        return kExitCorruptData;
      }
      spdlog::warn(
          "this node stopped on stored data that failed its checksum: scrubbing "
          "(storage.scrub_after_corruption)");
      scrub = true;
    }
    if (scrub) {
      spdlog::info("scrub: reading back every entry of {}", dir);
      Result<ScrubOutcome> scrubbed = ScrubRocksDb(dir, rocksdb);
      if (!scrubbed.ok()) return StorageFailed("scrub: ", scrubbed.status());
      spdlog::info("scrub: {}", scrubbed->report.Summary());
      if (!scrubbed->kept_aside.empty()) {
        spdlog::warn(
            "scrub: serving the intact copy; anti-entropy refills what was left out from "
            "the replicas; the damaged database is kept as {} (delete it when done)",
            scrubbed->kept_aside);
      }
    }
    Result<std::unique_ptr<Engine>> opened = OpenRocksDb(dir, rocksdb);
    if (!opened.ok()) return StorageFailed("", opened.status());
    store = std::move(*opened);
    if (config.value_cache_bytes > 0) {
      store = std::make_unique<CachedEngine>(std::move(store), config.value_cache_bytes);
    }
  }
  std::random_device rd;
  ActorId fresh_actor = 0;
  while (fresh_actor == 0) fresh_actor = (uint64_t{rd()} << 32) ^ rd();
  Result<NodeState> state = LoadNodeState(*store, config.node, config.data_dir, fresh_actor);
  if (!state.ok()) {
    spdlog::error("reading the node's state: {}", state.status().ToString());
    const bool corrupt = state.status().code() == StatusCode::kCorruption;
    return corrupt ? StoppedOnCorruptData(config) : 1;
  }
  spdlog::info("{}actor id {:016x}, incarnation {}",
               state->incarnation == 1 ? "new data directory: " : "", state->actor,
               state->incarnation);
  NodeServer server(config, std::move(store), std::move(*state));
  Result<int> code = server.Run();
  if (!code.ok()) {
    spdlog::error("{}", code.status().ToString());
    return 1;
  }
  return *code == kExitCorruptData ? StoppedOnCorruptData(config) : *code;
}

}  // namespace
}  // namespace dynamo::node

int main(int argc, char** argv) { return dynamo::node::Main(argc, argv); }
