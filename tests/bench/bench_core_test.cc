// dynamo-bench's logic: histogram accuracy, key distributions, operation
// mixes, the report formats, the HTTP response parser and the driver's
// progress line.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "load/arrival_timer.h"
#include "load/driver.h"
#include "load/histogram.h"
#include "load/http.h"
#include "load/peer_errors.h"
#include "load/report.h"
#include "load/slots.h"
#include "load/workload.h"

namespace dynamo::bench {
namespace {

TEST(HistogramTest, PercentilesAreWithinTheBucketError) {
  Histogram h;
  std::vector<uint64_t> values;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t v = 1000 + rng() % 10'000'000;  // 1 µs to 10 ms
    values.push_back(v);
    h.Record(v);
  }
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const double exact = static_cast<double>(values[static_cast<size_t>(q * values.size()) - 1]);
    const double got = static_cast<double>(h.Percentile(q));
    EXPECT_GE(got, exact * 0.98) << q;
    EXPECT_LE(got, exact * 1.02) << q;
  }
  EXPECT_EQ(h.Percentile(1), values.back());
  EXPECT_EQ(h.max_ns(), values.back());
  EXPECT_EQ(h.count(), values.size());
}

TEST(HistogramTest, SmallValuesAreExactAndHugeOnesClamp) {
  Histogram h;
  for (uint64_t v = 0; v < 100; ++v) h.Record(v);
  EXPECT_EQ(h.Percentile(0.5), 49u);
  h.Record(Histogram::kMaxNs * 4);
  EXPECT_EQ(h.max_ns(), Histogram::kMaxNs * 4);
  EXPECT_EQ(h.Percentile(1), Histogram::kMaxNs * 4);
}

TEST(HistogramTest, MergeAddsAndEmptyIsZero) {
  Histogram a, b, empty;
  a.Record(10);
  b.Record(1'000'000);
  a.Merge(b);
  EXPECT_EQ(a.count(), 2u);
  EXPECT_EQ(a.max_ns(), 1'000'000u);
  EXPECT_EQ(empty.Percentile(0.99), 0u);
  EXPECT_TRUE(empty.Spectrum().empty());
}

TEST(WorkloadTest, ParsesNamesAndRefusesOthers) {
  EXPECT_EQ(*ParseWorkload("A"), Workload::kA);
  EXPECT_EQ(*ParseWorkload("w"), Workload::kW);
  EXPECT_FALSE(ParseWorkload("D").ok());
  EXPECT_EQ(*ParseKeyDistribution("zipfian"), KeyDistribution::kZipfian);
  EXPECT_FALSE(ParseKeyDistribution("latest").ok());
}

TEST(WorkloadTest, MixesMatchTheirReadFraction) {
  for (Workload w : {Workload::kA, Workload::kB, Workload::kC, Workload::kW}) {
    OpGenerator gen(w, KeyDistribution::kUniform, 1000, 7);
    int reads = 0;
    constexpr int kOps = 20000;
    for (int i = 0; i < kOps; ++i) {
      Op op = gen.Next();
      ASSERT_LT(op.key, 1000u);
      reads += op.read;
    }
    EXPECT_NEAR(static_cast<double>(reads) / kOps, ReadFraction(w), 0.02) << WorkloadName(w);
  }
}

TEST(WorkloadTest, ZipfianFavoursFewKeysAndUniformDoesNot) {
  auto top_share = [](KeyDistribution d) {
    OpGenerator gen(Workload::kC, d, 10000, 11);
    std::map<uint64_t, int> counts;
    constexpr int kOps = 50000;
    for (int i = 0; i < kOps; ++i) ++counts[gen.Next().key];
    std::vector<int> c;
    for (const auto& [k, n] : counts) c.push_back(n);
    std::sort(c.rbegin(), c.rend());
    int top = 0;
    for (size_t i = 0; i < 100 && i < c.size(); ++i) top += c[i];
    return static_cast<double>(top) / kOps;  // share of the 1% most popular keys
  };
  EXPECT_GT(top_share(KeyDistribution::kZipfian), 0.3);
  EXPECT_LT(top_share(KeyDistribution::kUniform), 0.05);
}

// Ranks are scattered one to one: every key may be drawn (a hash of the
// rank, taken mod the key count, reached about 63% of the keys).
TEST(WorkloadTest, ZipfianRanksReachEveryKey) {
  for (uint64_t keys : {1000u, 1024u, 999u}) {
    OpGenerator gen(Workload::kC, KeyDistribution::kZipfian, keys, 12);
    std::set<uint64_t> seen;
    for (int i = 0; i < 1'000'000; ++i) seen.insert(gen.Next().key);
    EXPECT_EQ(seen.size(), keys) << keys;
    EXPECT_LT(*seen.rbegin(), keys);
  }
}

TEST(WorkloadTest, SameSeedSameSequenceAndFixedWidthKeys) {
  OpGenerator a(Workload::kA, KeyDistribution::kZipfian, 5000, 42), b(Workload::kA, KeyDistribution::kZipfian, 5000, 42);
  for (int i = 0; i < 1000; ++i) {
    Op x = a.Next(), y = b.Next();
    ASSERT_EQ(x.read, y.read);
    ASSERT_EQ(x.key, y.key);
  }
  EXPECT_EQ(KeyName(7), "key0000000007");
  EXPECT_EQ(KeyName(7).size(), KeyName(9'999'999'999).size());
  EXPECT_EQ(KeyName(7, "lww:"), "lww:0000000007");
  EXPECT_EQ(KeyName(7, ""), "0000000007");
  EXPECT_EQ(KeyName(0), "key0000000000");
  EXPECT_EQ(KeyName(1234567890), "key1234567890");
  EXPECT_EQ(KeyName(UINT64_MAX), "key18446744073709551615");
}

TEST(ReportTest, JsonCarriesTheFieldsScriptsUse) {
  RunReport r;
  r.backend = "redis";
  r.workload = "A";
  r.seconds = 2;
  r.read.latency.Record(1'000'000);
  r.write.latency.Record(3'000'000);
  r.write.RecordError("Timeout");
  r.read.RecordError("Unavailable", "redis 127.0.0.1:1: \"refused\"");
  r.read.RecordError("Unavailable", "a later one");
  r.read.siblings = 1;
  const std::string j = ReportJson(r);
  EXPECT_EQ(j.find('\n'), std::string::npos);
  for (const char* field :
       {"\"throughput\":1.0", "\"read\":{", "\"write\":{",
        "\"p50_ms\":", "\"p99_ms\":", "\"p999_ms\":", "\"max_ms\":3.000", "\"count\":1",
        "\"errors\":1", "\"errors_by_kind\":{\"Timeout\":1}", "\"siblings\":1",
        "\"first_error\":{\"Unavailable\":\"redis 127.0.0.1:1: \\\"refused\\\"\"}",
        "\"first_error\":{}"}) {
    EXPECT_NE(j.find(field), std::string::npos) << field << " in " << j;
  }
  const std::string text = ReportText(r);
  EXPECT_NE(text.find("write errors: 1 Timeout\n"), std::string::npos) << text;
  EXPECT_NE(text.find("read errors: 2 Unavailable (first: redis 127.0.0.1:1: \"refused\")\n"),
            std::string::npos)
      << text;
  EXPECT_NE(PlotScript(r, "/tmp/x.png").find("$read"), std::string::npos);
  EXPECT_EQ(PlotScript(RunReport(), "/tmp/x.png"), "");
}

// Errors by kind read alike across stores: shed load Busy, a store that
// cannot serve now Unavailable, a passed deadline Timeout (all were
// Internal for Redis and etcd).
TEST(PeerErrorsTest, RedisAndEtcdErrorsMapToDynamosKinds) {
  EXPECT_EQ(EtcdHttpError(503, "{\"error\":\"etcdserver: request timed out\"}").code(),
            StatusCode::kUnavailable);
  EXPECT_EQ(EtcdHttpError(429, "").code(), StatusCode::kBusy);
  EXPECT_EQ(EtcdHttpError(504, "").code(), StatusCode::kTimeout);
  EXPECT_EQ(EtcdHttpError(500, "").code(), StatusCode::kInternal);
  EXPECT_NE(EtcdHttpError(503, "request timed out").message().find("request timed out"),
            std::string_view::npos);
  EXPECT_EQ(RedisReplyError("OOM command not allowed when used memory > 'maxmemory'.").code(),
            StatusCode::kBusy);
  EXPECT_EQ(RedisReplyError("BUSY Redis is busy running a script.").code(), StatusCode::kBusy);
  EXPECT_EQ(RedisReplyError("LOADING Redis is loading the dataset in memory").code(),
            StatusCode::kUnavailable);
  EXPECT_EQ(RedisReplyError("ERR unknown command").code(), StatusCode::kInternal);
  EXPECT_EQ(RedisReplyError("BUSYKEY Target key name already exists.").code(),
            StatusCode::kInternal);
}

TEST(HttpTest, ContentLengthResponseSplitAcrossReads) {
  HttpResponseParser p;
  const std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"kvs\":[1]}";
  for (size_t i = 0; i + 1 < resp.size(); ++i) {
    auto r = p.Feed(resp.substr(i, 1));
    ASSERT_TRUE(r.ok());
    ASSERT_FALSE(r->has_value()) << i;
  }
  auto r = p.Feed(resp.substr(resp.size() - 1));
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->status, 200);
  EXPECT_EQ((*r)->body, "{\"kvs\":[1]}");
}

TEST(HttpTest, ChunkedBodiesAndBackToBackResponses) {
  HttpResponseParser p;
  auto r = p.Feed("HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\n\r\n"
                  "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->status, 404);
  EXPECT_EQ((*r)->body, "abcdef");
  r = p.Feed("");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->status, 200);
  EXPECT_EQ((*r)->body, "");
}

TEST(HttpTest, MalformedAndOversizeInputIsRefused) {
  EXPECT_FALSE(HttpResponseParser().Feed("SMTP ready\r\n\r\n").ok());
  EXPECT_FALSE(HttpResponseParser().Feed("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").ok());
  EXPECT_FALSE(HttpResponseParser().Feed("HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n").ok());
  EXPECT_FALSE(HttpResponseParser().Feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").ok());
  EXPECT_FALSE(HttpResponseParser().Feed(std::string(kHttpHeaderBytesMax + 1, 'a')).ok());
}

TEST(HttpTest, PostAndBase64) {
  EXPECT_EQ(HttpPost("h:1", "/v3/kv/put", "{}"),
            "POST /v3/kv/put HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_EQ(Base64(""), "");
  EXPECT_EQ(Base64("f"), "Zg==");
  EXPECT_EQ(Base64("fo"), "Zm8=");
  EXPECT_EQ(Base64("foo"), "Zm9v");
  EXPECT_EQ(Base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64(std::string("\xff\x00\x10", 3)), "/wAQ");
}

uint64_t SteadyNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// The driver asks for the next arrival after every completion; a later
// deadline than the one set must not postpone it, or arrivals would wait for
// the last completion's guess. After firing, the next ask sets a new one.
TEST(ArrivalTimerTest, TheEarliestDeadlineAskedForWins) {
  net::EventLoop loop;
  std::thread thread([&] { loop.Run(); });
  std::promise<void> first, second;
  int fired = 0;
  std::unique_ptr<ArrivalTimer> timer;
  loop.Post([&] {
    Result<std::unique_ptr<ArrivalTimer>> t = ArrivalTimer::Create(loop, [&] {
      if (++fired == 1) {
        first.set_value();
        timer->ArmBy(SteadyNs() + 1'000'000);
      } else if (fired == 2) {
        second.set_value();
      }
    });
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    timer = std::move(*t);
    timer->ArmBy(SteadyNs() + 1'000'000);
    timer->ArmBy(SteadyNs() + 3'600'000'000'000);  // an hour: must not replace the first
  });
  EXPECT_EQ(first.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(second.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  std::promise<void> closed;
  loop.Post([&] {
    timer.reset();
    closed.set_value();
  });
  closed.get_future().wait();
  loop.Stop();
  thread.join();
}

// A slot's timed-out operation has its connection dropped before the
// driver hears of the timeout, since the driver starts the slot's next
// operation from that callback: a drop after it closed the connection the
// next operation had just started on.
TEST(SlotOpsTest, ATimedOutSlotIsDroppedBeforeItsNextOperationStarts) {
  net::EventLoop loop;
  std::thread thread([&] { loop.Run(); });
  std::vector<std::string> events;
  std::promise<void> finished;
  std::unique_ptr<SlotOps> ops;
  loop.Post([&] {
    ops = std::make_unique<SlotOps>(
        loop, 1, 1, [&](size_t slot) { events.push_back("drop " + std::to_string(slot)); });
    ops->Begin(0, [&](OpOutcome first) {
      events.push_back(first.status.ToString());
      const uint64_t next = ops->Begin(0, [&](OpOutcome second) {
        events.push_back("next " + second.status.ToString());
        finished.set_value();
      });
      events.push_back("begin");
      ops->Complete(0, next, OpOutcome{Status::OK()});
    });
  });
  ASSERT_EQ(finished.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  std::promise<void> closed;
  loop.Post([&] {
    ops.reset();
    closed.set_value();
  });
  closed.get_future().wait();
  loop.Stop();
  thread.join();
  EXPECT_EQ(events, (std::vector<std::string>{
                        "drop 0", Status::Timeout("no reply within the deadline").ToString(),
                        "begin", "next OK"}));
}

// A store whose every operation succeeds at the loop's first 1 ms timer tick
// at least `delay` after it started.
class TickBackend : public Backend {
 public:
  std::string Name() const override { return "tick"; }
  Status Open(net::EventLoop& loop, size_t) override {
    loop_ = &loop;
    return Status::OK();
  }
  void Read(size_t, const Key& key, OpDone done) override {
    names.insert(key.name);
    Later(std::move(done));
  }
  void Write(size_t, const Key& key, std::string_view value, OpDone done) override {
    names.insert(key.name);
    values.emplace(value);
    Later(std::move(done));
  }
  void Close() override {
    std::promise<void> closed;
    loop_->Post([&] {
      timer_.reset();
      closed.set_value();
    });
    closed.get_future().wait();
  }

 private:
  void Later(OpDone done) {
    if (!timer_) {
      timer_ = std::make_unique<net::Timer>(*loop_);
      timer_->Start(1, 1, [this] {
        const auto now = std::chrono::steady_clock::now();
        std::vector<OpDone> ready;
        while (!pending_.empty() && pending_.front().first <= now) {
          ready.push_back(std::move(pending_.front().second));
          pending_.pop_front();
        }
        for (OpDone& d : ready) d(OpOutcome{Status::OK(), 1});
      });
    }
    pending_.emplace_back(std::chrono::steady_clock::now() + delay, std::move(done));
  }

 public:
  std::chrono::milliseconds delay{0};  // set before the run
  std::set<std::string> names;         // of the keys read or written; loop thread
  std::set<std::string> values;        // written; loop thread

 private:
  net::EventLoop* loop_ = nullptr;
  std::unique_ptr<net::Timer> timer_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, OpDone>> pending_;  // by due time
};

// A loop thread with a TickBackend open on it, for driver runs; both are
// closed when it goes.
class TickRig {
 public:
  explicit TickRig(size_t concurrency) { EXPECT_TRUE(backend.Open(loop_, concurrency).ok()); }
  ~TickRig() {
    backend.Close();
    loop_.Stop();
    thread_.join();
  }
  Result<RunReport> Run(const DriverOptions& o) { return RunLoad(loop_, backend, o); }

  TickBackend backend;

 private:
  net::EventLoop loop_;
  std::thread thread_{[this] { loop_.Run(); }};
};

// Options of a run with no load phase: `workload` at `concurrency`.
DriverOptions Unloaded(Workload workload, size_t concurrency) {
  DriverOptions o;
  o.workload = workload;
  o.load = false;
  o.concurrency = concurrency;
  return o;
}

// The live line counts every phase's operations, so a long load or warm-up
// shows its rate instead of zero; the report counts only the measured phase.
TEST(DriverTest, ProgressLineCountsTheLoadPhase) {
  DriverOptions o;
  o.workload = Workload::kW;
  o.keys = 3000;  // one at a time, a timer tick (whole milliseconds) each: about 3 s of load
  o.concurrency = 1;
  o.ops = 10;
  std::mutex mu;
  std::vector<std::string> lines;
  o.progress = [&](const std::string& line) {
    std::lock_guard<std::mutex> g(mu);
    lines.push_back(line);
  };
  Result<RunReport> report = TickRig(o.concurrency).Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->loaded, o.keys);
  EXPECT_EQ(report->write.latency.count(), o.ops);
  std::lock_guard<std::mutex> g(mu);
  size_t load_lines = 0;
  for (const std::string& line : lines) {
    if (line.rfind("load", 0) != 0) continue;
    ++load_lines;
    double secs = 0, rate = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "load %lf s %lf ops/s", &secs, &rate), 2) << line;
    EXPECT_GT(rate, 0) << line;
  }
  EXPECT_GT(load_lines, 0u);
}

// Every key a run touches is the prefix and a number below --keys; a prefix
// past the limit is refused before the run starts.
TEST(DriverTest, KeysCarryThePrefix) {
  DriverOptions o;
  o.workload = Workload::kA;
  o.keys = 20;
  o.key_prefix = "lww:";
  o.ops = 40;
  TickRig rig(o.concurrency);
  Result<RunReport> report = rig.Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  std::set<std::string> expected;
  for (uint64_t i = 0; i < 20; ++i) expected.insert(KeyName(i, "lww:"));
  EXPECT_EQ(rig.backend.names, expected);  // the load phase writes every key once
  o.key_prefix.assign(kKeyPrefixBytesMax + 1, 'k');
  Result<RunReport> refused = rig.Run(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
}

// Without distinct values every write carries one value; with them, each a
// different one of the asked-for size.
TEST(DriverTest, DistinctValuesDifferFromWriteToWrite) {
  DriverOptions o;
  o.workload = Workload::kW;
  o.keys = 50;
  o.ops = 50;
  o.value_size = 64;
  {
    TickRig rig(o.concurrency);
    ASSERT_TRUE(rig.Run(o).ok());
    EXPECT_EQ(rig.backend.values.size(), 1u);
  }
  o.distinct_values = true;
  TickRig rig(o.concurrency);
  Result<RunReport> report = rig.Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->distinct_values);
  EXPECT_GT(rig.backend.values.size(), 95u);  // of 100 writes: 50 loaded, 50 measured
  for (const std::string& v : rig.backend.values) EXPECT_EQ(v.size(), o.value_size);
}

// The measured phase is announced once, after the load wrote every key and
// before any measured operation ran.
TEST(DriverTest, TheMeasuredPhaseIsAnnouncedOnceAfterTheLoad) {
  DriverOptions o;
  o.workload = Workload::kC;
  o.keys = 30;
  o.ops = 50;
  o.warmup_s = 0.05;
  TickRig rig(o.concurrency);
  int announced = 0;
  size_t keys_written_by_then = 0;
  o.on_measure = [&] {
    ++announced;
    keys_written_by_then = rig.backend.names.size();
  };
  Result<RunReport> report = rig.Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(announced, 1);
  EXPECT_EQ(keys_written_by_then, 30u);
  EXPECT_EQ(report->read.latency.count(), o.ops);
}

// Open loop: arrivals that wait for a slot count in the phase they arrived
// in. A warm-up that fell behind (one slot, three times the arrivals the
// backend can answer) hands its backlog to the measured phase, which still
// counts only its own operations; those wait behind the backlog, so their
// latency shows the queue.
TEST(DriverTest, OpenLoopCountsEachArrivalInItsOwnPhase) {
  DriverOptions o = Unloaded(Workload::kC, 1);  // about 1,000 operations a second on the 1 ms tick
  o.rate = 3000;
  o.warmup_s = 0.3;
  o.ops = 300;
  o.drain_ms = 60'000;
  Result<RunReport> report = TickRig(o.concurrency).Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->read.latency.count(), o.ops);
  EXPECT_EQ(report->read.errors, 0u);
  EXPECT_EQ(report->write.latency.count() + report->write.errors, 0u);
}

// Operations still waiting when the drain ends fail as "unfinished at the
// end", each counted as what it is: a read-only run has no write errors.
TEST(DriverTest, UnfinishedOperationsCountAsWhatTheyAre) {
  DriverOptions o = Unloaded(Workload::kC, 1);
  o.rate = 20'000;  // 2,000 arrivals in 0.1 s, about 100 answered by then
  o.ops = 2000;
  o.drain_ms = 1;
  Result<RunReport> report = TickRig(o.concurrency).Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->read.latency.count() + report->read.errors, o.ops);
  EXPECT_GT(report->read.errors, 0u);
  EXPECT_EQ(report->write.latency.count() + report->write.errors, 0u);
}

// An open loop far behind its schedule, with fewer keys than writes
// waiting: every key is busy, so no redraw can find a free one and none is
// tried, and the run ends with each arrival counted once. (Redraws that
// counted busy keys in a multiset cost O(waiting writes) each, and a run
// like this one did not end.)
TEST(DriverTest, AnOpenLoopFarBehindWithEveryKeyBusyStillEnds) {
  DriverOptions o = Unloaded(Workload::kW, 2);
  o.keys = 4;
  o.rate = 1'000'000;
  o.ops = 200'000;
  o.drain_ms = 1;
  Result<RunReport> report = TickRig(o.concurrency).Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->write.latency.count() + report->write.errors, o.ops);
  EXPECT_GT(report->write.errors, 0u);
  EXPECT_EQ(report->read.latency.count() + report->read.errors, 0u);
}

// A closed loop run for a duration is measured over that duration: the one
// operation it starts takes three times as long, and the run's time is still
// the duration, not the time to that operation's end.
TEST(DriverTest, AClosedLoopByDurationIsMeasuredOverItsDuration) {
  DriverOptions o = Unloaded(Workload::kC, 1);
  o.duration_s = 0.1;
  TickRig rig(o.concurrency);
  rig.backend.delay = std::chrono::milliseconds(300);
  Result<RunReport> report = rig.Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->read.latency.count(), 1u);
  EXPECT_EQ(report->seconds, o.duration_s);
  EXPECT_DOUBLE_EQ(report->Throughput(), 10.0);
}

// An open loop is measured over its schedule at least: 10 arrivals at 100 a
// second take 0.1 s, though the last is answered 0.09 s after the first
// (before, 111 a second).
TEST(DriverTest, AnOpenLoopKeepingUpIsMeasuredOverItsSchedule) {
  DriverOptions o = Unloaded(Workload::kC, 1);
  o.rate = 100;
  o.ops = 10;
  Result<RunReport> report = TickRig(o.concurrency).Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->read.latency.count(), 10u);
  EXPECT_GE(report->seconds, 0.1);
  EXPECT_LE(report->Throughput(), 100.0);
}

// An open loop that ends far behind its schedule (a hundred million arrivals
// a second for 20 ms, one operation a millisecond answered) counts every
// arrival due in the measured phase: answered, failed, or unfinished,
// including those it never got to draw.
TEST(DriverTest, AnOpenLoopFarBehindCountsTheArrivalsItNeverStarted) {
  DriverOptions o = Unloaded(Workload::kC, 1);
  o.rate = kRateMax;
  o.duration_s = 0.02;
  o.drain_ms = 1;
  Result<RunReport> report = TickRig(o.concurrency).Run(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->read.latency.count() + report->read.errors, 2'000'000u);
  EXPECT_GT(report->read.errors_by_kind["unfinished at the end"], 0u);
  EXPECT_EQ(report->write.latency.count() + report->write.errors, 0u);
}

// An open loop's rate is 0 (a closed loop) or within its range; infinity
// and NaN are refused before the run, with the range in the message.
TEST(DriverTest, RatesOutsideTheirRangeAreRefused) {
  DriverOptions o;
  for (double rate : {0.0, kRateMin, 1000.0, kRateMax}) {
    o.rate = rate;
    EXPECT_TRUE(ValidateDriverOptions(o).ok()) << rate;
  }
  for (double rate : {-1.0, kRateMin / 2, kRateMax * 2, std::numeric_limits<double>::infinity(),
                      std::numeric_limits<double>::quiet_NaN()}) {
    o.rate = rate;
    Status st = ValidateDriverOptions(o);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << rate;
    EXPECT_NE(st.message().find("from 0.01 to 100000000"), std::string::npos) << st.ToString();
  }
}

}  // namespace
}  // namespace dynamo::bench
