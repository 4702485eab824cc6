// Helpers shared by the two halves of NodeCore (node_core.cc, node_core_ae.cc).
#pragma once

#include <cstddef>
#include <functional>
#include <utility>
#include <variant>

#include "dynamo/proto/message.h"
#include "dynamo/status.h"

namespace dynamo::node {

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

}  // namespace dynamo::node
