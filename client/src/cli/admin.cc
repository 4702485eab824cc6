#include "admin.h"

#include <iomanip>
#include <map>
#include <sstream>

#include "dynamo/net/connection.h"
#include "json.h"

namespace dynamo::cli {
namespace {

// A column of text output, padded to `width`, always followed by at least
// one space: a long value never runs into the next column.
void Cell(std::ostream& os, std::string_view text, size_t width) {
  os << text << std::string(text.size() < width ? width - text.size() : 1, ' ');
}

}  // namespace

Result<proto::Message> CallNode(const net::Endpoint& node, proto::Body request, uint64_t timeout_ms) {
  net::EventLoop loop;
  std::optional<Result<proto::Message>> result;
  std::shared_ptr<net::Connection> conn;
  net::Connect(loop, node, {}, timeout_ms, [&](Result<std::shared_ptr<net::Connection>> c) {
    if (!c.ok()) {
      result = c.status();
      loop.Stop();
      return;
    }
    conn = *c;
    conn->Call(request, timeout_ms, [&](net::CallOutcome reply) {
      result = std::move(reply.message);
      loop.Stop();
    });
  });
  loop.Run();
  if (conn) conn->Close(Status::Aborted("done"));
  if (!result) return Status::Internal("no result");
  // Every error names the node once (a connect error already does).
  if (!result->ok() && result->status().message().find(node.ToString()) == std::string_view::npos) {
    return result->status().Annotate(node.ToString());
  }
  if (result->ok()) {
    if (const auto* err = std::get_if<proto::ErrorReply>(&(*result)->body)) {
      return proto::ToStatus(*err).Annotate(node.ToString());
    }
  }
  return std::move(*result);
}

Result<proto::Message> CallAny(const std::vector<net::Endpoint>& seeds, proto::Body request,
                               uint64_t timeout_ms) {
  Status last = Status::InvalidArgument("no seed given (use --seed HOST:PORT)");
  bool unanswered = false;  // a node may have applied a request it did not answer
  for (const net::Endpoint& seed : seeds) {
    Result<proto::Message> r = CallNode(seed, request, timeout_ms);
    if (r.ok()) return r;
    last = r.status();
    unanswered |= last.code() == StatusCode::kTimeout;
    if (last.code() != StatusCode::kUnavailable && last.code() != StatusCode::kTimeout) break;
  }
  return last.WithInDoubt(last.in_doubt() || unanswered);
}

Result<StatusView> FetchStatus(const std::vector<net::Endpoint>& seeds, uint64_t timeout_ms) {
  Status last = Status::InvalidArgument("no seed given (use --seed HOST:PORT)");
  for (const net::Endpoint& seed : seeds) {
    Result<proto::Message> members = CallNode(seed, proto::MembersRequest{}, timeout_ms);
    if (!members.ok()) {
      last = members.status();
      continue;
    }
    Result<proto::Message> ring = CallNode(seed, proto::RingRequest{}, timeout_ms);
    if (!ring.ok()) {
      last = ring.status();
      continue;
    }
    const auto* mr = std::get_if<proto::MembersReply>(&members->body);
    const auto* rr = std::get_if<proto::RingReply>(&ring->body);
    if (mr == nullptr || rr == nullptr) return Status::ProtocolError("unexpected reply from " + seed.ToString());
    Result<ClusterMap> map = ClusterMap::Deserialize(rr->ring);
    if (!map.ok()) return map.status();
    StatusView view{rr->epoch, {}, std::move(*map)};
    for (const proto::Member& m : mr->members) {
      if (m.status == proto::MemberStatus::kRemoved) continue;
      MemberView v;
      v.id = m.id;
      v.address = m.address;
      switch (m.status) {
        case proto::MemberStatus::kJoining: v.state = "joining"; break;
        case proto::MemberStatus::kLeaving: v.state = "leaving"; break;
        default: v.state = m.alive ? "up" : "down";
      }
      v.partitions = view.map.ring().PartitionsOwnedBy(m.id).size();
      view.members.push_back(std::move(v));
    }
    return view;
  }
  return last;
}

uint64_t NodeStatsView::Get(std::string_view name, uint64_t missing) const {
  for (const auto& [n, v] : counters) {
    if (n == name) return v;
  }
  return missing;
}

Result<NodeStatsView> FetchStats(const net::Endpoint& node, uint64_t timeout_ms) {
  Result<proto::Message> r = CallNode(node, proto::StatsRequest{}, timeout_ms);
  if (!r.ok()) return r.status();
  auto* sr = std::get_if<proto::StatsReply>(&r->body);
  if (sr == nullptr) return Status::ProtocolError("unexpected reply from " + node.ToString());
  return NodeStatsView{node.ToString(), sr->epoch, std::move(sr->counters)};
}

std::string StatsText(const std::vector<NodeStatsView>& nodes) {
  std::ostringstream os;
  for (const NodeStatsView& n : nodes) {
    if (!n.error.empty()) {
      Cell(os, n.node, 24);
      os << "error: " << n.error << "\n";
    }
    for (const auto& [name, value] : n.counters) {
      Cell(os, n.node, 24);
      Cell(os, name, 32);
      os << value << "\n";
    }
  }
  return os.str();
}

std::string StatsJson(const std::vector<NodeStatsView>& nodes) {
  Json j;
  j.BeginArray();
  for (const NodeStatsView& n : nodes) {
    j.BeginObject().Key("node").String(n.node);
    if (!n.error.empty()) {
      j.Key("error").String(n.error).EndObject();
      continue;
    }
    j.Key("epoch").Uint(n.epoch).Key("counters").BeginObject();
    for (const auto& [name, value] : n.counters) j.Key(name).Uint(value);
    j.EndObject().EndObject();
  }
  j.EndArray();
  return j.str();
}

std::string StatusText(const StatusView& view) {
  std::ostringstream os;
  const ClusterMap& map = view.map;
  os << "epoch " << view.epoch << ", " << map.ring().nodes().size() << " nodes in the ring, "
     << map.ring().partition_count() << " partitions, " << map.ring().replicas() << " replicas\n";
  if (map.next()) {
    os << "change in progress: " << map.Awaiting().size() << " of " << map.Transfers().size()
       << " partition transfers left\n";
  }
  Cell(os, "ID", 16);
  Cell(os, "ADDRESS", 24);
  Cell(os, "STATE", 10);
  os << "PARTITIONS\n";
  for (const MemberView& m : view.members) {
    Cell(os, m.id, 16);
    Cell(os, m.address, 24);
    Cell(os, m.state, 10);
    os << m.partitions << "\n";
  }
  return os.str();
}

std::string StatusJson(const StatusView& view) {
  Json j;
  j.BeginObject().Key("epoch").Uint(view.epoch).Key("members").BeginArray();
  for (const MemberView& m : view.members) {
    j.BeginObject()
        .Key("id").String(m.id)
        .Key("address").String(m.address)
        .Key("state").String(m.state)
        .Key("partitions").Uint(m.partitions)
        .EndObject();
  }
  j.EndArray().EndObject();
  return j.str();
}

std::string RingText(const ClusterMap& map) {
  const Ring& ring = map.ring();
  std::ostringstream os;
  os << "epoch " << map.epoch() << ": " << ring.partition_count() << " partitions, "
     << ring.replicas() << " replicas\n";
  Cell(os, "NODE", 16);
  Cell(os, "OWNS", 8);
  os << "REPLICATES\n";
  for (const NodeId& n : ring.nodes()) {
    Cell(os, n, 16);
    Cell(os, std::to_string(ring.PartitionsOwnedBy(n).size()), 8);
    os << ring.PartitionsReplicatedBy(n).size() << "\n";
  }
  if (map.next()) {
    os << "moving to epoch " << map.next()->epoch() << " with nodes:";
    for (const NodeId& n : map.next()->nodes()) os << " " << n;
    os << "; " << map.Awaiting().size() << " of " << map.Transfers().size()
       << " transfers left\n";
  }
  return os.str();
}

std::string RingJson(const ClusterMap& map) {
  const Ring& ring = map.ring();
  Json j;
  j.BeginObject()
      .Key("epoch").Uint(map.epoch())
      .Key("partitions").Uint(ring.partition_count())
      .Key("replicas").Uint(ring.replicas())
      .Key("nodes").BeginArray();
  for (const NodeId& n : ring.nodes()) {
    j.BeginObject()
        .Key("id").String(n)
        .Key("owned").Uint(ring.PartitionsOwnedBy(n).size())
        .Key("replicated").Uint(ring.PartitionsReplicatedBy(n).size())
        .EndObject();
  }
  j.EndArray().Key("owners").BeginArray();
  for (PartitionId p = 0; p < ring.partition_count(); ++p) j.String(ring.Owner(p));
  j.EndArray().Key("pending");
  if (map.next()) {
    j.BeginObject().Key("epoch").Uint(map.next()->epoch()).Key("nodes").BeginArray();
    for (const NodeId& n : map.next()->nodes()) j.String(n);
    j.EndArray()
        .Key("transfers").Uint(map.Transfers().size())
        .Key("left").Uint(map.Awaiting().size())
        .EndObject();
  } else {
    j.Null();
  }
  j.EndObject();
  return j.str();
}

}  // namespace dynamo::cli
