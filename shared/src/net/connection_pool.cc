#include "dynamo/net/connection_pool.h"

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

namespace dynamo::net {

struct ConnectionPool::Peer {
  std::shared_ptr<Connection> conn;
  bool connecting = false;
  std::weak_ptr<Connection> opening;  // while connecting
  std::optional<Status> closed;       // the pool closed while this peer connected
  std::vector<std::tuple<proto::Body, uint64_t, std::function<void(CallOutcome)>>> waiting;
};

ConnectionPool::ConnectionPool(EventLoop& loop, ConnectionOptions options, uint64_t connect_timeout_ms)
    : loop_(loop), options_(std::move(options)), connect_timeout_ms_(connect_timeout_ms) {}

ConnectionPool::~ConnectionPool() { CloseAll(Status::Aborted("connection pool closed")); }

void ConnectionPool::CloseAll(const Status& reason) {
  if (!closed_) closed_ = reason;
  std::map<std::string, std::shared_ptr<Peer>> peers;
  peers.swap(peers_);
  for (auto& [address, peer] : peers) {
    peer->closed = reason;
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
  if (slot->conn && !slot->conn->closed()) {
    slot->conn->Call(body, timeout_ms, std::move(done));
    return;
  }
  std::shared_ptr<Peer> peer = slot;
  peer->conn.reset();
  peer->waiting.emplace_back(body, timeout_ms, std::move(done));
  if (peer->connecting) return;
  Result<Endpoint> ep = ParseEndpoint(address);
  if (!ep.ok()) {
    auto waiting = std::move(peer->waiting);
    peer->waiting.clear();
    for (auto& [b, t, d] : waiting) fail_later(std::move(d), ep.status());
    return;
  }
  peer->connecting = true;
  auto on_open = [peer, loop = &loop_](Result<std::shared_ptr<Connection>> conn) {
    peer->connecting = false;
    peer->opening.reset();
    auto waiting = std::move(peer->waiting);
    peer->waiting.clear();
    if (peer->closed) {
      if (conn.ok()) (*conn)->Close(*peer->closed);
      conn = *peer->closed;
    }
    if (!conn.ok()) {
      // From the loop: a connect can fail at once (no socket, no route),
      // inside the Call that started it.
      for (auto& [b, t, d] : waiting) {
        loop->Post([d = std::move(d), s = conn.status()] { d(CallOutcome{s, false}); });
      }
      return;
    }
    peer->conn = *conn;
    for (auto& [b, t, d] : waiting) peer->conn->Call(b, t, std::move(d));
  };
  peer->opening =
      Connect(loop_, *ep, options_, std::min(connect_timeout_ms_, timeout_ms), std::move(on_open));
}

}  // namespace dynamo::net
