#include "sim/sim_client.h"

#include <algorithm>

namespace dynamo::sim {

SimClient::SimClient(SimCluster& sim, std::vector<std::string> seeds, SimClientOptions options,
                     uint64_t client_id)
    : sim_(sim), seeds_(std::move(seeds)), options_(options), client_id_(client_id) {}

void SimClient::Start() {
  Refresh([](Status) {});
  sim_.At(sim_.now() + options_.refresh_ms, [this] {
    if (!stopped_) Start();
  });
}

void SimClient::Refresh(std::function<void(Status)> done) {
  std::vector<std::string> candidates;
  for (const auto& [id, m] : members_) {
    if (m.status != proto::MemberStatus::kRemoved && m.alive) candidates.push_back(id);
  }
  for (const std::string& s : seeds_) candidates.push_back(s);
  if (candidates.empty()) {
    done(Status::Unavailable("no node to ask"));
    return;
  }
  const std::string node = candidates[sim_.rng()() % candidates.size()];
  sim_.Send(node, proto::RingRequest{}, [this, node, done](Result<proto::Message> ring) {
    if (!ring.ok() || !std::holds_alternative<proto::RingReply>(ring->body)) {
      done(Status::Unavailable("refresh failed"));
      return;
    }
    Result<ClusterMap> map = ClusterMap::Deserialize(std::get<proto::RingReply>(ring->body).ring);
    if (!map.ok()) {
      done(map.status());
      return;
    }
    auto parsed = std::make_shared<ClusterMap>(std::move(*map));
    sim_.Send(node, proto::MembersRequest{}, [this, parsed, done](Result<proto::Message> members) {
      if (!members.ok() || !std::holds_alternative<proto::MembersReply>(members->body)) {
        done(Status::Unavailable("refresh failed"));
        return;
      }
      if (!map_ || map_->epoch() <= parsed->epoch()) {
        map_ = *parsed;
        members_.clear();
        for (proto::Member& m : std::get<proto::MembersReply>(members->body).members) members_[m.id] = m;
      }
      done(Status::OK());
    }, options_.timeout_ms, Name());
  }, options_.timeout_ms, Name());
}

client::Health SimClient::HealthNow() {
  return client::Health{
      [this](const NodeId& id) {
        auto m = members_.find(id);
        if (m != members_.end() && (!m->second.alive || m->second.status == proto::MemberStatus::kRemoved)) {
          return false;
        }
        return nodes_.Healthy(id, sim_.now());
      },
      [](const NodeId& id) { return SimCluster::AddressOf(id); }};
}

void SimClient::Observe(const std::string& node, const client::Reply& r) {
  nodes_.Observe(node, client::SignalOf(r), sim_.now());
}

void SimClient::SendTo(const client::Target& t, proto::Body body, uint64_t timeout_ms,
                       std::function<void(client::Reply)> done) {
  const std::string node = t.node;
  std::optional<Status> refused;
  if (options_.refused_when_down && !sim_.IsUp(node)) {
    refused = Status::Unavailable("connection to " + node + " refused");
  } else if (options_.queue_full_per_mille > 0 &&
             sim_.rng()() % 1000 < options_.queue_full_per_mille) {
    refused = Status::Busy("write queue to " + node + " is full");
  }
  if (refused) {
    // Reported from the loop later, as the SDK's connections do.
    ++refused_unsent_;
    sim_.At(sim_.now(), [this, node, done, s = *refused] {
      client::Reply reply{s, false};
      Observe(node, reply);
      done(std::move(reply));
    });
    return;
  }
  sim_.Send(
      node, std::move(body),
      [this, node, done](Result<proto::Message> r) {
        client::Reply reply{std::move(r), true};
        Observe(node, reply);
        done(std::move(reply));
      },
      timeout_ms, Name());
}

template <typename Op>
void SimClient::Drive(std::shared_ptr<Op> op, uint64_t deadline, std::function<void()> finish) {
  // Each reply's callback holds the dispatcher; the dispatcher holds itself
  // weakly.
  auto dispatch = std::make_shared<std::function<void(std::vector<client::Send>)>>();
  std::weak_ptr<std::function<void(std::vector<client::Send>)>> weak = dispatch;
  *dispatch = [this, op, deadline, finish, weak](std::vector<client::Send> sends) {
    const uint64_t remaining = client::RemainingMs(deadline, sim_.now());
    for (client::Send& s : sends) {
      const size_t idx = s.target;
      const uint64_t wait = client::AnswerWaitMs(s, remaining, options_.timeout_ms);
      const bool outlives = s.answer_outlives_deadline;
      SendTo(op->target(idx), std::move(s.body), wait,
             [this, op, idx, finish, deadline, outlives, d = weak.lock()](client::Reply r) {
               if (outlives && sim_.now() > deadline && r.message.ok()) ++late_coordinator_answers_;
               const size_t redirects = op->redirects();
               std::vector<client::Send> next = op->OnReply(idx, std::move(r));
               redirects_ += op->redirects() - redirects;
               (*d)(std::move(next));
               finish();
             });
    }
  };
  sim_.At(deadline + 1, [this, op, finish] {
    op->OnDeadline();
    if (std::optional<size_t> late = op->awaited_past_deadline())
      Observe(op->target(*late).node, client::DeadlineReply());
    finish();
  });
  (*dispatch)(op->Start());
  finish();
}

void SimClient::Get(const std::string& key, std::function<void(ReadResult)> done) {
  if (!map_) {
    done(ReadResult{Status::Unavailable("no cluster map yet"), {}, "", {}});
    return;
  }
  auto op = std::make_shared<client::ReadOp>(client::PlanRoute(*map_, key, HealthNow()),
                                             client::ReadRequest{key, options_.r});
  const uint64_t deadline = sim_.now() + options_.timeout_ms;
  auto reported = std::make_shared<bool>(false);
  auto repaired = std::make_shared<bool>(false);
  auto repair = [this, op, repaired] {
    if (*repaired) return;
    *repaired = true;
    for (client::Send& s : op->Repair()) {
      ++read_repairs_;
      SendTo(op->target(s.target), std::move(s.body), options_.timeout_ms, [](client::Reply) {});
    }
  };
  auto finish = [this, op, done, reported, repair] {
    if (op->answered() && !*reported) {
      *reported = true;
      done(ReadResult{op->status(), op->status().ok() ? op->siblings() : SiblingSet{},
                      op->fastest(), op->reached()});
      if (op->status().ok()) sim_.At(sim_.now() + options_.read_repair_window_ms, repair);
    }
    if (*reported && op->status().ok() && op->all_in()) repair();
  };
  Drive(op, deadline, finish);
}

void SimClient::Put(const std::string& key, std::string value, bool tombstone,
                    VersionVector context, std::string preferred, std::vector<std::string> reached,
                    std::function<void(WriteResult)> done) {
  if (!map_) {
    done(WriteResult{Status::Unavailable("no cluster map yet"), {}});
    return;
  }
  client::WriteRequest req;
  req.key = key;
  req.value = std::move(value);
  req.tombstone = tombstone;
  req.context = std::move(context);
  req.preferred_coordinator = std::move(preferred);
  req.reached = std::move(reached);
  req.w = options_.w;
  req.wall_ms = 1700000000000ULL + sim_.now();
  req.op_id = sim_.rng()() | 1;
  req.durable = options_.durable_writes;
  if (options_.ranked_coordinator)
    req.coordinator_rank_salt = client::CoordinatorRankSalt(client_id_);
  if (options_.lww) {
    req.lww = true;
    last_lww_us_ = std::max<uint64_t>((1700000000000ULL + sim_.now()) * 1000, last_lww_us_ + 1);
    req.lww_dot = Dot{client_id_, last_lww_us_};
  }
  client::Route route = client::PlanRoute(*map_, key, HealthNow());
  if (req.coordinator_rank_salt != 0) nodes_.AddHeardPrimaries(route, sim_.now(), &req.reached);
  auto op = std::make_shared<client::WriteOp>(std::move(route), std::move(req));
  const uint64_t deadline = sim_.now() + options_.timeout_ms;
  auto reported = std::make_shared<bool>(false);
  auto finish = [this, op, done, reported] {
    if (!op->done() || *reported) return;
    *reported = true;
    coordinator_retries_ += op->receipt().coordinator_retries;
    done(WriteResult{op->status(), op->clock(), op->written()});
  };
  Drive(op, deadline, finish);
}

}  // namespace dynamo::sim
