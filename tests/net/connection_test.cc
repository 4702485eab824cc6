#include "dynamo/net/connection.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <thread>

#include "dynamo/net/connection_pool.h"

namespace dynamo::net {
namespace {

using proto::Body;
using proto::CoordPutRequest;
using proto::GetReply;
using proto::GetRequest;
using proto::Message;

// Runs an EventLoop on its own thread; Run() executes a function there and
// waits for its result.
class LoopThread {
 public:
  LoopThread() : thread_([this] { loop_.Run(); }) {}
  ~LoopThread() {
    loop_.Stop();
    thread_.join();
  }
  EventLoop& loop() { return loop_; }
  template <typename Fn>
  auto Run(Fn fn) {
    using R = decltype(fn());
    std::promise<R> p;
    auto f = p.get_future();
    loop_.Post([&] {
      if constexpr (std::is_void_v<R>) {
        fn();
        p.set_value();
      } else {
        p.set_value(fn());
      }
    });
    return f.get();
  }

 private:
  EventLoop loop_;
  std::thread thread_;
};

// Answers Get with the key as value; "slow:<ms>" replies after a delay,
// "never" never replies, "big:<n>" replies with a value of n bytes.
class EchoServer {
 public:
  EchoServer(LoopThread& lt, ListenerOptions opts = {}) : lt_(lt) {
    listener_ = lt.Run([&] {
      return std::move(*Listener::Listen(lt.loop(), {"127.0.0.1", 0}, opts,
                                          [this](const std::shared_ptr<Connection>& c, Message m) {
                                            Handle(c, std::move(m));
                                          }));
    });
  }
  ~EchoServer() {
    lt_.Run([&] {
      timers_.clear();
      listener_.reset();
    });
  }
  uint16_t port() const { return listener_->port(); }
  Listener& listener() { return *listener_; }
  int requests() const { return requests_; }

 private:
  void Handle(const std::shared_ptr<Connection>& c, Message m) {
    ++requests_;
    auto* get = std::get_if<GetRequest>(&m.body);
    if (get == nullptr) {
      c->Reply(m.request_id, proto::MakeError(Status::InvalidArgument("only Get"), 1));
      return;
    }
    if (get->key == "never") return;
    Version v;
    v.dot = Dot{1, 1};
    v.value = get->key;
    if (get->key.rfind("big:", 0) == 0) v.value.assign(std::stoull(get->key.substr(4)), 'v');
    Body reply = GetReply{1, {v}};
    if (get->key.rfind("slow:", 0) == 0) {
      uint64_t ms = std::stoull(get->key.substr(5));
      auto timer = std::make_unique<Timer>(lt_.loop());
      std::weak_ptr<Connection> weak = c;
      timer->Start(ms, 0, [weak, id = m.request_id, reply] {
        if (auto conn = weak.lock()) conn->Reply(id, reply);
      });
      timers_.push_back(std::move(timer));
      return;
    }
    c->Reply(m.request_id, reply);
  }

  LoopThread& lt_;
  std::unique_ptr<Listener> listener_;
  std::vector<std::unique_ptr<Timer>> timers_;
  int requests_ = 0;
};

// A handle to `c` for the test thread: its last copy drops the connection on
// the loop thread, where a connection's handles may be closed.
std::shared_ptr<Connection> ReleasedOnLoop(LoopThread& lt, std::shared_ptr<Connection> c) {
  Connection* raw = c.get();
  return std::shared_ptr<Connection>(raw, [&lt, keep = std::move(c)](Connection*) mutable {
    if (lt.loop().InLoopThread()) {
      keep.reset();
    } else {
      lt.Run([&] { keep.reset(); });
    }
  });
}

std::shared_ptr<Connection> ConnectTo(LoopThread& lt, uint16_t port, ConnectionOptions opts = {},
                                      const std::string& host = "127.0.0.1") {
  std::promise<Result<std::shared_ptr<Connection>>> p;
  lt.loop().Post([&] {
    Connect(lt.loop(), {host, port}, opts, 2000,
            [&](Result<std::shared_ptr<Connection>> r) { p.set_value(std::move(r)); });
  });
  Result<std::shared_ptr<Connection>> r = p.get_future().get();
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? ReleasedOnLoop(lt, std::move(*r)) : nullptr;
}

// Issues calls on the loop thread and collects their results in order of issue.
std::vector<Result<Message>> CallAll(LoopThread& lt, const std::shared_ptr<Connection>& c,
                                     const std::vector<Body>& requests, uint64_t timeout_ms) {
  auto results = std::make_shared<std::vector<std::optional<Result<Message>>>>(requests.size());
  auto left = std::make_shared<size_t>(requests.size());
  std::promise<void> done;
  lt.loop().Post([&] {
    for (size_t i = 0; i < requests.size(); ++i) {
      c->Call(requests[i], timeout_ms, [&, i, results, left](CallOutcome r) {
        (*results)[i] = std::move(r.message);
        if (--*left == 0) done.set_value();
      });
    }
  });
  done.get_future().get();
  std::vector<Result<Message>> out;
  for (auto& r : *results) out.push_back(std::move(*r));
  return out;
}

std::string ValueOf(const Result<Message>& r) {
  if (!r.ok()) return "error: " + r.status().ToString();
  auto* g = std::get_if<GetReply>(&r->body);
  return g && !g->siblings.empty() ? g->siblings[0].value : "?";
}

void CloseOnLoop(LoopThread& lt, const std::shared_ptr<Connection>& c) {
  lt.Run([&] { c->Close(Status::Aborted("test done")); });
}

TEST(EndpointTest, Parse) {
  EXPECT_EQ(ParseEndpoint("127.0.0.1:7000")->port, 7000);
  EXPECT_EQ(ParseEndpoint("localhost:1")->host, "localhost");
  EXPECT_EQ(ParseEndpoint("[::1]:9")->host, "::1");
  EXPECT_EQ((Endpoint{"::1", 9}.ToString()), "[::1]:9");
  for (const char* bad : {"", "host", ":80", "h:", "h:65536", "h:12x", "::1:80", "[::1]80"}) {
    EXPECT_FALSE(ParseEndpoint(bad).ok()) << bad;
  }
}

// Work posted but never run can own handles (an operation's timer). The
// loop's teardown releases it while those handles are open, so the timer
// closes its own handle; before, the teardown's sweep of leaked handles
// closed it first and the timer's destructor closed it again (an abort in
// libuv).
TEST(EventLoopTest, TeardownReleasesUnrunWorkBeforeSweepingLeakedHandles) {
  auto loop = std::make_unique<EventLoop>();
  auto timer = std::make_shared<Timer>(*loop);
  timer->Start(60000, 0, [] {});
  std::weak_ptr<Timer> watch = timer;
  loop->Post([timer = std::move(timer)] {});
  loop->Defer([] {});
  loop.reset();
  EXPECT_TRUE(watch.expired());
}

// Work posted before Stop() runs even when Stop() comes while the loop is
// running earlier posted work. The client's destructor posts its
// connections' close, then stops; that close could be skipped, and the
// connections were then closed by the pool's destructor, whose callbacks
// touched client members already destroyed (a leak under ASan).
TEST(EventLoopTest, WorkPostedBeforeStopRunsWhenStopComesDuringADrain) {
  EventLoop loop;
  std::thread thread([&] { loop.Run(); });
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  loop.Post([&started, released] {
    started.set_value();
    released.wait();
  });
  started.get_future().wait();
  std::atomic<bool> ran{false};
  loop.Post([&ran] { ran = true; });
  loop.Stop();
  release.set_value();
  thread.join();
  EXPECT_TRUE(ran.load());
}

TEST(EventLoopTest, DeferredWorkRunsBeforeTheLoopWaitsAgain) {
  LoopThread lt;
  auto seen = std::make_shared<std::vector<std::string>>();
  std::promise<void> done;
  lt.loop().Post([&, seen] {
    lt.loop().Defer([seen, &lt, &done] {
      seen->push_back("d1");
      lt.loop().Defer([seen, &done] {
        seen->push_back("d3");
        done.set_value();
      });
    });
    lt.loop().Defer([seen] { seen->push_back("d2"); });
    seen->push_back("callback");
  });
  // Nothing else wakes the loop: the deferred work must not wait for I/O.
  ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(*seen, (std::vector<std::string>{"callback", "d1", "d2", "d3"}));
  // From a timer callback too.
  std::promise<void> timer_done;
  auto timer = lt.Run([&] {
    auto t = std::make_unique<Timer>(lt.loop());
    t->Start(1, 0, [&] { lt.loop().Defer([&] { timer_done.set_value(); }); });
    return t;
  });
  ASSERT_EQ(timer_done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  lt.Run([&] { timer.reset(); });
}

TEST(ConnectionTest, PipelinedCallsMatchTheirReplies) {
  LoopThread lt;
  EchoServer server(lt);
  auto c = ConnectTo(lt, server.port());
  ASSERT_TRUE(c);
  std::vector<Body> reqs;
  for (int i = 0; i < 2000; ++i) reqs.push_back(GetRequest{"key-" + std::to_string(i)});
  auto results = CallAll(lt, c, reqs, 5000);
  for (int i = 0; i < 2000; ++i) EXPECT_EQ(ValueOf(results[i]), "key-" + std::to_string(i));
  CloseOnLoop(lt, c);
}

TEST(ConnectionTest, BuffersGrownForABigReplyAreCutBackAfterSmallOnes) {
  LoopThread lt;
  EchoServer server(lt);
  auto c = ConnectTo(lt, server.port());
  ASSERT_TRUE(c);
  constexpr size_t kBig = 1'000'000;  // under limits.value_bytes_max
  auto big = CallAll(lt, c, {GetRequest{"big:" + std::to_string(kBig)}}, 10000);
  ASSERT_TRUE(big[0].ok()) << big[0].status().ToString();
  EXPECT_EQ(std::get<GetReply>(big[0]->body).siblings[0].value.size(), kBig);
  // The reply grew the node's write buffer and the caller's read buffer.
  EXPECT_GE(lt.Run([&] { return server.listener().buffer_bytes(); }), kBig);
  EXPECT_GE(lt.Run([&] { return c->buffer_bytes(); }), kBig);
  // One call at a time: each is one read and one write on either side. The
  // window holding the big reply keeps the buffers; the next one cuts them.
  for (uint32_t i = 0; i <= 2 * kBufferTrimUses; ++i) {
    auto small = CallAll(lt, c, {GetRequest{"small"}}, 5000);
    ASSERT_EQ(ValueOf(small[0]), "small");
  }
  // The read buffer cut to the keep size, the write buffers released.
  EXPECT_LE(lt.Run([&] { return server.listener().buffer_bytes(); }),
            kBufferKeepBytes + (16u << 10));
  EXPECT_LE(lt.Run([&] { return c->buffer_bytes(); }), kBufferKeepBytes + (16u << 10));
  CloseOnLoop(lt, c);
}

TEST(ConnectionTest, RepliesOutOfOrderAreMatchedById) {
  LoopThread lt;
  EchoServer server(lt);
  auto c = ConnectTo(lt, server.port());
  auto results = CallAll(lt, c, {GetRequest{"slow:150"}, GetRequest{"slow:60"}, GetRequest{"fast"}}, 5000);
  EXPECT_EQ(ValueOf(results[0]), "slow:150");
  EXPECT_EQ(ValueOf(results[1]), "slow:60");
  EXPECT_EQ(ValueOf(results[2]), "fast");
  CloseOnLoop(lt, c);
}

TEST(ConnectionTest, PerRequestTimeouts) {
  LoopThread lt;
  EchoServer server(lt);
  auto c = ConnectTo(lt, server.port());
  auto results = CallAll(lt, c, {GetRequest{"never"}, GetRequest{"slow:400"}, GetRequest{"ok"}}, 100);
  EXPECT_TRUE(results[0].status().IsTimeout());
  EXPECT_TRUE(results[1].status().IsTimeout());
  EXPECT_EQ(ValueOf(results[2]), "ok");
  // The late reply to the timed-out call is dropped; the connection goes on.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(ValueOf(CallAll(lt, c, {GetRequest{"after"}}, 2000)[0]), "after");
  EXPECT_EQ(lt.Run([&] { return c->calls_outstanding(); }), 0u);
  CloseOnLoop(lt, c);
}

TEST(ConnectionTest, DeadlinesExpireInTheirOrderWhateverTheOrderOfIssue) {
  LoopThread lt;
  EchoServer server(lt);
  auto c = ConnectTo(lt, server.port());
  // Unanswered calls whose deadlines are out of issue order, between answered ones.
  const std::vector<std::pair<std::string, uint64_t>> calls = {
      {"never", 900}, {"a", 5000}, {"never", 300}, {"b", 5000}, {"never", 600}, {"c", 5000}};
  std::vector<std::string> timeouts;
  std::vector<std::string> answers;
  size_t left = calls.size();
  std::promise<void> done;
  lt.loop().Post([&] {
    for (const auto& [key, timeout_ms] : calls) {
      c->Call(GetRequest{key}, timeout_ms, [&, timeout = timeout_ms](CallOutcome o) {
        EXPECT_TRUE(o.maybe_delivered);
        if (o.message.ok()) {
          answers.push_back(ValueOf(o.message));
        } else {
          EXPECT_TRUE(o.message.status().IsTimeout()) << o.message.status().ToString();
          timeouts.push_back(std::to_string(timeout));
        }
        if (--left == 0) done.set_value();
      });
    }
  });
  done.get_future().get();
  EXPECT_EQ(timeouts, (std::vector<std::string>{"300", "600", "900"}));
  EXPECT_EQ(answers.size(), 3u);
  EXPECT_EQ(lt.Run([&] { return c->calls_outstanding(); }), 0u);
  // A call refused before it was queued certainly never reached the peer.
  std::promise<CallOutcome> refused;
  lt.Run([&] {
    c->Close(Status::Aborted("test"));
    c->Call(GetRequest{"x"}, 1000, [&](CallOutcome o) { refused.set_value(std::move(o)); });
  });
  CallOutcome r = refused.get_future().get();
  EXPECT_EQ(r.message.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(r.maybe_delivered);
}

// Answered calls whose deadlines lie past a still outstanding call's do not
// pile up behind it (the client awaits a late coordinator 10 s past the
// deadlines of the reads and copies on the same connection).
TEST(ConnectionTest, AnsweredCallsLeaveNoDeadlinesBehindAnEarlierOne) {
  LoopThread lt;
  EchoServer server(lt);
  auto c = ConnectTo(lt, server.port());
  std::promise<CallOutcome> never;
  lt.Run([&] {
    c->Call(GetRequest{"never"}, 30000, [&](CallOutcome o) { never.set_value(std::move(o)); });
  });
  std::vector<Body> reqs;
  for (int i = 0; i < 2000; ++i) reqs.push_back(GetRequest{"key-" + std::to_string(i)});
  for (int round = 0; round < 5; ++round) {
    auto results = CallAll(lt, c, reqs, 60000);
    for (int i = 0; i < 2000; ++i) ASSERT_EQ(ValueOf(results[i]), "key-" + std::to_string(i));
  }
  EXPECT_EQ(lt.Run([&] { return c->calls_outstanding(); }), 1u);
  EXPECT_LE(lt.Run([&] { return c->deadline_entries(); }), 2000u + 2u + 64u);
  CloseOnLoop(lt, c);
  EXPECT_EQ(never.get_future().get().message.status().code(), StatusCode::kUnavailable);
}

TEST(ConnectionTest, CloseFailsOutstandingCalls) {
  LoopThread lt;
  EchoServer server(lt);
  auto c = ConnectTo(lt, server.port());
  std::promise<Status> p;
  lt.Run([&] {
    c->Call(GetRequest{"never"}, 10000, [&](CallOutcome r) { p.set_value(r.message.status()); });
    c->Close(Status::Aborted("shutting down"));
  });
  Status s = p.get_future().get();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("shutting down"), std::string_view::npos);
  // Calls on a closed connection fail too, asynchronously.
  auto after = CallAll(lt, c, {GetRequest{"x"}}, 1000);
  EXPECT_EQ(after[0].status().code(), StatusCode::kUnavailable);
}

TEST(ConnectionTest, ServerCloseIsSeenByClient) {
  LoopThread lt;
  auto server = std::make_unique<EchoServer>(lt);
  auto c = ConnectTo(lt, server->port());
  std::promise<Status> closed;
  lt.Run([&] { c->SetCloseHandler([&](const Status& s) { closed.set_value(s); }); });
  server.reset();
  Status s = closed.get_future().get();
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(lt.Run([&] { return c->closed(); }));
}

TEST(ConnectionTest, ConnectRefusedIsUnavailable) {
  LoopThread lt;
  uint16_t port = lt.Run([&] {
    auto l = Listener::Listen(lt.loop(), {"127.0.0.1", 0}, {}, nullptr);
    return (*l)->port();  // closed again when l goes out of scope
  });
  std::promise<Status> p;
  lt.loop().Post([&] {
    Connect(lt.loop(), {"127.0.0.1", port}, {}, 2000,
            [&](Result<std::shared_ptr<Connection>> r) { p.set_value(r.status()); });
  });
  EXPECT_EQ(p.get_future().get().code(), StatusCode::kUnavailable);
}

TEST(ConnectionTest, ResolvesNames) {
  LoopThread lt;
  EchoServer server(lt);
  auto c = ConnectTo(lt, server.port(), {}, "localhost");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(ValueOf(CallAll(lt, c, {GetRequest{"named"}}, 2000)[0]), "named");
  CloseOnLoop(lt, c);
}

// A connect closed by its owner while its name is still being resolved
// (which may stall for seconds) reports at once, once; the resolver's late
// answer only frees the attempt, also after the loop's owner has gone.
TEST(ConnectionTest, AConnectClosedWhileItsNameResolvesReportsAtOnce) {
  LoopThread lt;
  int reports = 0;
  Status reported;
  lt.Run([&] {
    std::weak_ptr<Connection> opening = Connect(lt.loop(), {"dynamo-test.invalid", 7000}, {}, 2000,
                                                [&](Result<std::shared_ptr<Connection>> r) {
                                                  ++reports;
                                                  reported = r.status();
                                                });
    ASSERT_FALSE(opening.expired());
    opening.lock()->Close(Status::Aborted("closed by its owner"));
    EXPECT_EQ(reports, 1);
  });
  EXPECT_EQ(reports, 1);
  EXPECT_EQ(reported.code(), StatusCode::kUnavailable);
  EXPECT_NE(reported.ToString().find("closed by its owner"), std::string::npos)
      << reported.ToString();
}

TEST(ListenerTest, RejectsBadAddresses) {
  LoopThread lt;
  lt.Run([&] {
    EXPECT_EQ(Listener::Listen(lt.loop(), {"not-an-ip", 0}, {}, nullptr).status().code(),
              StatusCode::kInvalidArgument);
    auto first = Listener::Listen(lt.loop(), {"127.0.0.1", 0}, {}, nullptr);
    ASSERT_TRUE(first.ok());
    auto second = Listener::Listen(lt.loop(), {"127.0.0.1", (*first)->port()}, {}, nullptr);
    EXPECT_EQ(second.status().code(), StatusCode::kIOError);
  });
}

// A raw TCP peer, for sending what no well-behaved client would.
class RawSocket {
 public:
  explicit RawSocket(uint16_t port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawSocket() { close(fd_); }
  bool connected() const { return connected_; }
  void Send(const std::string& bytes) { ASSERT_EQ(write(fd_, bytes.data(), bytes.size()), ssize_t(bytes.size())); }
  // Whether the peer closed the connection within `timeout_ms`.
  bool ClosedWithin(int timeout_ms) {
    bool closed = false;
    ReadUntilClosed(timeout_ms, &closed);
    return closed;
  }
  // Reads until the peer closes or `timeout_ms` passes; returns what came.
  std::string ReadUntilClosed(int timeout_ms, bool* closed) {
    std::string out;
    *closed = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{fd_, POLLIN, 0};
      if (poll(&pfd, 1, 50) <= 0) continue;
      char buf[4096];
      ssize_t n = read(fd_, buf, sizeof(buf));
      if (n <= 0) {
        *closed = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  int fd_;
  bool connected_ = false;
};

Result<Message> FirstFrame(const std::string& bytes) {
  proto::FrameDecoder dec(proto::Limits{}.frame_bytes_max);
  dec.Feed(bytes);
  std::string_view body;
  Result<bool> next = dec.Next(&body);
  if (!next.ok()) return next.status();
  if (!*next) return Status::NotFound("no frame");
  return proto::DecodeMessage(body, proto::Limits{});
}

TEST(ConnectionTest, MalformedFrameGetsErrorAndClose) {
  LoopThread lt;
  EchoServer server(lt);
  auto good = ConnectTo(lt, server.port());
  RawSocket raw(server.port());
  ASSERT_TRUE(raw.connected());
  raw.Send(std::string("\x00\x00\x00\x03\xc1\xc1\xc1", 7));  // 0xc1 is never valid msgpack
  bool closed = false;
  Result<Message> err = FirstFrame(raw.ReadUntilClosed(3000, &closed));
  EXPECT_TRUE(closed);
  ASSERT_TRUE(err.ok()) << err.status().ToString();
  ASSERT_TRUE(std::holds_alternative<proto::ErrorReply>(err->body));
  EXPECT_EQ(std::get<proto::ErrorReply>(err->body).code, StatusCode::kProtocolError);
  // Everyone else is still served.
  EXPECT_EQ(ValueOf(CallAll(lt, good, {GetRequest{"still here"}}, 2000)[0]), "still here");
  CloseOnLoop(lt, good);
}

TEST(ConnectionTest, OversizeFrameHeaderGetsErrorAndClose) {
  LoopThread lt;
  ListenerOptions opts;
  opts.connection.limits.frame_bytes_max = 4096;
  EchoServer server(lt, opts);
  RawSocket raw(server.port());
  raw.Send(std::string("\x7f\xff\xff\xff", 4));  // declares 2 GiB, sends nothing more
  bool closed = false;
  Result<Message> err = FirstFrame(raw.ReadUntilClosed(3000, &closed));
  EXPECT_TRUE(closed);
  ASSERT_TRUE(err.ok());
  EXPECT_NE(std::get<proto::ErrorReply>(err->body).message.find("frame_bytes_max (4096)"),
            std::string::npos);
}

TEST(ConnectionTest, OversizeKeyIsRefusedButConnectionStays) {
  LoopThread lt;
  EchoServer server(lt);
  RawSocket raw(server.port());
  std::string frames = proto::EncodeFrame({7, GetRequest{std::string(5000, 'k')}}) +
                       proto::EncodeFrame({8, GetRequest{"fine"}});
  raw.Send(frames);
  bool closed = false;
  std::string got = raw.ReadUntilClosed(500, &closed);
  EXPECT_FALSE(closed);
  proto::FrameDecoder dec(1 << 20);
  dec.Feed(got);
  std::string_view body;
  ASSERT_TRUE(*dec.Next(&body));
  Result<Message> first = proto::DecodeMessage(body, proto::Limits{});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->request_id, 7u);
  const auto& e = std::get<proto::ErrorReply>(first->body);
  EXPECT_EQ(e.code, StatusCode::kInvalidArgument);
  EXPECT_NE(e.message.find("key_bytes_max (2048)"), std::string::npos);
  ASSERT_TRUE(*dec.Next(&body));
  Result<Message> second = proto::DecodeMessage(body, proto::Limits{});
  EXPECT_EQ(second->request_id, 8u);
  EXPECT_TRUE(std::holds_alternative<GetReply>(second->body));
}

TEST(ConnectionTest, OversizeRequestFailsLocally) {
  LoopThread lt;
  EchoServer server(lt);
  ConnectionOptions opts;
  opts.limits.frame_bytes_max = 1000;
  auto c = ConnectTo(lt, server.port(), opts);
  auto r = CallAll(lt, c, {GetRequest{std::string(1500, 'k')}, GetRequest{"small"}}, 2000);
  EXPECT_EQ(r[0].status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValueOf(r[1]), "small");
  CloseOnLoop(lt, c);
}

// The size of a key whose Get fits in a frame of `frame_max` bytes while its
// echo (a GetReply holding the key as value) does not; 0 if none.
size_t KeyWhoseEchoOutgrowsAFrame(uint32_t frame_max) {
  for (size_t n = 900; n < frame_max; ++n) {
    std::string request, reply;
    proto::AppendFrame(1, GetRequest{std::string(n, 'k')}, &request);
    Version v;
    v.dot = Dot{1, 1};
    v.value = std::string(n, 'k');
    proto::AppendFrame(1, GetReply{1, {v}}, &reply);
    if (request.size() - proto::kFrameHeaderBytes <= frame_max &&
        reply.size() - proto::kFrameHeaderBytes > frame_max) {
      return n;
    }
  }
  return 0;
}

// An answer too large for a frame goes out as an error instead, flagged in
// doubt: the request it answers may have been applied.
TEST(ConnectionTest, AReplyPastTheFrameLimitBecomesAnErrorInDoubt) {
  constexpr uint32_t kFrameMax = 1000;
  const size_t size = KeyWhoseEchoOutgrowsAFrame(kFrameMax);
  ASSERT_NE(size, 0u);
  LoopThread lt;
  ListenerOptions server_opts;
  server_opts.connection.limits.frame_bytes_max = kFrameMax;
  EchoServer server(lt, server_opts);
  auto c = ConnectTo(lt, server.port());
  auto r = CallAll(lt, c, {GetRequest{std::string(size, 'k')}, GetRequest{"small"}}, 2000);
  ASSERT_TRUE(r[0].ok()) << r[0].status().ToString();
  const auto* err = std::get_if<proto::ErrorReply>(&r[0]->body);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(err->code, StatusCode::kInvalidArgument);
  EXPECT_TRUE(err->in_doubt);
  EXPECT_EQ(ValueOf(r[1]), "small");
  CloseOnLoop(lt, c);
}

// A reply past this side's own frame limit (a peer allowed larger frames)
// fails its call as unreadable, InvalidArgument, not as a closed connection
// (Unavailable), which a read would take for a replica that is gone and ask
// spares instead.
TEST(ConnectionTest, AReplyPastThisSidesFrameLimitFailsItsCallAsUnreadable) {
  constexpr uint32_t kFrameMax = 1000;
  const size_t size = KeyWhoseEchoOutgrowsAFrame(kFrameMax);
  ASSERT_NE(size, 0u);
  LoopThread lt;
  EchoServer server(lt);
  ConnectionOptions opts;
  opts.limits.frame_bytes_max = kFrameMax;
  auto c = ConnectTo(lt, server.port(), opts);
  auto r = CallAll(lt, c, {GetRequest{std::string(size, 'k')}}, 2000);
  EXPECT_EQ(r[0].status().code(), StatusCode::kInvalidArgument) << r[0].status().ToString();
  EXPECT_NE(r[0].status().message().find("could not be read"), std::string_view::npos)
      << r[0].status().ToString();
  CloseOnLoop(lt, c);
}

TEST(ConnectionTest, WriteQueueIsBounded) {
  LoopThread lt;
  EchoServer server(lt);
  ConnectionOptions opts;
  opts.write_queue_bytes_max = 64 << 10;
  auto c = ConnectTo(lt, server.port(), opts);
  std::vector<Body> reqs(200, GetRequest{std::string(2000, 'k')});
  // All issued in one loop turn: the queue fills before anything is written.
  auto results = CallAll(lt, c, reqs, 5000);
  size_t busy = 0, ok = 0;
  for (auto& r : results) {
    if (r.ok()) ++ok;
    else if (r.status().code() == StatusCode::kBusy) ++busy;
  }
  EXPECT_GT(busy, 0u);
  EXPECT_GT(ok, 0u);
  EXPECT_EQ(busy + ok, reqs.size());
  CloseOnLoop(lt, c);
}

// A peer that pipelines requests the server answers late (or never) gets
// no more than requests_unanswered_max of them taken in at once: the
// replies it could pile up are bounded. Reading resumes as they are
// answered, so every request is answered in the end.
TEST(ConnectionTest, RequestsTakenInAndUnansweredAreBounded) {
  LoopThread lt;
  ListenerOptions opts;
  opts.connection.requests_unanswered_max = 100;
  EchoServer server(lt, opts);
  auto frames = [](const std::string& key, int n) {
    std::string out;
    for (int i = 0; i < n; ++i)
      proto::AppendFrame(static_cast<uint64_t>(i + 1), GetRequest{key}, &out);
    return out;
  };
  auto requests = [&] { return lt.Run([&] { return server.requests(); }); };
  {
    RawSocket raw(server.port());
    ASSERT_TRUE(raw.connected());
    raw.Send(frames("never", 3000));
    for (int i = 0; i < 1000 && requests() < 100; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(requests(), 100);
    bool closed = false;
    raw.ReadUntilClosed(300, &closed);
    EXPECT_EQ(requests(), 100);
  }
  RawSocket raw(server.port());
  ASSERT_TRUE(raw.connected());
  raw.Send(frames("slow:20", 300));
  std::string got;
  bool closed = false;
  size_t replies = 0;
  for (int round = 0; round < 100 && replies < 300 && !closed; ++round) {
    got += raw.ReadUntilClosed(100, &closed);
    proto::FrameDecoder dec(proto::Limits{}.frame_bytes_max);
    dec.Feed(got);
    std::string_view body;
    replies = 0;
    while (true) {
      Result<bool> next = dec.Next(&body);
      if (!next.ok() || !*next) break;
      ++replies;
    }
  }
  EXPECT_EQ(replies, 300u);
}

// Replies queued over all of a listener's connections are bounded: past
// replies_queued_bytes_max, a connection whose peer does not read (and so
// holds more than kRepliesHeldBackBytes of them) takes in no more requests,
// while a connection whose peer reads goes on being served. Each took in
// requests until its own 32 MiB pause, so a thousand such peers could make
// a node hold 32 GiB.
TEST(ListenerTest, RepliesQueuedOverAllConnectionsAreBounded) {
  LoopThread lt;
  ListenerOptions opts;
  opts.replies_queued_bytes_max = 4u << 20;
  EchoServer server(lt, opts);
  auto requests = [&] { return lt.Run([&] { return server.requests(); }); };
  constexpr int kRequests = 40;
  constexpr size_t kReplyBytes = 1u << 20;
  RawSocket slow(server.port());
  ASSERT_TRUE(slow.connected());
  std::string frames;
  for (int i = 0; i < kRequests; ++i) {
    proto::AppendFrame(static_cast<uint64_t>(i + 1),
                       GetRequest{"big:" + std::to_string(kReplyBytes)}, &frames);
  }
  slow.Send(frames);
  // Until the connection stops taking in requests for the budget (the
  // socket buffers take a few replies first); from then on it takes in none.
  auto held_back = [&] { return lt.Run([&] { return server.listener().held_back(); }); };
  for (int i = 0; i < 1000 && held_back() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(held_back(), 1u) << "requests taken in: " << requests();
  EXPECT_LT(requests(), 20) << "requests taken in from a peer that reads nothing";
  EXPECT_LE(lt.Run([&] { return server.listener().queued_bytes(); }),
            opts.replies_queued_bytes_max + 2 * kReplyBytes);
  // A peer that reads is still served.
  RawSocket quick(server.port());
  ASSERT_TRUE(quick.connected());
  std::string one;
  proto::AppendFrame(1, GetRequest{"small"}, &one);
  quick.Send(one);
  bool closed = false;
  std::string got;
  for (int i = 0; i < 100 && got.size() < proto::kFrameHeaderBytes + 8 && !closed; ++i) {
    got += quick.ReadUntilClosed(50, &closed);
  }
  EXPECT_NE(got.find("small"), std::string::npos);
  // Once the slow peer reads, it gets every reply.
  size_t replies = 0;
  proto::FrameDecoder dec(proto::Limits{}.frame_bytes_max);
  for (int round = 0; round < 400 && replies < kRequests && !closed; ++round) {
    dec.Feed(slow.ReadUntilClosed(50, &closed));
    std::string_view body;
    while (true) {
      Result<bool> next = dec.Next(&body);
      if (!next.ok() || !*next) break;
      ++replies;
    }
  }
  EXPECT_EQ(replies, size_t{kRequests});
  EXPECT_EQ(lt.Run([&] { return server.listener().queued_bytes(); }), 0u);
}

// A connection that makes calls keeps reading their replies however much
// it has queued to send: a peer that reads slowly made it stop reading once
// half its queue held requests, and only a wholly written queue resumed it,
// so replies sat unread and every call timed out.
TEST(ConnectionTest, RequestsQueuedToSendDoNotStopTheRepliesToThemBeingRead) {
  int listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listen_fd, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  LoopThread lt;
  ConnectionOptions opts;
  opts.write_queue_bytes_max = 1 << 20;
  auto c = ConnectTo(lt, ntohs(addr.sin_port), opts);
  const int peer = accept(listen_fd, nullptr, nullptr);  // reads nothing
  ASSERT_GE(peer, 0);
  auto first = std::make_shared<std::promise<Status>>();
  auto second = std::make_shared<std::promise<Status>>();
  lt.Run([&] {
    c->Call(GetRequest{"first"}, 30000,
            [first](CallOutcome r) { first->set_value(r.message.status()); });
    c->Call(GetRequest{"second"}, 30000,
            [second](CallOutcome r) { second->set_value(r.message.status()); });
  });
  // Calls until, after the writes between rounds, over half the queue is
  // still unsent: the kernel's buffers are full, and the peer reads nothing.
  proto::ReplicaPutRequest big;
  big.key = "k";
  big.siblings.push_back(Version{Dot{1, 1}, {}, 0, false, false, std::string(64 << 10, 'v')});
  bool full = false;
  for (int round = 0; round < 500 && !full; ++round) {
    full = lt.Run([&] {
      if (c->queued_bytes() > opts.write_queue_bytes_max / 2) return true;
      for (int i = 0; i < 32; ++i) c->Call(big, 30000, [](CallOutcome) {});
      return false;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(full) << "the write queue never filled";
  std::string reply;
  proto::AppendFrame(1, proto::Ack{1, 1}, &reply);
  ASSERT_EQ(write(peer, reply.data(), reply.size()), ssize_t(reply.size()));
  auto f1 = first->get_future();
  EXPECT_EQ(f1.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  reply.clear();
  proto::AppendFrame(2, proto::Ack{1, 1}, &reply);
  ASSERT_EQ(write(peer, reply.data(), reply.size()), ssize_t(reply.size()));
  auto f2 = second->get_future();
  EXPECT_EQ(f2.wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "the reply to the second call was never read";
  CloseOnLoop(lt, c);
  EXPECT_TRUE(f1.get().ok());
  EXPECT_TRUE(f2.get().ok()) << "the reply to the second call was never read";
  close(peer);
  close(listen_fd);
}

// A node stopping waits for this before it closes its connections: a reply
// queued for a peer that has not read it yet is not yet delivered.
TEST(ListenerTest, RepliesAPeerHasNotReadAreSeenUnsent) {
  LoopThread lt;
  EchoServer server(lt);
  auto unsent = [&] { return lt.Run([&] { return server.listener().replies_unsent(); }); };
  RawSocket raw(server.port());
  ASSERT_TRUE(raw.connected());
  EXPECT_FALSE(unsent());
  std::string request;
  proto::AppendFrame(1, GetRequest{"big:" + std::to_string(32u << 20)}, &request);
  raw.Send(request);
  // More than the socket buffers hold: the rest waits for the peer to read.
  bool seen = false;
  for (int i = 0; i < 1000 && !seen; ++i) {
    seen = unsent();
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(seen);
  bool closed = false;
  for (int i = 0; i < 1000 && unsent() && !closed; ++i) raw.ReadUntilClosed(50, &closed);
  EXPECT_FALSE(unsent());
  EXPECT_FALSE(closed);
}

TEST(ListenerTest, ConnectionsMaxIsEnforced) {
  LoopThread lt;
  ListenerOptions opts;
  opts.connections_max = 2;
  opts.evict_idle_ms = 0;
  EchoServer server(lt, opts);
  auto a = ConnectTo(lt, server.port());
  auto b = ConnectTo(lt, server.port());
  EXPECT_EQ(ValueOf(CallAll(lt, a, {GetRequest{"a"}}, 2000)[0]), "a");
  EXPECT_EQ(ValueOf(CallAll(lt, b, {GetRequest{"b"}}, 2000)[0]), "b");
  RawSocket third(server.port());
  EXPECT_TRUE(third.ClosedWithin(3000));
  EXPECT_EQ(lt.Run([&] { return server.listener().refused(); }), 1u);
  CloseOnLoop(lt, a);
  CloseOnLoop(lt, b);
}

// Connections that never send cannot lock others out: at the limit, a new
// connection replaces the one idle longest.
TEST(ListenerTest, AtTheLimitANewConnectionReplacesTheIdlest) {
  LoopThread lt;
  ListenerOptions opts;
  opts.connections_max = 2;
  opts.evict_idle_ms = 1;
  EchoServer server(lt, opts);
  RawSocket first(server.port());
  RawSocket second(server.port());
  for (int i = 0; i < 300 && lt.Run([&] { return server.listener().connections(); }) < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(lt.Run([&] { return server.listener().connections(); }), 2u);
  std::this_thread::sleep_for(
      std::chrono::milliseconds(20));  // both idle longer than evict_idle_ms
  auto legit = ConnectTo(lt, server.port());
  EXPECT_EQ(ValueOf(CallAll(lt, legit, {GetRequest{"served"}}, 2000)[0]), "served");
  EXPECT_TRUE(first.ClosedWithin(3000));  // the first to arrive was idle longest
  EXPECT_EQ(lt.Run([&] { return server.listener().evicted(); }), 1u);
  EXPECT_EQ(lt.Run([&] { return server.listener().refused(); }), 0u);
  CloseOnLoop(lt, legit);
}

// A connection whose request is still being served is not idle: a new
// connection at the limit does not evict it.
TEST(ListenerTest, AConnectionWithARequestInProgressIsNotEvicted) {
  LoopThread lt;
  ListenerOptions opts;
  opts.connections_max = 1;
  opts.evict_idle_ms = 50;
  EchoServer server(lt, opts);
  auto busy = ConnectTo(lt, server.port());
  auto reply = std::make_shared<std::promise<Result<Message>>>();
  // Never answered: the request stays in progress however slow the machine.
  lt.Run([&] {
    busy->Call(GetRequest{"never"}, 2000,
               [reply](CallOutcome r) { reply->set_value(std::move(r.message)); });
  });
  // Idle longer than evict_idle_ms, as eviction would need (not a wait for
  // an event: the outcome below does not depend on how long it lasts).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  RawSocket late(server.port());
  EXPECT_TRUE(late.ClosedWithin(3000));  // refused: the only connection is busy
  // The call ends at its own deadline, not by its connection being closed.
  EXPECT_EQ(reply->get_future().get().status().code(), StatusCode::kTimeout);
  EXPECT_EQ(lt.Run([&] { return server.listener().evicted(); }), 0u);
  EXPECT_EQ(lt.Run([&] { return server.listener().refused(); }), 1u);
  CloseOnLoop(lt, busy);
}

TEST(ConnectionTest, IdleConnectionsAreClosed) {
  LoopThread lt;
  ListenerOptions opts;
  opts.connection.idle_timeout_ms = 150;
  EchoServer server(lt, opts);
  RawSocket idle(server.port());
  bool closed = false;
  idle.ReadUntilClosed(3000, &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(lt.Run([&] { return server.listener().connections(); }), 0u);
}

TEST(ConnectionTest, RequestOnClientSideConnectionIsRefused) {
  LoopThread lt;
  // A server that calls back into the client over the accepted connection.
  std::promise<Result<Message>> p;
  auto listener = lt.Run([&] {
    return std::move(*Listener::Listen(
        lt.loop(), {"127.0.0.1", 0}, {}, [&](const std::shared_ptr<Connection>& c, Message m) {
          c->Call(GetRequest{"reverse"}, 1000,
                  [&](CallOutcome r) { p.set_value(std::move(r.message)); });
          c->Reply(m.request_id, proto::Ack{1, 1});
        }));
  });
  auto c = ConnectTo(lt, listener->port());
  CallAll(lt, c, {GetRequest{"x"}}, 2000);
  Result<Message> reverse = p.get_future().get();
  ASSERT_TRUE(reverse.ok());
  EXPECT_TRUE(std::holds_alternative<proto::ErrorReply>(reverse->body));
  CloseOnLoop(lt, c);
  lt.Run([&] { listener.reset(); });
}

}  // namespace
}  // namespace dynamo::net

namespace dynamo::net {
namespace {

TEST(ConnectionPoolTest, QueuesWhileConnectingAndReportsDelivery) {
  LoopThread lt;
  EchoServer server(lt);
  auto pool = lt.Run([&] { return std::make_unique<ConnectionPool>(lt.loop(), ConnectionOptions{}, 1000); });
  const std::string address = "127.0.0.1:" + std::to_string(server.port());
  std::vector<CallOutcome> got;
  std::promise<void> all;
  lt.Run([&] {
    for (int i = 0; i < 5; ++i) {
      pool->Call(address, GetRequest{"k" + std::to_string(i)}, 2000, [&](CallOutcome r) {
        got.push_back(std::move(r));
        if (got.size() == 5) all.set_value();
      });
    }
  });
  all.get_future().get();
  for (const CallOutcome& r : got) {
    ASSERT_TRUE(r.message.ok());
    EXPECT_TRUE(r.maybe_delivered);
  }
  // Nobody listens on port 1: the call fails and certainly was not delivered.
  std::promise<CallOutcome> refused;
  lt.Run([&] {
    pool->Call("127.0.0.1:1", GetRequest{"x"}, 500, [&](CallOutcome r) { refused.set_value(std::move(r)); });
  });
  CallOutcome r = refused.get_future().get();
  EXPECT_EQ(r.message.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(r.maybe_delivered);
  std::promise<CallOutcome> bad;
  lt.Run([&] { pool->Call("no port", GetRequest{"x"}, 500, [&](CallOutcome o) { bad.set_value(std::move(o)); }); });
  EXPECT_EQ(bad.get_future().get().message.status().code(), StatusCode::kInvalidArgument);
  // After the server closes the connection, the next call reconnects.
  lt.Run([&] { server.listener().CloseConnections(Status::Aborted("test")); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::promise<CallOutcome> again;
  lt.Run([&] { pool->Call(address, GetRequest{"again"}, 2000, [&](CallOutcome o) { again.set_value(std::move(o)); }); });
  EXPECT_EQ(ValueOf(again.get_future().get().message), "again");
  lt.Run([&] { pool.reset(); });
}

// As a client shutting down sees it: a call that fails because the pool
// closed retries from its callback; the retry fails too, without connecting,
// and a connection still opening when the pool closed is closed, not used.
TEST(ConnectionPoolTest, CloseAllIsFinalEvenForCallsMadeFromFailureCallbacks) {
  LoopThread lt;
  EchoServer server(lt);
  auto pool = lt.Run([&] { return std::make_unique<ConnectionPool>(lt.loop(), ConnectionOptions{}, 1000); });
  const std::string address = "127.0.0.1:" + std::to_string(server.port());
  std::promise<CallOutcome> first_done;
  lt.Run([&] { pool->Call(address, GetRequest{"warm"}, 2000, [&](CallOutcome o) { first_done.set_value(std::move(o)); }); });
  ASSERT_TRUE(first_done.get_future().get().message.ok());

  std::promise<CallOutcome> retried, opening;
  lt.Run([&] {
    pool->Call(address, GetRequest{"never"}, 5000, [&](CallOutcome o) {
      EXPECT_FALSE(o.message.ok());
      pool->Call(address, GetRequest{"retry"}, 5000, [&](CallOutcome r) { retried.set_value(std::move(r)); });
    });
    pool->Call("localhost:" + std::to_string(server.port()), GetRequest{"opening"}, 5000,
               [&](CallOutcome r) { opening.set_value(std::move(r)); });
    pool->CloseAll(Status::Aborted("pool closed by the test"));
  });
  CallOutcome r = retried.get_future().get();
  EXPECT_EQ(r.message.status().code(), StatusCode::kAborted);
  EXPECT_FALSE(r.maybe_delivered);
  CallOutcome o = opening.get_future().get();
  EXPECT_EQ(o.message.status().code(), StatusCode::kAborted) << o.message.status().ToString();
  lt.Run([&] { pool.reset(); });
}

// A connect that fails at once (no route to a broadcast address) fails its
// calls from the loop, never inside the Call that started it.
TEST(ConnectionPoolTest, AConnectFailingAtOnceFailsItsCallsFromTheLoop) {
  LoopThread lt;
  auto pool = lt.Run(
      [&] { return std::make_unique<ConnectionPool>(lt.loop(), ConnectionOptions{}, 1000); });
  auto outcome = std::make_shared<std::promise<CallOutcome>>();
  const bool inside = lt.Run([&] {
    auto returned = std::make_shared<bool>(false);
    auto ran_inside = std::make_shared<bool>(false);
    pool->Call("255.255.255.255:80", GetRequest{"k"}, 1000, [=](CallOutcome o) {
      *ran_inside = !*returned;
      outcome->set_value(std::move(o));
    });
    *returned = true;
    return *ran_inside;
  });
  EXPECT_FALSE(inside);
  CallOutcome o = outcome->get_future().get();
  EXPECT_FALSE(o.message.ok());
  EXPECT_FALSE(o.maybe_delivered);
  lt.Run([&] { pool.reset(); });
}

// A connect the peer never answers (its accept queue is full, so the kernel
// drops the SYN) is cancelled by CloseAll: the call fails at once instead of
// after the connect timeout, and the loop then shuts down cleanly. Before,
// the attempt outlived the pool and the loop's teardown closed its handles
// twice.
// Makes `fd` listen on a free loopback port with `backlog`; returns the
// address, which *bound gets too.
std::string ListenOnLoopback(int fd, int backlog, sockaddr_in* bound) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(listen(fd, backlog), 0);
  socklen_t len = sizeof addr;
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  *bound = addr;
  return "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

// A listener whose accept queue is full: the kernel drops further SYNs, so
// a connect to `address` hangs until its timeout.
class FullBacklog {
 public:
  FullBacklog() {
    sockaddr_in addr{};
    address = ListenOnLoopback(listener_, 0, &addr);
    EXPECT_EQ(connect(queued_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  ~FullBacklog() {
    if (accepted_ >= 0) close(accepted_);
    close(queued_);
    close(listener_);
  }
  // Takes the queued connection: the next SYN the kernel sends again gets in.
  void Drain() { accepted_ = accept(listener_, nullptr, nullptr); }
  std::string address;

 private:
  int listener_ = socket(AF_INET, SOCK_STREAM, 0);
  int queued_ = socket(AF_INET, SOCK_STREAM, 0);
  int accepted_ = -1;
};

TEST(ConnectionPoolTest, CloseAllCancelsAConnectThePeerNeverAnswers) {
  FullBacklog peer;
  LoopThread lt;
  auto pool = lt.Run(
      [&] { return std::make_unique<ConnectionPool>(lt.loop(), ConnectionOptions{}, 30000); });
  std::promise<CallOutcome> hung;
  lt.Run([&] {
    pool->Call(peer.address, GetRequest{"k"}, 30000,
               [&](CallOutcome o) { hung.set_value(std::move(o)); });
  });
  std::future<CallOutcome> outcome = hung.get_future();
  ASSERT_EQ(outcome.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout)
      << "the connect was expected to hang";
  lt.Run([&] { pool->CloseAll(Status::Aborted("pool closed by the test")); });
  ASSERT_EQ(outcome.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  CallOutcome o = outcome.get();
  EXPECT_EQ(o.message.status().code(), StatusCode::kAborted) << o.message.status().ToString();
  EXPECT_FALSE(o.maybe_delivered);
  lt.Run([&] { pool.reset(); });
}

// A call queued behind a connect that another call started keeps its own
// timeout: one with a shorter timeout fails first, never sent, rather than
// waiting for the connect the first call's timeout bounds.
TEST(ConnectionPoolTest, ACallWaitingForAConnectKeepsItsOwnTimeout) {
  FullBacklog peer;
  LoopThread lt;
  auto pool = lt.Run(
      [&] { return std::make_unique<ConnectionPool>(lt.loop(), ConnectionOptions{}, 30000); });
  auto order = std::make_shared<std::vector<std::string>>();
  auto both = std::make_shared<std::promise<void>>();
  lt.Run([&] {
    pool->Call(peer.address, GetRequest{"long"}, 2000, [order, both](CallOutcome o) {
      order->push_back("long " + o.message.status().ToString());
      if (order->size() == 2) both->set_value();
    });
    pool->Call(peer.address, GetRequest{"short"}, 100, [order, both](CallOutcome o) {
      EXPECT_FALSE(o.maybe_delivered);
      order->push_back("short " + std::string(StatusCodeName(o.message.status().code())));
      if (order->size() == 2) both->set_value();
    });
  });
  ASSERT_EQ(both->get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  ASSERT_EQ(order->size(), 2u);
  EXPECT_EQ((*order)[0], "short Timeout") << (*order)[1];
  lt.Run([&] { pool.reset(); });
}

// A connect lasts the pool's connect timeout, not the timeout of the call
// that started it: a call queued behind it with a longer timeout is sent
// once the peer takes the connection, instead of failing with the first.
TEST(ConnectionPoolTest, AConnectOutlastsTheShortCallThatStartedIt) {
  FullBacklog peer;
  LoopThread lt;
  auto pool = lt.Run(
      [&] { return std::make_unique<ConnectionPool>(lt.loop(), ConnectionOptions{}, 10000); });
  auto short_done = std::make_shared<std::promise<CallOutcome>>();
  auto long_done = std::make_shared<std::promise<CallOutcome>>();
  lt.Run([&] {
    pool->Call(peer.address, GetRequest{"short"}, 100,
               [short_done](CallOutcome o) { short_done->set_value(std::move(o)); });
    pool->Call(peer.address, GetRequest{"long"}, 4000,
               [long_done](CallOutcome o) { long_done->set_value(std::move(o)); });
  });
  std::future<CallOutcome> first = short_done->get_future();
  ASSERT_EQ(first.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(first.get().message.status().code(), StatusCode::kTimeout);
  peer.Drain();
  std::future<CallOutcome> second = long_done->get_future();
  ASSERT_EQ(second.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  CallOutcome o = second.get();
  // Sent once connected; the peer never answers.
  EXPECT_TRUE(o.maybe_delivered) << o.message.status().ToString();
  EXPECT_EQ(o.message.status().code(), StatusCode::kTimeout) << o.message.status().ToString();
  lt.Run([&] { pool.reset(); });
}

// Calls waiting for a connection hold their bodies: past the connection's
// write queue bound, a call fails at once with Busy instead of piling up.
TEST(ConnectionPoolTest, CallsWaitingForAConnectAreBoundedByTheWriteQueueLimit) {
  FullBacklog peer;
  LoopThread lt;
  ConnectionOptions options;
  options.write_queue_bytes_max = 1u << 20;
  auto pool = lt.Run([&] { return std::make_unique<ConnectionPool>(lt.loop(), options, 10000); });
  auto outcomes = std::make_shared<std::vector<std::promise<CallOutcome>>>(4);
  lt.Run([&] {
    for (size_t i = 0; i < outcomes->size(); ++i) {
      pool->Call(peer.address, CoordPutRequest{"k", {}, std::string(512u << 10, 'v'), false}, 200,
                 [outcomes, i](CallOutcome o) { (*outcomes)[i].set_value(std::move(o)); });
    }
  });
  std::vector<StatusCode> codes;
  for (auto& p : *outcomes) {
    std::future<CallOutcome> f = p.get_future();
    ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    CallOutcome o = f.get();
    EXPECT_FALSE(o.maybe_delivered);
    codes.push_back(o.message.status().code());
  }
  EXPECT_EQ(codes, (std::vector<StatusCode>{StatusCode::kTimeout, StatusCode::kTimeout,
                                            StatusCode::kBusy, StatusCode::kBusy}));
  lt.Run([&] { pool.reset(); });
}

// The pool's connections close after `idle_timeout_ms` with nothing going on,
// before the node's own idle close could race a request on them; the next
// call opens a new one.
TEST(ConnectionPoolTest, AnIdlePooledConnectionClosesAndTheNextCallReopensIt) {
  LoopThread lt;
  EchoServer server(lt);
  ConnectionOptions opts;
  opts.idle_timeout_ms = 100;
  auto pool = lt.Run([&] { return std::make_unique<ConnectionPool>(lt.loop(), opts, 1000); });
  const std::string address = "127.0.0.1:" + std::to_string(server.port());
  auto call = [&](const std::string& key) {
    std::promise<CallOutcome> p;
    lt.Run([&] {
      pool->Call(address, GetRequest{key}, 2000, [&](CallOutcome o) { p.set_value(std::move(o)); });
    });
    return ValueOf(p.get_future().get().message);
  };
  EXPECT_EQ(call("first"), "first");
  EXPECT_EQ(lt.Run([&] { return server.listener().connections(); }), 1u);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (lt.Run([&] { return server.listener().connections(); }) != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(lt.Run([&] { return server.listener().connections(); }), 0u)
      << "the idle pooled connection was not closed";
  EXPECT_EQ(call("second"), "second");
  lt.Run([&] { pool.reset(); });
}

// A raw listening socket the test accepts from, to play a peer that breaks
// the protocol.
class RawListener {
 public:
  RawListener() {
    sockaddr_in addr{};
    address = ListenOnLoopback(fd_, 8, &addr);
  }
  ~RawListener() {
    for (int fd : accepted_) close(fd);
    close(fd_);
  }
  // The next connection accepted within `timeout_ms`, or -1.
  int Accept(int timeout_ms) {
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return -1;
    const int fd = accept(fd_, nullptr, nullptr);
    if (fd >= 0) accepted_.push_back(fd);
    return fd;
  }
  std::string address;

 private:
  int fd_ = socket(AF_INET, SOCK_STREAM, 0);
  std::vector<int> accepted_;
};

// A pooled connection that got a malformed frame closes once its error reply
// is written; if it cannot write (its peer does not read) the next call
// closes it and opens a new connection. Before, the pool kept handing calls
// to it and the connection refused them ("closed").
TEST(ConnectionPoolTest, AConnectionClosingAfterAProtocolErrorIsNotReused) {
  RawListener peer;
  LoopThread lt;
  auto pool = lt.Run(
      [&] { return std::make_unique<ConnectionPool>(lt.loop(), ConnectionOptions{}, 1000); });
  // Far more than the socket buffers take: the peer never reads, so most
  // stays queued.
  constexpr int kCalls = 48;
  auto stuck = std::make_shared<std::atomic<int>>(0);
  auto first_failed = std::make_shared<std::promise<Status>>();
  lt.Run([&] {
    for (int i = 0; i < kCalls; ++i) {
      proto::CoordPutRequest put;
      put.key = "k" + std::to_string(i);
      put.value = std::string(1u << 20, 'v');
      pool->Call(peer.address, put, 30000, [stuck, first_failed](CallOutcome o) {
        if ((*stuck)++ == 0) first_failed->set_value(o.message.status());
      });
    }
  });
  const int first = peer.Accept(5000);
  ASSERT_GE(first, 0);
  const std::string garbage("\x00\x00\x00\x03\xc1\xc1\xc1", 7);
  ASSERT_EQ(write(first, garbage.data(), garbage.size()), ssize_t(garbage.size()));
  // Until the connection has read the garbage, a call goes on it (and times
  // out behind the queued writes); once it has, the next call opens another.
  int second = -1;
  CallOutcome o{Status::Internal("no call made"), false};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (second < 0 && std::chrono::steady_clock::now() < deadline) {
    auto outcome = std::make_shared<std::promise<CallOutcome>>();
    lt.Run([&] {
      pool->Call(peer.address, GetRequest{"next"}, 300,
                 [outcome](CallOutcome c) { outcome->set_value(std::move(c)); });
    });
    second = peer.Accept(300);
    o = outcome->get_future().get();
  }
  ASSERT_GE(second, 0) << "the pool did not open a new connection";
  // Sent on the new connection, which the peer never answers.
  EXPECT_EQ(o.message.status().code(), StatusCode::kTimeout) << o.message.status().ToString();
  EXPECT_TRUE(o.maybe_delivered);
  // The old connection's calls, which could get no reply, failed with it.
  EXPECT_NE(first_failed->get_future().get().ToString().find("protocol error"), std::string::npos);
  EXPECT_EQ(stuck->load(), kCalls);
  lt.Run([&] { pool.reset(); });
}

}  // namespace
}  // namespace dynamo::net
