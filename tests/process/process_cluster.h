// Real dynamo-node processes on loopback for process tests: a temp directory,
// a free block of ports, spawning, kill -9, restarts, and a raw client that
// writes the way the SDK does (CoordPut, then ReplicaPut to the others).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "admin.h"
#include "dynamo/cluster_map.h"
#include "local_cluster.h"

namespace dynamo::test {

// Polls `done` every `poll_ms` until it holds (true) or `timeout_ms` passed
// (false).
bool WaitFor(const std::function<bool()>& done, uint64_t timeout_ms, uint64_t poll_ms = 100);

// The first of `count` consecutive free loopback ports, below the kernel's
// ephemeral range; 0 when none was found.
uint16_t FreePortBlock(size_t count);

class ProcessCluster {
 public:
  // `config` (TOML text) is written to a file every node reads; may be empty.
  // Unless it sets anti_entropy.tree_check_interval_ms, every node checks its
  // Merkle trees against its storage every kTreeCheckIntervalMs.
  ProcessCluster(size_t nodes, const std::string& config = "", const std::string& engine = "rocksdb");
  // SIGKILLs and reaps every node still running, removes the directory. A
  // test fails here if any node's log says a tree check or a write found
  // its storage disagreeing with its Merkle trees: no process test loses
  // data under a running node, so every such finding is a bug.
  ~ProcessCluster();

  static constexpr uint64_t kTreeCheckIntervalMs = 5000;

  // Starts n1, then the others through it, and waits for one ring. On a
  // failure it prints why and the last kLogLinesOnFailure lines of each
  // node's log to stderr.
  Status Start(uint64_t wait_ms = 60000);
  static constexpr size_t kLogLinesOnFailure = 30;
  // Starts node `id` (n<i>), joining through n1 unless it is n1, with
  // `extra_args` appended to its command line.
  Status Spawn(const std::string& id, const std::vector<std::string>& extra_args = {});
  // A node outside the initial set, e.g. "n6" for a join.
  Status SpawnExtra(size_t index);
  // Runs node `id` inside network namespace `netns` (a name under
  // /run/netns), listening on `host` instead of 127.0.0.1. Call before it
  // starts; the config must set node.allow_remote.
  void Place(const std::string& id, const std::string& netns, const std::string& host);
  // Adds NAME=value to node `id`'s environment from its next start on;
  // `entry` without a value ("NAME") removes what was set.
  void SetEnv(const std::string& id, const std::string& entry);
  void Kill9(const std::string& id);
  // SIGSTOP / SIGCONT: the process keeps its sockets but runs nothing, like a
  // long GC pause or a frozen VM.
  void Pause(const std::string& id);
  void Resume(const std::string& id);
  // Deletes a stopped node's data directory: it restarts as a new replica.
  void Wipe(const std::string& id);
  // SIGTERM and wait; returns the exit status (or -1).
  int Terminate(const std::string& id);
  // Waits for a node to exit by itself; returns its exit status or -1 on timeout.
  int WaitExit(const std::string& id, uint64_t timeout_ms);
  bool Running(const std::string& id);

  net::Endpoint Address(const std::string& id) const;
  std::vector<net::Endpoint> RunningAddresses();
  const cli::LocalClusterOptions& options() const { return options_; }
  std::string LogOf(const std::string& id) const;

  // The cluster map as `via` sees it.
  Result<ClusterMap> Map(const std::string& via);
  // Writes key=value through the ring `via` reports: CoordPut at the first
  // replica, the resulting set to the others.
  Status Put(const std::string& via, const std::string& key, const std::string& value);
  // Node `id`'s counters (hints, anti-entropy, requests).
  Result<cli::NodeStatsView> Stats(const std::string& id);
  // The named counter summed over the running nodes.
  uint64_t SumStat(const std::string& name);
  // The sibling set node `id` itself stores for `key`. A node refuses a
  // plain read of a key it does not replicate: read as a stand-in for
  // `stand_in_for` (one of the key's replicas) it answers with what it
  // stores and the hints it keeps for the key's replicas.
  Result<SiblingSet> StoredOn(const std::string& id, const std::string& key,
                              const std::string& stand_in_for = "");

 private:
  Status StartNodes(uint64_t wait_ms);
  cli::LocalNode NodeFor(const std::string& id) const;

  cli::LocalClusterOptions options_;
  std::string binary_;
  std::map<std::string, pid_t> pids_;
  std::map<std::string, std::pair<std::string, std::string>> placement_;  // id -> (netns, host)
  std::map<std::string, std::map<std::string, std::string>> env_;  // id -> name -> NAME=value
};

}  // namespace dynamo::test
