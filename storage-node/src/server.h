// The node's runtime: one libuv loop that feeds NodeCore events and carries
// out its actions (replies, calls to peers over pooled connections, storage
// operations on the storage thread), plus signal handling and a clean stop.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "config.h"
#include "dynamo/net/connection.h"
#include "dynamo/net/connection_pool.h"
#include "dynamo/net/event_loop.h"
#include "dynamo/node/node_core.h"
#include "storage_worker.h"

namespace dynamo::node {

class NodeServer {
 public:
  // `engine` holds the node's data; `state` was loaded from it.
  NodeServer(NodeConfig config, std::unique_ptr<Engine> engine, NodeState state);
  ~NodeServer();

  // Listens and serves until the node exits (leave completed, removed) or
  // gets SIGTERM/SIGINT. Returns the process exit code, or the listen error.
  Result<int> Run();

 private:
  Now Clock() const;
  void Pump();
  void Tick();
  // Tells the core the data directory's free space (statvfs).
  void CheckDisk(Now now);
  void StartShutdown(int code, const std::string& why);
  void FinishShutdown();

  NodeConfig config_;
  std::unique_ptr<Engine> engine_;
  net::EventLoop loop_;
  std::unique_ptr<NodeCore> core_;
  std::unique_ptr<StorageWorker> worker_;
  std::unique_ptr<net::Listener> listener_;
  std::unique_ptr<net::Timer> timer_;
  std::unordered_map<uint64_t, std::weak_ptr<net::Connection>> conns_;
  std::unique_ptr<net::ConnectionPool> peers_;
  void* signals_[2] = {nullptr, nullptr};
  bool shutting_down_ = false;
  bool finished_ = false;
  uint64_t shutdown_deadline_ms_ = 0;
  uint64_t next_disk_check_ms_ = 0;
  bool disk_check_failed_ = false;
  int exit_code_ = 0;
};

}  // namespace dynamo::node
