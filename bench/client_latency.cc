// Latency of the SDK against a running cluster, next to raw round trips to
// one node measured in the same run: the cost the client adds.
//
//   dynamo_client_latency --seed 127.0.0.1:7000 [--ops 2000] [--value-size 100]
//
// Sequential (one operation in flight), bounded by --ops. Prints medians and
// p99s in microseconds.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "dynamo/client.h"
#include "dynamo/net/connection.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Stats {
  double median_us = 0;
  double p99_us = 0;
};

Stats Summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  if (us.empty()) return {};
  return Stats{us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)]};
}

template <typename Fn>
Stats Measure(int ops, Fn fn) {
  std::vector<double> us;
  us.reserve(static_cast<size_t>(ops));
  for (int i = 0; i < ops; ++i) {
    auto t0 = Clock::now();
    if (!fn(i)) continue;
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return Summarize(std::move(us));
}

// A raw connection to one node, driven from this thread through its own loop.
class RawNode {
 public:
  explicit RawNode(const dynamo::net::Endpoint& ep) : thread_([this] { loop_.Run(); }) {
    std::promise<bool> p;
    loop_.Post([&] {
      dynamo::net::Connect(loop_, ep, {}, 2000, [&](dynamo::Result<std::shared_ptr<dynamo::net::Connection>> c) {
        if (c.ok()) conn_ = *c;
        p.set_value(c.ok());
      });
    });
    ok_ = p.get_future().get();
  }
  ~RawNode() {
    loop_.Post([this] {
      if (conn_) conn_->Close(dynamo::Status::Aborted("done"));
    });
    loop_.Stop();
    thread_.join();
  }
  bool ok() const { return ok_; }
  bool Call(dynamo::proto::Body body) {
    std::promise<bool> p;
    loop_.Post([&] {
      conn_->Call(body, 2000, [&](dynamo::net::CallOutcome r) {
        p.set_value(r.message.ok() &&
                    !std::holds_alternative<dynamo::proto::ErrorReply>(r.message->body));
      });
    });
    return p.get_future().get();
  }

 private:
  dynamo::net::EventLoop loop_;
  std::thread thread_;
  std::shared_ptr<dynamo::net::Connection> conn_;
  bool ok_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> seeds;
  int ops = 2000;
  size_t value_size = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--seed") seeds.push_back(argv[i + 1]);
    if (a == "--ops") ops = std::max(1, std::min(1000000, std::atoi(argv[i + 1])));
    if (a == "--value-size") value_size = static_cast<size_t>(std::atoi(argv[i + 1]));
  }
  if (seeds.empty()) {
    std::fprintf(stderr, "usage: %s --seed HOST:PORT [--ops N] [--value-size BYTES]\n", argv[0]);
    return 2;
  }
  const std::string value(value_size, 'v');
  dynamo::ClientOptions options;
  options.seeds = seeds;
  auto client = dynamo::Client::Open(options);
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 1;
  }
  auto node = dynamo::net::ParseEndpoint(seeds[0]);
  RawNode raw(*node);
  if (!raw.ok()) {
    std::fprintf(stderr, "cannot connect to %s\n", seeds[0].c_str());
    return 1;
  }
  // Warm up connections and caches.
  for (int i = 0; i < 200; ++i) {
    (void)(*client)->Put("warm" + std::to_string(i), value);
    raw.Call(dynamo::proto::GetRequest{"warm" + std::to_string(i), ""});
  }

  Stats raw_get = Measure(ops, [&](int i) {
    return raw.Call(dynamo::proto::GetRequest{"warm" + std::to_string(i % 200), ""});
  });
  Stats raw_coord = Measure(ops, [&](int i) {
    return raw.Call(dynamo::proto::CoordPutRequest{"raw" + std::to_string(i), {}, value, false});
  });
  Stats put = Measure(ops, [&](int i) { return (*client)->Put("key" + std::to_string(i), value).ok(); });
  Stats get = Measure(ops, [&](int i) { return (*client)->Get("key" + std::to_string(i)).ok(); });

  std::printf("operations: %d sequential, %zu-byte values, R=%d W=%d\n", ops, value_size,
              options.r, options.w);
  std::printf("%-34s %10s %10s\n", "", "median us", "p99 us");
  std::printf("%-34s %10.0f %10.0f\n", "raw Get, one node", raw_get.median_us, raw_get.p99_us);
  std::printf("%-34s %10.0f %10.0f\n", "raw CoordPut (synced), one node", raw_coord.median_us, raw_coord.p99_us);
  std::printf("%-34s %10.0f %10.0f\n", "client get (R=2 of 3)", get.median_us, get.p99_us);
  std::printf("%-34s %10.0f %10.0f\n", "client put (W=2 of 3)", put.median_us, put.p99_us);
  std::printf("client get / raw Get: %.2fx (+%.0f us); client put / raw CoordPut: %.2fx (+%.0f us)\n",
              get.median_us / raw_get.median_us, get.median_us - raw_get.median_us,
              put.median_us / raw_coord.median_us, put.median_us - raw_coord.median_us);
  return 0;
}
