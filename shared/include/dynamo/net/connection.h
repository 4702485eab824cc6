// Framed, pipelined connections over TCP (libuv), and the listener that
// accepts them.
//
// Both ends of a Connection may send requests; replies are matched to
// requests by id, in any order. Each call has its own deadline. Outgoing
// frames are appended to one batch buffer that goes out at the end of the
// loop iteration (EventLoop::Defer), so the replies to a burst of requests
// cost one system call. The write queue is bounded: a call that would exceed
// it fails at once with Busy, and reading from the peer pauses while the
// queue is above half of the bound, so a peer that sends requests but does
// not read replies cannot grow our memory.
//
// Malformed input (a bad frame, an unknown type, a broken payload) is answered
// with an ErrorReply and the connection is closed once that reply is written.
// A well-formed request that breaks a size limit (key, value) is answered with
// an InvalidArgument ErrorReply and the connection goes on.
//
// Thread-safety: a Connection and a Listener belong to their loop thread; all
// methods must be called there (use EventLoop::Post from other threads).
// Callbacks run on the loop thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dynamo/buffer_trim.h"
#include "dynamo/net/call_outcome.h"
#include "dynamo/net/event_loop.h"
#include "dynamo/proto/codec.h"
#include "dynamo/proto/message.h"
#include "dynamo/status.h"

struct uv_tcp_s;
struct uv_write_s;

namespace dynamo::net {

struct ConnectionOptions {
  proto::Limits limits;
  // Bytes queued for writing beyond which calls fail with Busy, and past
  // half of which the connection stops reading until a quarter is left.
  // Default: 64 MiB.
  size_t write_queue_bytes_max = 64u << 20;
  // Requests from the peer taken in and not answered yet at which the
  // connection stops taking in more (and reading) until half of them are
  // answered: the replies a peer that does not read can pile up are bounded
  // by it. Default: 1024.
  size_t requests_unanswered_max = 1024;
  // Close the connection after this long with no traffic and no call
  // outstanding; 0 disables. Default: 0.
  uint64_t idle_timeout_ms = 0;
};

// Replies queued on all the connections of one listener (ListenerOptions::
// replies_queued_bytes_max).
struct ReplyBudget {
  size_t max = 0;      // 0: no bound
  size_t queued = 0;   // bytes queued to write, over every connection
  uint64_t holds = 0;  // times a connection stopped taking in requests for it
};

// Past ReplyBudget::max, a connection holding more than this of the queued
// bytes takes in no more requests until its own are down to half of it.
inline constexpr size_t kRepliesHeldBackBytes = 1u << 20;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // Gets the outcome of a call (call_outcome.h).
  using ReplyCallback = std::function<void(CallOutcome)>;
  // Gets a request from the peer; answer it with Reply(request_id, ...), now
  // or later.
  using RequestHandler = std::function<void(const std::shared_ptr<Connection>&, proto::Message)>;
  using CloseHandler = std::function<void(const Status& reason)>;

  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends a request (encoded at once: `request` is not kept). `done` runs
  // exactly once, never inside this call.
  void Call(const proto::Body& request, uint64_t timeout_ms, ReplyCallback done);
  // Sends the reply to the peer's request `request_id`. Dropped if closed.
  void Reply(uint64_t request_id, const proto::Body& reply);
  // Closes now: outstanding calls fail with Unavailable carrying `reason`.
  // Idempotent.
  void Close(const Status& reason);

  void SetRequestHandler(RequestHandler handler) { on_request_ = std::move(handler); }
  void SetCloseHandler(CloseHandler handler) { on_close_ = std::move(handler); }

  bool closed() const { return closed_; }
  // False once closed or closing after a protocol error (Call refuses then).
  bool accepts_calls() const { return !closed_ && !closing_after_flush_; }
  // Unique among the connections of this process.
  uint64_t id() const { return id_; }
  const std::string& peer() const { return peer_; }
  size_t calls_outstanding() const { return pending_.size(); }
  // Deadline entries held: the outstanding calls' and, whatever the mix of
  // timeouts, at most as many again plus a few dozen of finished calls.
  size_t deadline_entries() const { return deadlines_.size(); }
  size_t queued_bytes() const { return batch_.size() + inflight_.size(); }
  // Memory its read and write buffers hold, used or not. Buffers grown for a
  // burst are cut back once they have been much larger than needed for a
  // while (BufferTrim).
  size_t buffer_bytes() const {
    return decoder_.capacity() + batch_.capacity() + inflight_.capacity();
  }
  // Whether a reply this side queued is not yet written.
  bool replies_unsent() const { return last_reply_end_ > written_bytes_; }
  const ConnectionOptions& options() const { return options_; }

 private:
  friend class Listener;
  friend struct ConnectAttempt;
  friend std::weak_ptr<Connection> Connect(
      EventLoop&, const Endpoint&, const ConnectionOptions&, uint64_t,
      std::function<void(Result<std::shared_ptr<Connection>>)>);

  Connection(EventLoop& loop, ConnectionOptions options);
  // Starts reading once the socket is connected or accepted.
  void Start();
  void ScheduleFlush();
  void Flush();
  // Everything queued was written.
  void AfterWrite();
  void OnRead(long nread);
  // Dispatches the frames read so far, up to requests_unanswered_max, and
  // stops reading while either limit is reached.
  void DispatchBuffered();
  void Dispatch(std::string_view body);
  // Appends a reply frame (an error in doubt instead of one past the frame
  // limit) and schedules the write.
  void AppendReply(uint64_t request_id, const proto::Body& reply);
  void FailCall(uint64_t id, Status status);
  // Drops deadlines of calls already finished from the top of deadlines_.
  void PopFinishedDeadlines();
  void ArmTimer();
  void OnTimer();
  void CloseAfterFlush();
  // Fails every call waiting for a reply with `why` (maybe delivered).
  void FailPending(const Status& why);
  void MaybeResumeReading();
  void FinishClose();
  // Brings the budget's count up to date with queued_bytes() (0 once closed).
  void Recharge();
  // The listener's replies are over its budget and this connection holds
  // more than `own` of them.
  bool OverBudget(size_t own) const {
    return budget_ && budget_->max != 0 && budget_->queued > budget_->max && queued_bytes() > own;
  }

  EventLoop& loop_;
  ConnectionOptions options_;
  uint64_t id_;
  std::unique_ptr<uv_tcp_s> tcp_;
  std::unique_ptr<uv_write_s> write_req_;
  Timer timer_;
  std::shared_ptr<Connection> self_;  // keeps us alive while the handle is open
  proto::FrameDecoder decoder_;
  std::string batch_;     // frames waiting for the next write
  std::string inflight_;  // frames being written
  BufferTrim write_trim_;  // for batch_ and inflight_, which swap roles
  bool writing_ = false;
  bool flush_scheduled_ = false;
  bool reading_ = false;
  bool read_paused_ = false;
  bool dispatching_ = false;  // in DispatchBuffered
  size_t unanswered_ = 0;     // requests handed to on_request_ and not replied to
  // Bytes written since the start, and where in that count the last reply
  // queued ends: replies wait to be written while it is ahead.
  uint64_t written_bytes_ = 0;
  uint64_t last_reply_end_ = 0;
  bool closing_after_flush_ = false;
  bool closed_ = false;
  uint64_t next_request_id_ = 1;
  uint64_t last_activity_ms_ = 0;
  std::unordered_map<uint64_t, ReplyCallback> pending_;  // by request id
  // Min-heap of (deadline, request id) of the pending calls. A finished
  // call's entry stays until it reaches the top (ids are never reused), so
  // the common case costs no search and no allocation; when finished entries
  // outnumber the pending calls (a long deadline answered while a shorter
  // one is still out), the heap is rebuilt without them.
  std::vector<std::pair<uint64_t, uint64_t>> deadlines_;
  std::string peer_;
  RequestHandler on_request_;
  CloseHandler on_close_;
  std::shared_ptr<ReplyBudget> budget_;  // the listener's; null for a connection made
  size_t charged_ = 0;                   // what this connection counts in budget_->queued
};

// Connects to `peer` (resolving a name if needed). `done` gets the connection
// or Unavailable (refused, unreachable) or Timeout after `timeout_ms`.
// Returns the connection being opened: closing it cancels the attempt, and
// `done` then gets Unavailable on a later loop iteration. Cancel attempts
// still open before the loop is destroyed.
std::weak_ptr<Connection> Connect(EventLoop& loop, const Endpoint& peer,
                                  const ConnectionOptions& options, uint64_t timeout_ms,
                                  std::function<void(Result<std::shared_ptr<Connection>>)> done);

struct ListenerOptions {
  ConnectionOptions connection;
  // Connections served at once. At the limit, a new connection replaces the
  // one idle longest if that one has been idle at least evict_idle_ms (so
  // connections that never send cannot lock everyone out); otherwise the new
  // one is accepted and closed at once. Default: 1024.
  size_t connections_max = 1024;
  // 0: never replace an idle connection. Default: 1000 ms.
  uint64_t evict_idle_ms = 1000;
  // Bytes queued to write on all the accepted connections together (replies
  // their peers have not read yet) past which a connection holding more
  // than kRepliesHeldBackBytes of them takes in no more requests until its
  // own are down to half of that, so that peers slow to read cannot make
  // the node hold up to connections_max times write_queue_bytes_max.
  // Connections whose peers read keep being served. 0: no bound. Default:
  // 1 GiB.
  size_t replies_queued_bytes_max = size_t{1} << 30;
  // Default: 511.
  int backlog = 511;
};

class Listener {
 public:
  // Listens on `address` (an IP literal, or "localhost"); port 0 picks a free
  // port. Each accepted connection gets `on_request` as its request handler.
  static Result<std::unique_ptr<Listener>> Listen(EventLoop& loop, const Endpoint& address,
                                                  ListenerOptions options,
                                                  Connection::RequestHandler on_request);
  // Stops accepting and closes every connection it accepted.
  ~Listener();

  // The bound port.
  uint16_t port() const { return port_; }
  // Stops accepting new connections; existing ones go on.
  void StopAccepting();
  // Closes every accepted connection that is still open.
  void CloseConnections(const Status& reason);
  size_t connections() const;
  // Memory the open connections' buffers hold (Connection::buffer_bytes).
  size_t buffer_bytes() const;
  // Whether an open connection has replies its peer has not been sent yet.
  bool replies_unsent() const;
  // Connections refused because connections_max was reached.
  uint64_t refused() const { return refused_; }
  // Idle connections closed to make room for a new one.
  uint64_t evicted() const { return evicted_; }
  // Bytes queued to write on the open connections.
  size_t queued_bytes() const { return budget_->queued; }
  // Times a connection stopped taking in requests for replies_queued_bytes_max.
  uint64_t held_back() const { return budget_->holds; }

 private:
  Listener(EventLoop& loop, ListenerOptions options, Connection::RequestHandler on_request);
  void OnConnection(int status);
  // Closes the connection idle longest if it has been idle evict_idle_ms.
  bool EvictIdlest();

  EventLoop& loop_;
  ListenerOptions options_;
  Connection::RequestHandler on_request_;
  uv_tcp_s* server_ = nullptr;
  uint16_t port_ = 0;
  uint64_t refused_ = 0;
  uint64_t evicted_ = 0;
  std::shared_ptr<ReplyBudget> budget_;
  std::vector<std::weak_ptr<Connection>> accepted_;
};

}  // namespace dynamo::net
