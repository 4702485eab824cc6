// dynamo-bench's Redis backend: hiredis's asynchronous API on the driver's
// libuv loop, one connection per slot.
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "load/backend.h"
#include "load/slots.h"

namespace dynamo::bench {
namespace {

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
  // hiredis 0.14's libuv adapter ignores a failed connect (the command then
  // waits for its deadline), so each address is connected to once here,
  // blocking, for the reason.
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
    c->data = this;
    redisLibuvAttach(c, loop().uv());
    redisAsyncSetDisconnectCallback(c, &RedisBackend::OnDisconnect);
    conns_[slot] = c;
    return Status::OK();
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
    auto* tag = new Tag{this, slot, ops()->Begin(slot, std::move(done))};
    if (redisAsyncCommand(conns_[slot], &RedisBackend::OnReply, tag, format, args...) != REDIS_OK) {
      ops()->Complete(slot, tag->id, OpOutcome{Status::IOError("redis: command not sent")});
      delete tag;
      Drop(slot);
    }
  }

  static void OnReply(redisAsyncContext*, void* reply_ptr, void* privdata) {
    std::unique_ptr<Tag> tag(static_cast<Tag*>(privdata));
    if (!tag->self->ops()) return;
    auto* reply = static_cast<redisReply*>(reply_ptr);
    OpOutcome out;
    if (reply == nullptr) {
      out.status = Status::IOError("redis: connection lost");
    } else if (reply->type == REDIS_REPLY_ERROR) {
      out.status = Status::Internal(std::string("redis: ") + std::string(reply->str, reply->len));
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
