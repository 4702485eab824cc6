// dynamo-node configuration: command-line flags plus a TOML file for
// everything else. One table of keys drives parsing and the --help text.
#pragma once

#include <string>

#include "dynamo/net/connection.h"
#include "dynamo/node/node_core.h"
#include "dynamo/node/rocksdb_engine.h"

namespace dynamo::node {

// Largest storage.sync_spacing_us: a second.
inline constexpr uint64_t kSyncSpacingMaxUs = 1'000'000;

struct NodeConfig {
  NodeOptions node;
  net::Endpoint listen{"127.0.0.1", 7000};
  std::string data_dir;
  std::string engine = "rocksdb";  // or "memory"
  std::string log_level = "info";
  // Allow listening on a non-loopback address. There is no authentication,
  // so this exposes the store to whoever can reach the port.
  bool allow_remote = false;
  RocksDbOptions rocksdb;
  // Bytes of recently used values kept in front of RocksDB (CachedEngine);
  // 0 disables. Default: 64 MiB.
  size_t value_cache_bytes = 64u << 20;
  // Least time between the starts of two log syncs (StorageWorker's
  // SyncPacer): at least sync_spacing_us, and at least sync_spacing_percent
  // of the disk's typical sync time (capped at kSyncPacerShareMax); 0: none.
  uint64_t sync_spacing_us = 0;
  uint64_t sync_spacing_percent = 200;
  size_t max_connections = 1024;
  uint64_t idle_timeout_ms = 300000;
  // net::ListenerOptions::replies_queued_bytes_max.
  size_t replies_queued_bytes_max = size_t{1} << 30;
  // Longest wait for in-flight requests on SIGTERM/SIGINT.
  uint64_t shutdown_grace_ms = 10000;
  // After the node stopped on stored data that failed its checksum, its next
  // start scrubs (as --scrub does), unless an earlier scrub's damaged copy is
  // still kept: a second corruption is the operator's to look at.
  bool scrub_after_corruption = true;
};

// Applies the TOML file at `path` onto *config. InvalidArgument naming the
// key for unknown keys and values of the wrong type or range.
Status ApplyConfigFile(const std::string& path, NodeConfig* config);
// Checks the combination; InvalidArgument with the reason.
Status ValidateConfig(const NodeConfig& config);
// Every config key with its type, default and meaning, for --help.
std::string ConfigKeysHelp();

}  // namespace dynamo::node
