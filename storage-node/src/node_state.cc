#include "dynamo/node/node_state.h"

#include "dynamo/node/keys.h"

namespace dynamo::node {
namespace {

// A record the engine read back whole (its checksums passed) that does not
// parse: written by another version or by a bug. Not Corruption, which would
// have the node scrub its disk at every start, to no end.
Status Unparsable(std::string_view what, const Status& why) {
  return Status::Internal(std::string(what) +
                          " was read back intact but cannot be parsed by this version (" +
                          why.ToString() + "); a scrub cannot mend it");
}

Result<std::optional<uint64_t>> ReadU64(Engine& engine, std::string_view key) {
  Result<std::optional<std::string>> v = engine.Get(Space::kMeta, key);
  if (!v.ok()) return v.status();
  if (!*v) return std::optional<uint64_t>();
  Result<uint64_t> n = DecodeU64(**v);
  if (!n.ok()) return Unparsable("stored " + std::string(key), n.status());
  return std::optional<uint64_t>(*n);
}

}  // namespace

Result<NodeState> LoadNodeState(Engine& engine, const NodeOptions& options,
                                const std::string& where, ActorId new_actor) {
  DYNAMO_CHECK(new_actor != 0);
  NodeState state;
  WriteBatch batch;
  Result<std::optional<std::string>> id = engine.Get(Space::kMeta, kMetaNodeId);
  if (!id.ok()) return id.status();
  if (*id && **id != options.id) {
    return Status::InvalidArgument("data directory " + where + " belongs to node '" +
                                   **id + "', not '" + options.id + "'");
  }
  batch.Put(Space::kMeta, std::string(kMetaNodeId), options.id);

  state.actor = new_actor;

  Result<std::optional<uint64_t>> inc = ReadU64(engine, kMetaIncarnation);
  if (!inc.ok()) return inc.status();
  state.incarnation = inc->value_or(0) + 1;
  batch.Put(Space::kMeta, std::string(kMetaIncarnation), EncodeU64(state.incarnation));

  // The first run's actor names the directory's life (a directory from
  // before lives were kept takes this run's).
  Result<std::optional<uint64_t>> life = ReadU64(engine, kMetaLife);
  if (!life.ok()) return life.status();
  state.life = life->value_or(new_actor);
  batch.Put(Space::kMeta, std::string(kMetaLife), EncodeU64(state.life));

  // Counters below the stored lease may have been issued; start above it.
  Result<std::optional<uint64_t>> lease = ReadU64(engine, kMetaCounterLease);
  if (!lease.ok()) return lease.status();
  state.counter_next = lease->value_or(1);
  state.counter_lease_end = state.counter_next + options.counter_lease;
  batch.Put(Space::kMeta, std::string(kMetaCounterLease), EncodeU64(state.counter_lease_end));

  Result<std::optional<uint64_t>> alive = ReadU64(engine, kMetaLastAlive);
  if (!alive.ok()) return alive.status();
  state.last_alive_wall_ms = alive->value_or(0);
  Result<std::optional<uint64_t>> stale = ReadU64(engine, kMetaStaleBefore);
  if (!stale.ok()) return stale.status();
  state.stale_before_wall_ms = stale->value_or(0);
  Result<std::optional<std::string>> catching_up = engine.Get(Space::kMeta, kMetaCatchingUp);
  if (!catching_up.ok()) return catching_up.status();
  state.catching_up = catching_up->has_value();
  Result<std::optional<std::string>> switch_sync = engine.Get(Space::kMeta, kMetaSwitchSync);
  if (!switch_sync.ok()) return switch_sync.status();
  if (*switch_sync) {
    Result<SwitchSync> parsed = DecodeSwitchSync(**switch_sync);
    if (!parsed.ok()) return Unparsable("the stored switch sync", parsed.status());
    state.switch_sync = std::move(*parsed);
  }

  Result<std::optional<std::string>> map = engine.Get(Space::kMeta, kMetaClusterMap);
  if (!map.ok()) return map.status();
  if (*map) {
    Result<ClusterMap> parsed = ClusterMap::Deserialize(**map);
    if (!parsed.ok()) return Unparsable("the stored cluster map", parsed.status());
    state.map = std::move(*parsed);
  }
  Result<std::optional<std::string>> members = engine.Get(Space::kMeta, kMetaMembers);
  if (!members.ok()) return members.status();
  if (*members) {
    Result<std::vector<proto::Member>> parsed = proto::DecodeMembers(**members, options.limits);
    if (!parsed.ok()) return Unparsable("the stored member list", parsed.status());
    state.members = std::move(*parsed);
  }

  if (state.map) {
    for (PartitionId p = 0; p < state.map->ring().partition_count(); ++p) {
      ScanOptions probe;
      probe.prefix = PartitionPrefix(p);
      probe.max_entries = 1;
      Result<ScanResult> r = engine.Scan(Space::kData, probe);
      if (!r.ok()) return r.status();
      if (!r->entries.empty()) state.partitions_with_data.insert(p);
    }
  }
  ScanOptions hints;
  hints.max_entries = 4096;
  while (true) {
    Result<ScanResult> r = engine.Scan(Space::kHints, hints);
    if (!r.ok()) return r.status();
    for (auto& [k, v] : r->entries) {
      Result<HintKeyParts> parts = ParseHintKey(k);
      if (parts.ok()) state.hint_owners.insert(std::string(parts->owner));
    }
    if (r->done || r->entries.empty()) break;
    hints.after = r->entries.back().first;
  }

  Status s = engine.Write(batch, true);
  if (!s.ok()) return s;
  return state;
}

}  // namespace dynamo::node
