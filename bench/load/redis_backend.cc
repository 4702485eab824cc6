// dynamo-bench's Redis backend: hiredis's asynchronous API on the driver's
// libuv loop, one connection per slot.
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "load/backend.h"
#include "load/peer_errors.h"
#include "load/slots.h"

namespace dynamo::bench {
namespace {

// hiredis's event hooks on a libuv poll handle. hiredis 0.14's own libuv
// adapter drops a poll that ends in an error, so a connect the server
// refused left its commands waiting for their deadline; here an error wakes
// hiredis for the events it asked for, and hiredis reads the socket's error.
struct UvEvents {
  redisAsyncContext* context;  // null once hiredis cleaned up
  uv_poll_t handle;
  int events = 0;
};

void OnPoll(uv_poll_t* handle, int status, int events) {
  auto* e = static_cast<UvEvents*>(handle->data);
  const int ready = status < 0 ? e->events : events;
  if (e->context != nullptr && (ready & UV_READABLE)) redisAsyncHandleRead(e->context);
  if (e->context != nullptr && (ready & UV_WRITABLE)) redisAsyncHandleWrite(e->context);
}

void SetEvents(void* privdata, int add, int remove) {
  auto* e = static_cast<UvEvents*>(privdata);
  e->events = (e->events | add) & ~remove;
  if (e->events != 0) {
    uv_poll_start(&e->handle, e->events, OnPoll);
  } else {
    uv_poll_stop(&e->handle);
  }
}

Status AttachToLoop(redisAsyncContext* c, uv_loop_t* loop) {
  auto* e = new UvEvents{c, {}, 0};
  if (int rc = uv_poll_init_socket(loop, &e->handle, c->c.fd); rc != 0) {
    delete e;
    return Status::IOError(std::string("redis: poll: ") + uv_strerror(rc));
  }
  e->handle.data = e;
  c->ev.data = e;
  c->ev.addRead = [](void* p) { SetEvents(p, UV_READABLE, 0); };
  c->ev.delRead = [](void* p) { SetEvents(p, 0, UV_READABLE); };
  c->ev.addWrite = [](void* p) { SetEvents(p, UV_WRITABLE, 0); };
  c->ev.delWrite = [](void* p) { SetEvents(p, 0, UV_WRITABLE); };
  c->ev.cleanup = [](void* p) {
    auto* events = static_cast<UvEvents*>(p);
    events->context = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&events->handle),
             [](uv_handle_t* h) { delete static_cast<UvEvents*>(h->data); });
  };
  return Status::OK();
}

class RedisBackend : public SlotBackend {
 public:
  RedisBackend(std::vector<std::string> addresses, uint64_t timeout_ms)
      : SlotBackend("redis", std::move(addresses), timeout_ms) {}

  void Read(size_t slot, const Key& key, OpDone done) override {
    Command(slot, std::move(done), "GET %b", key.name.data(), key.name.size());
  }

  void Write(size_t slot, const Key& key, std::string_view value, OpDone done) override {
    Command(slot, std::move(done), "SET %b %b", key.name.data(), key.name.size(), value.data(),
            value.size());
  }

 protected:
  void Probe(size_t slot, OpDone done) override { Command(slot, std::move(done), "PING"); }
  // Each address is connected to once here, blocking, so that Open names
  // the reason an address cannot be reached rather than a failed probe.
  Status Reach(const net::Endpoint& ep) override {
    timeval tv{static_cast<time_t>(timeout_ms() / 1000),
               static_cast<suseconds_t>(timeout_ms() % 1000 * 1000)};
    redisContext* c = redisConnectWithTimeout(ep.host.c_str(), ep.port, tv);
    if (c == nullptr) return Status::Internal("out of memory");
    Status st = c->err ? Status::Unavailable(std::string("connect: ") + c->errstr) : Status::OK();
    redisFree(c);
    return st;
  }
  void Reserve(size_t slots) override { conns_.assign(slots, nullptr); }
  size_t slots() const override { return conns_.size(); }

  // Forgets the slot's connection; its commands complete with an error.
  void Drop(size_t slot) override {
    redisAsyncContext* c = conns_[slot];
    if (c == nullptr) return;
    conns_[slot] = nullptr;
    c->data = nullptr;
    redisAsyncFree(c);
  }

 private:
  struct Tag {
    RedisBackend* self;
    size_t slot;
    uint64_t id;
  };

  Status Connect(size_t slot) {
    const net::Endpoint& ep = EndpointFor(slot);
    redisAsyncContext* c = redisAsyncConnect(ep.host.c_str(), ep.port);
    if (c == nullptr) return Status::Internal("redis: out of memory");
    if (c->err) {
      Status st = Status::Unavailable(std::string("redis ") + ep.ToString() + ": " + c->errstr);
      redisAsyncFree(c);
      return st;
    }
    if (Status st = AttachToLoop(c, loop().uv()); !st.ok()) {
      redisAsyncFree(c);
      return st;
    }
    c->data = this;
    conns_[slot] = c;
    // A connect that fails frees the context after calling OnConnect (and
    // not OnDisconnect); its commands then complete with no reply.
    redisAsyncSetConnectCallback(c, &RedisBackend::OnConnect);
    redisAsyncSetDisconnectCallback(c, &RedisBackend::OnDisconnect);
    return Status::OK();
  }

  static void OnConnect(const redisAsyncContext* c, int status) {
    if (status != REDIS_OK) OnDisconnect(c, status);
  }

  static void OnDisconnect(const redisAsyncContext* c, int) {
    auto* self = static_cast<RedisBackend*>(c->data);
    if (self == nullptr) return;
    for (auto& conn : self->conns_) {
      if (conn == c) conn = nullptr;
    }
  }

  template <typename... Args>
  void Command(size_t slot, OpDone done, const char* format, Args... args) {
    if (conns_[slot] == nullptr) {
      Status st = Connect(slot);
      if (!st.ok()) {
        FailSoon(std::move(done), std::move(st));
        return;
      }
    }
    // hiredis only queues the command here: its reply comes from the loop.
    auto* tag = new Tag{this, slot, 0};
    if (redisAsyncCommand(conns_[slot], &RedisBackend::OnReply, tag, format, args...) != REDIS_OK) {
      delete tag;
      Drop(slot);
      FailSoon(std::move(done), Status::IOError("redis: command not sent"));
      return;
    }
    tag->id = ops()->Begin(slot, std::move(done));
  }

  static void OnReply(redisAsyncContext* c, void* reply_ptr, void* privdata) {
    std::unique_ptr<Tag> tag(static_cast<Tag*>(privdata));
    if (!tag->self->ops()) return;
    auto* reply = static_cast<redisReply*>(reply_ptr);
    OpOutcome out;
    if (reply == nullptr) {
      // A refused (re)connect is the server's absence, not a lost reply.
      const bool refused = c->err == REDIS_ERR_IO && (c->c.flags & REDIS_CONNECTED) == 0;
      const std::string why = std::string("redis ") + tag->self->EndpointFor(tag->slot).ToString() +
                              ": " + (c->err ? c->errstr : "connection lost");
      out.status = refused ? Status::Unavailable(why) : Status::IOError(why);
    } else if (reply->type == REDIS_REPLY_ERROR) {
      out.status = RedisReplyError(std::string_view(reply->str, reply->len));
    } else if (reply->type == REDIS_REPLY_STRING) {
      out.values = 1;
    }
    tag->self->ops()->Complete(tag->slot, tag->id, std::move(out));
  }

  std::vector<redisAsyncContext*> conns_;
};

}  // namespace

std::unique_ptr<Backend> MakeRedisBackend(std::vector<std::string> addresses, uint64_t timeout_ms) {
  return std::make_unique<RedisBackend>(std::move(addresses), timeout_ms);
}

}  // namespace dynamo::bench
