#include "dynamo/client.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "core/map_fetch.h"
#include "core/node_tracker.h"
#include "core/quorum.h"
#include "dynamo/cluster_map.h"
#include "dynamo/net/connection.h"
#include "dynamo/net/connection_pool.h"
#include "dynamo/net/event_loop.h"

namespace dynamo {
namespace {

using client::ReadOp;
using client::Reply;
using client::Route;
using client::Send;
using client::WriteOp;

constexpr uint64_t kConnectTimeoutMs = 500;
// Refreshes caused by newer epochs in replies are at least this far apart.
constexpr uint64_t kEpochRefreshGapMs = 100;

// A call's receipt holds nothing of an earlier call, also when this one
// fails before it starts.
template <class Options>
void EmptyReceipt(const Options& options) {
  if (options.receipt) *options.receipt = Receipt{};
}

uint64_t WallMicros() {
  using namespace std::chrono;
  return static_cast<uint64_t>(duration_cast<microseconds>(system_clock::now().time_since_epoch()).count());
}

std::string StateName(const proto::Member& m) {
  switch (m.status) {
    case proto::MemberStatus::kJoining: return "joining";
    case proto::MemberStatus::kLeaving: return "leaving";
    case proto::MemberStatus::kRemoved: return "removed";
    default: return m.alive ? "up" : "down";
  }
}

std::string DotString(const Dot& d) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%016llx:%llu", static_cast<unsigned long long>(d.actor),
                static_cast<unsigned long long>(d.counter));
  return buf;
}

// Counts forks, in the child: a client opened before a fork belongs to the
// parent (its I/O thread is not in the child, and its loop's epoll instance
// is shared with the parent's).
std::atomic<uint64_t> forks_seen{0};

uint64_t ForksSeen() {
  static std::once_flag registered;
  std::call_once(registered, [] {
    ::pthread_atfork(nullptr, nullptr, [] { forks_seen.fetch_add(1, std::memory_order_relaxed); });
  });
  return forks_seen.load(std::memory_order_relaxed);
}

// Seeded with 256 bits from the OS. Nodes take a write's id as its
// identity when a coordinator retry repeats it, so ids must not repeat
// across clients: from a 32-bit seed, two clients in 2^32 drew the same
// stream and their first writes of a key the same id.
std::mt19937_64 SeededRng() {
  std::random_device rd;
  std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
  return std::mt19937_64(seq);
}

}  // namespace

class Client::Impl {
 public:
  explicit Impl(ClientOptions options)
      : options_(std::move(options)), limits_(LimitsFor(options_)), rng_(SeededRng()) {
    while (client_id_ == 0) client_id_ = rng_();
  }

  // What replies may hold: the nodes' defaults, or more if this client allows more.
  static proto::Limits LimitsFor(const ClientOptions& o) {
    proto::Limits l;
    l.key_bytes_max = std::max(l.key_bytes_max, o.key_bytes_max);
    l.value_bytes_max = std::max(l.value_bytes_max, o.value_bytes_max);
    l.frame_bytes_max = static_cast<uint32_t>(
        std::max<uint64_t>(l.frame_bytes_max, 4 * uint64_t{l.value_bytes_max}));
    return l;
  }

  ~Impl() { Close(); }

  // The client was opened in a process that has forked since, and this is
  // the child: it can do nothing here, not even close (see ForksSeen).
  bool InForkedChild() const { return ForksSeen() != forks_at_open_; }

  // Calls made from then on fail at once. Operations still running, and
  // the copies, repairs and late coordinator answers already on their way,
  // get up to timeout_ms to finish; then the connections close, failing
  // whatever is left, and every operation reports before the I/O thread
  // stops. So every `done` runs exactly once before this returns. On the
  // I/O thread it only starts that, and the rest follows once the current
  // callback returns.
  void Close() {
    if (loop_.InLoopThread()) {
      BeginClose();
      return;
    }
    // Threads that close at once all wait for the I/O thread; one joins it.
    std::lock_guard<std::mutex> lock(join_mu_);
    if (!io_.joinable()) return;
    BeginClose();
    io_.join();
  }

  // ~Client on the I/O thread (a callback dropped the last owner): the
  // thread cannot wait for itself, so it closes the client as Close() does
  // and frees it once its loop has stopped.
  static void CloseAndFreeOnIoThread(std::unique_ptr<Impl> self) {
    self->BeginClose();
    self->io_.detach();
    self->free_when_stopped_ = true;
    self.release();
  }

  // Once; any thread while the I/O thread runs.
  void BeginClose() {
    if (closing_.exchange(true)) return;
    loop_.Post([this] {
      refresh_timer_.reset();
      if (map_load_) FinishMapLoad(map_load_, ClosedStatus());
      map_load_timer_.reset();
      close_timer_ = std::make_unique<net::Timer>(loop_);
      close_timer_->Start(options_.timeout_ms, 0, [this] {
        pool_.CloseAll(ClosedStatus());
        // Failed calls end their operations within a pass or two; this
        // only bounds the wait should one never report.
        close_timer_->Start(options_.timeout_ms, 0, [this] { loop_.Stop(); });
        StopIfClosed();
      });
      StopIfClosed();
    });
  }

  // I/O thread.
  void StopIfClosed() {
    if (!closing_ || running_ops_ != 0 || posted_from_outside_ != 0 ||
        calls_in_flight_ > map_calls_in_flight_) {
      return;
    }
    // What is left are the requests of a map load that has ended (its
    // replies would be dropped): failed here, they come back through this.
    pool_.CloseAll(ClosedStatus());
    if (calls_in_flight_ == 0) loop_.Stop();
  }

  // Sends an operation's request; `done` gets the reply. Close() waits for it.
  void CallForOp(const std::string& address, const proto::Body& body, uint64_t timeout_ms,
                 std::function<void(Reply)> done) {
    ++calls_in_flight_;
    pool_.Call(address, body, timeout_ms, [this, done = std::move(done)](Reply r) {
      --calls_in_flight_;
      done(std::move(r));
      StopIfClosed();
    });
  }

  // A map load's request: once the load has ended Close() no longer waits
  // for it (StopIfClosed).
  void CallForMap(const std::string& address, const proto::Body& body, uint64_t timeout_ms,
                  std::function<void(Reply)> done) {
    ++map_calls_in_flight_;
    CallForOp(address, body, timeout_ms, [this, done = std::move(done)](Reply r) {
      --map_calls_in_flight_;
      done(std::move(r));
    });
  }

  static Status ClosedStatus() { return Status::Aborted("client closed"); }

  // Whether calls may still start: not once closing, nor in a forked child.
  Status Usable() const {
    if (closing_) return ClosedStatus();
    if (InForkedChild()) {
      return Status::Aborted(
          "the client was opened before this process forked; a child must open its own");
    }
    return Status::OK();
  }

  // Work a call from another thread hands to the I/O thread is counted from
  // before the call checks closing_ until it has run, so a close never
  // stops the loop with it still posted (it would never run, and a blocking
  // caller would wait forever). Enter, then check closing_; then PostEntered
  // the work, or Leave. On the I/O thread itself nothing is counted, and the
  // work is deferred to the end of the loop's pass (no wake-up, and the
  // caller's callback finishes first).
  bool Enter() {
    if (loop_.InLoopThread()) return false;
    ++posted_from_outside_;
    return true;
  }
  void Leave(bool entered) {
    if (!entered) return;
    --posted_from_outside_;
    // A close may be waiting for this count alone (not once the loop has
    // stopped: nothing would run it, and calls on a closed client would
    // pile posts up).
    if (closing_ && !stopped_) loop_.Post([this] { StopIfClosed(); });
  }
  void PostEntered(bool entered, std::function<void()> fn) {
    if (!entered) {
      loop_.Defer(std::move(fn));
      return;
    }
    loop_.Post([this, fn = std::move(fn)] {
      fn();
      --posted_from_outside_;
      StopIfClosed();
    });
  }

  Status Start() {
    for (const std::string& s : options_.seeds) {
      Result<net::Endpoint> ep = net::ParseEndpoint(s);
      if (!ep.ok()) return ep.status().Annotate("seed");
      seeds_.push_back(ep->ToString());
    }
    io_ = std::thread([this] {
      loop_.Run();
      stopped_ = true;
      if (free_when_stopped_) delete this;
    });
    loop_.Post([this] {
      refresh_timer_ = std::make_unique<net::Timer>(loop_);
      refresh_timer_->Start(options_.refresh_interval_ms, options_.refresh_interval_ms,
                            [this] { RefreshNow(nullptr); });
    });
    return Refresh();
  }

  Status Refresh() {
    const bool entered = Enter();
    if (Status s = CheckMayBlock(); !s.ok()) {
      Leave(entered);
      return s;
    }
    std::promise<Status> p;
    PostEntered(entered, [this, &p] { RefreshNow([&p](Status s) { p.set_value(std::move(s)); }); });
    return p.get_future().get();
  }

  const ClientOptions& options() const { return options_; }
  net::EventLoop& loop() { return loop_; }

  // Blocking calls wait for the I/O thread: made on it, or once it has
  // stopped, they would wait forever.
  Status CheckMayBlock() const {
    DYNAMO_RETURN_IF_ERROR(Usable());
    if (!loop_.InLoopThread()) return Status::OK();
    return Status::InvalidArgument(
        "blocking client call on the client's I/O thread; use the async form");
  }

  // ---------------------------------------------------------------- view

  struct View {
    ClusterMap map;
    std::map<NodeId, proto::Member> members;
  };

  std::shared_ptr<const View> view() const { return view_.load(); }

  // Called on the I/O thread. `done` (may be null) gets the outcome.
  void RefreshNow(std::function<void(Status)> done) {
    std::vector<std::string> candidates;
    if (auto v = view()) {
      for (const auto& [id, m] : v->members) {
        if (m.status != proto::MemberStatus::kRemoved && m.alive && Healthy(id)) candidates.push_back(m.address);
      }
    }
    std::shuffle(candidates.begin(), candidates.end(), rng_);
    const auto members = static_cast<std::ptrdiff_t>(candidates.size());
    for (const std::string& s : seeds_) {
      if (std::find(candidates.begin(), candidates.begin() + members, s) ==
          candidates.begin() + members) {
        candidates.push_back(s);
      }
    }
    std::shuffle(candidates.begin() + members, candidates.end(), rng_);
    // Last, the members the last view showed down or this client backs off
    // from: once the seeds are gone they may be all that is left to ask.
    const auto asked = static_cast<std::ptrdiff_t>(candidates.size());
    if (auto v = view()) {
      for (const auto& [id, m] : v->members) {
        if (m.status != proto::MemberStatus::kRemoved &&
            std::find(candidates.begin(), candidates.end(), m.address) == candidates.end()) {
          candidates.push_back(m.address);
        }
      }
    }
    std::shuffle(candidates.begin() + asked, candidates.end(), rng_);
    if (refreshing_) {
      if (done) refresh_waiters_.push_back(std::move(done));
      return;
    }
    refreshing_ = true;
    if (done) refresh_waiters_.push_back(std::move(done));
    last_refresh_ms_ = loop_.NowMs();
    auto load = std::make_shared<MapLoad>(std::move(candidates), options_.timeout_ms);
    map_load_ = load;
    AskForMap(load, load->plan.Start(loop_.NowMs()));
  }

  // The refresh running: its candidates' addresses and whom to ask when.
  struct MapLoad {
    MapLoad(std::vector<std::string> c, uint64_t timeout_ms)
        : candidates(std::move(c)), plan(candidates.size(), timeout_ms) {}
    std::vector<std::string> candidates;
    client::MapFetch plan;
  };

  // Asks the candidates `ask` for the map and arms the load's next timer.
  void AskForMap(const std::shared_ptr<MapLoad>& load, const std::vector<size_t>& ask) {
    if (closing_) {
      FinishMapLoad(load, ClosedStatus());
      return;
    }
    for (size_t i : ask) AskOneForMap(load, i);
    if (load->plan.done()) {
      FinishMapLoad(load, load->plan.status());
      return;
    }
    if (!map_load_timer_) map_load_timer_ = std::make_unique<net::Timer>(loop_);
    const uint64_t now = loop_.NowMs();
    const uint64_t at = load->plan.timer_ms();
    map_load_timer_->Start(at > now ? at - now : 0, 0, [this, load] {
      if (map_load_ == load) AskForMap(load, load->plan.OnTimer(loop_.NowMs()));
    });
  }

  void AskOneForMap(const std::shared_ptr<MapLoad>& load, size_t i) {
    const std::string& address = load->candidates[i];
    // Replies after the load ended (answered, failed, or the client
    // closing) are dropped.
    auto failed = [this, load, i](Status s) {
      if (map_load_ == load) AskForMap(load, load->plan.OnFailure(i, std::move(s), loop_.NowMs()));
    };
    CallForMap(
        address, proto::RingRequest{}, load->plan.remaining_ms(loop_.NowMs()),
        [=, this](Reply ring) {
          if (map_load_ != load) return;
          if (!ring.message.ok() || !std::holds_alternative<proto::RingReply>(ring.message->body)) {
            failed(ReplyError(ring, address));
            return;
          }
          Result<ClusterMap> map =
              ClusterMap::FromPeer(std::get<proto::RingReply>(ring.message->body).ring);
          if (!map.ok()) {
            failed(map.status().Annotate(address));
            return;
          }
          auto parsed = std::make_shared<ClusterMap>(std::move(*map));
          CallForMap(address, proto::MembersRequest{}, load->plan.remaining_ms(loop_.NowMs()),
                     [=, this](Reply members) {
                       if (map_load_ != load) return;
                       if (!members.message.ok() ||
                           !std::holds_alternative<proto::MembersReply>(members.message->body)) {
                         failed(ReplyError(members, address));
                         return;
                       }
                       auto v = std::make_shared<View>(View{*parsed, {}});
                       for (proto::Member& m :
                            std::get<proto::MembersReply>(members.message->body).members) {
                         v->members[m.id] = std::move(m);
                       }
                       std::shared_ptr<const View> old = view();
                       if (!old || old->map.epoch() <= v->map.epoch()) view_.store(v);
                       ++stats_.refreshes;
                       load->plan.OnAnswer(i);
                       FinishMapLoad(load, Status::OK());
                     });
        });
  }

  void FinishMapLoad(std::shared_ptr<MapLoad> load, Status s) {
    if (map_load_ != load) return;
    map_load_.reset();
    if (map_load_timer_) map_load_timer_->Stop();
    FinishRefresh(std::move(s));
  }

  void FinishRefresh(Status s) {
    refreshing_ = false;
    std::vector<std::function<void(Status)>> waiters;
    waiters.swap(refresh_waiters_);
    for (auto& w : waiters) w(s);
  }

  void NoteEpoch(uint64_t epoch) {
    std::shared_ptr<const View> v = view();
    if (v && epoch > v->map.epoch() && loop_.NowMs() >= last_refresh_ms_ + kEpochRefreshGapMs) {
      RefreshNow(nullptr);
    }
  }

  // ---------------------------------------------------------------- health

  bool Healthy(const NodeId& id) { return nodes_.Healthy(id, loop_.NowMs()); }

  client::Health HealthView(const std::shared_ptr<const View>& v) {
    return client::Health{
        [this, v](const NodeId& id) {
          auto m = v->members.find(id);
          if (m != v->members.end() &&
              (!m->second.alive || m->second.status == proto::MemberStatus::kRemoved)) {
            return false;
          }
          return Healthy(id);
        },
        [v](const NodeId& id) {
          auto m = v->members.find(id);
          return m == v->members.end() ? std::string() : m->second.address;
        }};
  }

  bool AnyUnhealthy() { return nodes_.AnyBackingOff(loop_.NowMs()); }

  // The key's route. While no node is backing off, routes depend only on
  // the view, so each partition's is planned once per view.
  std::shared_ptr<const Route> RouteFor(const std::shared_ptr<const View>& v,
                                        std::string_view key) {
    const PartitionId p = v->map.ring().KeyPartition(key);
    if (AnyUnhealthy()) {
      return std::make_shared<const Route>(client::PlanRoute(v->map, p, HealthView(v)));
    }
    if (routes_view_ != v) {
      routes_view_ = v;
      routes_.assign(v->map.ring().partition_count(), nullptr);
    }
    std::shared_ptr<const Route>& cached = routes_[p];
    if (!cached) cached = std::make_shared<const Route>(client::PlanRoute(v->map, p, HealthView(v)));
    return cached;
  }

  void Observe(const std::string& node, const Reply& r) {
    if (!node.empty()) nodes_.Observe(node, client::SignalOf(r), loop_.NowMs());
  }

  // ---------------------------------------------------------------- transport

  static Status ReplyError(const Reply& r, const std::string& address) {
    if (!r.message.ok()) return r.message.status();
    if (const auto* e = std::get_if<proto::ErrorReply>(&r.message->body)) {
      return proto::ToStatus(*e).Annotate(address);
    }
    return Status::ProtocolError("unexpected reply from " + address);
  }

  // ---------------------------------------------------------------- operations

  Status CheckValue(size_t bytes) const {
    if (bytes <= options_.value_bytes_max) return Status::OK();
    return Status::InvalidArgument("value of " + std::to_string(bytes) +
                                   " bytes exceeds value_bytes_max (" +
                                   std::to_string(options_.value_bytes_max) + ")");
  }

  static Status CheckTimeout(uint64_t timeout_ms) {
    if (timeout_ms <= kTimeoutMsMax) return Status::OK();
    return Status::InvalidArgument("timeout must be at most " + std::to_string(kTimeoutMsMax) +
                                   " ms (a week)");
  }

  Status CheckKey(std::string_view key) const {
    if (key.empty()) return Status::InvalidArgument("empty key");
    if (key.size() > options_.key_bytes_max) {
      return Status::InvalidArgument("key of " + std::to_string(key.size()) +
                                     " bytes exceeds key_bytes_max (" +
                                     std::to_string(options_.key_bytes_max) + ")");
    }
    return Status::OK();
  }

  // R or W against the replicas a key has: N, or fewer while the ring has
  // fewer nodes (a write past them would be applied and still fail).
  Status CheckQuorum(const char* name, int value, const View& v) const {
    const auto& ring = v.map.ring();
    const size_t n = std::min<size_t>(ring.replicas(), ring.nodes().size());
    if (value < 1 || static_cast<size_t>(value) > n) {
      return Status::InvalidArgument(std::string(name) + "=" + std::to_string(value) +
                                     " must be from 1 to " + std::to_string(n) +
                                     " (N=" + std::to_string(ring.replicas()) + ", " +
                                     std::to_string(ring.nodes().size()) + " nodes in the ring)");
    }
    return Status::OK();
  }

  // One operation in flight: the state machine, its deadline and its caller.
  template <typename Op, typename Value>
  struct OpState {
    template <typename Request>
    OpState(net::EventLoop& loop, std::shared_ptr<const Route> route, Request&& request)
        : op(std::move(route), std::forward<Request>(request)), timer(loop) {}
    Op op;
    uint64_t deadline = 0;
    uint64_t timeout_ms = 0;
    Receipt* receipt_out = nullptr;
    std::function<void(Result<Value>)> done;
    net::Timer timer;
    bool reported = false;
    bool repair_due = false;  // reads: answered, repair still to send
  };
  using WriteState = OpState<WriteOp, std::string>;
  using ReadState = OpState<ReadOp, GetResult>;

  // A state for an op on `route`, whose deadline timer calls OnDeadline and
  // then `finish`.
  template <typename State, typename Request>
  std::shared_ptr<State> Launch(std::shared_ptr<const Route> route, Request&& request,
                                uint64_t timeout_ms, Receipt* receipt, decltype(State::done) done,
                                void (Impl::*finish)(const std::shared_ptr<State>&)) {
    auto state = std::make_shared<State>(loop_, std::move(route), std::forward<Request>(request));
    ++running_ops_;
    state->deadline = loop_.NowMs() + timeout_ms;
    state->timeout_ms = timeout_ms;
    state->receipt_out = receipt;
    state->done = std::move(done);
    // Timers hold the state weakly: it owns them, and outstanding calls keep it alive.
    state->timer.Start(timeout_ms, 0, [this, finish, weak = std::weak_ptr<State>(state)] {
      if (auto s = weak.lock()) {
        s->op.OnDeadline();
        if (std::optional<size_t> late = s->op.awaited_past_deadline())
          Observe(s->op.target(*late).node, client::DeadlineReply());
        (this->*finish)(s);
      }
    });
    return state;
  }

  // Runs on the I/O thread.
  void StartWrite(std::string key, std::string value, bool tombstone, WriteOptions opts,
                  std::function<void(Result<std::string>)> done) {
    if (closing_) {
      done(ClosedStatus());
      return;
    }
    if (tombstone && opts.context.empty() && options_.mode == Mode::kCausal) {
      ReadThenDelete(std::move(key), std::move(opts), std::move(done));
      return;
    }
    SendWrite(std::move(key), std::move(value), tombstone, std::move(opts), std::move(done));
  }

  // A causal tombstone without a context would stand beside the stored
  // values as one more sibling and delete nothing: the delete reads the key
  // first (R, within the delete's timeout) and deletes what that read saw.
  void ReadThenDelete(std::string key, WriteOptions opts,
                      std::function<void(Result<std::string>)> done) {
    const uint64_t timeout_ms = opts.timeout_ms ? opts.timeout_ms : options_.timeout_ms;
    const uint64_t deadline = loop_.NowMs() + timeout_ms;
    std::string read_key = key;
    StartRead(std::move(read_key), ReadOptions{0, timeout_ms, nullptr},
              [this, key = std::move(key), opts = std::move(opts), deadline,
               done = std::move(done)](Result<GetResult> read) mutable {
                if (!read.ok()) {
                  done(read.status());
                  return;
                }
                const uint64_t now = loop_.NowMs();
                if (now >= deadline) {
                  done(Status::Timeout("the delete's read took its whole timeout"));
                  return;
                }
                opts.context = std::move(read->context);
                opts.timeout_ms = deadline - now;
                SendWrite(std::move(key), "", true, std::move(opts), std::move(done));
              });
  }

  // Runs on the I/O thread: the write itself, once it has its context.
  void SendWrite(std::string key, std::string value, bool tombstone, WriteOptions opts,
                 std::function<void(Result<std::string>)> done) {
    std::shared_ptr<const View> v = view();
    if (!v) {
      done(Status::Unavailable("no cluster map yet"));
      return;
    }
    client::WriteRequest req;
    req.key = std::move(key);
    req.value = std::move(value);
    req.tombstone = tombstone;
    req.w = opts.w > 0 ? opts.w : options_.w;
    req.wall_ms = WallMicros() / 1000;
    req.op_id = rng_() | 1;
    req.durable = opts.durable.value_or(options_.durable_writes);
    if (options_.coordinator == Coordinator::kClientRanked)
      req.coordinator_rank_salt = client::CoordinatorRankSalt(client_id_);
    Status valid = CheckQuorum("w", req.w, *v);
    if (valid.ok() && !opts.context.empty()) {
      Result<client::DecodedContext> ctx = client::DecodeContext(opts.context);
      if (ctx.ok() && ctx->key_hash && *ctx->key_hash != client::ContextKeyHash(req.key)) {
        valid = Status::InvalidArgument(
            "the context is from a read or write of another key; a write with it would "
            "supersede versions of this key it never saw");
      } else if (ctx.ok()) {
        req.context = std::move(ctx->clock);
        req.preferred_coordinator = std::move(ctx->fastest);
        req.reached = std::move(ctx->reached);
      } else {
        valid = ctx.status();
      }
    }
    if (!valid.ok()) {
      ++stats_.errors;
      done(valid);
      return;
    }
    if (options_.mode == Mode::kLww) {
      req.lww = true;
      last_lww_us_ = std::max(WallMicros(), last_lww_us_ + 1);
      req.lww_dot = Dot{client_id_, last_lww_us_};
    }
    std::shared_ptr<const Route> route = RouteFor(v, req.key);
    if (req.coordinator_rank_salt != 0)
      nodes_.AddHeardPrimaries(*route, loop_.NowMs(), &req.reached);
    auto state = Launch<WriteState>(std::move(route), std::move(req),
                                    opts.timeout_ms ? opts.timeout_ms : options_.timeout_ms,
                                    opts.receipt, std::move(done), &Impl::FinishWrite);
    Dispatch(state, state->op.Start(), &Impl::FinishWrite);
    FinishWrite(state);
  }

  // Sends an operation's messages; each reply may yield more, and after
  // each one `finish` reports the operation once it is done.
  template <class State>
  void Dispatch(const std::shared_ptr<State>& state, std::vector<Send> sends,
                void (Impl::*finish)(const std::shared_ptr<State>&)) {
    for (Send& s : sends) {
      // The op keeps its targets, and the callback keeps the op.
      const client::Target* t = &state->op.target(s.target);
      const size_t idx = s.target;
      const uint64_t wait = client::AnswerWaitMs(
          s, state->reported ? 0 : client::RemainingMs(state->deadline, loop_.NowMs()),
          state->timeout_ms);
      CallForOp(t->address, s.body, wait, [this, state, idx, t, finish](Reply r) {
        Observe(t->node, r);
        const size_t redirects = state->op.redirects();
        size_t hints = 0;
        if constexpr (std::is_same_v<State, WriteState>) hints = state->op.hints();
        std::vector<Send> next = state->op.OnReply(idx, std::move(r));
        stats_.redirects += state->op.redirects() - redirects;
        // Also those stored after the write reported (W met first).
        if constexpr (std::is_same_v<State, WriteState>) stats_.hints += state->op.hints() - hints;
        Dispatch(state, std::move(next), finish);
        (this->*finish)(state);
      });
    }
  }

  void FinishWrite(const std::shared_ptr<WriteState>& state) {
    WriteOp& op = state->op;
    if (!op.done() || state->reported) return;
    state->reported = true;
    state->timer.Stop();
    NoteEpoch(op.highest_epoch());
    if (state->receipt_out) *state->receipt_out = op.receipt();
    if (!op.status().ok()) ++stats_.errors;
    auto done = std::move(state->done);
    if (op.status().ok()) {
      done(client::EncodeContext(op.clock(), "", op.reached(), client::ContextKeyHash(op.key())));
    } else {
      done(op.status());
    }
    --running_ops_;
    StopIfClosed();
  }

  void StartRead(std::string key, ReadOptions opts, std::function<void(Result<GetResult>)> done) {
    if (closing_) {
      done(ClosedStatus());
      return;
    }
    std::shared_ptr<const View> v = view();
    if (!v) {
      done(Status::Unavailable("no cluster map yet"));
      return;
    }
    client::ReadRequest req{std::move(key), opts.r > 0 ? opts.r : options_.r};
    Status valid = CheckQuorum("r", req.r, *v);
    if (!valid.ok()) {
      ++stats_.errors;
      done(valid);
      return;
    }
    std::shared_ptr<const Route> route = RouteFor(v, req.key);
    auto state = Launch<ReadState>(std::move(route), std::move(req),
                                   opts.timeout_ms ? opts.timeout_ms : options_.timeout_ms,
                                   opts.receipt, std::move(done), &Impl::FinishRead);
    Dispatch(state, state->op.Start(), &Impl::FinishRead);
    FinishRead(state);
  }

  void FinishRead(const std::shared_ptr<ReadState>& state) {
    ReadOp& op = state->op;
    if (op.answered() && !state->reported) {
      state->reported = true;
      NoteEpoch(op.highest_epoch());
      if (state->receipt_out) *state->receipt_out = op.receipt();
      auto done = std::move(state->done);
      if (!op.status().ok()) {
        ++stats_.errors;
        state->timer.Stop();
        done(op.status());
      } else {
        GetResult result;
        for (const Version& v : op.siblings()) {
          if (!v.tombstone) result.values.push_back(v.value);
        }
        result.found = !result.values.empty();
        result.context = client::EncodeContext(ContextOf(op.siblings()), op.fastest(), op.reached(),
                                               client::ContextKeyHash(op.key()));
        done(std::move(result));
        // Wait a little for the rest, then repair whoever answered stale.
        state->repair_due = true;
        state->timer.Start(options_.read_repair_window_ms, 0,
                           [this, weak = std::weak_ptr<ReadState>(state)] {
                             if (auto s = weak.lock()) RepairRead(s);
                           });
      }
      // Before the count drops: a close (from `done`, or another thread)
      // that found no operation left would stop the loop under the repairs.
      if (state->repair_due && op.all_in()) RepairRead(state);
      --running_ops_;
      StopIfClosed();
    }
    if (state->repair_due && op.all_in()) RepairRead(state);
  }

  void RepairRead(const std::shared_ptr<ReadState>& state) {
    if (!state->repair_due) return;
    state->repair_due = false;
    state->timer.Stop();
    std::vector<Send> repairs = state->op.Repair();
    stats_.read_repairs += repairs.size();
    for (Send& s : repairs) {
      const client::Target& t = state->op.target(s.target);
      const std::string node = t.node;
      CallForOp(t.address, s.body, options_.timeout_ms,
                [this, node](Reply r) { Observe(node, r); });
    }
  }

  // ---------------------------------------------------------------- public surface

  // Counts an operation in progress until its `done` runs (wrapping it);
  // Busy, uncounted, at options_.operations_max.
  template <class T>
  Status Admit(std::function<void(Result<T>)>& done) {
    if (in_progress_.fetch_add(1, std::memory_order_relaxed) >= options_.operations_max) {
      in_progress_.fetch_sub(1, std::memory_order_relaxed);
      return Status::Busy("the client has " + std::to_string(options_.operations_max) +
                          " operations in progress (ClientOptions::operations_max)");
    }
    done = [this, inner = std::move(done)](Result<T> r) {
      in_progress_.fetch_sub(1, std::memory_order_relaxed);
      inner(std::move(r));
    };
    return Status::OK();
  }

  // An async call refused before it started: `done` runs on the I/O thread,
  // not inside the call, as for any other outcome (a callback that calls
  // again at a limit does not recurse), except once the client is closed or
  // in a forked child, where no I/O thread may run it: then at once.
  template <class T>
  void Refuse(bool entered, Status usable, Status why, std::function<void(Result<T>)>& done) {
    ++stats_.errors;
    if (!usable.ok()) {
      Leave(entered);
      done(std::move(usable));
      return;
    }
    // On the I/O thread too it waits for the loop's next pass (Post, counted
    // as work from outside), not the end of this one (Defer): a callback
    // that calls again at once on Busy ran again within the same pass, for
    // ever, and the operation it waited for never got its reply.
    if (!entered) ++posted_from_outside_;
    PostEntered(true, [why = std::move(why), done = std::move(done)] { done(why); });
  }

  void GetAsync(std::string key, ReadOptions opts, std::function<void(Result<GetResult>)> done) {
    ++stats_.gets;
    EmptyReceipt(opts);
    const bool entered = Enter();
    const Status usable = Usable();
    Status k = usable;
    if (k.ok()) k = CheckKey(key);
    if (k.ok()) k = CheckTimeout(opts.timeout_ms);
    if (k.ok()) k = Admit(done);
    if (!k.ok()) {
      Refuse(entered, usable, std::move(k), done);
      return;
    }
    PostEntered(entered, [this, key = std::move(key), opts, done = std::move(done)]() mutable {
      StartRead(std::move(key), opts, std::move(done));
    });
  }

  void WriteAsync(std::string key, std::string value, bool tombstone, WriteOptions opts,
                  std::function<void(Result<std::string>)> done) {
    ++(tombstone ? stats_.deletes : stats_.puts);
    EmptyReceipt(opts);
    const bool entered = Enter();
    const Status usable = Usable();
    Status k = usable;
    if (k.ok()) k = CheckKey(key);
    if (k.ok()) k = CheckValue(value.size());
    if (k.ok()) k = CheckTimeout(opts.timeout_ms);
    if (k.ok()) k = Admit(done);
    if (!k.ok()) {
      Refuse(entered, usable, std::move(k), done);
      return;
    }
    PostEntered(entered, [this, key = std::move(key), value = std::move(value), tombstone, opts,
                          done = std::move(done)]() mutable {
      StartWrite(std::move(key), std::move(value), tombstone, std::move(opts), std::move(done));
    });
  }

  std::vector<Placement> Where(std::string_view key) const {
    std::vector<Placement> out;
    std::shared_ptr<const View> v = view();
    if (!v) return out;
    const dynamo::Ring& ring = v->map.ring();
    const PartitionId p = ring.KeyPartition(key);
    auto place = [&](const NodeId& id, const char* role) {
      Placement pl{id, "", "unknown", role};
      auto m = v->members.find(id);
      if (m != v->members.end()) {
        pl.address = m->second.address;
        pl.state = StateName(m->second);
      }
      out.push_back(std::move(pl));
    };
    std::vector<NodeId> pref = ring.PreferenceList(p);
    for (const NodeId& id : pref) place(id, "primary");
    for (const NodeId& id : v->map.PendingReplicas(p)) place(id, "pending");
    std::vector<NodeId> ext = ring.ExtendedList(p);
    for (size_t i = pref.size(); i < ext.size(); ++i) place(ext[i], "fallback");
    return out;
  }

  Result<std::vector<ReplicaVersions>> Inspect(std::string_view key) {
    DYNAMO_RETURN_IF_ERROR(CheckKey(key));
    std::vector<ReplicaVersions> out;
    const bool entered = Enter();
    if (Status s = CheckMayBlock(); !s.ok()) {
      Leave(entered);
      return s;
    }
    std::shared_ptr<const View> v = view();
    std::vector<NodeId> nodes;
    if (v) {
      const PartitionId p = v->map.ring().KeyPartition(key);
      nodes = v->map.ring().PreferenceList(p);
      for (NodeId& n : v->map.PendingReplicas(p)) nodes.push_back(std::move(n));
    }
    if (nodes.empty()) {
      Leave(entered);
      return out;
    }
    out.resize(nodes.size());
    std::promise<void> all;
    auto left = std::make_shared<std::atomic<size_t>>(nodes.size());
    PostEntered(entered, [&, key = std::string(key)] {
      for (size_t i = 0; i < nodes.size(); ++i) {
        out[i].node = nodes[i];
        auto m = v->members.find(nodes[i]);
        std::string address = m == v->members.end() ? "" : m->second.address;
        CallForOp(
            address, proto::GetRequest{key, ""}, options_.timeout_ms,
            [&, i, left, address](Reply r) {
              if (r.message.ok() && std::holds_alternative<proto::GetReply>(r.message->body)) {
                for (const Version& ver : std::get<proto::GetReply>(r.message->body).siblings) {
                  out[i].versions.push_back(ReplicaVersions::Version{
                      DotString(ver.dot), ver.value, ver.tombstone, ver.lww, ver.timestamp_ms,
                      client::ClockString(ver.context)});
                }
              } else {
                out[i].error = ReplyError(r, address).ToString();
              }
              if (--*left == 0) all.set_value();
            });
      }
    });
    all.get_future().get();
    // Closed meanwhile: some replicas' errors would say only that.
    if (closing_) return ClosedStatus();
    return out;
  }

  std::vector<MemberInfo> Members() const {
    std::vector<MemberInfo> out;
    std::shared_ptr<const View> v = view();
    if (!v) return out;
    for (const auto& [id, m] : v->members) {
      if (m.status == proto::MemberStatus::kRemoved) continue;
      out.push_back(MemberInfo{id, m.address, StateName(m), v->map.ring().PartitionsOwnedBy(id).size()});
    }
    return out;
  }

  Client::RingInfo RingDescription() const {
    Client::RingInfo info;
    std::shared_ptr<const View> v = view();
    if (!v) return info;
    const dynamo::Ring& ring = v->map.ring();
    info.epoch = v->map.epoch();
    info.partitions = ring.partition_count();
    info.replicas = ring.replicas();
    for (PartitionId p = 0; p < ring.partition_count(); ++p) info.owners.push_back(ring.Owner(p));
    return info;
  }

  Client::Stats stats() const {
    return Client::Stats{stats_.gets.load(),    stats_.puts.load(),
                         stats_.deletes.load(), stats_.read_repairs.load(),
                         stats_.hints.load(),   stats_.refreshes.load(),
                         stats_.errors.load(),  stats_.redirects.load()};
  }

 private:
  struct AtomicStats {
    std::atomic<uint64_t> gets{0}, puts{0}, deletes{0}, read_repairs{0}, hints{0}, refreshes{0},
        errors{0}, redirects{0};
  };

  net::ConnectionOptions PoolOptions() const {
    net::ConnectionOptions o;
    o.limits = limits_;
    o.idle_timeout_ms = net::kPoolIdleTimeoutMs;
    return o;
  }

  ClientOptions options_;
  proto::Limits limits_;
  std::mt19937_64 rng_;
  std::mutex join_mu_;  // Close() from several threads
  uint64_t client_id_ = 0;
  std::vector<std::string> seeds_;
  net::EventLoop loop_;
  net::ConnectionPool pool_{loop_, PoolOptions(), kConnectTimeoutMs};
  std::thread io_;
  std::atomic<bool> closing_{false};  // set once Close() begins
  std::atomic<bool> stopped_{false};  // set once the loop has returned
  const uint64_t forks_at_open_ = ForksSeen();
  bool free_when_stopped_ = false;    // I/O thread
  std::atomic<std::shared_ptr<const View>> view_;
  // I/O thread only.
  client::NodeTracker nodes_;
  // Routes planned with every node healthy, per partition, for routes_view_.
  std::shared_ptr<const View> routes_view_;
  std::vector<std::shared_ptr<const Route>> routes_;
  std::unique_ptr<net::Timer> refresh_timer_;
  std::unique_ptr<net::Timer> close_timer_;
  bool refreshing_ = false;
  std::shared_ptr<MapLoad> map_load_;  // the refresh running
  std::unique_ptr<net::Timer> map_load_timer_;
  std::vector<std::function<void(Status)>> refresh_waiters_;
  uint64_t last_refresh_ms_ = 0;
  uint64_t last_lww_us_ = 0;
  size_t running_ops_ = 0;  // launched and not yet reported
  size_t calls_in_flight_ = 0;          // operations' requests not yet answered
  size_t map_calls_in_flight_ = 0;      // of those, map loads' (CallForMap)
  std::atomic<size_t> posted_from_outside_{0};  // see Enter()
  std::atomic<size_t> in_progress_{0};  // admitted and not yet reported (any thread)
  AtomicStats stats_;
};

Result<std::unique_ptr<Client>> Client::Open(ClientOptions options) {
  if (options.seeds.empty()) return Status::InvalidArgument("at least one seed (HOST:PORT) is required");
  if (options.r < 1 || options.w < 1) return Status::InvalidArgument("r and w must be at least 1");
  if (options.timeout_ms == 0 || options.timeout_ms > kTimeoutMsMax) {
    return Status::InvalidArgument("timeout must be from 1 to " + std::to_string(kTimeoutMsMax) +
                                   " ms (a week)");
  }
  if (options.refresh_interval_ms == 0) return Status::InvalidArgument("refresh interval must be positive");
  if (options.operations_max == 0)
    return Status::InvalidArgument("operations_max must be positive");
  if (options.key_bytes_max == 0 || options.key_bytes_max > proto::kKeyBytesCeiling) {
    return Status::InvalidArgument("key_bytes_max must be 1 to " +
                                   std::to_string(proto::kKeyBytesCeiling));
  }
  if (options.value_bytes_max == 0 || options.value_bytes_max > proto::kValueBytesCeiling) {
    return Status::InvalidArgument("value_bytes_max must be 1 to " +
                                   std::to_string(proto::kValueBytesCeiling));
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  Status s = impl->Start();
  if (!s.ok()) return s;
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
// Closes before the members go, so calls made from callbacks meanwhile
// reach a whole client.
Client::~Client() {
  if (impl_->InForkedChild()) {
    // The parent's: its thread is not here to join, and closing its loop
    // would change the epoll instance the parent's loop shares. Left as is.
    (void)impl_.release();
    return;
  }
  if (impl_->loop().InLoopThread()) {
    Impl::CloseAndFreeOnIoThread(std::move(impl_));
  } else {
    impl_->Close();
  }
}
void Client::Close() {
  if (!impl_->InForkedChild()) impl_->Close();
}

const ClientOptions& Client::options() const { return impl_->options(); }
Status Client::Refresh() { return impl_->Refresh(); }
Client::Stats Client::stats() const { return impl_->stats(); }
std::vector<Placement> Client::Where(std::string_view key) const { return impl_->Where(key); }
Result<std::vector<ReplicaVersions>> Client::Inspect(std::string_view key) {
  return impl_->Inspect(key);
}
std::vector<MemberInfo> Client::Members() const { return impl_->Members(); }
Client::RingInfo Client::Ring() const { return impl_->RingDescription(); }

void Client::GetAsync(std::string key, ReadOptions options, std::function<void(Result<GetResult>)> done) {
  impl_->GetAsync(std::move(key), options, std::move(done));
}

void Client::PutAsync(std::string key, std::string value, WriteOptions options,
                      std::function<void(Result<std::string>)> done) {
  impl_->WriteAsync(std::move(key), std::move(value), false, std::move(options), std::move(done));
}

void Client::DeleteAsync(std::string key, WriteOptions options, std::function<void(Result<std::string>)> done) {
  impl_->WriteAsync(std::move(key), "", true, std::move(options), std::move(done));
}

net::EventLoop& Client::io_loop() { return impl_->loop(); }

Result<GetResult> Client::Get(std::string_view key, const ReadOptions& options) {
  EmptyReceipt(options);
  DYNAMO_RETURN_IF_ERROR(impl_->CheckMayBlock());
  DYNAMO_RETURN_IF_ERROR(impl_->CheckKey(key));  // before the copy below
  std::promise<Result<GetResult>> p;
  impl_->GetAsync(std::string(key), options, [&p](Result<GetResult> r) { p.set_value(std::move(r)); });
  Result<GetResult> r = p.get_future().get();
  if (r.ok() && r->values.size() > 1 && impl_->options().resolver) {
    std::string merged = impl_->options().resolver(r->values);
    r->values = {std::move(merged)};
  }
  return r;
}

Result<std::string> Client::Put(std::string_view key, std::string_view value, const WriteOptions& options) {
  EmptyReceipt(options);
  DYNAMO_RETURN_IF_ERROR(impl_->CheckMayBlock());
  // Before the copies below.
  DYNAMO_RETURN_IF_ERROR(impl_->CheckKey(key));
  DYNAMO_RETURN_IF_ERROR(impl_->CheckValue(value.size()));
  std::promise<Result<std::string>> p;
  impl_->WriteAsync(std::string(key), std::string(value), false, options,
                    [&p](Result<std::string> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

Result<std::string> Client::Delete(std::string_view key, const WriteOptions& options) {
  EmptyReceipt(options);
  DYNAMO_RETURN_IF_ERROR(impl_->CheckMayBlock());
  DYNAMO_RETURN_IF_ERROR(impl_->CheckKey(key));  // before the copy below
  std::promise<Result<std::string>> p;
  impl_->WriteAsync(std::string(key), "", true, options, [&p](Result<std::string> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

}  // namespace dynamo
