// The durable Engine: RocksDB with one column family per space.
#pragma once

#include <memory>
#include <string>

#include "dynamo/node/engine.h"

namespace dynamo::node {

// Table files RocksDB keeps open at once (each holds a file descriptor).
inline constexpr int kRocksDbOpenFilesMax = 512;

struct RocksDbOptions {
  // Block cache for reads. Default: 64 MiB.
  size_t block_cache_bytes = 64u << 20;
  // Memtable size per column family. Default: 32 MiB. Each open uses a size
  // drawn within kWriteBufferSpread of it (see StaggeredWriteBufferBytes).
  size_t write_buffer_bytes = 32u << 20;
};

// Replicas receive the same writes, so with equal memtables they would all
// flush at the same moment, and a machine hosting several of them would stall
// foreground work for the length of a flush. Each open therefore sizes its
// memtables at write_buffer_bytes scaled by a factor in
// [1 - kWriteBufferSpread, 1 + kWriteBufferSpread).
inline constexpr double kWriteBufferSpread = 0.25;
// The memtable size for `bytes` and a uniform `draw` in [0, 1).
size_t StaggeredWriteBufferBytes(size_t bytes, double draw);

// Opens (creating if needed) the database in `dir`. IOError if it cannot,
// e.g. because another process holds it.
Result<std::unique_ptr<Engine>> OpenRocksDb(const std::string& dir, const RocksDbOptions& options);

}  // namespace dynamo::node
