// The node's storage thread. Engine calls never run on the event loop: the
// loop submits operations here and gets completions back through
// EventLoop::Post.
//
// Group commit: each time the thread wakes it takes everything queued, runs
// the reads and scans, then applies every write of the group as one engine
// batch with one sync if any of them asked for it. Reordering reads ahead of
// writes is safe because the core never has a read and a write of the same
// key queued at once (its per-key lock spans read, decide and write).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "dynamo/net/event_loop.h"
#include "dynamo/node/engine.h"
#include "dynamo/node/node_core.h"

namespace dynamo::node {

struct StorageWorkerStats {
  uint64_t groups = 0;         // wake-ups that found work
  uint64_t writes = 0;         // write operations
  uint64_t syncs = 0;          // engine syncs
  uint64_t max_group = 0;      // most operations in one group
};

class StorageWorker {
 public:
  using Done = std::function<void(StorageResult)>;

  // `engine` and `loop` must outlive the worker.
  StorageWorker(Engine* engine, net::EventLoop* loop);
  ~StorageWorker();

  // Any thread. `done` runs on the loop thread.
  void Submit(StorageOp op, Done done);
  // Finishes what is queued, then joins. Completions still go to the loop.
  void Stop();
  StorageWorkerStats stats() const;

 private:
  struct Item {
    StorageOp op;
    Done done;
  };
  void Run();
  void RunGroup(std::deque<Item> group);

  Engine* engine_;
  net::EventLoop* loop_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false;
  StorageWorkerStats stats_;
  std::thread thread_;
};

}  // namespace dynamo::node
