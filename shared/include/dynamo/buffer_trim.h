// BufferTrim: when a reusable buffer that grew for a burst gives its memory
// back. A connection's read and write buffers grow to the largest frame or
// burst they carried, and std::string never shrinks on its own, so one
// 1 MiB value read or sent would hold a megabyte or two per connection for
// as long as the connection lives (a node has up to node.max_connections).
//
// Each use of the buffer records the bytes it needed. Every kBufferTrimUses
// uses, when the buffer is empty, one whose capacity is above
// kBufferKeepBytes and more than twice the largest need of that window is
// cut back (TrimTo says to what; an owner may release more). A steady stream
// of large frames keeps its buffer, so nothing is reallocated per frame.
//
// Thread-safety: none; one object per buffer owner.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace dynamo {

// Capacity a buffer always keeps (ordinary requests and replies fit).
inline constexpr size_t kBufferKeepBytes = 256u << 10;
// Uses per decision.
inline constexpr uint32_t kBufferTrimUses = 64;

class BufferTrim {
 public:
  // One use of the buffer that needed `bytes` of it.
  void Use(size_t bytes) {
    peak_ = std::max(peak_, bytes);
    ++uses_;
  }

  // Called while the buffer is empty: the capacity to cut it to, or 0 to
  // keep it as it is. Starts a new window once the current one is full.
  size_t TrimTo(size_t capacity) {
    if (uses_ < kBufferTrimUses) return 0;
    const size_t keep = std::max(peak_, kBufferKeepBytes);
    const bool trim = capacity > kBufferKeepBytes && capacity > 2 * peak_;
    uses_ = 0;
    peak_ = 0;
    return trim ? keep : 0;
  }

 private:
  size_t peak_ = 0;
  uint32_t uses_ = 0;
};

}  // namespace dynamo
