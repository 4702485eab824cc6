// The operations in flight of a connection-per-slot backend: one per slot,
// each completed exactly once, by its reply or by its deadline, whichever
// comes first. Loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "load/backend.h"

namespace dynamo::bench {

class SlotOps {
 public:
  // `on_timeout(slot)` runs when a slot's operation reaches its deadline,
  // before that operation fails with Timeout, so the backend can drop the
  // slot's connection before a next operation takes the slot.
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

namespace dynamo::bench {

// A backend with one connection per slot (Redis, etcd): parses the
// addresses (slot i uses address i mod count), owns the SlotOps, proves
// every slot with one probe operation at Open, and tears down on the loop
// thread at Close. Subclasses connect lazily on a slot's first operation.
class SlotBackend : public Backend {
 public:
  SlotBackend(std::string name, std::vector<std::string> addresses, uint64_t timeout_ms);
  std::string Name() const override { return name_; }
  Status Open(net::EventLoop& loop, size_t slots) override;
  void Close() override;

 protected:
  // Loop thread. An operation that succeeds only if the slot's connection works.
  virtual void Probe(size_t slot, OpDone done) = 0;
  // Caller's thread, at Open, before any probe: an error that names why
  // `endpoint` cannot be reached, where the probe would not say it.
  virtual Status Reach(const net::Endpoint&) { return Status::OK(); }
  // Loop thread. Makes room for `slots` connections, before any operation.
  virtual void Reserve(size_t slots) = 0;
  // Loop thread. Forgets the slot's connection; its operation fails.
  virtual void Drop(size_t slot) = 0;
  virtual size_t slots() const = 0;

  // Loop thread. Fails an operation that could not start, from the loop
  // rather than inside Read or Write, so that a slot whose connect is
  // refused at once does not recurse through the driver's next operation.
  void FailSoon(OpDone done, Status status);

  const net::Endpoint& EndpointFor(size_t slot) const { return endpoints_[slot % endpoints_.size()]; }
  net::EventLoop& loop() { return *loop_; }
  uint64_t timeout_ms() const { return timeout_ms_; }
  SlotOps* ops() { return ops_.get(); }

 private:
  std::string name_;
  std::vector<std::string> addresses_;
  uint64_t timeout_ms_;
  std::vector<net::Endpoint> endpoints_;
  net::EventLoop* loop_ = nullptr;
  std::unique_ptr<SlotOps> ops_;
};

}  // namespace dynamo::bench
