// FifoVector<T>: a first-in first-out queue in one vector. Unlike std::deque
// (a block of hundreds of bytes as soon as it is made) it allocates nothing
// until the first push, and it never holds more than twice its queued
// elements' worth of slots: once the slots already taken out are half of
// the vector, the rest move to its front. A queue that never runs empty (a
// key written without pause) therefore stays bounded.
//
// Thread-safety: none.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "dynamo/check.h"

namespace dynamo {

template <typename T>
class FifoVector {
 public:
  bool empty() const { return head_ == items_.size(); }
  // Elements queued.
  size_t size() const { return items_.size() - head_; }
  // Slots held, taken-out ones included: at most 2 * size() after a pop.
  size_t slots() const { return items_.size(); }

  void Push(T item) { items_.push_back(std::move(item)); }
  // The oldest element. The queue must not be empty.
  T Pop() {
    DYNAMO_CHECK(!empty());
    T item = std::move(items_[head_++]);
    if (2 * head_ >= items_.size()) {
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
    return item;
  }

 private:
  std::vector<T> items_;
  size_t head_ = 0;  // first element not yet taken out
};

}  // namespace dynamo
