#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <toml++/toml.h>

#include <functional>
#include <sstream>

#include "dynamo/merkle.h"
#include "dynamo/net/connection_pool.h"
#include "sync_pacer.h"

namespace dynamo::node {
namespace {

struct Key {
  const char* section;
  const char* name;
  const char* type;
  const char* help;
  std::function<Status(const toml::node&, NodeConfig*)> apply;
  std::function<std::string(const NodeConfig&)> show;
};

Status TypeError(const std::string& key, const char* want) {
  return Status::InvalidArgument("config key '" + key + "' must be " + want);
}

// Builds an applier for an unsigned integer field reached by `field`.
template <typename Field>
Key UintKey(const char* section, const char* name, const char* help, uint64_t min, uint64_t max,
            Field field) {
  std::string full = std::string(section) + "." + name;
  return Key{section,
             name,
             "integer",
             help,
             [=](const toml::node& n, NodeConfig* c) -> Status {
               std::optional<int64_t> v = n.value_exact<int64_t>();  // not a bool or a float
               if (!v || *v < 0 || static_cast<uint64_t>(*v) < min ||
                   static_cast<uint64_t>(*v) > max) {
                 return Status::InvalidArgument("config key '" + full + "' must be an integer from " +
                                                std::to_string(min) + " to " + std::to_string(max));
               }
               auto& target = field(*c);
               target = static_cast<std::remove_reference_t<decltype(target)>>(*v);
               return Status::OK();
             },
             [=](const NodeConfig& c) {
               return std::to_string(field(const_cast<NodeConfig&>(c)));
             }};
}

template <typename Field>
Key BoolKey(const char* section, const char* name, const char* help, Field field) {
  std::string full = std::string(section) + "." + name;
  return Key{section,
             name,
             "bool",
             help,
             [=](const toml::node& n, NodeConfig* c) -> Status {
               std::optional<bool> v = n.value_exact<bool>();  // not an integer
               if (!v) return TypeError(full, "true or false");
               field(*c) = *v;
               return Status::OK();
             },
             [=](const NodeConfig& c) {
               return field(const_cast<NodeConfig&>(c)) ? std::string("true")
                                                        : std::string("false");
             }};
}

template <typename Field>
Key DoubleKey(const char* section, const char* name, const char* help, double min, double max,
              Field field) {
  std::string full = std::string(section) + "." + name;
  return Key{section,
             name,
             "number",
             help,
             [=](const toml::node& n, NodeConfig* c) -> Status {
               std::optional<double> v;
               if (n.is_floating_point()) v = n.value_exact<double>();
               if (n.is_integer()) v = static_cast<double>(*n.value_exact<int64_t>());
               if (!v || !(*v >= min && *v <= max)) {  // NaN too
                 std::ostringstream range;
                 range << "a number from " << min << " to " << max;
                 return TypeError(full, range.str().c_str());
               }
               field(*c) = *v;
               return Status::OK();
             },
             [=](const NodeConfig& c) {
               std::ostringstream os;
               os << field(const_cast<NodeConfig&>(c));
               return os.str();
             }};
}

const std::vector<Key>& Keys() {
  static const std::vector<Key> keys = {
      BoolKey("node", "allow_remote",
              "listen on a non-loopback address; there is no authentication",
              [](NodeConfig& c) -> bool& { return c.allow_remote; }),
      UintKey("node", "max_connections", "connections served at once; more are closed", 1, 1u << 20,
              [](NodeConfig& c) -> size_t& { return c.max_connections; }),
      UintKey("node", "replies_queued_bytes_max",
              "bytes of replies queued for all connections together past which a connection "
              "holding more than 1 MiB of them takes in no more requests until its own are down "
              "to half of that (0: no bound)",
              0, size_t{1} << 40,
              [](NodeConfig& c) -> size_t& { return c.replies_queued_bytes_max; }),
      UintKey("node", "idle_timeout_ms",
              "close connections idle this long (0: never; else above 60000, the clients' own)", 0,
              UINT32_MAX, [](NodeConfig& c) -> uint64_t& { return c.idle_timeout_ms; }),
      UintKey("node", "shutdown_grace_ms", "longest wait for in-flight requests on SIGTERM", 0,
              UINT32_MAX, [](NodeConfig& c) -> uint64_t& { return c.shutdown_grace_ms; }),
      BoolKey("storage", "coord_put_sync", "sync the coordinator's write before replying",
              [](NodeConfig& c) -> bool& { return c.node.coord_put_sync; }),
      BoolKey("storage", "replica_put_sync", "sync replica writes before acknowledging",
              [](NodeConfig& c) -> bool& { return c.node.replica_put_sync; }),
      BoolKey("storage", "hint_sync", "sync hinted writes before acknowledging",
              [](NodeConfig& c) -> bool& { return c.node.hint_sync; }),
      BoolKey("storage", "scrub_after_corruption",
              "after the node stopped on stored data that failed its checksum, scrub at the "
              "next start as --scrub does (not while an earlier scrub's damaged copy is kept)",
              [](NodeConfig& c) -> bool& { return c.scrub_after_corruption; }),
      UintKey("storage", "sync_interval_ms",
              "longest time a write stays unsynced before the node syncs its log (0: only when "
              "a write asks for a sync)",
              0, UINT32_MAX, [](NodeConfig& c) -> uint64_t& { return c.node.sync_interval_ms; }),
      UintKey("storage", "sync_spacing_us",
              "least time between the starts of two log syncs; the syncs asked for meanwhile "
              "share the next (0: no fixed spacing)",
              0, kSyncSpacingMaxUs, [](NodeConfig& c) -> uint64_t& { return c.sync_spacing_us; }),
      UintKey("storage", "sync_spacing_percent",
              "least time between the starts of two log syncs as a percentage of the disk's "
              "typical sync time (the lower quartile of the last 16), at most 2 ms; the larger of "
              "this and sync_spacing_us applies (0: a sync starts as soon as the last one ends)",
              0, kSyncPacerPercentMax,
              [](NodeConfig& c) -> uint64_t& { return c.sync_spacing_percent; }),
      UintKey("storage", "block_cache_bytes", "RocksDB block cache", 1u << 20, 1ull << 40,
              [](NodeConfig& c) -> size_t& { return c.rocksdb.block_cache_bytes; }),
      UintKey("storage", "value_cache_bytes",
              "recently used values kept in memory in front of RocksDB (0: off)", 0, 1ull << 40,
              [](NodeConfig& c) -> size_t& { return c.value_cache_bytes; }),
      UintKey("storage", "write_buffer_bytes",
              "RocksDB memtable size per column family (each data memtable flushes at a size "
              "drawn within 25% of it)",
              1u << 20, 1ull << 34,
              [](NodeConfig& c) -> size_t& { return c.rocksdb.write_buffer_bytes; }),
      UintKey("storage", "prefilled_log_bytes_max",
              "largest spare log file written with zeros ahead of use, so that a log sync "
              "need not write the log's inode (0: logs grow as written)",
              0, 1ull << 34,
              [](NodeConfig& c) -> uint64_t& { return c.rocksdb.prefilled_log_bytes_max; }),
      UintKey("storage", "free_bytes_min",
              "free bytes on the data directory's file system below which the node refuses new "
              "data (writes, replica copies, hints, pushes) and pauses anti-entropy and "
              "transfers, until an eighth more is free (0: never)",
              0, 1ull << 50, [](NodeConfig& c) -> uint64_t& { return c.node.disk_free_bytes_min; }),
      UintKey("storage", "delete_bytes_per_sec",
              "pace of deleting obsolete log and table files, which are first renamed to "
              "*.trash and then shrunk a mebibyte at a time, since freeing blocks can hold the "
              "disk that log syncs wait for (0: each file is deleted at once)",
              0, 1ull << 40,
              [](NodeConfig& c) -> uint64_t& { return c.rocksdb.delete_bytes_per_sec; }),
      UintKey("storage", "background_write_bytes_per_sec",
              "pace of RocksDB's flush and compaction writes, lifted while they fall behind "
              "the writes (0: unpaced)",
              0, 1ull << 40,
              [](NodeConfig& c) -> uint64_t& { return c.rocksdb.background_write_bytes_per_sec; }),
      UintKey("storage", "info_log_bytes_max",
              "size at which RocksDB's info log (LOG) is renamed LOG.old.<microseconds> and a "
              "new one begun; the newest 5 files are kept",
              64u << 10, 1ull << 40,
              [](NodeConfig& c) -> uint64_t& { return c.rocksdb.info_log_bytes_max; }),
      UintKey("limits", "key_bytes_max", "largest key accepted", 1, proto::kKeyBytesCeiling,
              [](NodeConfig& c) -> uint32_t& { return c.node.limits.key_bytes_max; }),
      UintKey("limits", "value_bytes_max", "largest value accepted", 1, kValueBytesMaxLimit,
              [](NodeConfig& c) -> uint32_t& { return c.node.limits.value_bytes_max; }),
      UintKey("limits", "frame_bytes_max", "largest message frame", 4096, 1u << 30,
              [](NodeConfig& c) -> uint32_t& { return c.node.limits.frame_bytes_max; }),
      UintKey("limits", "siblings_max",
              "versions a write may leave on a key (more than one may take at most half of "
              "frame_bytes_max)",
              1, 1000, [](NodeConfig& c) -> size_t& { return c.node.siblings_max; }),
      UintKey("limits", "clock_entries_max", "clock entries kept per version (paper: 10)", 1, 256,
              [](NodeConfig& c) -> size_t& { return c.node.clock_entries_max; }),
      UintKey("limits", "requests_in_flight_max",
              "requests in progress beyond which new reads and writes are refused with Busy", 16,
              1u << 24, [](NodeConfig& c) -> size_t& { return c.node.requests_in_flight_max; }),
      UintKey("limits", "request_bytes_in_flight_max",
              "bytes the reads, writes and pushes in progress hold in memory (decoded, keys and "
              "values included) beyond which new ones are refused with Busy (at least twice "
              "limits.value_bytes_max is used)",
              1u << 20, size_t{1} << 40,
              [](NodeConfig& c) -> size_t& { return c.node.request_bytes_in_flight_max; }),
      UintKey("limits", "key_writes_queued_max",
              "writes of one key waiting behind the one being applied beyond which new ones are "
              "refused with Busy",
              1, 1u << 20, [](NodeConfig& c) -> size_t& { return c.node.key_writes_queued_max; }),
      UintKey("gossip", "interval_ms", "gossip round period", 10, 600000,
              [](NodeConfig& c) -> uint64_t& { return c.node.gossip_interval_ms; }),
      UintKey("gossip", "seed_every", "also gossip with a seed every this many rounds", 1, 1000,
              [](NodeConfig& c) -> uint32_t& { return c.node.seed_gossip_every; }),
      UintKey("gossip", "create_quiet_rounds",
              "rounds after starting alone in its ring (creating a cluster, or resuming one of "
              "this node alone) in which joins are refused, so a cluster the node was in before "
              "its data directory was lost reaches it first (0: none)",
              0, 1000, [](NodeConfig& c) -> uint32_t& { return c.node.create_quiet_rounds; }),
      DoubleKey("gossip", "phi_threshold", "suspect a peer above this phi", 0.5, 100,
                [](NodeConfig& c) -> double& { return c.node.failure_detector.phi_threshold; }),
      DoubleKey(
          "gossip", "acceptable_pause_ms", "pause a live peer may take", 0, 600000,
          [](NodeConfig& c) -> double& { return c.node.failure_detector.acceptable_pause_ms; }),
      UintKey("gossip", "peer_timeout_ms", "deadline of calls to other nodes", 10, 600000,
              [](NodeConfig& c) -> uint64_t& { return c.node.peer_timeout_ms; }),
      UintKey("transfer", "page_entries", "keys per transfer page", 1, 4096,
              [](NodeConfig& c) -> uint32_t& { return c.node.transfer_page_entries; }),
      UintKey("transfer", "page_bytes", "bytes per transfer page", 4096, 8u << 20,
              [](NodeConfig& c) -> uint64_t& { return c.node.transfer_page_bytes; }),
      UintKey("transfer", "in_flight", "partitions pulled at once", 1, 64,
              [](NodeConfig& c) -> size_t& { return c.node.transfers_in_flight; }),
      UintKey("transfer", "handoff_delay_ms",
              "wait after a ring change before handing misplaced data off", 0, 3600000,
              [](NodeConfig& c) -> uint64_t& { return c.node.handoff_delay_ms; }),
      UintKey("anti_entropy", "cycle_pause_ms",
              "pause between rounds over every replicated partition", 10, 86400000,
              [](NodeConfig& c) -> uint64_t& { return c.node.ae_cycle_pause_ms; }),
      UintKey("anti_entropy", "batch_keys", "differing keys fetched and pushed per batch", 1, 4096,
              [](NodeConfig& c) -> size_t& { return c.node.ae_batch_keys; }),
      UintKey("anti_entropy", "merkle_depth",
              "Merkle tree levels kept in memory per partition: 2^depth leaves of about 36 bytes "
              "each, for every partition the node holds data of (at most the cluster's partitions "
              "times that may be 4 GiB, checked at start and at a join)",
              0, kMaxMerkleDepth, [](NodeConfig& c) -> uint32_t& { return c.node.merkle_depth; }),
      UintKey("anti_entropy", "tombstone_grace_ms",
              "age before a tombstone every replica holds is purged; a node away longer catches up "
              "before serving reads, and hints older than this are dropped",
              1000, 365ull * 86400 * 1000,
              [](NodeConfig& c) -> uint64_t& { return c.node.tombstone_grace_ms; }),
      UintKey("anti_entropy", "clock_skew_max_ms",
              "the most two nodes' clocks may differ: tombstones are purged this long after "
              "their grace period, so that hints of what they delete expire first",
              0, 365ull * 86400 * 1000,
              [](NodeConfig& c) -> uint64_t& { return c.node.clock_skew_max_ms; }),
      UintKey("anti_entropy", "purge_interval_ms",
              "how often a partition's owner looks for purgeable tombstones", 100, 86400000,
              [](NodeConfig& c) -> uint64_t& { return c.node.purge_interval_ms; }),
      UintKey("anti_entropy", "tree_check_interval_ms",
              "period in which every partition is read back from storage and its Merkle tree "
              "checked against it (0: never)",
              0, 365ull * 86400 * 1000,
              [](NodeConfig& c) -> uint64_t& { return c.node.tree_check_interval_ms; }),
      DoubleKey("admission", "p99_threshold_ms",
                "foreground p99 above which background work slows to a trickle", 0.1, 60000,
                [](NodeConfig& c) -> double& { return c.node.governor.p99_threshold_ms; }),
      UintKey("admission", "max_in_flight", "background steps in flight while foreground is fast",
              1, 64, [](NodeConfig& c) -> size_t& { return c.node.governor.max_in_flight; }),
      UintKey("admission", "trickle_ms", "while backing off, one background step this often", 10,
              600000, [](NodeConfig& c) -> uint64_t& { return c.node.governor.trickle_ms; }),
  };
  return keys;
}

enum class HostKind { kLoopback, kUnspecified, kOther };

// What a listen host names, by its address however it is spelled
// (0:0:0:0:0:0:0:0, ::ffff:0.0.0.0 and [::] are all "unspecified").
HostKind KindOf(std::string host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) return HostKind::kUnspecified;
  if (host == "localhost") return HostKind::kLoopback;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    const uint32_t a = ntohl(v4.s_addr);
    if (a == INADDR_ANY) return HostKind::kUnspecified;
    return (a >> 24) == 127 ? HostKind::kLoopback : HostKind::kOther;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_UNSPECIFIED(&v6)) return HostKind::kUnspecified;
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return HostKind::kLoopback;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
      const uint8_t* b = v6.s6_addr;
      if (b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] == 0) return HostKind::kUnspecified;
      if (b[12] == 127) return HostKind::kLoopback;
    }
  }
  return HostKind::kOther;
}

}  // namespace

Status ApplyConfigFile(const std::string& path, NodeConfig* config) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << "config file " << path << ": " << e.description() << " at line "
       << e.source().begin.line;
    return Status::InvalidArgument(os.str());
  }
  for (const auto& [section, body] : table) {
    const toml::table* tab = body.as_table();
    if (tab == nullptr) {
      return Status::InvalidArgument("config file " + path + ": '" + std::string(section.str()) +
                                     "' must be a [section]");
    }
    for (const auto& [name, value] : *tab) {
      const Key* key = nullptr;
      for (const Key& k : Keys()) {
        if (section.str() == k.section && name.str() == k.name) key = &k;
      }
      if (key == nullptr) {
        return Status::InvalidArgument("config file " + path + ": unknown key '" +
                                       std::string(section.str()) + "." + std::string(name.str()) +
                                       "' (see dynamo-node --help)");
      }
      Status s = key->apply(value, config);
      if (!s.ok()) return s.Annotate("config file " + path);
    }
  }
  return Status::OK();
}

Status ValidateConfig(const NodeConfig& c) {
  if (!IsValidNodeId(c.node.id)) {
    return Status::InvalidArgument("--id must be 1 to 64 characters of [A-Za-z0-9._-]");
  }
  if (c.data_dir.empty()) return Status::InvalidArgument("--data-dir is required");
  if (c.engine != "rocksdb" && c.engine != "memory") {
    return Status::InvalidArgument("--engine must be rocksdb or memory");
  }
  if (!IsValidPartitionCount(c.node.partitions)) {
    return Status::InvalidArgument("--partitions must be a power of two from 1 to " +
                                   std::to_string(kMaxPartitions));
  }
  if (c.node.replicas < 1 || c.node.replicas > kMaxReplicas) {
    return Status::InvalidArgument("--replicas must be from 1 to " + std::to_string(kMaxReplicas));
  }
  DYNAMO_RETURN_IF_ERROR(MerkleTreesFit(c.node.partitions, c.node.merkle_depth,
                                        "--partitions " + std::to_string(c.node.partitions)));
  const std::string& h = c.listen.host;
  const HostKind kind = KindOf(h);
  const bool loopback = kind == HostKind::kLoopback;
  if (!loopback && !c.allow_remote) {
    return Status::InvalidArgument(
        "refusing to listen on " + c.listen.ToString() +
        ": dynamo has no authentication; set node.allow_remote = true in the config file to "
        "expose it anyway");
  }
  if (kind == HostKind::kUnspecified) {
    return Status::InvalidArgument(
        "refusing to listen on " + c.listen.ToString() +
        ": the listen address is also the one the node gives its peers and clients, so it must "
        "name an address of this host, not all of them");
  }
  if (c.listen.port == 0) {
    return Status::InvalidArgument(
        "refusing to listen on " + c.listen.ToString() +
        ": the listen address is the one the node gives its peers and clients, so it needs a "
        "port of its own, not 0");
  }
  if (c.node.limits.value_bytes_max + c.node.limits.key_bytes_max + 4096 >
      c.node.limits.frame_bytes_max) {
    return Status::InvalidArgument("limits.frame_bytes_max must exceed value_bytes_max + key_bytes_max");
  }
  if (c.rocksdb.background_write_bytes_per_sec != 0 &&
      c.rocksdb.background_write_bytes_per_sec < kBackgroundWriteBytesPerSecMin) {
    return Status::InvalidArgument(
        "storage.background_write_bytes_per_sec must be 0 (unpaced) or at least " +
        std::to_string(kBackgroundWriteBytesPerSecMin) +
        ": RocksDB cuts paced writes into a 50th of a second's pace");
  }
  if (c.idle_timeout_ms != 0 && c.idle_timeout_ms <= net::kPoolIdleTimeoutMs) {
    return Status::InvalidArgument(
        "node.idle_timeout_ms must be 0 or above " + std::to_string(net::kPoolIdleTimeoutMs) +
        ": clients and nodes close their idle connections after that long, and a node closing "
        "one first races the request sent on it, which then fails in doubt");
  }
  return Status::OK();
}

std::string ConfigKeysHelp() {
  NodeConfig defaults;
  std::ostringstream os;
  std::string section;
  for (const Key& k : Keys()) {
    if (section != k.section) {
      section = k.section;
      os << "  [" << section << "]\n";
    }
    os << "    " << k.name << " (" << k.type << ", default " << k.show(defaults) << "): " << k.help
       << "\n";
  }
  return os.str();
}

}  // namespace dynamo::node
