#include "dynamo/ring.h"

#include <algorithm>
#include <numeric>

#include "dynamo/msgpack_io.h"

namespace dynamo {
namespace {

constexpr uint64_t kRingFormat = 1;
// Candidates examined per claimed partition before taking any; bounds the
// cost of a change on large rings.
constexpr size_t kClaimScan = 64;
constexpr size_t kClaimStride = 7919;

Status ValidateMembers(const std::vector<NodeId>& sorted, uint32_t partitions) {
  if (sorted.empty()) return Status::InvalidArgument("a ring needs at least one node");
  if (sorted.size() > kMaxRingNodes) {
    return Status::InvalidArgument("a ring holds at most " + std::to_string(kMaxRingNodes) +
                                   " nodes");
  }
  if (sorted.size() > partitions) {
    return Status::InvalidArgument("more nodes (" + std::to_string(sorted.size()) +
                                   ") than partitions (" + std::to_string(partitions) + ")");
  }
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (!IsValidNodeId(sorted[i])) {
      return Status::InvalidArgument("invalid node id '" + sorted[i] +
                                     "': use 1 to 64 characters of [A-Za-z0-9._-]");
    }
    if (i > 0 && sorted[i] == sorted[i - 1]) {
      return Status::InvalidArgument("duplicate node id '" + sorted[i] + "'");
    }
  }
  return Status::OK();
}

// True if `node` owns a partition within `reach` of `p` on either side.
bool NearOwnPartition(const std::vector<NodeIndex>& owner, PartitionId p, NodeIndex node,
                      uint32_t reach) {
  const size_t q = owner.size();
  for (uint32_t d = 1; d <= reach && d < q; ++d) {
    if (owner[(p + d) % q] == node || owner[(p + q - d) % q] == node) return true;
  }
  return false;
}

std::vector<NodeId> Names(const std::vector<NodeId>& nodes, std::span<const NodeIndex> idx) {
  std::vector<NodeId> out;
  out.reserve(idx.size());
  for (NodeIndex i : idx) out.push_back(nodes[i]);
  return out;
}

}  // namespace

bool IsValidNodeId(std::string_view id) {
  if (id.empty() || id.size() > kMaxNodeIdBytes) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
  });
}

Ring::Ring(uint64_t epoch, uint32_t replicas, std::vector<NodeId> nodes,
           std::vector<NodeIndex> owner)
    : epoch_(epoch), replicas_(replicas), nodes_(std::move(nodes)), owner_(std::move(owner)) {
  BuildPreferenceLists();
  content_hash_ = Hash64(Encode(0));
}

Result<Ring> Ring::Create(std::vector<NodeId> nodes, uint32_t partitions, uint32_t replicas,
                          uint64_t epoch) {
  if (!IsValidPartitionCount(partitions)) {
    return Status::InvalidArgument("partition count must be a power of two from 1 to " +
                                   std::to_string(kMaxPartitions) + ", got " +
                                   std::to_string(partitions));
  }
  if (replicas < 1 || replicas > kMaxReplicas) {
    return Status::InvalidArgument("replicas must be from 1 to " + std::to_string(kMaxReplicas));
  }
  std::sort(nodes.begin(), nodes.end());
  DYNAMO_RETURN_IF_ERROR(ValidateMembers(nodes, partitions));
  std::vector<NodeIndex> owner(partitions);
  for (PartitionId p = 0; p < partitions; ++p) {
    owner[p] = static_cast<NodeIndex>(p % nodes.size());
  }
  return Ring(epoch, replicas, std::move(nodes), std::move(owner));
}

Result<Ring> Ring::WithNode(const NodeId& node) const {
  if (Contains(node)) return Status::InvalidArgument("node '" + node + "' is already in the ring");
  std::vector<NodeId> nodes = nodes_;
  nodes.push_back(node);
  std::sort(nodes.begin(), nodes.end());
  DYNAMO_RETURN_IF_ERROR(ValidateMembers(nodes, partition_count()));

  const NodeIndex added =
      static_cast<NodeIndex>(std::lower_bound(nodes.begin(), nodes.end(), node) - nodes.begin());
  std::vector<NodeIndex> owner(owner_.size());
  std::vector<std::vector<PartitionId>> held(nodes.size());
  for (PartitionId p = 0; p < owner_.size(); ++p) {
    NodeIndex o = owner_[p] >= added ? owner_[p] + 1 : owner_[p];
    owner[p] = o;
    held[o].push_back(p);
  }

  const size_t target = owner_.size() / nodes.size();
  for (size_t t = 0; t < target; ++t) {
    NodeIndex donor = 0;
    for (NodeIndex i = 1; i < nodes.size(); ++i) {
      if (held[i].size() > held[donor].size()) donor = i;
    }
    std::vector<PartitionId>& list = held[donor];
    size_t start = (t * kClaimStride) % list.size();
    size_t pick = start;
    for (size_t k = 0; k < std::min(list.size(), kClaimScan); ++k) {
      size_t at = (start + k) % list.size();
      if (!NearOwnPartition(owner, list[at], added, replicas_ - 1)) {
        pick = at;
        break;
      }
    }
    PartitionId p = list[pick];
    list.erase(list.begin() + static_cast<std::ptrdiff_t>(pick));
    owner[p] = added;
    held[added].push_back(p);
  }
  return Ring(epoch_ + 1, replicas_, std::move(nodes), std::move(owner));
}

Result<Ring> Ring::WithoutNode(const NodeId& node) const {
  std::optional<NodeIndex> gone = IndexOf(node);
  if (!gone) return Status::InvalidArgument("node '" + node + "' is not in the ring");
  if (nodes_.size() == 1) return Status::InvalidArgument("cannot remove the last node");

  std::vector<NodeId> nodes = nodes_;
  nodes.erase(nodes.begin() + *gone);
  // Work in old indices, then renumber.
  std::vector<NodeIndex> owner = owner_;
  std::vector<size_t> count(nodes_.size(), 0);
  for (NodeIndex o : owner) ++count[o];
  for (PartitionId p = 0; p < owner.size(); ++p) {
    if (owner[p] != *gone) continue;
    size_t least = SIZE_MAX;
    for (NodeIndex i = 0; i < nodes_.size(); ++i) {
      if (i != *gone) least = std::min(least, count[i]);
    }
    std::optional<NodeIndex> pick;
    for (NodeIndex i = 0; i < nodes_.size(); ++i) {
      if (i == *gone || count[i] != least) continue;
      if (!pick) pick = i;
      if (!NearOwnPartition(owner, p, i, replicas_ - 1)) {
        pick = i;
        break;
      }
    }
    owner[p] = *pick;
    ++count[*pick];
  }
  for (NodeIndex& o : owner) {
    if (o > *gone) --o;
  }
  return Ring(epoch_ + 1, replicas_, std::move(nodes), std::move(owner));
}

Ring Ring::WithEpoch(uint64_t epoch) const {
  Ring r = *this;
  r.epoch_ = epoch;
  return r;
}

std::optional<NodeIndex> Ring::IndexOf(std::string_view node) const {
  auto it = std::lower_bound(nodes_.begin(), nodes_.end(), node);
  if (it == nodes_.end() || *it != node) return std::nullopt;
  return static_cast<NodeIndex>(it - nodes_.begin());
}

void Ring::BuildPreferenceLists() {
  const size_t q = owner_.size();
  width_ = static_cast<uint32_t>(std::min<size_t>(replicas_, nodes_.size()));
  preference_.assign(q * width_, 0);
  // Walking backwards over two laps: the list at p is owner(p) followed by the
  // list at p + 1 without owner(p). O(Q * N) whatever the placement.
  std::vector<NodeIndex> cur, next;
  cur.reserve(width_ + 1);
  next.reserve(width_ + 1);
  for (size_t i = 2 * q; i-- > 0;) {
    NodeIndex o = owner_[i % q];
    next.clear();
    next.push_back(o);
    for (NodeIndex n : cur) {
      if (next.size() == width_) break;
      if (n != o) next.push_back(n);
    }
    std::swap(cur, next);
    if (i < q) {
      DYNAMO_CHECK(cur.size() == width_);
      std::copy(cur.begin(), cur.end(), preference_.begin() + static_cast<std::ptrdiff_t>(i * width_));
    }
  }
}

std::span<const NodeIndex> Ring::PreferenceIndices(PartitionId partition) const {
  DYNAMO_CHECK(partition < owner_.size());
  return {preference_.data() + static_cast<size_t>(partition) * width_, width_};
}

std::vector<NodeId> Ring::PreferenceList(PartitionId partition) const {
  return Names(nodes_, PreferenceIndices(partition));
}

std::vector<NodeIndex> Ring::ExtendedIndices(PartitionId partition) const {
  DYNAMO_CHECK(partition < owner_.size());
  const size_t q = owner_.size();
  std::vector<NodeIndex> out;
  out.reserve(nodes_.size());
  std::vector<bool> seen(nodes_.size(), false);
  for (size_t k = 0; k < q && out.size() < nodes_.size(); ++k) {
    NodeIndex o = owner_[(partition + k) % q];
    if (!seen[o]) {
      seen[o] = true;
      out.push_back(o);
    }
  }
  return out;
}

std::vector<NodeId> Ring::ExtendedList(PartitionId partition) const {
  std::vector<NodeIndex> idx = ExtendedIndices(partition);
  return Names(nodes_, idx);
}

std::vector<PartitionId> Ring::PartitionsOwnedBy(std::string_view node) const {
  std::vector<PartitionId> out;
  std::optional<NodeIndex> idx = IndexOf(node);
  if (!idx) return out;
  for (PartitionId p = 0; p < owner_.size(); ++p) {
    if (owner_[p] == *idx) out.push_back(p);
  }
  return out;
}

std::vector<PartitionId> Ring::PartitionsReplicatedBy(std::string_view node) const {
  std::vector<PartitionId> out;
  std::optional<NodeIndex> idx = IndexOf(node);
  if (!idx) return out;
  for (PartitionId p = 0; p < owner_.size(); ++p) {
    std::span<const NodeIndex> pref = PreferenceIndices(p);
    if (std::find(pref.begin(), pref.end(), *idx) != pref.end()) out.push_back(p);
  }
  return out;
}

std::string Ring::Encode(uint64_t epoch) const {
  std::string out;
  out.reserve(32 + nodes_.size() * 8 + owner_.size() * 2);
  MsgpackWriter w(&out);
  w.Array(6);
  w.Uint(kRingFormat);
  w.Uint(epoch);
  w.Uint(owner_.size());
  w.Uint(replicas_);
  w.Array(static_cast<uint32_t>(nodes_.size()));
  for (const NodeId& n : nodes_) w.Str(n);
  std::string owners(owner_.size() * 2, '\0');
  for (size_t p = 0; p < owner_.size(); ++p) {
    owners[2 * p] = static_cast<char>(owner_[p] >> 8);
    owners[2 * p + 1] = static_cast<char>(owner_[p] & 0xff);
  }
  w.Bin(owners);
  return out;
}

std::string Ring::Serialize() const { return Encode(epoch_); }

Result<Ring> Ring::Deserialize(std::string_view bytes) {
  MsgpackLimits limits;
  limits.depth_max = 2;
  limits.items_max = kMaxRingNodes;
  limits.bytes_max = kMaxPartitions * 2;
  MsgpackReader r(bytes, limits);
  auto corrupt = [](const Status& s) { return Status::Corruption("ring: " + s.ToString()); };
  uint32_t fields = 0;
  uint64_t format = 0, epoch = 0, q = 0, n = 0;
  Status s = r.ReadArray(&fields);
  if (s.ok() && fields < 6) s = Status::ProtocolError("too few fields");
  if (s.ok()) s = r.ReadUint(&format);
  if (s.ok() && format != kRingFormat) {
    s = Status::ProtocolError("unknown ring format " + std::to_string(format));
  }
  if (s.ok()) s = r.ReadUint(&epoch);
  if (s.ok()) s = r.ReadUintMax(&q, kMaxPartitions);
  if (s.ok()) s = r.ReadUintMax(&n, kMaxReplicas);
  uint32_t count = 0;
  if (s.ok()) s = r.ReadArray(&count, kMaxRingNodes);
  std::vector<NodeId> nodes;
  for (uint32_t i = 0; s.ok() && i < count; ++i) {
    std::string_view id;
    s = r.ReadStr(&id, kMaxNodeIdBytes);
    nodes.emplace_back(id);
  }
  std::string_view owners;
  if (s.ok()) s = r.ReadBin(&owners);
  if (s.ok()) s = r.SkipN(fields - 6);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return corrupt(s);

  if (!IsValidPartitionCount(static_cast<uint32_t>(q)) || n < 1) {
    return Status::Corruption("ring: invalid partition or replica count");
  }
  if (!std::is_sorted(nodes.begin(), nodes.end())) {
    return Status::Corruption("ring: node list not sorted");
  }
  Status members = ValidateMembers(nodes, static_cast<uint32_t>(q));
  if (!members.ok()) return Status::Corruption("ring: " + std::string(members.message()));
  if (owners.size() != q * 2) return Status::Corruption("ring: owner table has the wrong size");
  std::vector<NodeIndex> owner(q);
  std::vector<bool> owns(nodes.size(), false);
  for (size_t p = 0; p < q; ++p) {
    NodeIndex o = static_cast<NodeIndex>((static_cast<uint8_t>(owners[2 * p]) << 8) |
                                         static_cast<uint8_t>(owners[2 * p + 1]));
    if (o >= nodes.size()) return Status::Corruption("ring: owner index out of range");
    owner[p] = o;
    owns[o] = true;
  }
  if (std::find(owns.begin(), owns.end(), false) != owns.end()) {
    return Status::Corruption("ring: a member owns no partition");
  }
  return Ring(epoch, static_cast<uint32_t>(n), std::move(nodes), std::move(owner));
}

Result<std::vector<PartitionChange>> DiffRings(const Ring& from, const Ring& to) {
  if (from.partition_count() != to.partition_count()) {
    return Status::InvalidArgument("rings differ in partition count");
  }
  std::vector<PartitionChange> out;
  for (PartitionId p = 0; p < from.partition_count(); ++p) {
    std::vector<NodeId> old_list = from.PreferenceList(p);
    std::vector<NodeId> new_list = to.PreferenceList(p);
    if (from.Owner(p) == to.Owner(p) && old_list == new_list) continue;
    PartitionChange c;
    c.partition = p;
    c.old_owner = from.Owner(p);
    c.new_owner = to.Owner(p);
    for (const NodeId& n : new_list) {
      if (std::find(old_list.begin(), old_list.end(), n) == old_list.end()) c.gained.push_back(n);
    }
    for (const NodeId& n : old_list) {
      if (std::find(new_list.begin(), new_list.end(), n) == new_list.end()) c.lost.push_back(n);
    }
    c.old_replicas = std::move(old_list);
    c.new_replicas = std::move(new_list);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace dynamo
