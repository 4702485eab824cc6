// The node's storage threads. Engine calls never run on the event loop: the
// loop submits operations here and gets completions back through
// EventLoop::Post.
//
// Reads have a thread of their own, so that a read the engine must look up
// on disk never waits behind a log sync or a write the engine stalls; it
// takes every read queued at once. Reads may overtake writes queued before
// them: a write still queued has not been acknowledged, so a read it
// overtakes is concurrent with it (the core's per-key lock spans the read,
// decide and write of one write, and releases after the write is applied;
// a Get takes no lock).
//
// Group commit: each time the storage thread wakes it takes everything else
// queued, runs the scans, then applies every write of the group as one
// engine batch with one sync if any of them asked for it. Scans may
// overtake writes queued with them, as reads do.
//
// Execute, on the loop thread, avoids the thread switch when the engine can
// answer without blocking: a read the engine answers from memory, and a
// write of data or hints (each such key is written under the core's per-key
// lock, so no two writes of one key are ever outstanding and their order
// does not matter). Those run at the end of the loop iteration, the reads
// of one iteration together (their keys prefetched first), the writes
// of one iteration as one engine batch; a write that asked for sync then
// waits for the storage thread to sync the log, and the syncs queued while
// one runs share the next. Meta writes, scans, and anything the engine
// would block on go to the storage thread, and so does the engine's
// housekeeping that inline writes made due (Engine::Maintain).
//
// Sync spacing (SyncPacer): with a spacing set, a group that needs a sync
// starts no sooner than that long after the last sync started; the syncs
// asked for meanwhile join it.
// Fewer, larger syncs under load, at the price of up to the spacing in
// latency; a sync asked for after a quiet spell waits for nothing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "dynamo/net/event_loop.h"
#include "dynamo/node/engine.h"
#include "dynamo/node/node_core.h"
#include "sync_pacer.h"

namespace dynamo::node {

struct StorageWorkerStats {
  uint64_t groups = 0;         // storage thread wake-ups that found work
  uint64_t writes = 0;         // write operations
  uint64_t reads = 0;          // reads run on the read thread
  uint64_t syncs = 0;          // engine syncs
  uint64_t max_group = 0;      // most operations in one group
  uint64_t spaced = 0;         // groups that waited for the sync spacing
  uint64_t spacing_us = 0;     // the sync spacing now
};

class StorageWorker {
 public:
  using Done = std::function<void(StorageResult)>;

  // `engine` and `loop` must outlive the worker. `pacing`: see above (the
  // default spaces no syncs).
  StorageWorker(Engine* engine, net::EventLoop* loop, SyncPacerOptions pacing = {});
  ~StorageWorker();

  // Any thread. `done` runs on the loop thread.
  void Submit(StorageOp op, Done done);
  // Loop thread. Like Submit, but runs `op` on the loop thread when the
  // engine can do it without blocking (see above). `done` never runs inside
  // this call. The engine must allow GetCached and WriteNoStall here while
  // the storage thread runs the rest.
  void Execute(StorageOp op, Done done);
  // Finishes what is queued, then joins both threads. Completions still go
  // to the loop.
  void Stop();
  StorageWorkerStats stats() const;

 private:
  struct Item {
    StorageOp op;
    Done done;
  };
  // Syncs are spaced (if not, the sync path reads no clock).
  bool Spaced() const { return pacer_.enabled(); }
  using Completions = std::vector<std::pair<Done, StorageResult>>;
  void Run();
  void RunGroup(std::deque<Item> group);
  void RunReads();
  // Hands `completions` to the loop thread, in order, in one post.
  void Complete(Completions completions);
  // Loop thread, at the end of an iteration: completes the reads answered
  // inline and applies the unsynced writes gathered, until none is left.
  void FinishInline();
  // Loop thread: answers the reads Execute gathered, or hands them to the
  // storage thread when the engine cannot without blocking.
  void RunInlineReads();

  struct Ready {
    Done done;
    StorageResult result;
  };
  struct InlineRead {
    ReadOp op;
    Done done;
  };
  struct InlineWriter {
    Done done;
    bool sync;
  };
  // Queues `op` for the storage thread; its result goes to every writer.
  void SubmitShared(WriteOp op, std::vector<InlineWriter> writers);

  Engine* engine_;
  net::EventLoop* loop_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::condition_variable reads_cv_;
  std::deque<Item> reads_;    // ReadOps, for the read thread
  bool sync_queued_ = false;  // a write in queue_ asks for a sync
  bool spacing_ = false;      // the thread waits out the sync spacing
  bool stop_ = false;
  bool maintenance_wanted_ = false;
  StorageWorkerStats stats_;
  // Storage thread only.
  SyncPacer pacer_;
  std::chrono::steady_clock::time_point last_sync_start_;
  // Loop thread only.
  std::vector<InlineRead> inline_reads_;
  std::vector<Ready> ready_;
  WriteBatch inline_batch_;
  std::vector<InlineWriter> inline_writers_;
  bool finish_scheduled_ = false;
  std::thread thread_;
  std::thread read_thread_;
};

}  // namespace dynamo::node
