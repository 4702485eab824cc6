// Blocking requests to cluster nodes for dynamoctl and tests, and the views
// built from their replies (status, ring).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dynamo/cluster_map.h"
#include "dynamo/net/event_loop.h"
#include "dynamo/proto/message.h"
#include "dynamo/status.h"

namespace dynamo::cli {

// Sends one request and waits for the reply on the calling thread. An
// ErrorReply comes back as its Status.
Result<proto::Message> CallNode(const net::Endpoint& node, proto::Body request, uint64_t timeout_ms);
// CallNode on each seed in turn until one answers (any reply, even an
// error, stops the search; only unreachable seeds are skipped). A failure
// after a seed that timed out is in doubt: that node may have applied it.
Result<proto::Message> CallAny(const std::vector<net::Endpoint>& seeds, proto::Body request,
                               uint64_t timeout_ms);

struct MemberView {
  std::string id;
  std::string address;
  std::string state;  // "up", "down", "joining", "leaving"
  size_t partitions = 0;
};

struct StatusView {
  uint64_t epoch = 0;
  std::vector<MemberView> members;  // removed members left out
  ClusterMap map;
};

// Members and cluster map as `node` sees them.
Result<StatusView> FetchStatus(const std::vector<net::Endpoint>& seeds, uint64_t timeout_ms);

// One node's counters (the Stats request).
struct NodeStatsView {
  std::string node;  // the address asked
  uint64_t epoch = 0;
  std::vector<std::pair<std::string, uint64_t>> counters;
  std::string error;  // why the node gave none (counters empty)
  // The named counter, or `missing` when the node does not report it.
  uint64_t Get(std::string_view name, uint64_t missing = 0) const;
};
Result<NodeStatsView> FetchStats(const net::Endpoint& node, uint64_t timeout_ms);
// Text: one "node counter value" line per counter; JSON: an array of
// {"node", "epoch", "counters": {name: value}} objects.
std::string StatsText(const std::vector<NodeStatsView>& nodes);
std::string StatsJson(const std::vector<NodeStatsView>& nodes);

std::string StatusText(const StatusView& view);
std::string StatusJson(const StatusView& view);
std::string RingText(const ClusterMap& map);
std::string RingJson(const ClusterMap& map);

}  // namespace dynamo::cli
