// MessagePack writing and bounded reading, the byte format of the wire
// protocol and of stored records.
//
// MsgpackWriter appends to a std::string through msgpack-c's packer.
//
// MsgpackReader is a pull parser over a byte span that trusts nothing: every
// length and count is checked against the bytes that remain and against the
// caller's limits *before* anything is allocated, nesting deeper than the
// limit is refused, and every failure is a ProtocolError naming the offset.
// (msgpack-c's object unpacker allocates 24 bytes per declared array element
// before reading any, so a few-byte header could demand gigabytes; it also has
// one size limit for every string, where keys and values need different ones.)
//
// Thread-safety: none; one object per thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <msgpack/pack.hpp>

#include "dynamo/status.h"

namespace dynamo {

class MsgpackWriter {
 public:
  // Appends to *out, which must outlive the writer.
  explicit MsgpackWriter(std::string* out) : sink_{out}, packer_(sink_) {}

  void Array(uint32_t n) { packer_.pack_array(n); }
  void Uint(uint64_t v) { packer_.pack_uint64(v); }
  void Bool(bool v) { v ? packer_.pack_true() : packer_.pack_false(); }
  void Nil() { packer_.pack_nil(); }
  void Str(std::string_view s) {
    packer_.pack_str(static_cast<uint32_t>(s.size()));
    packer_.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
  }
  void Bin(std::string_view s) {
    packer_.pack_bin(static_cast<uint32_t>(s.size()));
    packer_.pack_bin_body(s.data(), static_cast<uint32_t>(s.size()));
  }
  std::string& out() { return *sink_.out; }

 private:
  struct Sink {
    std::string* out;
    void write(const char* p, size_t n) { out->append(p, n); }
  };
  Sink sink_;
  msgpack::packer<Sink> packer_;
};

struct MsgpackLimits {
  // Deepest nesting of arrays and maps. Default: 16.
  uint32_t depth_max = 16;
  // Most elements in one array (a map counts its pairs twice). Default: 1 Mi.
  uint32_t items_max = 1u << 20;
  // Longest str or bin value, unless a read names a smaller bound. Default: 1 MiB.
  uint32_t bytes_max = 1u << 20;
};

class MsgpackReader {
 public:
  MsgpackReader(std::string_view data, const MsgpackLimits& limits);

  // Reads an array header. Fails if the count exceeds `max`, the items limit,
  // or the bytes left (each element takes at least one byte).
  Status ReadArray(uint32_t* count, uint32_t max = UINT32_MAX);
  // Reads a non-negative integer of any msgpack width.
  Status ReadUint(uint64_t* value);
  // ReadUint, failing when the value exceeds `max`.
  Status ReadUintMax(uint64_t* value, uint64_t max);
  Status ReadBool(bool* value);
  // Reads a str of at most `max` bytes (and at most the bytes limit); the
  // view points into the input.
  Status ReadStr(std::string_view* value, uint32_t max = UINT32_MAX);
  // Reads a bin of at most `max` bytes (and at most the bytes limit).
  Status ReadBin(std::string_view* value, uint32_t max = UINT32_MAX);
  // Consumes a nil if one is next; returns whether it did.
  bool TryNil();
  // Skips one whole value of any type, nested ones included.
  Status Skip();
  // Skips `n` values (the unread tail of an array, for forward compatibility).
  Status SkipN(uint32_t n);

  size_t offset() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  // OK when every byte was consumed.
  Status ExpectEnd() const;

 private:
  Status Fail(std::string_view what) const;
  Status Truncated(std::string_view what) const;
  // Inline: every value read passes through these.
  Status Need(size_t n, std::string_view what) const {
    if (remaining() >= n) [[likely]]
      return Status::OK();
    return Truncated(what);
  }
  Status ReadLength(uint8_t tag, uint8_t fix_mask_base, bool is_bin, uint32_t* len);
  // Counts the value about to be read against its container.
  Status EnterValue() {
    while (depth_ > 0 && open_[depth_ - 1] == 0) --depth_;
    if (depth_ > 0) --open_[depth_ - 1];
    return Need(1, "value");
  }
  Status PushContainer(uint64_t items);
  Status ReadBytes(bool bin, std::string_view* value, uint32_t max);

  std::string_view data_;
  MsgpackLimits limits_;
  size_t pos_ = 0;
  // Items left in each open container, innermost last.
  uint64_t open_[64];
  uint32_t depth_ = 0;
};

}  // namespace dynamo
