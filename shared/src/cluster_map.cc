#include "dynamo/cluster_map.h"

#include <algorithm>

#include "dynamo/msgpack_io.h"

namespace dynamo {
namespace {

constexpr uint64_t kMapFormat = 1;

bool Contains(std::span<const NodeIndex> list, NodeIndex n) {
  return std::find(list.begin(), list.end(), n) != list.end();
}

}  // namespace

ClusterMap::ClusterMap(Ring ring, uint64_t cluster_id)
    : ring_(std::move(ring)), cluster_id_(cluster_id) {}

std::vector<NodeId> ClusterMap::PendingReplicas(PartitionId partition) const {
  std::vector<NodeId> out;
  if (!next_) return out;
  std::span<const NodeIndex> now = ring_.PreferenceIndices(partition);
  for (NodeIndex n : next_->PreferenceIndices(partition)) {
    const NodeId& id = next_->nodes()[n];
    std::optional<NodeIndex> in_ring = ring_.IndexOf(id);
    if (!in_ring || !Contains(now, *in_ring)) out.push_back(id);
  }
  return out;
}


std::vector<Transfer> ClusterMap::Awaiting() const {
  std::vector<Transfer> out = Transfers();
  std::erase_if(out, [this](const Transfer& t) { return done_.count(t) > 0; });
  return out;
}

void ClusterMap::SetNext(std::optional<Ring> next) {
  next_ = std::move(next);
  transfers_.clear();
  if (next_) {
    for (PartitionId p = 0; p < ring_.partition_count(); ++p) {
      for (NodeId& n : PendingReplicas(p)) transfers_.push_back(Transfer{p, std::move(n)});
    }
    std::sort(transfers_.begin(), transfers_.end());
  }
  std::set<Transfer> kept;
  for (const Transfer& t : transfers_) {
    if (done_.count(t)) kept.insert(t);
  }
  done_ = std::move(kept);
}

void ClusterMap::SwitchIfComplete() {
  if (!next_ || done_.size() < transfers_.size()) return;
  // Far past next: a node that has not heard of the switch may go on
  // changing or undoing the pending change from the old ring, one epoch at a
  // time, and the switch must win over all of that (old replicas hand their
  // data off once switched).
  Ring switched = next_->WithEpoch(next_->epoch() + kSwitchEpochStep);
  ring_ = std::move(switched);
  SetNext(std::nullopt);
}

bool ClusterMap::Reconcile(const std::vector<NodeId>& members) {
  if (members.empty()) return false;
  std::vector<NodeId> wanted = members;
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  // The target depends only on the current ring and the members, so every
  // node that knows both computes the same one.
  Ring target = ring_;
  for (const NodeId& n : ring_.nodes()) {
    if (std::binary_search(wanted.begin(), wanted.end(), n)) continue;
    Result<Ring> smaller = target.WithoutNode(n);
    if (smaller.ok()) target = std::move(*smaller);
  }
  for (const NodeId& n : wanted) {
    if (target.Contains(n)) continue;
    Result<Ring> larger = target.WithNode(n);
    if (larger.ok()) target = std::move(*larger);
  }
  if (target.SamePlacement(ring_)) {
    if (!next_) return false;
    // The pending change was undone: stay on the current placement, at a
    // newer epoch so every map moves past the abandoned one.
    ring_ = ring_.WithEpoch(epoch() + 1);
    SetNext(std::nullopt);
    return true;
  }
  if (next_ && target.SamePlacement(*next_)) return false;
  // Past every epoch this map has shown, so the change is seen as newer.
  SetNext(target.WithEpoch(std::max(target.epoch(), epoch() + 1)));
  SwitchIfComplete();
  return true;
}

bool ClusterMap::MarkDone(const Transfer& t) {
  if (!next_ || done_.count(t)) return false;
  if (!std::binary_search(transfers_.begin(), transfers_.end(), t)) return false;
  done_.insert(t);
  SwitchIfComplete();
  return true;
}

bool ClusterMap::Merge(const ClusterMap& other) {
  if (!SameCluster(other)) return false;
  // A map from before clusters had ids takes the other's.
  const bool adopted = cluster_id_ == 0 && other.cluster_id_ != 0;
  if (adopted) cluster_id_ = other.cluster_id_;
  return MergeSameCluster(other) || adopted;
}

bool ClusterMap::SameCluster(const ClusterMap& other) const {
  return SameShape(other) &&
         (cluster_id_ == 0 || other.cluster_id_ == 0 || cluster_id_ == other.cluster_id_);
}

bool ClusterMap::MergeSameCluster(const ClusterMap& other) {
  if (other.ring_.epoch() < ring_.epoch()) {
    // The peer has not seen this ring yet: its change (if any) was made from
    // an older ring and is made again from this one once the members it
    // knows of reach here. This map moves past its epoch, so that every map
    // and client prefers this one.
    if (other.epoch() < epoch()) return false;
    if (next_) {
      next_ = next_->WithEpoch(other.epoch() + 1);
    } else {
      ring_ = ring_.WithEpoch(other.epoch() + 1);
    }
    return true;
  }
  const auto mine = std::make_tuple(ring_.epoch(), epoch(), ContentHash());
  const auto theirs = std::make_tuple(other.ring_.epoch(), other.epoch(), other.ContentHash());
  if (theirs < mine) return false;
  if (theirs > mine) {
    // This map's finished transfers are not carried over: the other map may
    // follow a change this one never saw that stopped owing one of them, and
    // the writes made meanwhile did not go to its node. Transfers are
    // idempotent; one done again costs a copy.
    const uint64_t id = cluster_id_;
    *this = other;
    cluster_id_ = id;
    return true;
  }
  bool changed = false;
  for (const Transfer& t : other.done_) changed |= MarkDone(t);
  return changed;
}

std::string ClusterMap::Serialize() const {
  std::string out;
  MsgpackWriter w(&out);
  w.Array(5);
  w.Uint(kMapFormat);
  w.Bin(ring_.Serialize());
  if (next_) {
    w.Bin(next_->Serialize());
  } else {
    w.Nil();
  }
  w.Array(static_cast<uint32_t>(done_.size() * 2));
  for (const Transfer& t : done_) {
    w.Uint(t.partition);
    w.Str(t.node);
  }
  w.Uint(cluster_id_);
  return out;
}

Result<ClusterMap> ClusterMap::Deserialize(std::string_view bytes) {
  MsgpackLimits limits;
  limits.depth_max = 2;
  limits.items_max = kMaxPartitions * kMaxReplicas * 2;
  limits.bytes_max = static_cast<uint32_t>(bytes.size());
  MsgpackReader r(bytes, limits);
  auto corrupt = [](const Status& s) { return Status::Corruption("cluster map: " + s.ToString()); };
  uint32_t fields = 0;
  uint64_t format = 0;
  std::string_view ring_bytes, next_bytes;
  Status s = r.ReadArray(&fields);
  if (s.ok() && fields < 4) s = Status::ProtocolError("too few fields");
  if (s.ok()) s = r.ReadUint(&format);
  if (s.ok() && format != kMapFormat) s = Status::ProtocolError("unknown format");
  if (s.ok()) s = r.ReadBin(&ring_bytes);
  bool has_next = false;
  if (s.ok() && !r.TryNil()) {
    s = r.ReadBin(&next_bytes);
    has_next = true;
  }
  if (!s.ok()) return corrupt(s);
  Result<Ring> ring = Ring::Deserialize(ring_bytes);
  if (!ring.ok()) return ring.status();
  if (ring->epoch() > kMapEpochMax) return Status::Corruption("cluster map: epoch out of range");
  ClusterMap map(std::move(*ring));
  if (has_next) {
    Result<Ring> next = Ring::Deserialize(next_bytes);
    if (!next.ok()) return next.status();
    if (next->partition_count() != map.ring_.partition_count() ||
        next->replicas() != map.ring_.replicas() || next->epoch() <= map.ring_.epoch() ||
        next->epoch() > kMapEpochMax) {
      return Status::Corruption("cluster map: next ring does not follow the current one");
    }
    map.SetNext(std::move(*next));
  }
  uint32_t n = 0;
  s = r.ReadArray(&n);
  if (s.ok() && n % 2 != 0) s = Status::ProtocolError("odd done list");
  std::vector<Transfer> done;
  for (uint32_t i = 0; s.ok() && i < n / 2; ++i) {
    Transfer t;
    uint64_t p = 0;
    std::string_view node;
    s = r.ReadUintMax(&p, map.ring_.partition_count() - 1);
    if (s.ok()) s = r.ReadStr(&node, kMaxNodeIdBytes);
    t.partition = static_cast<PartitionId>(p);
    t.node.assign(node);
    done.push_back(std::move(t));
  }
  uint64_t cluster_id = 0;  // none in maps from before clusters had ids
  if (s.ok() && fields >= 5) s = r.ReadUint(&cluster_id);
  if (s.ok()) s = r.SkipN(fields - std::min<uint32_t>(fields, 5));
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return corrupt(s);
  for (Transfer& t : done) {
    if (std::binary_search(map.transfers_.begin(), map.transfers_.end(), t)) {
      map.done_.insert(std::move(t));
    }
  }
  if (map.next_ && map.Awaiting().empty()) {
    return Status::Corruption("cluster map: a completed change was not switched");
  }
  map.cluster_id_ = cluster_id;
  return map;
}

Result<ClusterMap> ClusterMap::FromPeer(std::string_view bytes) {
  Result<ClusterMap> map = Deserialize(bytes);
  if (map.ok() && map->epoch() > kMapEpochFromPeerMax) {
    return Status::Corruption("cluster map: epoch " + std::to_string(map->epoch()) +
                              " past the largest a peer's map may carry");
  }
  return map;
}

uint64_t ClusterMap::ContentHash() const {
  uint64_t h = Mix64(ring_.ContentHash() ^ Mix64(ring_.epoch() + 1));
  if (next_) h = Mix64(h ^ Mix64(next_->ContentHash()) ^ Mix64(next_->epoch() + 2));
  return h;
}

}  // namespace dynamo
