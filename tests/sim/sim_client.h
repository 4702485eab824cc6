// A client of the simulated cluster running the real request logic
// (client/src/core/quorum.h) over the virtual network: the same routing,
// sloppy quorum, coordinator choice, read repair and failure backoff as the
// SDK, with the cluster map pulled from the nodes.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/node_tracker.h"
#include "core/quorum.h"
#include "sim/sim_cluster.h"

namespace dynamo::sim {

struct SimClientOptions {
  int r = 2;
  int w = 2;
  uint64_t timeout_ms = 500;
  bool lww = false;
  bool durable_writes = true;          // ClientOptions::durable_writes
  bool ranked_coordinator = false;     // ClientOptions::coordinator is kClientRanked
  uint64_t refresh_ms = 1000;          // cluster map pull period
  uint64_t read_repair_window_ms = 50;
  // A request to a crashed node fails at once as never sent, as a refused
  // connection does; false: it times out, as a host that is gone.
  bool refused_when_down = false;
  // Per mille of requests refused by the client's own full write queue
  // (Busy, never sent).
  uint32_t queue_full_per_mille = 0;
};

class SimClient {
 public:
  SimClient(SimCluster& sim, std::vector<std::string> seeds, SimClientOptions options, uint64_t client_id);

  // The client's name for cuts (SimCluster::Cut(node, Name())).
  std::string Name() const { return "client" + std::to_string(client_id_); }
  // Pulls the cluster map and members from a live node; `done` runs after.
  void Refresh(std::function<void(Status)> done);
  // Starts periodic refreshes (until Stop).
  void Start();
  void Stop() { stopped_ = true; }

  struct ReadResult {
    Status status;
    SiblingSet siblings;  // merged
    std::string fastest;  // next coordinator
    std::vector<std::string> reached;  // the primaries that answered
  };
  void Get(const std::string& key, std::function<void(ReadResult)> done);

  struct WriteResult {
    Status status;
    VersionVector clock;  // the written set's clock
    std::optional<Dot> dot;  // the new version's (client::WriteOp::written)
  };
  // `context`, `preferred` and `reached` come from a read (may be empty).
  void Put(const std::string& key, std::string value, bool tombstone, VersionVector context,
           std::string preferred, std::vector<std::string> reached,
           std::function<void(WriteResult)> done);

  bool has_map() const { return map_.has_value(); }
  uint64_t read_repairs() const { return read_repairs_; }
  // Requests that failed without leaving the client (refused_when_down,
  // queue_full_per_mille), and writes that then went to another coordinator.
  uint64_t refused_unsent() const { return refused_unsent_; }
  uint64_t coordinator_retries() const { return coordinator_retries_; }
  // Replicas asked in place of a node that refused as no replica
  // (client::Receipt::redirects), also after an op reported.
  uint64_t redirects() const { return redirects_; }
  // Coordinators that answered a write past its deadline (the write then
  // went on to the other replicas).
  uint64_t late_coordinator_answers() const { return late_coordinator_answers_; }

 private:
  client::Health HealthNow();
  void Observe(const std::string& node, const client::Reply& r);
  void SendTo(const client::Target& t, proto::Body body, uint64_t timeout_ms,
              std::function<void(client::Reply)> done);
  // Sends `op`'s requests and follow-ups, waiting for each answer as the SDK
  // does (client::AnswerWaitMs), calling `finish` after each reply and once
  // at `deadline`.
  template <typename Op>
  void Drive(std::shared_ptr<Op> op, uint64_t deadline, std::function<void()> finish);

  SimCluster& sim_;
  std::vector<std::string> seeds_;
  SimClientOptions options_;
  uint64_t client_id_;
  uint64_t last_lww_us_ = 0;
  std::optional<ClusterMap> map_;
  std::map<NodeId, proto::Member> members_;
  // The SDK's health and heard-from rules. The backoff is shorter than the
  // SDK's (250 ms doubling to 5 s) for the runs' few simulated minutes; the
  // seeds the tests name were found with it.
  client::NodeTracker nodes_{client::NodeTrackerOptions{100, 2000, 100}};
  bool stopped_ = false;
  uint64_t read_repairs_ = 0;
  uint64_t refused_unsent_ = 0;
  uint64_t coordinator_retries_ = 0;
  uint64_t redirects_ = 0;
  uint64_t late_coordinator_answers_ = 0;
};

}  // namespace dynamo::sim
