#include "load/slots.h"

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
    Complete(slot, id, OpOutcome{Status::Timeout("no reply within the deadline")});
    on_timeout_(slot);
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
