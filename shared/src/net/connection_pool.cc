#include "dynamo/net/connection_pool.h"

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

namespace dynamo::net {

struct ConnectionPool::Peer {
  struct Waiting {
    proto::Body body;
    uint64_t deadline_ms;  // the call's own: it is not sent past it
    std::function<void(CallOutcome)> done;
    size_t bytes;  // kWaitingCallBytes + what the body carries
  };
  std::shared_ptr<Connection> conn;
  bool connecting = false;
  std::weak_ptr<Connection> opening;  // while connecting
  std::optional<Status> closed;       // the pool closed while this peer connected
  std::vector<Waiting> waiting;
  size_t waiting_bytes = 0;       // of `waiting`
  std::unique_ptr<Timer> expiry;  // fails waiting calls as their deadlines pass
  uint64_t expiry_at_ms = 0;      // when it fires, while active
};

namespace {

// Counted for a waiting call beside the key and value bytes it carries.
constexpr size_t kWaitingCallBytes = 256;

Status NoConnectionYet(const std::string& address) {
  return Status::Timeout("no connection to " + address + " within the call's timeout");
}

}  // namespace

void ConnectionPool::ExpireWaiting(EventLoop& loop, const std::shared_ptr<Peer>& peer,
                                   const std::string& address) {
  if (peer->closed) return;  // CloseAll fails them with its reason
  const uint64_t now = loop.NowMs();
  std::vector<std::function<void(CallOutcome)>> expired;
  uint64_t next = UINT64_MAX;
  std::erase_if(peer->waiting, [&](Peer::Waiting& w) {
    if (w.deadline_ms > now) {
      next = std::min(next, w.deadline_ms);
      return false;
    }
    expired.push_back(std::move(w.done));
    peer->waiting_bytes -= w.bytes;
    return true;
  });
  if (next != UINT64_MAX) ArmExpiry(loop, peer, address, next);
  for (auto& done : expired) done(CallOutcome{NoConnectionYet(address), false});
}

void ConnectionPool::ArmExpiry(EventLoop& loop, const std::shared_ptr<Peer>& peer,
                               const std::string& address, uint64_t deadline_ms) {
  if (peer->expiry && peer->expiry->active() && peer->expiry_at_ms <= deadline_ms) return;
  if (!peer->expiry) peer->expiry = std::make_unique<Timer>(loop);
  peer->expiry_at_ms = deadline_ms;
  const uint64_t now = loop.NowMs();
  std::weak_ptr<Peer> weak = peer;
  peer->expiry->Start(deadline_ms > now ? deadline_ms - now : 0, 0, [&loop, weak, address] {
    if (auto p = weak.lock()) ExpireWaiting(loop, p, address);
  });
}

ConnectionPool::ConnectionPool(EventLoop& loop, ConnectionOptions options, uint64_t connect_timeout_ms)
    : loop_(loop), options_(std::move(options)), connect_timeout_ms_(connect_timeout_ms) {}

ConnectionPool::~ConnectionPool() { CloseAll(Status::Aborted("connection pool closed")); }

void ConnectionPool::CloseAll(const Status& reason) {
  if (!closed_) closed_ = reason;
  std::map<std::string, std::shared_ptr<Peer>> peers;
  peers.swap(peers_);
  for (auto& [address, peer] : peers) {
    peer->closed = reason;
    peer->expiry.reset();
    if (peer->conn) peer->conn->Close(reason);
    // A connect still under way would outlive the pool, and the loop.
    if (std::shared_ptr<Connection> opening = peer->opening.lock()) opening->Close(reason);
  }
}

void ConnectionPool::Call(const std::string& address, const proto::Body& body, uint64_t timeout_ms,
                          std::function<void(CallOutcome)> done) {
  auto fail_later = [this](std::function<void(CallOutcome)> cb, Status s) {
    loop_.Post([cb = std::move(cb), s = std::move(s)] { cb(CallOutcome{s, false}); });
  };
  if (closed_) {
    fail_later(std::move(done), *closed_);
    return;
  }
  if (address.empty()) {
    fail_later(std::move(done), Status::Unavailable("no address known for the node"));
    return;
  }
  std::shared_ptr<Peer>& slot = peers_[address];
  if (!slot) slot = std::make_shared<Peer>();
  if (slot->conn && slot->conn->accepts_calls()) {
    slot->conn->Call(body, timeout_ms, std::move(done));
    return;
  }
  std::shared_ptr<Peer> peer = slot;
  if (peer->conn && !peer->conn->closed()) {
    // Closing after a protocol error: it reads no more replies, so its calls
    // could only time out.
    peer->conn->Close(Status::Aborted("replaced: it was closing after a protocol error"));
  }
  peer->conn.reset();
  // The connection's write queue bound holds for calls waiting for it too.
  if (peer->waiting_bytes >= options_.write_queue_bytes_max) {
    fail_later(std::move(done), Status::Busy("calls waiting for a connection to " + address +
                                             " hold " + std::to_string(peer->waiting_bytes) +
                                             " bytes, at write_queue_bytes_max (" +
                                             std::to_string(options_.write_queue_bytes_max) + ")"));
    return;
  }
  const size_t bytes = kWaitingCallBytes + proto::CarriedBytes(body);
  peer->waiting.push_back(Peer::Waiting{body, loop_.NowMs() + timeout_ms, std::move(done), bytes});
  peer->waiting_bytes += bytes;
  // Its deadline may come before the connect ends: it fails then, from the
  // loop.
  ArmExpiry(loop_, peer, address, peer->waiting.back().deadline_ms);
  if (peer->connecting) return;
  Result<Endpoint> ep = ParseEndpoint(address);
  if (!ep.ok()) {
    auto waiting = std::move(peer->waiting);
    peer->waiting.clear();
    peer->waiting_bytes = 0;
    for (Peer::Waiting& w : waiting) fail_later(std::move(w.done), ep.status());
    return;
  }
  peer->connecting = true;
  auto on_open = [peer, loop = &loop_, address](Result<std::shared_ptr<Connection>> conn) {
    peer->connecting = false;
    peer->opening.reset();
    if (peer->expiry) peer->expiry->Stop();
    auto waiting = std::move(peer->waiting);
    peer->waiting.clear();
    peer->waiting_bytes = 0;
    if (peer->closed) {
      if (conn.ok()) (*conn)->Close(*peer->closed);
      conn = *peer->closed;
    }
    if (!conn.ok()) {
      // From the loop: a connect can fail at once (no socket, no route),
      // inside the Call that started it.
      for (Peer::Waiting& w : waiting) {
        loop->Post([d = std::move(w.done), s = conn.status()] { d(CallOutcome{s, false}); });
      }
      return;
    }
    peer->conn = *conn;
    // Each call gets what is left of its own timeout.
    const uint64_t now = loop->NowMs();
    for (Peer::Waiting& w : waiting) {
      if (w.deadline_ms <= now) {
        loop->Post([d = std::move(w.done), s = NoConnectionYet(address)] {
          d(CallOutcome{s, false});
        });
      } else {
        peer->conn->Call(w.body, w.deadline_ms - now, std::move(w.done));
      }
    }
  };
  // The pool's connect timeout, not this call's: calls queued behind it keep
  // their own deadlines (ArmExpiry), and a short one must not fail the rest.
  peer->opening = Connect(loop_, *ep, options_, connect_timeout_ms_, std::move(on_open));
}

}  // namespace dynamo::net
