#include "core/node_tracker.h"

#include <algorithm>

namespace dynamo::client {
namespace {
constexpr uint32_t kFailuresCountedMax = 16;
}  // namespace

void NodeTracker::Observe(const NodeId& node, NodeSignal signal, uint64_t now_ms) {
  if (signal == NodeSignal::kNone) return;
  if (signal == NodeSignal::kServing) {
    backoff_.erase(node);
    heard_ms_[node] = now_ms;
    return;
  }
  Backoff& b = backoff_[node];
  // Failures while it backs off are of the same spell: the other calls a
  // reset connection had in flight, or requests sent before it began.
  if (now_ms < b.until_ms) return;
  b.failures = std::min(b.failures + 1, kFailuresCountedMax);
  b.until_ms =
      now_ms + std::min(options_.backoff_max_ms, options_.backoff_base_ms << (b.failures - 1));
}

bool NodeTracker::Healthy(const NodeId& node, uint64_t now_ms) const {
  auto it = backoff_.find(node);
  return it == backoff_.end() || now_ms >= it->second.until_ms;
}

bool NodeTracker::AnyBackingOff(uint64_t now_ms) const {
  return std::any_of(backoff_.begin(), backoff_.end(),
                     [now_ms](const auto& b) { return now_ms < b.second.until_ms; });
}

void NodeTracker::AddHeardPrimaries(const Route& route, uint64_t now_ms,
                                    std::vector<std::string>* reached) const {
  for (const Target& t : route.replicas) {
    if (t.role != Role::kPrimary) continue;
    auto heard = heard_ms_.find(t.node);
    if (heard == heard_ms_.end() || now_ms > heard->second + options_.heard_recently_ms) continue;
    if (std::find(reached->begin(), reached->end(), t.node) == reached->end()) {
      reached->push_back(t.node);
    }
  }
}

}  // namespace dynamo::client
