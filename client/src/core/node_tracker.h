// What one client has heard from each node, with no I/O: which nodes back
// off after failing to answer, and which answered just now. The SDK's
// runtime (client.cc) and the simulator's client feed it replies and the
// time, and route with its answers.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/quorum.h"

namespace dynamo::client {

struct NodeTrackerOptions {
  // A node that failed backs off for base_ms, doubled per failure in a row,
  // at most max_ms. Failures seen while it backs off do not count.
  uint64_t backoff_base_ms = 250;
  uint64_t backoff_max_ms = 5000;
  // A primary that answered at most this long ago ranks as if the write's
  // context had reached it (WriteRequest::reached).
  uint64_t heard_recently_ms = 100;
};

class NodeTracker {
 public:
  explicit NodeTracker(NodeTrackerOptions options = {}) : options_(options) {}

  // Records what a reply said about `node` (SignalOf) at `now_ms`: kServing
  // ends its backoff and marks it heard, kFailed starts a longer backoff
  // unless one is running.
  void Observe(const NodeId& node, NodeSignal signal, uint64_t now_ms);
  // False while `node` backs off.
  bool Healthy(const NodeId& node, uint64_t now_ms) const;
  // True while any node backs off.
  bool AnyBackingOff(uint64_t now_ms) const;
  // Adds to `reached` the route's primaries heard within heard_recently_ms.
  // A read's context names only the R replicas that answered first, and a
  // ranked client's first-ranked node is often the third: without this,
  // 40-47% of one client's writes after reads went to a second coordinator
  // (ClientProcessTest.ARankedClientsWritesAfterReadsMeetOnOneCoordinator),
  // with syncs of its own. A node cut off by a partition stops answering and
  // is passed over heard_recently_ms later.
  void AddHeardPrimaries(const Route& route, uint64_t now_ms,
                         std::vector<std::string>* reached) const;

 private:
  struct Backoff {
    uint64_t until_ms = 0;
    uint32_t failures = 0;
  };

  NodeTrackerOptions options_;
  std::map<NodeId, Backoff> backoff_;              // nodes whose last reply failed
  std::unordered_map<NodeId, uint64_t> heard_ms_;  // when each node last answered
};

}  // namespace dynamo::client
