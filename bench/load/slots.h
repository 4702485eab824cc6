// The operations in flight of a connection-per-slot backend: one per slot,
// each completed exactly once, by its reply or by its deadline, whichever
// comes first. Loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "load/backend.h"

namespace dynamo::bench {

class SlotOps {
 public:
  // `on_timeout(slot)` runs after a slot's operation failed by deadline, so
  // the backend can drop that slot's connection.
  SlotOps(net::EventLoop& loop, size_t slots, uint64_t timeout_ms, std::function<void(size_t)> on_timeout);
  // Starts the slot's operation; the id names it for Complete.
  uint64_t Begin(size_t slot, OpDone done);
  // Completes the operation `id` of `slot`; does nothing when it already
  // completed (a late reply after its deadline).
  void Complete(size_t slot, uint64_t id, OpOutcome out);
  // Completes every operation in flight with `status`.
  void FailAll(const Status& status);

 private:
  struct Slot {
    uint64_t id = 0;
    OpDone done;
    std::unique_ptr<net::Timer> deadline;
  };
  net::EventLoop& loop_;
  uint64_t timeout_ms_;
  std::function<void(size_t)> on_timeout_;
  std::vector<Slot> slots_;
  uint64_t next_id_ = 1;
};

}  // namespace dynamo::bench
