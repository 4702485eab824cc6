// MessagePack writing and bounded reading, the byte format of the wire
// protocol and of stored records.
//
// MsgpackWriter appends to a std::string, each value in its shortest form
// (as msgpack-c's packer writes it; the tests compare the two).
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
#include <cstring>
#include <string>
#include <string_view>

#include "dynamo/status.h"

namespace dynamo {

class MsgpackWriter {
 public:
  // Appends to *out, which must outlive the writer. Every call leaves *out
  // complete: nothing is held back in the writer.
  explicit MsgpackWriter(std::string* out) : out_(out) {}

  void Array(uint32_t n) {
    if (n < 16) {
      Byte(0x90 | n);
    } else {
      Sized(0xdc, n);
    }
  }
  void Uint(uint64_t v) {
    if (v < 128) {
      Byte(static_cast<uint8_t>(v));
    } else {
      BigUint(v);
    }
  }
  void Bool(bool v) { Byte(v ? 0xc3 : 0xc2); }
  void Nil() { Byte(0xc0); }
  void Str(std::string_view s) {
    const auto n = static_cast<uint32_t>(s.size());
    if (n < 32) {
      Byte(0xa0 | n);
    } else if (n < 256) {
      Byte(0xd9);
      Byte(static_cast<uint8_t>(n));
    } else {
      Sized(0xda, n);
    }
    Body(s);
  }
  void Bin(std::string_view s) {
    const auto n = static_cast<uint32_t>(s.size());
    if (n < 256) {
      Byte(0xc4);
      Byte(static_cast<uint8_t>(n));
    } else {
      Sized(0xc5, n);
    }
    Body(s);
  }
  std::string& out() { return *out_; }

 private:
  void Byte(uint32_t b) { out_->push_back(static_cast<char>(b)); }
  void Body(std::string_view s) {
    if (!s.empty()) out_->append(s.data(), s.size());
  }
  // `tag16` followed by n in 16 bits, or the next tag with n in 32 bits
  // (array, str and bin headers alike).
  void Sized(uint8_t tag16, uint32_t n);
  // A uint of 128 or more, in the fewest bytes.
  void BigUint(uint64_t v);

  std::string* out_;
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
  Status ReadUint(uint64_t* value) {
    // Inline: small integers and full 64-bit ones (dots, clocks) inside an
    // array are most of what messages and records hold.
    if (depth_ > 0 && open_[depth_ - 1] > 0 && pos_ < data_.size()) [[likely]] {
      const auto tag = static_cast<uint8_t>(data_[pos_]);
      if (tag <= 0x7f) {
        --open_[depth_ - 1];
        ++pos_;
        *value = tag;
        return Status::OK();
      }
      if (tag == 0xcf && remaining() >= 9) {
        uint64_t big;
        std::memcpy(&big, data_.data() + pos_ + 1, sizeof big);
        --open_[depth_ - 1];
        pos_ += 9;
        *value = __builtin_bswap64(big);
        return Status::OK();
      }
    }
    return ReadUintSlow(value);
  }
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
  Status ReadUintSlow(uint64_t* value);
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
