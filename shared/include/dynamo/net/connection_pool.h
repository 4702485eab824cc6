// Connections to many peers, by HOST:PORT: opened on first use, reused while
// open, replaced after they close (or start closing after a protocol error).
// Calls made while a connection is being opened wait for it and fail with it.
//
// Thread-safety: loop thread only, like Connection.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "dynamo/net/connection.h"

namespace dynamo::net {

// How long the client's and the nodes' pooled connections stay open with no
// traffic and no call outstanding. A node closing an idle connection races a
// request sent on it at that moment, which then fails in doubt; closing from
// the calling side first, and shorter than node.idle_timeout_ms (which the
// node's config requires), avoids that.
inline constexpr uint64_t kPoolIdleTimeoutMs = 60'000;

class ConnectionPool {
 public:
  // `connect_timeout_ms` bounds opening a connection; a call waiting for it
  // still fails at its own deadline, and leaves the connect going.
  ConnectionPool(EventLoop& loop, ConnectionOptions options, uint64_t connect_timeout_ms);
  // Closes every connection; their outstanding calls fail.
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Sends `body` to `address` (copied only while the connection is being
  // opened: the calls waiting for one connection hold at most about
  // write_queue_bytes_max, past which a call fails with Busy, unsent).
  // `done` runs exactly once, never inside this call.
  void Call(const std::string& address, const proto::Body& body, uint64_t timeout_ms,
            std::function<void(CallOutcome)> done);
  // Closes every connection for good: outstanding calls fail with `reason`,
  // connections still being opened are closed when they open, and later
  // calls fail with `reason` without connecting.
  void CloseAll(const Status& reason);

 private:
  struct Peer;
  // Fails `peer`'s waiting calls whose deadlines passed while it connects,
  // and arms its timer for the next deadline.
  static void ExpireWaiting(EventLoop& loop, const std::shared_ptr<Peer>& peer,
                            const std::string& address);
  // Makes `peer`'s timer fire by `deadline_ms` (it never fires inside this call).
  static void ArmExpiry(EventLoop& loop, const std::shared_ptr<Peer>& peer,
                        const std::string& address, uint64_t deadline_ms);

  EventLoop& loop_;
  ConnectionOptions options_;
  uint64_t connect_timeout_ms_;
  std::map<std::string, std::shared_ptr<Peer>> peers_;
  std::optional<Status> closed_;  // set by CloseAll
};

}  // namespace dynamo::net
