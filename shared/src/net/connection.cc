#include "dynamo/net/connection.h"

#include <uv.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>

namespace dynamo::net {
namespace {

constexpr size_t kReadChunkBytes = 64u << 10;
// Finished calls' deadline entries kept beyond one per pending call before
// the heap is rebuilt without them (amortized: one rebuild per as many calls).
constexpr size_t kDeadlineEntriesSlack = 64;
std::atomic<uint64_t> next_connection_id{1};

std::string UvError(int code) { return uv_strerror(code); }

std::string PeerName(uv_tcp_t* tcp) {
  sockaddr_storage addr{};
  int len = sizeof(addr);
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char ip[INET6_ADDRSTRLEN] = {0};
  uint16_t port = 0;
  if (addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    uv_ip6_name(a, ip, sizeof(ip));
    port = ntohs(a->sin6_port);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    uv_ip4_name(a, ip, sizeof(ip));
    port = ntohs(a->sin_port);
  }
  return Endpoint{ip, port}.ToString();
}

// Fills *out for an IP literal ("localhost" means 127.0.0.1). False for names.
bool LiteralAddress(const Endpoint& ep, sockaddr_storage* out) {
  std::string host = ep.host == "localhost" ? "127.0.0.1" : ep.host;
  if (uv_ip4_addr(host.c_str(), ep.port, reinterpret_cast<sockaddr_in*>(out)) == 0) return true;
  return uv_ip6_addr(host.c_str(), ep.port, reinterpret_cast<sockaddr_in6*>(out)) == 0;
}

}  // namespace

Connection::Connection(EventLoop& loop, ConnectionOptions options)
    : loop_(loop),
      options_(std::move(options)),
      id_(next_connection_id.fetch_add(1)),
      tcp_(std::make_unique<uv_tcp_t>()),
      write_req_(std::make_unique<uv_write_t>()),
      timer_(loop),
      decoder_(options_.limits.frame_bytes_max) {
  DYNAMO_CHECK(uv_tcp_init(loop.uv(), tcp_.get()) == 0);
  tcp_->data = this;
}

Connection::~Connection() = default;

void Connection::Start() {
  uv_tcp_nodelay(tcp_.get(), 1);
  last_activity_ms_ = loop_.NowMs();
  int rc = uv_read_start(
      reinterpret_cast<uv_stream_t*>(tcp_.get()),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* self = static_cast<Connection*>(h->data);
        std::span<char> tail = self->decoder_.WritableTail(kReadChunkBytes);
        *buf = uv_buf_init(tail.data(), static_cast<unsigned>(std::min(tail.size(), size_t{1} << 30)));
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
        static_cast<Connection*>(s->data)->OnRead(nread);
      });
  if (rc != 0) {
    Close(Status::IOError("read start: " + UvError(rc)));
    return;
  }
  reading_ = true;
  ArmTimer();
}

void Connection::Call(const proto::Body& request, uint64_t timeout_ms, ReplyCallback done) {
  auto refuse = [this, &done](Status s) {
    loop_.Post([done = std::move(done), s = std::move(s)]() { done(CallOutcome{s, false}); });
  };
  if (closed_ || closing_after_flush_) {
    refuse(Status::Unavailable("connection to " + peer_ + " is closed"));
    return;
  }
  if (queued_bytes() >= options_.write_queue_bytes_max) {
    refuse(Status::Busy("write queue to " + peer_ + " holds " + std::to_string(queued_bytes()) +
                        " bytes, at write_queue_bytes_max (" +
                        std::to_string(options_.write_queue_bytes_max) + ")"));
    return;
  }
  const uint64_t id = next_request_id_++;
  const size_t before = batch_.size();
  proto::AppendFrame(id, request, &batch_);
  const size_t frame = batch_.size() - before - proto::kFrameHeaderBytes;
  if (frame > options_.limits.frame_bytes_max) {
    batch_.resize(before);
    refuse(Status::InvalidArgument("request of " + std::to_string(frame) +
                                   " bytes exceeds frame_bytes_max (" +
                                   std::to_string(options_.limits.frame_bytes_max) + ")"));
    return;
  }
  const uint64_t deadline = loop_.NowMs() + timeout_ms;
  pending_.emplace(id, std::move(done));
  if (deadlines_.size() >= 2 * pending_.size() + kDeadlineEntriesSlack) {
    std::erase_if(deadlines_, [this](const auto& d) { return !pending_.contains(d.second); });
    std::make_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
  }
  deadlines_.emplace_back(deadline, id);
  std::push_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
  if (deadlines_.front().second == id) ArmTimer();
  Recharge();
  ScheduleFlush();
}

void Connection::Reply(uint64_t request_id, const proto::Body& reply) {
  if (closed_) return;
  if (unanswered_ > 0) --unanswered_;
  AppendReply(request_id, reply);
  MaybeResumeReading();
}

void Connection::AppendReply(uint64_t request_id, const proto::Body& reply) {
  const size_t before = batch_.size();
  proto::AppendFrame(request_id, reply, &batch_);
  const size_t frame = batch_.size() - before - proto::kFrameHeaderBytes;
  if (frame > options_.limits.frame_bytes_max) {
    batch_.resize(before);
    proto::AppendFrame(
        request_id,
        proto::MakeError(Status::InvalidArgument("reply of " + std::to_string(frame) +
                                                 " bytes exceeds frame_bytes_max")
                             .WithInDoubt(true),  // the request it answers may have been applied
                         0),
        &batch_);
  }
  last_reply_end_ = written_bytes_ + queued_bytes();
  Recharge();
  ScheduleFlush();
}

void Connection::Recharge() {
  if (!budget_) return;
  const size_t now = closed_ ? 0 : queued_bytes();
  budget_->queued = budget_->queued - charged_ + now;
  charged_ = now;
}

void Connection::ScheduleFlush() {
  if (flush_scheduled_ || writing_ || closed_) return;
  flush_scheduled_ = true;
  loop_.Defer([weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->flush_scheduled_ = false;
      self->Flush();
    }
  });
}

void Connection::Flush() {
  if (writing_ || closed_ || batch_.empty()) return;
  write_trim_.Use(batch_.size());
  // Most bursts fit the socket buffer: one write(2), no completion to wait for.
  uv_buf_t direct = uv_buf_init(batch_.data(), static_cast<unsigned>(batch_.size()));
  int sent = uv_try_write(reinterpret_cast<uv_stream_t*>(tcp_.get()), &direct, 1);
  if (sent < 0 && sent != UV_EAGAIN) {
    Close(Status::IOError("write: " + UvError(sent)));
    return;
  }
  if (sent > 0) {
    last_activity_ms_ = loop_.NowMs();
    written_bytes_ += static_cast<size_t>(sent);
    if (static_cast<size_t>(sent) == batch_.size()) {
      batch_.clear();
      Recharge();
      AfterWrite();
      return;
    }
    batch_.erase(0, static_cast<size_t>(sent));
    Recharge();
  }
  std::swap(inflight_, batch_);
  batch_.clear();
  uv_buf_t buf = uv_buf_init(inflight_.data(), static_cast<unsigned>(inflight_.size()));
  write_req_->data = this;
  int rc = uv_write(write_req_.get(), reinterpret_cast<uv_stream_t*>(tcp_.get()), &buf, 1,
                    [](uv_write_t* req, int status) {
                      auto* self = static_cast<Connection*>(req->data);
                      self->writing_ = false;
                      if (status >= 0) self->written_bytes_ += self->inflight_.size();
                      self->inflight_.clear();
                      self->Recharge();
                      if (self->closed_) return;
                      if (status < 0) {
                        self->Close(Status::IOError("write: " + UvError(status)));
                        return;
                      }
                      self->last_activity_ms_ = self->loop_.NowMs();
                      if (!self->batch_.empty()) {
                        self->MaybeResumeReading();
                        self->Flush();
                        return;
                      }
                      self->AfterWrite();
                    });
  if (rc != 0) {
    Close(Status::IOError("write: " + UvError(rc)));
    return;
  }
  writing_ = true;
}

void Connection::AfterWrite() {
  // Both are empty here; the next burst grows them again.
  if (write_trim_.TrimTo(std::max(batch_.capacity(), inflight_.capacity())) != 0) {
    std::string().swap(batch_);
    std::string().swap(inflight_);
  }
  if (closing_after_flush_) {
    Close(Status::ProtocolError("closed after a protocol error"));
    return;
  }
  MaybeResumeReading();
}

void Connection::OnRead(long nread) {
  if (closed_) return;
  if (nread == UV_EOF) {
    Close(Status::Unavailable("peer " + peer_ + " closed the connection"));
    return;
  }
  if (nread < 0) {
    Close(Status::IOError("read from " + peer_ + ": " + UvError(static_cast<int>(nread))));
    return;
  }
  if (nread == 0) return;
  decoder_.Commit(static_cast<size_t>(nread));
  last_activity_ms_ = loop_.NowMs();
  DispatchBuffered();
}

void Connection::DispatchBuffered() {
  dispatching_ = true;
  while (!closed_ && !closing_after_flush_ && unanswered_ < options_.requests_unanswered_max &&
         !OverBudget(kRepliesHeldBackBytes)) {
    std::string_view body;
    Result<bool> next = decoder_.Next(&body);
    if (!next.ok()) {
      // The replies this side waits for are not read either: their calls
      // fail as unreadable rather than as a closed connection (Unavailable),
      // which a read would take for a replica gone and ask spares instead.
      FailPending(Status::InvalidArgument("a message from " + peer_ +
                                          " could not be read: " + next.status().ToString()));
      AppendReply(0, proto::MakeError(next.status(), 0));
      CloseAfterFlush();
      break;
    }
    if (!*next) break;
    Dispatch(body);
  }
  dispatching_ = false;
  // Only replies count: requests this side queued (a connection that makes
  // calls) are no reason to stop reading the replies to them.
  const bool held_back = OverBudget(kRepliesHeldBackBytes);
  if (!closed_ && reading_ &&
      ((replies_unsent() && queued_bytes() > options_.write_queue_bytes_max / 2) ||
       unanswered_ >= options_.requests_unanswered_max || held_back)) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_.get()));
    reading_ = false;
    read_paused_ = true;
    if (held_back) ++budget_->holds;
  }
}

void Connection::MaybeResumeReading() {
  if (!read_paused_ || closed_ || closing_after_flush_ ||
      (replies_unsent() && queued_bytes() > options_.write_queue_bytes_max / 4) ||
      unanswered_ > options_.requests_unanswered_max / 2 || OverBudget(kRepliesHeldBackBytes / 2)) {
    return;
  }
  read_paused_ = false;
  Start();
  // Frames read before the pause wait in the decoder; they go out from the
  // loop, not from inside the reply that made room.
  if (!dispatching_) {
    loop_.Defer([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->DispatchBuffered();
    });
  }
}

void Connection::Dispatch(std::string_view body) {
  proto::Envelope env;
  Result<proto::Message> msg = proto::DecodeMessage(body, options_.limits, &env);
  if (!msg.ok()) {
    const Status& err = msg.status();
    if (env.valid && proto::IsReply(static_cast<proto::MessageType>(env.type))) {
      FailCall(env.request_id, err);
      if (err.code() == StatusCode::kProtocolError) Close(err);
      return;
    }
    AppendReply(env.request_id, proto::MakeError(err, 0));
    if (err.code() != StatusCode::kInvalidArgument) CloseAfterFlush();
    return;
  }
  const proto::MessageType type = proto::TypeOf(msg->body);
  if (proto::IsReply(type)) {
    auto it = pending_.find(msg->request_id);
    if (it == pending_.end()) return;  // a reply after its deadline
    ReplyCallback done = std::move(it->second);
    pending_.erase(it);
    PopFinishedDeadlines();
    done(CallOutcome{std::move(*msg), true});
    return;
  }
  if (!on_request_) {
    AppendReply(
        msg->request_id,
        proto::MakeError(Status::ProtocolError("this connection does not serve requests"), 0));
    return;
  }
  ++unanswered_;
  on_request_(shared_from_this(), std::move(*msg));
}

void Connection::FailCall(uint64_t id, Status status) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  ReplyCallback done = std::move(it->second);
  pending_.erase(it);
  PopFinishedDeadlines();
  done(CallOutcome{std::move(status), true});
}

void Connection::PopFinishedDeadlines() {
  while (!deadlines_.empty() && !pending_.contains(deadlines_.front().second)) {
    std::pop_heap(deadlines_.begin(), deadlines_.end(), std::greater<>());
    deadlines_.pop_back();
  }
}

void Connection::ArmTimer() {
  if (closed_) return;
  uint64_t next = UINT64_MAX;
  if (!deadlines_.empty()) next = deadlines_.front().first;
  if (options_.idle_timeout_ms > 0) next = std::min(next, last_activity_ms_ + options_.idle_timeout_ms);
  if (next == UINT64_MAX) {
    timer_.Stop();
    return;
  }
  uint64_t now = loop_.NowMs();
  timer_.Start(next > now ? next - now : 0, 0, [this] { OnTimer(); });
}

void Connection::OnTimer() {
  const uint64_t now = loop_.NowMs();
  PopFinishedDeadlines();
  while (!closed_ && !deadlines_.empty() && deadlines_.front().first <= now) {
    FailCall(deadlines_.front().second,
             Status::Timeout("no reply from " + peer_ + " before the deadline"));
  }
  if (closed_) return;
  if (options_.idle_timeout_ms > 0 && now >= last_activity_ms_ + options_.idle_timeout_ms) {
    if (pending_.empty() && unanswered_ == 0) {
      Close(Status::Timeout("idle for " + std::to_string(options_.idle_timeout_ms) + " ms"));
      return;
    }
    last_activity_ms_ = now;  // a call or request in progress: not idle
  }
  ArmTimer();
}

void Connection::CloseAfterFlush() {
  if (closed_) return;
  closing_after_flush_ = true;
  if (reading_) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_.get()));
    reading_ = false;
  }
  if (!writing_ && batch_.empty()) {
    Close(Status::ProtocolError("closed after a protocol error"));
  } else {
    Flush();
  }
}

void Connection::FailPending(const Status& why) {
  std::unordered_map<uint64_t, ReplyCallback> pending;
  pending.swap(pending_);
  deadlines_.clear();
  for (auto& [id, done] : pending) done(CallOutcome{why, true});
}

void Connection::Close(const Status& reason) {
  if (closed_) return;
  DYNAMO_CHECK(loop_.OnLoopThreadOrStopped());
  closed_ = true;
  Recharge();
  timer_.Stop();
  if (reading_) uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_.get()));
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(tcp_.get()),
           [](uv_handle_t* h) { static_cast<Connection*>(h->data)->FinishClose(); });
  FailPending(Status::Unavailable("connection to " + peer_ + " closed: " + reason.ToString()));
  if (on_close_) {
    CloseHandler handler = std::move(on_close_);
    handler(reason);
  }
}

void Connection::FinishClose() {
  on_request_ = nullptr;
  std::shared_ptr<Connection> keep = std::move(self_);
}

struct ConnectAttempt {
  std::shared_ptr<Connection> conn;
  std::function<void(Result<std::shared_ptr<Connection>>)> done;
  std::unique_ptr<Timer> timer;
  Endpoint peer;
  uv_connect_t req{};
  uv_getaddrinfo_t resolve{};
  bool timed_out = false;
  bool resolving = false;
  bool reported = false;  // while resolving: failed at once, the resolver still to finish

  // The connection closed (its deadline, or its owner closing it) while the
  // name is being resolved, which a timer or a close cannot interrupt:
  // reports at once, and the resolver's callback then only frees the
  // attempt, so a resolver that stalls neither holds the caller past its
  // deadline nor reaches back into an owner that has gone.
  void AbandonResolve(const Status& why) {
    if (!resolving || reported) return;
    reported = true;
    timer.reset();
    uv_cancel(reinterpret_cast<uv_req_t*>(&resolve));
    auto report = std::move(done);
    // The connection keeps itself until its close completes; the attempt,
    // which may outlive the loop, holds no handle.
    conn.reset();
    report(timed_out
               ? Status::Timeout("connect to " + peer.ToString() + " timed out resolving its name")
               : why);
  }

  void Begin(const sockaddr* addr) {
    sockaddr_storage target{};
    std::memcpy(&target, addr,
                addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
    if (target.ss_family == AF_INET6) {
      reinterpret_cast<sockaddr_in6*>(&target)->sin6_port = htons(peer.port);
    } else {
      reinterpret_cast<sockaddr_in*>(&target)->sin_port = htons(peer.port);
    }
    req.data = this;
    int rc = uv_tcp_connect(&req, conn->tcp_.get(), reinterpret_cast<sockaddr*>(&target),
                            [](uv_connect_t* r, int status) {
                              static_cast<ConnectAttempt*>(r->data)->Finish(status);
                            });
    if (rc != 0) Finish(rc);
  }

  // Reports the outcome and frees the attempt.
  void Finish(int status) {
    std::unique_ptr<ConnectAttempt> self(this);
    timer.reset();
    if (status == 0 && !conn->closed()) {
      conn->Start();
      if (!conn->closed()) {
        done(conn);
        return;
      }
    }
    Status s = timed_out ? Status::Timeout("connect to " + peer.ToString() + " timed out")
                         : Status::Unavailable("connect to " + peer.ToString() + ": " +
                                               UvError(status == 0 ? UV_ECANCELED : status));
    conn->Close(s);
    done(s);
  }
};

std::weak_ptr<Connection> Connect(EventLoop& loop, const Endpoint& peer,
                                  const ConnectionOptions& options, uint64_t timeout_ms,
                                  std::function<void(Result<std::shared_ptr<Connection>>)> done) {
  auto* a = new ConnectAttempt;
  a->conn = std::shared_ptr<Connection>(new Connection(loop, options));
  std::weak_ptr<Connection> opening = a->conn;
  a->conn->self_ = a->conn;
  a->conn->peer_ = peer.ToString();
  a->done = std::move(done);
  a->peer = peer;
  a->timer = std::make_unique<Timer>(loop);
  a->timer->Start(timeout_ms, 0, [a] {
    a->timed_out = true;
    a->conn->Close(Status::Timeout("connect timed out"));
  });
  sockaddr_storage addr{};
  if (LiteralAddress(peer, &addr)) {
    a->Begin(reinterpret_cast<sockaddr*>(&addr));
    return opening;
  }
  a->resolve.data = a;
  a->resolving = true;
  a->conn->SetCloseHandler([a](const Status& why) {
    a->AbandonResolve(
        Status::Unavailable("connect to " + a->peer.ToString() + ": " + why.ToString()));
  });
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(
      loop.uv(), &a->resolve,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* at = static_cast<ConnectAttempt*>(req->data);
        if (at->reported) {
          if (res) uv_freeaddrinfo(res);
          delete at;
          return;
        }
        at->resolving = false;
        at->conn->SetCloseHandler(nullptr);
        if (status != 0 || res == nullptr || at->conn->closed()) {
          if (res) uv_freeaddrinfo(res);
          at->Finish(status != 0 ? status : UV_ECANCELED);
          return;
        }
        at->Begin(res->ai_addr);
        uv_freeaddrinfo(res);
      },
      peer.host.c_str(), nullptr, &hints);
  if (rc != 0) {
    a->resolving = false;
    a->conn->SetCloseHandler(nullptr);
    a->Finish(rc);
  }
  return opening;
}

Listener::Listener(EventLoop& loop, ListenerOptions options, Connection::RequestHandler on_request)
    : loop_(loop),
      options_(std::move(options)),
      on_request_(std::move(on_request)),
      budget_(std::make_shared<ReplyBudget>()) {
  budget_->max = options_.replies_queued_bytes_max;
}

Result<std::unique_ptr<Listener>> Listener::Listen(EventLoop& loop, const Endpoint& address,
                                                   ListenerOptions options,
                                                   Connection::RequestHandler on_request) {
  sockaddr_storage addr{};
  if (!LiteralAddress(address, &addr)) {
    return Status::InvalidArgument("listen address '" + address.host +
                                   "' must be an IP address or localhost");
  }
  std::unique_ptr<Listener> l(new Listener(loop, std::move(options), std::move(on_request)));
  l->server_ = new uv_tcp_t;
  DYNAMO_CHECK(uv_tcp_init(loop.uv(), l->server_) == 0);
  l->server_->data = l.get();
  int rc = uv_tcp_bind(l->server_, reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(l->server_), l->options_.backlog,
                   [](uv_stream_t* s, int status) {
                     static_cast<Listener*>(s->data)->OnConnection(status);
                   });
  }
  if (rc != 0) {
    return Status::IOError("listen on " + address.ToString() + ": " + UvError(rc));
  }
  sockaddr_storage bound{};
  int len = sizeof(bound);
  uv_tcp_getsockname(l->server_, reinterpret_cast<sockaddr*>(&bound), &len);
  l->port_ = ntohs(bound.ss_family == AF_INET6
                       ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                       : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return l;
}

Listener::~Listener() {
  StopAccepting();
  CloseConnections(Status::Aborted("listener closed"));
}

void Listener::StopAccepting() {
  if (server_ == nullptr) return;
  DYNAMO_CHECK(loop_.OnLoopThreadOrStopped());
  server_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(server_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  server_ = nullptr;
}

void Listener::CloseConnections(const Status& reason) {
  std::vector<std::weak_ptr<Connection>> all;
  all.swap(accepted_);
  for (auto& w : all) {
    if (auto c = w.lock()) c->Close(reason);
  }
}

size_t Listener::buffer_bytes() const {
  size_t total = 0;
  for (const auto& w : accepted_) {
    if (auto c = w.lock(); c && !c->closed()) total += c->buffer_bytes();
  }
  return total;
}

bool Listener::replies_unsent() const {
  return std::any_of(accepted_.begin(), accepted_.end(), [](const auto& w) {
    auto c = w.lock();
    return c && !c->closed() && c->replies_unsent();
  });
}

size_t Listener::connections() const {
  return static_cast<size_t>(std::count_if(accepted_.begin(), accepted_.end(), [](const auto& w) {
    auto c = w.lock();
    return c && !c->closed();
  }));
}

void Listener::OnConnection(int status) {
  if (status < 0 || server_ == nullptr) return;
  std::shared_ptr<Connection> conn(new Connection(loop_, options_.connection));
  conn->self_ = conn;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(server_),
                reinterpret_cast<uv_stream_t*>(conn->tcp_.get())) != 0) {
    conn->Close(Status::IOError("accept failed"));
    return;
  }
  conn->peer_ = PeerName(conn->tcp_.get());
  std::erase_if(accepted_, [](const auto& w) {
    auto c = w.lock();
    return !c || c->closed();
  });
  if (accepted_.size() >= options_.connections_max && !EvictIdlest()) {
    ++refused_;
    conn->Close(Status::Busy("connections_max reached"));
    return;
  }
  conn->on_request_ = on_request_;
  conn->budget_ = budget_;
  conn->Start();
  accepted_.push_back(conn);
}

bool Listener::EvictIdlest() {
  if (options_.evict_idle_ms == 0) return false;
  auto idlest = accepted_.end();
  uint64_t oldest = UINT64_MAX;
  for (auto it = accepted_.begin(); it != accepted_.end(); ++it) {
    auto c = it->lock();
    // A connection with a request in progress is not idle, however long ago
    // it last sent or received.
    if (c && c->unanswered_ == 0 && c->last_activity_ms_ < oldest) {
      oldest = c->last_activity_ms_;
      idlest = it;
    }
  }
  if (idlest == accepted_.end() || loop_.NowMs() < oldest + options_.evict_idle_ms) return false;
  auto c = idlest->lock();
  accepted_.erase(idlest);
  ++evicted_;
  c->Close(Status::Busy("connections_max reached: closed as the connection idle longest"));
  return true;
}

}  // namespace dynamo::net
