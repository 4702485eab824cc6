#include "load/driver.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <future>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "load/arrival_timer.h"

namespace dynamo::bench {

Status ValidateDriverOptions(const DriverOptions& o) {
  if (o.keys < 1 || o.keys > kKeysMax) {
    return Status::InvalidArgument("keys must be in [1, " + std::to_string(kKeysMax) + "]");
  }
  if (o.key_prefix.size() > kKeyPrefixBytesMax) {
    return Status::InvalidArgument("key prefix must be at most " +
                                   std::to_string(kKeyPrefixBytesMax) + " bytes");
  }
  if (o.value_size > kValueBytesMax) {
    return Status::InvalidArgument("value size must be at most " + std::to_string(kValueBytesMax) + " bytes");
  }
  if (o.concurrency < 1 || o.concurrency > kConcurrencyMax) {
    return Status::InvalidArgument("concurrency must be in [1, " + std::to_string(kConcurrencyMax) + "]");
  }
  if (o.ops == 0 && !(o.duration_s > 0)) return Status::InvalidArgument("give a positive duration or an op count");
  if (o.ops > kOpsMax)
    return Status::InvalidArgument("ops must be at most " + std::to_string(kOpsMax));
  if (!(o.duration_s <= kDurationSMax) || !(o.warmup_s <= kDurationSMax)) {
    return Status::InvalidArgument("duration and warm-up must be at most " +
                                   std::to_string(static_cast<uint64_t>(kDurationSMax)) + " s");
  }
  if (!(o.warmup_s >= 0)) return Status::InvalidArgument("warm-up must not be negative");
  if (o.rate != 0 && !(o.rate >= kRateMin && o.rate <= kRateMax)) {
    char why[128];
    std::snprintf(why, sizeof why,
                  "rate must be 0 (closed loop) or from %.2f to %.0f operations a second", kRateMin,
                  kRateMax);
    return Status::InvalidArgument(why);
  }
  return Status::OK();
}

namespace {

uint64_t NowNs() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

constexpr uint64_t kNsPerS = 1'000'000'000;
constexpr int kRedrawsMax = 100;  // tries to find a key with no write in flight
constexpr uint64_t kTickMs = 1;
// Open loop: the arrival timer wakes at most this often; arrivals due in
// between start together, up to this late (counted in their latency). A
// wake-up per arrival would cost the machine more than the store under test.
constexpr uint64_t kArrivalSpacingNs = 200'000;
// Open loop: arrivals started per pass of the loop. A run that fell far
// behind its schedule catches up in passes, with replies handled between
// them, instead of one pass that holds the loop until it has caught up.
constexpr size_t kArrivalsPerPassMax = 1024;

enum class Phase { kLoad, kWarmup, kMeasure, kDone };

// An open-loop arrival waiting for a free slot; it counts in the phase it
// arrived in, not the one it starts in.
struct Pending {
  Op op;
  uint64_t intended_ns;
  Phase phase;
};

class Runner : public std::enable_shared_from_this<Runner> {
 public:
  Runner(net::EventLoop& loop, Backend& backend, const DriverOptions& o)
      : loop_(loop),
        backend_(backend),
        o_(o),
        gen_(o.workload, o.distribution, o.keys, o.seed),
        value_rng_(o.seed ^ 0xba5eba11ULL) {
    value_.resize(o.value_size + (o.distinct_values ? kValuePoolBytes : 0));
    for (char& c : value_) c = static_cast<char>('a' + value_rng_() % 26);
    for (size_t s = o.concurrency; s > 0; --s) free_slots_.push_back(s - 1);
    report_.workload = std::string(WorkloadName(o.workload));
    report_.distribution = o.distribution == KeyDistribution::kZipfian ? "zipfian" : "uniform";
    report_.keys = o.keys;
    report_.value_size = o.value_size;
    report_.distinct_values = o.distinct_values;
    report_.concurrency = o.concurrency;
    report_.target_rate = o.rate;
  }

  std::future<Result<RunReport>> Start() {
    auto f = done_.get_future();
    auto self = shared_from_this();
    loop_.Post([self] {
      self->tick_ = std::make_unique<net::Timer>(self->loop_);
      std::weak_ptr<Runner> weak = self;
      self->tick_->Start(kTickMs, kTickMs, [weak] {
        if (auto r = weak.lock()) r->Tick();
      });
      if (self->o_.rate > 0) {
        Result<std::unique_ptr<ArrivalTimer>> arrivals = ArrivalTimer::Create(self->loop_, [weak] {
          if (auto r = weak.lock()) r->Arrive(NowNs());
        });
        // Without it, arrivals fall back to the millisecond tick.
        if (arrivals.ok()) self->arrivals_ = std::move(*arrivals);
      }
      self->Begin(self->o_.load ? Phase::kLoad : self->o_.warmup_s > 0 ? Phase::kWarmup : Phase::kMeasure);
    });
    return f;
  }

 private:
  bool OpenLoop() const { return o_.rate > 0 && phase_ != Phase::kLoad; }

  void Begin(Phase p) {
    if (p == Phase::kMeasure && o_.on_measure) o_.on_measure();
    phase_ = p;
    phase_start_ns_ = NowNs();
    issued_ = 0;
    next_arrival_ns_ = phase_start_ns_;
    if (p == Phase::kMeasure) measure_start_ns_ = last_done_ns_ = phase_start_ns_;
    if (p == Phase::kDone) {
      Finish();
      return;
    }
    Fill();
  }

  // Whether the phase still starts operations.
  bool Issuing(uint64_t now) const {
    switch (phase_) {
      case Phase::kLoad: return issued_ < o_.keys;
      case Phase::kWarmup: return now < phase_start_ns_ + static_cast<uint64_t>(o_.warmup_s * kNsPerS);
      case Phase::kMeasure:
        return o_.ops ? issued_ < o_.ops : now < phase_start_ns_ + static_cast<uint64_t>(o_.duration_s * kNsPerS);
      case Phase::kDone: return false;
    }
    return false;
  }

  // The next operation; a write's key counts as busy from here (it may wait
  // in the backlog) until the write completes.
  Op Draw() {
    Op op = phase_ == Phase::kLoad ? Op{false, issued_} : gen_.Next();
    // With every key busy (an open loop far behind) no redraw can help.
    const bool redraw = busy_writes_.size() < o_.keys;
    for (int i = 0; redraw && i < kRedrawsMax && !op.read && busy_writes_.contains(op.key); ++i) {
      op = gen_.Next();
    }
    if (!op.read) ++busy_writes_[op.key];
    return op;
  }

  void Unbusy(uint64_t key) {
    auto it = busy_writes_.find(key);
    if (--it->second == 0) busy_writes_.erase(it);
  }

  void Fill() {
    const uint64_t now = NowNs();
    if (OpenLoop()) {
      Arrive(now);
      return;
    }
    while (!free_slots_.empty() && Issuing(now)) {
      Op op = Draw();
      ++issued_;
      Issue(op, now, phase_);
    }
    MaybeAdvance(now);
  }

  void Issue(Op op, uint64_t start_ns, Phase phase) {
    const size_t slot = free_slots_.back();
    free_slots_.pop_back();
    ++in_flight_;
    if (phase == Phase::kMeasure) ++(op.read ? measured_reads_out_ : measured_writes_out_);
    auto self = shared_from_this();
    OpDone done = [self, slot, op, start_ns, phase](OpOutcome out) {
      self->Complete(slot, op, start_ns, phase, std::move(out));
    };
    const Key key{op.key, KeyName(op.key, o_.key_prefix)};
    if (op.read) {
      backend_.Read(slot, key, std::move(done));
    } else {
      const size_t at = o_.distinct_values ? value_rng_() % (kValuePoolBytes + 1) : 0;
      backend_.Write(slot, key, std::string_view(value_).substr(at, o_.value_size), std::move(done));
    }
  }

  void Complete(size_t slot, Op op, uint64_t start_ns, Phase phase, OpOutcome out) {
    if (phase_ == Phase::kDone) return;  // abandoned at the drain deadline
    const uint64_t now = NowNs();
    --in_flight_;
    if (phase == Phase::kMeasure) --(op.read ? measured_reads_out_ : measured_writes_out_);
    free_slots_.push_back(slot);
    if (!op.read) Unbusy(op.key);
    const bool ok = out.status.ok();
    const std::string kind = ok ? std::string() : std::string(StatusCodeName(out.status.code()));
    auto record = [&](OpStats& s) {
      if (ok) {
        s.latency.Record(now - start_ns);
      } else {
        s.RecordError(kind, out.status.message());
      }
    };
    // The progress line covers every phase; the report only the measured one.
    record(op.read ? window_read_ : window_write_);
    if (phase == Phase::kLoad) {
      ++report_.loaded;
      if (!ok) ++report_.load_errors;
    } else if (phase == Phase::kMeasure) {
      OpStats& s = op.read ? report_.read : report_.write;
      if (ok) last_done_ns_ = std::max(last_done_ns_, now);
      record(s);
      if (ok && op.read && out.values == 0) ++s.not_found;
      if (ok && op.read && out.values > 1) ++s.siblings;
    }
    if (!backlog_.empty()) {
      Pending p = backlog_.front();
      backlog_.pop_front();
      Issue(p.op, p.intended_ns, p.phase);
      return;
    }
    Fill();
  }

  // Open loop: the time between two arrivals.
  uint64_t ArrivalGap() const {
    return std::max<uint64_t>(1, static_cast<uint64_t>(static_cast<double>(kNsPerS) / o_.rate));
  }

  // Open loop, measured phase: arrivals due in it not yet drawn.
  uint64_t ArrivalsNotDrawn() const {
    if (o_.ops) return o_.ops - issued_;
    const uint64_t end = phase_start_ns_ + static_cast<uint64_t>(o_.duration_s * kNsPerS);
    if (next_arrival_ns_ >= end) return 0;
    const uint64_t gap = ArrivalGap();
    return (end - next_arrival_ns_ + gap - 1) / gap;
  }

  // Open loop: starts the operations whose arrival time has come (at most
  // kArrivalsPerPassMax), then sets the arrival timer for the next one.
  void Arrive(uint64_t now) {
    if (!OpenLoop()) return;
    const uint64_t gap = ArrivalGap();
    size_t started = 0;
    while (next_arrival_ns_ <= now && Issuing(next_arrival_ns_) &&
           started++ < kArrivalsPerPassMax) {
      Op op = Draw();
      ++issued_;
      if (!free_slots_.empty()) {
        Issue(op, next_arrival_ns_, phase_);
      } else if (backlog_.size() < kBacklogMax) {
        backlog_.push_back({op, next_arrival_ns_, phase_});
      } else {
        if (!op.read) Unbusy(op.key);
        if (phase_ == Phase::kMeasure) (op.read ? report_.read : report_.write).RecordError("backlog full");
      }
      next_arrival_ns_ += gap;
    }
    if (arrivals_ && Issuing(next_arrival_ns_)) {
      const bool behind = next_arrival_ns_ <= now;
      arrivals_->ArmBy(behind ? now : std::max(next_arrival_ns_, now + kArrivalSpacingNs));
    }
  }

  void Tick() {
    const uint64_t now = NowNs();
    Arrive(now);
    if (o_.progress && now >= next_progress_ns_) {
      if (next_progress_ns_) Progress(now);
      next_progress_ns_ = now + kNsPerS;
      window_start_ns_ = now;
    }
    MaybeAdvance(now);
  }

  void MaybeAdvance(uint64_t now) {
    if (phase_ == Phase::kDone || Issuing(now)) return;
    if (phase_ != Phase::kMeasure) {
      // Warm-up and load hand over at once; their stragglers are not counted.
      if (in_flight_ == 0 || phase_ == Phase::kWarmup) {
        Begin(phase_ == Phase::kLoad && o_.warmup_s > 0 ? Phase::kWarmup : Phase::kMeasure);
      }
      return;
    }
    if (!drain_start_ns_) drain_start_ns_ = now;
    if (in_flight_ == 0 && backlog_.empty()) {
      Begin(Phase::kDone);
    } else if (now >= drain_start_ns_ + o_.drain_ms * 1'000'000) {
      // Only the measured phase's operations count, each as what it is.
      uint64_t reads = measured_reads_out_, writes = measured_writes_out_;
      for (const Pending& p : backlog_) {
        if (p.phase == Phase::kMeasure) ++(p.op.read ? reads : writes);
      }
      // An open loop still catching up has arrivals due in the phase that
      // were never drawn: they count too, by the workload's mix, so that how
      // far behind it fell is not hidden.
      const uint64_t undrawn = OpenLoop() ? ArrivalsNotDrawn() : 0;
      const auto undrawn_reads = static_cast<uint64_t>(
          std::llround(static_cast<double>(undrawn) * ReadFraction(o_.workload)));
      reads += undrawn_reads;
      writes += undrawn - undrawn_reads;
      report_.read.RecordError("unfinished at the end", {}, reads);
      report_.write.RecordError("unfinished at the end", {}, writes);
      Begin(Phase::kDone);
    }
  }

  void Progress(uint64_t now) {
    const double secs = static_cast<double>(now - window_start_ns_) / kNsPerS;
    const char* names[] = {"load", "warm-up", "measure", "done"};
    char buf[256];
    const uint64_t n = window_read_.latency.count() + window_write_.latency.count();
    std::snprintf(buf, sizeof buf, "%-7s %6.1f s %9.0f ops/s  read p99 %7.3f ms  write p99 %7.3f ms  errors %llu",
                  names[static_cast<int>(phase_)], static_cast<double>(now - phase_start_ns_) / kNsPerS,
                  secs > 0 ? static_cast<double>(n) / secs : 0.0,
                  static_cast<double>(window_read_.latency.Percentile(0.99)) / 1e6,
                  static_cast<double>(window_write_.latency.Percentile(0.99)) / 1e6,
                  static_cast<unsigned long long>(window_read_.errors + window_write_.errors));
    o_.progress(buf);
    window_read_ = OpStats();
    window_write_ = OpStats();
  }

  void Finish() {
    tick_.reset();  // on the loop thread, as a Timer must be
    arrivals_.reset();
    // A closed loop run for a duration is measured over that duration: its
    // operations are the ones started in it, and one that finishes late (a
    // stall, a timeout at the end) does not stretch the time they share.
    // Otherwise the time runs to the last success: an open loop that
    // finishes late was queueing. An open loop's is at least its schedule,
    // which ends a gap after its last arrival.
    report_.seconds = o_.rate == 0 && o_.ops == 0
                          ? o_.duration_s
                          : static_cast<double>(last_done_ns_ - measure_start_ns_) / kNsPerS;
    if (o_.rate > 0) {
      const double schedule_s =
          o_.ops ? static_cast<double>(o_.ops) * static_cast<double>(ArrivalGap()) / kNsPerS
                 : o_.duration_s;
      report_.seconds = std::max(report_.seconds, schedule_s);
    }
    done_.set_value(report_);
  }

  net::EventLoop& loop_;
  Backend& backend_;
  DriverOptions o_;
  OpGenerator gen_;
  std::unique_ptr<net::Timer> tick_;
  std::unique_ptr<ArrivalTimer> arrivals_;  // open loop only
  std::mt19937_64 value_rng_;
  std::string value_;  // the value, or the pool distinct values are sliced from
  std::vector<size_t> free_slots_;
  std::unordered_map<uint64_t, uint32_t> busy_writes_;  // key -> writes drawn, not done
  std::deque<Pending> backlog_;
  Phase phase_ = Phase::kLoad;
  uint64_t phase_start_ns_ = 0, measure_start_ns_ = 0, next_arrival_ns_ = 0, last_done_ns_ = 0;
  uint64_t drain_start_ns_ = 0, next_progress_ns_ = 0, window_start_ns_ = 0;
  uint64_t issued_ = 0;
  size_t in_flight_ = 0;
  size_t measured_reads_out_ = 0,
         measured_writes_out_ = 0;  // issued in the measured phase, not done
  OpStats window_read_, window_write_;
  RunReport report_;
  std::promise<Result<RunReport>> done_;
};

}  // namespace

Result<RunReport> RunLoad(net::EventLoop& loop, Backend& backend, const DriverOptions& options) {
  DYNAMO_RETURN_IF_ERROR(ValidateDriverOptions(options));
  auto runner = std::make_shared<Runner>(loop, backend, options);
  return runner->Start().get();
}

}  // namespace dynamo::bench
