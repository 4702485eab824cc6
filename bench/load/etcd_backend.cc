// dynamo-bench's etcd backend: etcd v3's HTTP/JSON gateway over keep-alive
// connections on the driver's libuv loop, one request in flight on each.
#include <uv.h>

#include <memory>
#include <utility>

#include "load/backend.h"
#include "load/http.h"
#include "load/peer_errors.h"
#include "load/slots.h"

namespace dynamo::bench {
namespace {

class EtcdBackend : public SlotBackend {
 public:
  EtcdBackend(std::vector<std::string> addresses, uint64_t timeout_ms)
      : SlotBackend("etcd", std::move(addresses), timeout_ms) {}

  void Read(size_t slot, const Key& key, OpDone done) override {
    Send(slot, true, "/v3/kv/range", "{\"key\":\"" + Base64(key.name) + "\"}", std::move(done));
  }

  void Write(size_t slot, const Key& key, std::string_view value, OpDone done) override {
    Send(slot, false, "/v3/kv/put",
         "{\"key\":\"" + Base64(key.name) + "\",\"value\":\"" + Base64(value) + "\"}",
         std::move(done));
  }

 protected:
  // A range of a key nobody writes.
  void Probe(size_t slot, OpDone done) override {
    Read(slot, Key{0, "dynamo-bench-probe"}, std::move(done));
  }
  void Reserve(size_t slots) override { conns_.assign(slots, nullptr); }
  size_t slots() const override { return conns_.size(); }

  void Drop(size_t slot) override {
    Conn* c = conns_[slot];
    if (c == nullptr) return;
    conns_[slot] = nullptr;
    CloseConn(c);
  }

 private:
  struct Conn {
    EtcdBackend* self = nullptr;
    size_t slot = 0;
    uv_tcp_t tcp{};
    uv_connect_t connect{};
    bool connected = false;
    std::string unsent;  // the request, until the connection is up
    HttpResponseParser parser;
    bool read_op = false;
    uint64_t op = 0;
    char buf[16384];
  };

  void Send(size_t slot, bool read_op, const char* path, std::string json, OpDone done) {
    Conn* c = conns_[slot];
    if (c == nullptr) {
      Status st = Connect(slot);
      if (!st.ok()) {
        FailSoon(std::move(done), std::move(st));
        return;
      }
      c = conns_[slot];
    }
    c->read_op = read_op;
    c->op = ops()->Begin(slot, std::move(done));
    const net::Endpoint& ep = EndpointFor(slot);
    std::string request = HttpPost(ep.ToString(), path, json);
    if (c->connected) {
      Write(c, std::move(request));
    } else {
      c->unsent = std::move(request);
    }
  }

  Status Connect(size_t slot) {
    const net::Endpoint& ep = EndpointFor(slot);
    sockaddr_storage addr{};
    if (uv_ip4_addr(ep.host.c_str(), ep.port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
        uv_ip6_addr(ep.host.c_str(), ep.port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
      return Status::InvalidArgument("etcd address must be an IP literal: " + ep.ToString());
    }
    auto* c = new Conn;
    c->self = this;
    c->slot = slot;
    uv_tcp_init(loop().uv(), &c->tcp);
    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    c->connect.data = c;
    const int rc = uv_tcp_connect(&c->connect, &c->tcp, reinterpret_cast<const sockaddr*>(&addr), &OnConnect);
    if (rc != 0) {
      CloseConn(c);
      return Status::Unavailable("etcd " + ep.ToString() + ": " + uv_strerror(rc));
    }
    conns_[slot] = c;
    return Status::OK();
  }

  static void OnConnect(uv_connect_t* req, int status) {
    auto* c = static_cast<Conn*>(req->data);
    if (c->self == nullptr) return;  // dropped meanwhile; being closed
    if (status != 0) {
      c->self->Fail(c, Status::Unavailable(std::string("etcd connect: ") + uv_strerror(status)));
      return;
    }
    c->connected = true;
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          auto* conn = static_cast<Conn*>(h->data);
          *b = uv_buf_init(conn->buf, sizeof conn->buf);
        },
        &OnRead);
    if (!c->unsent.empty()) c->self->Write(c, std::exchange(c->unsent, {}));
  }

  // A request being written, with its own uv_write_t: the reply can be read
  // (and the slot's next request written) before libuv has called back for
  // the last write, so a connection's requests cannot share one.
  struct Sending {
    uv_write_t req{};
    Conn* conn = nullptr;
    uint64_t op = 0;
    std::string bytes;
  };

  void Write(Conn* c, std::string request) {
    auto* w = new Sending{{}, c, c->op, std::move(request)};
    w->req.data = w;
    uv_buf_t b = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    const int rc = uv_write(
        &w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, [](uv_write_t* req, int st) {
          std::unique_ptr<Sending> done(static_cast<Sending*>(req->data));
          // A failed write fails its own operation only while the connection
          // still serves it (not after a drop, a close, or a later operation).
          Conn* conn = done->conn;
          if (st != 0 && conn->self && conn->op == done->op) {
            conn->self->Fail(conn, Status::IOError(std::string("etcd write: ") + uv_strerror(st)));
          }
        });
    if (rc != 0) {
      // Not from inside Read or Write: the operation fails from the loop.
      delete w;
      const size_t slot = c->slot;
      const uint64_t op = c->op;
      Drop(slot);
      SlotOps* ops = this->ops();
      loop().Post(
          [ops, slot, op, st = Status::IOError(std::string("etcd write: ") + uv_strerror(rc))] {
            ops->Complete(slot, op, OpOutcome{st});
          });
    }
  }

  static void OnRead(uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
    auto* c = static_cast<Conn*>(s->data);
    if (c->self == nullptr) return;
    if (n < 0) {
      c->self->Fail(c, Status::IOError(std::string("etcd read: ") + uv_strerror(static_cast<int>(n))));
      return;
    }
    Result<std::optional<HttpResponse>> r = c->parser.Feed(std::string_view(b->base, static_cast<size_t>(n)));
    if (!r.ok()) {
      c->self->Fail(c, r.status());
      return;
    }
    if (!r->has_value()) return;
    const HttpResponse& resp = **r;
    OpOutcome out;
    if (resp.status != 200) {
      out.status = EtcdHttpError(resp.status, resp.body);
    } else if (c->read_op) {
      out.values = resp.body.find("\"kvs\"") != std::string::npos ? 1 : 0;
    }
    c->self->ops()->Complete(c->slot, c->op, std::move(out));
  }

  // The connection failed: its operation fails and the slot reconnects on
  // its next operation.
  void Fail(Conn* c, const Status& st) {
    const size_t slot = c->slot;
    const uint64_t op = c->op;
    Drop(slot);
    ops()->Complete(slot, op, OpOutcome{st});
  }

  static void CloseConn(Conn* c) {
    c->self = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
  }

  std::vector<Conn*> conns_;
};

}  // namespace

std::unique_ptr<Backend> MakeEtcdBackend(std::vector<std::string> addresses, uint64_t timeout_ms) {
  return std::make_unique<EtcdBackend>(std::move(addresses), timeout_ms);
}

}  // namespace dynamo::bench
