// The durable Engine: RocksDB with one column family per space.
#pragma once

#include <memory>
#include <string>

#include "dynamo/node/engine.h"

namespace dynamo::node {

struct RocksDbOptions {
  // Block cache for reads. Default: 64 MiB.
  size_t block_cache_bytes = 64u << 20;
  // Memtable size per column family. Default: 32 MiB.
  size_t write_buffer_bytes = 32u << 20;
};

// Opens (creating if needed) the database in `dir`. IOError if it cannot,
// e.g. because another process holds it.
Result<std::unique_ptr<Engine>> OpenRocksDb(const std::string& dir, const RocksDbOptions& options);

}  // namespace dynamo::node
