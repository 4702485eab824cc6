// Helpers shared by the two halves of NodeCore (node_core.cc, node_core_ae.cc).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <variant>

#include "dynamo/merkle.h"
#include "dynamo/node/engine.h"
#include "dynamo/node/keys.h"
#include "dynamo/node/node_core.h"
#include "dynamo/proto/message.h"
#include "dynamo/status.h"

namespace dynamo::node {

// The per-key lock's name for `key` of `space` (NodeCore::WithKeyLock).
inline std::string LockKey(Space space, std::string_view key) {
  return QualifiedKey(static_cast<uint8_t>(space), key);
}

// Counts completions of `n` parallel steps and runs `done` after the last,
// with the first error any of them reported.
struct Countdown {
  Countdown(size_t n, std::function<void(Status)> d) : left(n), done(std::move(d)) {
    if (left == 0) done(Status::OK());
  }
  void One(const Status& s) {
    if (!s.ok() && first_error.ok()) first_error = s;
    if (--left == 0) done(first_error);
  }
  size_t left;
  Status first_error;
  std::function<void(Status)> done;
};

// The status a peer's reply carries: the call's failure, its ErrorReply, or OK.
inline Status ReplyStatusOf(const Result<proto::Message>& reply) {
  if (!reply.ok()) return reply.status();
  if (const auto* err = std::get_if<proto::ErrorReply>(&reply->body)) return proto::ToStatus(*err);
  return Status::OK();
}

// One partition's tree check (NodeCore::TreeCheckTick).
struct NodeCore::TreeCheck {
  // Most keys written during one check; a partition written more while it
  // is read is checked again in the next pass.
  static constexpr size_t kTouchedMax = 65536;

  TreeCheck(PartitionId p, uint32_t depth) : partition(p), read(depth) {}
  void Touch(std::string_view key) {
    if (touched.size() < kTouchedMax) {
      touched.emplace(key);
    } else {
      overflowed = true;
    }
  }
  PartitionId partition;
  MerkleTree read;  // what storage holds, as read so far
  std::string after;
  std::unordered_set<std::string> touched;  // keys written since the check began
  bool overflowed = false;
  bool waiting = false;  // its next page waits for other background work
};

}  // namespace dynamo::node
