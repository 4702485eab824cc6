#include "sim_cluster.h"

#include <cstdlib>
#include <iostream>
#include <iterator>

#include "dynamo/node/keys.h"
#include "dynamo/node/node_state.h"
#include "dynamo/placement.h"
#include "dynamo/proto/codec.h"
#include "support/corrupting_engine.h"

namespace dynamo::sim {

struct SimCluster::Node {
  std::string id;
  node::NodeOptions options;
  std::shared_ptr<node::MemoryEngine> engine;
  std::unique_ptr<node::NodeCore> core;
  uint64_t gen = 0;
  bool up = false;
  bool exited = false;
  std::string exit_reason;
  std::set<std::string> corrupt;        // stored data keys whose reads fail their checksum
  std::set<std::string> corrupt_hints;  // stored hint keys whose reads fail their checksum
};

namespace {

// The node's engine as its reads see it: the data keys CorruptDataKey named,
// and the hint CorruptFirstHint named, fail their checksum.
test::CorruptingEngine CorruptView(node::Engine& engine, const std::set<std::string>& corrupt,
                                   const std::set<std::string>& corrupt_hints) {
  return test::CorruptingEngine(
      engine, [&corrupt, &corrupt_hints](node::Space space, std::string_view key) {
        const std::set<std::string>& bad = space == node::Space::kData ? corrupt : corrupt_hints;
        return space != node::Space::kMeta && bad.count(std::string(key)) > 0;
      });
}

// Sends a message through the codec, as the wire would: decoded against the
// receiver's limits.
Result<proto::Message> OverTheWire(const proto::Message& msg, const proto::Limits& limits) {
  std::string frame = proto::EncodeFrame(msg);
  return proto::DecodeMessage(std::string_view(frame).substr(proto::kFrameHeaderBytes), limits);
}

bool Verbose() {
  static const bool verbose = std::getenv("DYNAMO_SIM_LOG") != nullptr;
  return verbose;
}

}  // namespace

SimCluster::SimCluster(uint64_t seed, SimOptions options) : options_(options), rng_(seed) {}

SimCluster::~SimCluster() = default;

node::NodeOptions SimCluster::DefaultOptions(const std::string& id) const {
  node::NodeOptions o;
  o.id = id;
  o.address = AddressOf(id);
  o.partitions = 64;
  o.replicas = 3;
  o.gossip_interval_ms = 100;
  o.peer_timeout_ms = 500;
  o.join_retry_ms = 200;
  // Joins taken at once after creating a cluster (tests that time a cluster's
  // forming stay as they were); the workload and the tests of a wiped first
  // node keep the default.
  o.create_quiet_rounds = 0;
  o.handoff_delay_ms = 500;
  o.handoff_interval_ms = 100;
  o.ae_cycle_pause_ms = 1000;
  o.purge_interval_ms = 1000;
  // Expiry passes over a down node's hints run beside its hint deliveries
  // (with the default 24 h grace period they find nothing to drop).
  o.hint_expiry_interval_ms = 2000;
  o.failure_detector.first_interval_ms = 100;
  o.failure_detector.acceptable_pause_ms = 200;
  o.failure_detector.min_std_dev_ms = 50;
  return o;
}

void SimCluster::AddNode(const std::string& id, const std::vector<std::string>& seeds,
                         const std::function<void(node::NodeOptions&)>& tweak) {
  auto n = std::make_unique<Node>();
  n->id = id;
  n->options = DefaultOptions(id);
  for (const std::string& s : seeds) n->options.seeds.push_back(AddressOf(s));
  if (tweak) tweak(n->options);
  n->engine = std::make_shared<node::MemoryEngine>();
  by_address_[n->options.address] = id;
  nodes_[id] = std::move(n);
  StartCore(id);
}

void SimCluster::StartCore(const std::string& id) {
  Node& n = *nodes_.at(id);
  ++n.gen;
  Result<node::NodeState> state = node::LoadNodeState(*n.engine, n.options, id, rng_() | 1);
  DYNAMO_CHECK(state.ok());
  n.core = std::make_unique<node::NodeCore>(
      n.options, std::move(*state), rng_(), [this, id](node::LogLevel, const std::string& msg) {
        std::string line = "[" + std::to_string(now_) + " " + id + "] " + msg;
        if (Verbose()) std::cerr << line << "\n";
        log_.push_back(std::move(line));
        if (log_.size() > 200) log_.erase(log_.begin());
      });
  n.up = true;
  n.exited = false;
  if (auto free = disk_free_.find(id); free != disk_free_.end()) {
    n.core->OnDiskSpace(NowFor(id), free->second);
  }
  n.core->Start(NowFor(id));
  Pump(id);
  ScheduleTick(id);
}

void SimCluster::SetDiskFree(const std::string& id, uint64_t free_bytes) {
  disk_free_[id] = free_bytes;
  if (nodes_.contains(id) && IsUp(id)) core(id).OnDiskSpace(NowFor(id), free_bytes);
}

void SimCluster::Crash(const std::string& id, bool lose_unsynced) {
  Node& n = *nodes_.at(id);
  n.up = false;
  ++n.gen;
  n.core.reset();
  if (lose_unsynced) n.engine->DropUnsynced();
}

void SimCluster::Restart(const std::string& id) {
  DYNAMO_CHECK(!nodes_.at(id)->up);
  StartCore(id);
}

void SimCluster::Wipe(const std::string& id) {
  Node& n = *nodes_.at(id);
  DYNAMO_CHECK(!n.up);
  n.engine = std::make_shared<node::MemoryEngine>();
}

node::ScrubReport SimCluster::Scrub(const std::string& id) {
  Node& n = *nodes_.at(id);
  DYNAMO_CHECK(!n.up);
  test::CorruptingEngine view = CorruptView(*n.engine, n.corrupt, n.corrupt_hints);
  auto scrubbed = std::make_shared<node::MemoryEngine>();
  Result<node::ScrubReport> report = node::Scrub(view, scrubbed.get());
  DYNAMO_CHECK(report.ok());
  DYNAMO_CHECK(scrubbed->Sync().ok());
  n.engine = std::move(scrubbed);
  n.corrupt.clear();
  n.corrupt_hints.clear();
  return std::move(*report);
}

void SimCluster::CutOneWay(const std::string& from, const std::string& to, bool cut) {
  if (cut) {
    cuts_.insert({from, to});
  } else {
    cuts_.erase({from, to});
  }
}

void SimCluster::Pause(const std::string& id, uint64_t ms) { paused_until_[id] = now_ + ms; }

void SimCluster::SkewClock(const std::string& id, int64_t ms) { skew_[id] = ms; }

void SimCluster::Trace(uint64_t a, uint64_t b) {
  trace_ = Mix64(trace_ ^ Mix64(now_ + 0x9e37)) ^ Mix64(a * 31 + b);
}

void SimCluster::ScheduleOn(const std::string& id, uint64_t at, std::function<void()> fn) {
  Schedule(at, [this, id, fn = std::move(fn)]() mutable {
    auto it = paused_until_.find(id);
    if (!id.empty() && it != paused_until_.end() && it->second > now_) {
      ScheduleOn(id, it->second, std::move(fn));
      return;
    }
    fn();
  });
}

void SimCluster::Transmit(const std::string& to, std::function<void()> arrive) {
  std::uniform_real_distribution<double> coin(0, 1);
  if (faults_.drop > 0 && coin(rng_) < faults_.drop) return;
  const int copies = faults_.duplicate > 0 && coin(rng_) < faults_.duplicate ? 2 : 1;
  for (int i = 0; i < copies; ++i) {
    uint64_t delay = Latency();
    if (faults_.jitter_ms > 0) delay += rng_() % (faults_.jitter_ms + 1);
    ScheduleOn(to, now_ + delay, arrive);
  }
}

std::string SimCluster::LogTail() const {
  std::string out;
  for (const std::string& line : log_) out += line + "\n";
  return out;
}

void SimCluster::Cut(const std::string& a, const std::string& b, bool cut) {
  if (cut) {
    cuts_.insert({a, b});
    cuts_.insert({b, a});
  } else {
    cuts_.erase({a, b});
    cuts_.erase({b, a});
  }
}

bool SimCluster::IsUp(const std::string& id) const { return nodes_.at(id)->up; }
bool SimCluster::Exited(const std::string& id) const { return nodes_.at(id)->exited; }
const std::string& SimCluster::ExitReason(const std::string& id) const {
  return nodes_.at(id)->exit_reason;
}

void SimCluster::Retune(const std::string& id,
                        const std::function<void(node::NodeOptions&)>& tweak) {
  DYNAMO_CHECK(!nodes_.at(id)->up);
  tweak(nodes_.at(id)->options);
}
node::NodeCore& SimCluster::core(const std::string& id) { return *nodes_.at(id)->core; }
node::MemoryEngine& SimCluster::engine(const std::string& id) { return *nodes_.at(id)->engine; }

std::vector<std::string> SimCluster::ids() const {
  std::vector<std::string> out;
  for (const auto& [id, n] : nodes_) out.push_back(id);
  return out;
}

node::Now SimCluster::NowFor(const std::string& id) const {
  auto skew = skew_.find(id);
  int64_t offset = skew == skew_.end() ? 0 : skew->second;
  return node::Now{now_, static_cast<uint64_t>(static_cast<int64_t>(1700000000000ULL + now_) + offset)};
}

void SimCluster::Schedule(uint64_t at, std::function<void()> fn) {
  events_.emplace(std::make_pair(at, seq_++), std::move(fn));
}

uint64_t SimCluster::Latency() {
  return options_.latency_min_ms + rng_() % (options_.latency_max_ms - options_.latency_min_ms + 1);
}

bool SimCluster::Reachable(const std::string& from, const std::string& to) const {
  return !cuts_.count({from, to});
}

void SimCluster::ScheduleTick(const std::string& id) {
  const uint64_t gen = nodes_.at(id)->gen;
  Schedule(now_ + options_.tick_ms, [this, id, gen] {
    Node& n = *nodes_.at(id);
    if (!n.up || n.gen != gen) return;
    if (paused_until_.count(id) && paused_until_[id] > now_) {
      Schedule(paused_until_[id], [this, id, gen] {
        Node& m = *nodes_.at(id);
        if (m.up && m.gen == gen) ScheduleTick(id);
      });
      return;
    }
    Trace(1, Hash64(id));
    n.core->OnTick(NowFor(id));
    Pump(id);
    ScheduleTick(id);
  });
}

void SimCluster::Deliver(const std::string& from, uint64_t from_gen, const std::string& to,
                         proto::Message msg, Route route) {
  ++messages_;
  if (!Reachable(from.empty() ? route.client : from, to)) return;
  if (!from.empty() && drop_requests_ && drop_requests_(from, to, msg)) return;
  Transmit(to, [this, from, from_gen, to, msg = std::move(msg), route]() {
    auto it = nodes_.find(to);
    if (it == nodes_.end() || !it->second->up) return;
    if (!from.empty()) {
      auto f = nodes_.find(from);
      if (f == nodes_.end() || f->second->gen != from_gen) return;
    }
    Result<proto::Message> wire = OverTheWire(msg, it->second->options.limits);
    const uint64_t conn = next_conn_++;
    routes_[conn] = route;
    if (!wire.ok()) {
      // Answered as a connection answers a request it cannot decode.
      SendReply(to, conn, msg.request_id, proto::MakeError(wire.status(), 0));
      return;
    }
    Trace(2, Hash64(to) ^ Mix64(static_cast<uint64_t>(proto::TypeOf(wire->body))));
    it->second->core->OnRequest(NowFor(to), conn, std::move(*wire));
    Pump(to);
  });
}

void SimCluster::SendReply(const std::string& from, uint64_t conn, uint64_t request_id,
                           proto::Body body) {
  auto rt = routes_.find(conn);
  if (rt == routes_.end()) return;
  Route route = std::move(rt->second);
  routes_.erase(rt);
  proto::Message msg{request_id, std::move(body)};
  if (tamper_replies_) tamper_replies_(from, route.caller, msg);
  ++messages_;
  if (!Reachable(from, route.caller.empty() ? route.client : route.caller)) return;
  const std::string caller = route.caller;
  Transmit(caller, [this, route = std::move(route), msg = std::move(msg)]() {
    if (route.caller.empty()) {
      if (route.external) route.external(OverTheWire(msg, proto::Limits{}));
      return;
    }
    auto c = nodes_.find(route.caller);
    if (c == nodes_.end() || !c->second->up || c->second->gen != route.caller_gen) return;
    Result<proto::Message> wire = OverTheWire(msg, c->second->options.limits);
    Trace(3, Hash64(route.caller) ^ route.token);
    c->second->core->OnCallDone(NowFor(route.caller), route.token, std::move(wire));
    Pump(route.caller);
  });
}

void SimCluster::Pump(const std::string& id) {
  Node& n = *nodes_.at(id);
  while (n.up && n.core) {
    std::vector<node::Action> actions = n.core->TakeActions();
    if (actions.empty()) return;
    const uint64_t gen = n.gen;
    for (node::Action& action : actions) {
      if (auto* reply = std::get_if<node::ReplyAction>(&action)) {
        SendReply(id, reply->conn, reply->request_id, std::move(reply->body));
      } else if (auto* call = std::get_if<node::CallAction>(&action)) {
        const uint64_t token = call->token;
        ScheduleOn(id, now_ + call->timeout_ms, [this, id, gen, token] {
          Node& caller = *nodes_.at(id);
          if (!caller.up || caller.gen != gen) return;
          caller.core->OnCallDone(NowFor(id), token, Status::Timeout("simulated timeout"));
          Pump(id);
        });
        auto target = by_address_.find(call->address);
        if (target == by_address_.end()) continue;
        Deliver(id, gen, target->second, proto::Message{token, std::move(call->body)},
                Route{id, gen, token, nullptr});
      } else if (auto* st = std::get_if<node::StorageAction>(&action)) {
        const uint64_t token = st->token;
        auto op = std::make_shared<node::StorageOp>(std::move(st->op));
        ScheduleOn(id, now_ + options_.storage_latency_ms, [this, id, gen, token, op] {
          Node& nd = *nodes_.at(id);
          if (!nd.up || nd.gen != gen) return;
          Trace(4, Hash64(id) ^ token);
          node::StorageResult result;
          test::CorruptingEngine reads = CorruptView(*nd.engine, nd.corrupt, nd.corrupt_hints);
          if (auto* read = std::get_if<node::ReadOp>(op.get())) {
            Result<std::optional<std::string>> v = reads.Get(read->space, read->key);
            if (v.ok())
              result.value = std::move(*v);
            else
              result.status = v.status();
          } else if (auto* scan = std::get_if<node::ScanOp>(op.get())) {
            Result<node::ScanResult> r = reads.Scan(scan->space, scan->options);
            if (r.ok())
              result.scan = std::move(*r);
            else
              result.status = r.status();
          } else {
            auto& write = std::get<node::WriteOp>(*op);
            result.status = write.batch.empty() ? (write.sync ? nd.engine->Sync() : Status::OK())
                                                : nd.engine->Write(write.batch, write.sync);
          }
          auto answer = std::make_shared<node::StorageResult>(std::move(result));
          auto deliver = [this, id, gen, token, answer] {
            Node& to = *nodes_.at(id);
            if (!to.up || to.gen != gen) return;
            to.core->OnStorageDone(NowFor(id), token, std::move(*answer));
            Pump(id);
          };
          if (std::holds_alternative<node::ScanOp>(*op) && options_.scan_answer_delay_ms != 0) {
            ScheduleOn(id, now_ + options_.scan_answer_delay_ms, std::move(deliver));
          } else {
            deliver();
          }
        });
      } else if (auto* exit = std::get_if<node::ExitAction>(&action)) {
        n.up = false;
        n.exited = true;
        n.exit_reason = exit->reason;
        ++n.gen;
        (void)n.engine->Sync();
        return;
      }
    }
  }
}

void SimCluster::RunFor(uint64_t ms) {
  const uint64_t end = now_ + ms;
  while (!events_.empty() && events_.begin()->first.first <= end) {
    auto node = events_.extract(events_.begin());
    now_ = node.key().first;
    node.mapped()();
  }
  now_ = end;
}

bool SimCluster::RunUntil(const std::function<bool()>& done, uint64_t max_ms) {
  const uint64_t end = now_ + max_ms;
  if (done()) return true;
  while (!events_.empty() && events_.begin()->first.first <= end) {
    auto node = events_.extract(events_.begin());
    now_ = node.key().first;
    node.mapped()();
    if (done()) return true;
  }
  now_ = end;
  return done();
}

void SimCluster::Send(const std::string& id, proto::Body body,
                      std::function<void(Result<proto::Message>)> done, uint64_t timeout_ms,
                      const std::string& client) {
  auto finished = std::make_shared<bool>(false);
  auto once = [finished, done](Result<proto::Message> r) {
    if (*finished) return;
    *finished = true;
    done(std::move(r));
  };
  Schedule(now_ + timeout_ms, [once] { once(Status::Timeout("no reply from the simulated node")); });
  Deliver("", 0, id, proto::Message{1, std::move(body)}, Route{"", 0, 0, once, client});
}

Result<proto::Message> SimCluster::Request(const std::string& id, proto::Body body, uint64_t timeout_ms) {
  std::optional<Result<proto::Message>> result;
  Send(id, std::move(body), [&](Result<proto::Message> r) { result = std::move(r); }, timeout_ms);
  RunUntil([&] { return result.has_value(); }, timeout_ms + 10);
  DYNAMO_CHECK(result.has_value());
  return std::move(*result);
}

void SimCluster::CorruptDataKey(const std::string& id, const std::string& key) {
  Node& n = *nodes_.at(id);
  uint32_t q = n.options.partitions;
  if (n.core && n.core->map()) q = n.core->map()->ring().partition_count();
  n.corrupt.insert(node::DataKey(KeyPartition(key, q), key));
}

std::optional<SiblingSet> SimCluster::Stored(const std::string& id, const std::string& key) {
  Node& n = *nodes_.at(id);
  uint32_t q = n.options.partitions;
  if (n.core && n.core->map()) q = n.core->map()->ring().partition_count();
  Result<std::optional<std::string>> v = n.engine->Get(node::Space::kData, node::DataKey(KeyPartition(key, q), key));
  if (!v.ok() || !*v) return std::nullopt;
  Result<SiblingSet> set = proto::DecodeSiblingSet(**v, proto::Limits{});
  if (!set.ok()) return std::nullopt;
  return *set;
}

std::optional<NodeId> SimCluster::CorruptFirstHint(const std::string& id, uint64_t pick) {
  Node& n = *nodes_.at(id);
  std::map<NodeId, std::string> first;  // owner -> its first hint key
  for (const std::string& key : HintKeys(id)) {
    Result<node::HintKeyParts> parts = node::ParseHintKey(key);
    if (parts.ok()) first.emplace(NodeId(parts->owner), key);
  }
  if (first.empty()) return std::nullopt;
  auto it = std::next(first.begin(), static_cast<std::ptrdiff_t>(pick % first.size()));
  n.corrupt_hints.insert(it->second);
  return it->first;
}

std::set<std::string> SimCluster::HintKeys(const std::string& id) {
  node::ScanOptions all;
  all.max_entries = SIZE_MAX;
  all.max_bytes = SIZE_MAX;
  Result<node::ScanResult> r = nodes_.at(id)->engine->Scan(node::Space::kHints, all);
  std::set<std::string> out;
  if (r.ok()) {
    for (auto& [k, v] : r->entries) out.insert(std::move(k));
  }
  return out;
}

std::map<std::string, SiblingSet> SimCluster::AllStored(const std::string& id) {
  std::map<std::string, SiblingSet> out;
  node::ScanOptions all;
  all.max_entries = SIZE_MAX;
  all.max_bytes = SIZE_MAX;
  Result<node::ScanResult> r = nodes_.at(id)->engine->Scan(node::Space::kData, all);
  if (!r.ok()) return out;
  for (auto& [k, v] : r->entries) {
    Result<node::DataKeyParts> parts = node::ParseDataKey(k);
    Result<SiblingSet> set = proto::DecodeSiblingSet(v, proto::Limits{});
    if (parts.ok() && set.ok()) out[std::string(parts->key)] = std::move(*set);
  }
  return out;
}

std::optional<PartitionId> SimCluster::TreeDifferingFromStorage(const std::string& id) {
  Node& n = *nodes_.at(id);
  DYNAMO_CHECK(n.up);
  uint32_t q = n.options.partitions;
  if (n.core->map()) q = n.core->map()->ring().partition_count();
  std::map<PartitionId, MerkleTree> stored;
  for (const auto& [key, set] : AllStored(id))
    stored[KeyPartition(key, q)].Put(key, SiblingDigest(set));
  for (PartitionId p = 0; p < q; ++p) {
    auto it = stored.find(p);
    const MerkleSummary want = it == stored.end() ? MerkleSummary{} : it->second.Root();
    if (!(n.core->MerkleRoot(p) == want)) return p;
  }
  return std::nullopt;
}

}  // namespace dynamo::sim
