#include "load/slots.h"

#include <future>

namespace dynamo::bench {

SlotOps::SlotOps(net::EventLoop& loop, size_t slots, uint64_t timeout_ms, std::function<void(size_t)> on_timeout)
    : loop_(loop), timeout_ms_(timeout_ms), on_timeout_(std::move(on_timeout)), slots_(slots) {}

uint64_t SlotOps::Begin(size_t slot, OpDone done) {
  Slot& s = slots_[slot];
  s.id = next_id_++;
  s.done = std::move(done);
  if (!s.deadline) s.deadline = std::make_unique<net::Timer>(loop_);
  const uint64_t id = s.id;
  s.deadline->Start(timeout_ms_, 0, [this, slot, id] {
    Slot& late = slots_[slot];
    if (late.id != id || !late.done) return;
    OpDone timed_out = std::move(late.done);
    late.done = nullptr;
    // The connection goes before the caller hears: the driver starts its
    // next operation on the slot from inside that callback.
    on_timeout_(slot);
    timed_out(OpOutcome{Status::Timeout("no reply within the deadline")});
  });
  return id;
}

void SlotOps::Complete(size_t slot, uint64_t id, OpOutcome out) {
  Slot& s = slots_[slot];
  if (s.id != id || !s.done) return;
  s.deadline->Stop();
  OpDone done = std::move(s.done);
  s.done = nullptr;
  done(std::move(out));
}

void SlotOps::FailAll(const Status& status) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].done) Complete(i, slots_[i].id, OpOutcome{status});
  }
}

}  // namespace dynamo::bench

namespace dynamo::bench {

SlotBackend::SlotBackend(std::string name, std::vector<std::string> addresses, uint64_t timeout_ms)
    : name_(std::move(name)), addresses_(std::move(addresses)), timeout_ms_(timeout_ms) {}

void SlotBackend::FailSoon(OpDone done, Status status) {
  loop_->Post([done = std::move(done), status = std::move(status)]() mutable {
    done(OpOutcome{std::move(status)});
  });
}

Status SlotBackend::Open(net::EventLoop& loop, size_t slots) {
  loop_ = &loop;
  for (const std::string& a : addresses_) {
    Result<net::Endpoint> ep = net::ParseEndpoint(a);
    if (!ep.ok()) return ep.status();
    endpoints_.push_back(*ep);
  }
  if (endpoints_.empty()) return Status::InvalidArgument(name_ + " needs --address HOST:PORT");
  for (const net::Endpoint& ep : endpoints_) {
    Status st = Reach(ep);
    if (!st.ok())
      return Status::Unavailable(name_ + " " + ep.ToString() + ": " + std::string(st.message()));
  }
  std::vector<std::future<OpOutcome>> probes;
  for (size_t i = 0; i < slots; ++i) {
    auto p = std::make_shared<std::promise<OpOutcome>>();
    probes.push_back(p->get_future());
    loop.Post([this, i, slots, p] {
      if (!ops_) {
        ops_ = std::make_unique<SlotOps>(*loop_, slots, timeout_ms_, [this](size_t slot) { Drop(slot); });
        Reserve(slots);
      }
      Probe(i, [p](OpOutcome o) { p->set_value(std::move(o)); });
    });
  }
  for (auto& f : probes) {
    OpOutcome o = f.get();
    if (!o.status.ok()) return Status::Unavailable(name_ + ": " + o.status.ToString());
  }
  return Status::OK();
}

void SlotBackend::Close() {
  if (loop_ == nullptr) return;
  std::promise<void> closed;
  loop_->Post([&] {
    for (size_t i = 0; i < slots(); ++i) Drop(i);
    if (ops_) ops_->FailAll(Status::Aborted("closed"));
    ops_.reset();
    closed.set_value();
  });
  closed.get_future().get();
}

}  // namespace dynamo::bench
