// dynamo-bench's Redis backend: hiredis's asynchronous API on the driver's
// libuv loop, one connection per slot.
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <future>

#include "load/backend.h"
#include "load/slots.h"

namespace dynamo::bench {
namespace {

class RedisBackend : public Backend {
 public:
  RedisBackend(std::vector<std::string> addresses, uint64_t timeout_ms)
      : addresses_(std::move(addresses)), timeout_ms_(timeout_ms) {}
  std::string Name() const override { return "redis"; }

  Status Open(net::EventLoop& loop, size_t slots) override {
    loop_ = &loop;
    for (const std::string& a : addresses_) {
      Result<net::Endpoint> ep = net::ParseEndpoint(a);
      if (!ep.ok()) return ep.status();
      endpoints_.push_back(*ep);
    }
    if (endpoints_.empty()) return Status::InvalidArgument("redis needs --address HOST:PORT");
    std::promise<Status> opened;
    loop.Post([&] {
      ops_ = std::make_unique<SlotOps>(loop, slots, timeout_ms_, [this](size_t slot) { Drop(slot); });
      conns_.assign(slots, nullptr);
      Status st;
      for (size_t i = 0; i < slots && st.ok(); ++i) st = Connect(i);
      opened.set_value(st);
    });
    DYNAMO_RETURN_IF_ERROR(opened.get_future().get());
    // hiredis queues commands until the connection is up: a PING per slot
    // proves every connection works before the run starts.
    std::vector<std::future<OpOutcome>> pings;
    for (size_t i = 0; i < slots; ++i) {
      auto p = std::make_shared<std::promise<OpOutcome>>();
      pings.push_back(p->get_future());
      loop.Post([this, i, p] { Command(i, [p](OpOutcome o) { p->set_value(std::move(o)); }, "PING"); });
    }
    for (auto& f : pings) {
      OpOutcome o = f.get();
      if (!o.status.ok()) return Status::Unavailable("redis: " + o.status.ToString());
    }
    return Status::OK();
  }

  void Read(size_t slot, const std::string& key, OpDone done) override {
    Command(slot, std::move(done), "GET %b", key.data(), key.size());
  }

  void Write(size_t slot, const std::string& key, std::string_view value, OpDone done) override {
    Command(slot, std::move(done), "SET %b %b", key.data(), key.size(), value.data(), value.size());
  }

  void Close() override {
    std::promise<void> closed;
    loop_->Post([&] {
      for (size_t i = 0; i < conns_.size(); ++i) Drop(i);
      if (ops_) ops_->FailAll(Status::Aborted("closed"));
      ops_.reset();
      closed.set_value();
    });
    closed.get_future().get();
  }

 private:
  struct Tag {
    RedisBackend* self;
    size_t slot;
    uint64_t id;
  };

  Status Connect(size_t slot) {
    const net::Endpoint& ep = endpoints_[slot % endpoints_.size()];
    redisAsyncContext* c = redisAsyncConnect(ep.host.c_str(), ep.port);
    if (c == nullptr) return Status::Internal("redis: out of memory");
    if (c->err) {
      Status st = Status::Unavailable(std::string("redis ") + ep.ToString() + ": " + c->errstr);
      redisAsyncFree(c);
      return st;
    }
    c->data = this;
    redisLibuvAttach(c, loop_->uv());
    redisAsyncSetDisconnectCallback(c, &RedisBackend::OnDisconnect);
    conns_[slot] = c;
    return Status::OK();
  }

  // Forgets the slot's connection; its commands complete with an error.
  void Drop(size_t slot) {
    redisAsyncContext* c = conns_[slot];
    if (c == nullptr) return;
    conns_[slot] = nullptr;
    c->data = nullptr;
    redisAsyncFree(c);
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
        done(OpOutcome{st});
        return;
      }
    }
    auto* tag = new Tag{this, slot, ops_->Begin(slot, std::move(done))};
    if (redisAsyncCommand(conns_[slot], &RedisBackend::OnReply, tag, format, args...) != REDIS_OK) {
      ops_->Complete(slot, tag->id, OpOutcome{Status::IOError("redis: command not sent")});
      delete tag;
      Drop(slot);
    }
  }

  static void OnReply(redisAsyncContext*, void* reply_ptr, void* privdata) {
    std::unique_ptr<Tag> tag(static_cast<Tag*>(privdata));
    if (!tag->self->ops_) return;
    auto* reply = static_cast<redisReply*>(reply_ptr);
    OpOutcome out;
    if (reply == nullptr) {
      out.status = Status::IOError("redis: connection lost");
    } else if (reply->type == REDIS_REPLY_ERROR) {
      out.status = Status::Internal(std::string("redis: ") + std::string(reply->str, reply->len));
    } else if (reply->type == REDIS_REPLY_STRING) {
      out.values = 1;
    }
    tag->self->ops_->Complete(tag->slot, tag->id, std::move(out));
  }

  std::vector<std::string> addresses_;
  uint64_t timeout_ms_;
  std::vector<net::Endpoint> endpoints_;
  net::EventLoop* loop_ = nullptr;
  std::unique_ptr<SlotOps> ops_;
  std::vector<redisAsyncContext*> conns_;
};

}  // namespace

std::unique_ptr<Backend> MakeRedisBackend(std::vector<std::string> addresses, uint64_t timeout_ms) {
  return std::make_unique<RedisBackend>(std::move(addresses), timeout_ms);
}

}  // namespace dynamo::bench
