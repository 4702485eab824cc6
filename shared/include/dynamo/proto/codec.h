// Encoding and decoding of frames and messages (message.h), and of sibling
// sets as stored records.
//
// Decoding trusts nothing: every limit below is checked before anything is
// allocated for it, and malformed input of any kind yields an error, never a
// crash. Errors are ProtocolError for malformed frames (the connection should
// be closed) and InvalidArgument for well-formed requests that break a size
// limit (the request is refused, the connection can go on); both messages name
// the limit.
//
// Thread-safety: the free functions are thread-safe; a FrameDecoder is not.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "dynamo/buffer_trim.h"
#include "dynamo/msgpack_io.h"
#include "dynamo/proto/message.h"
#include "dynamo/status.h"

namespace dynamo::proto {

inline constexpr uint32_t kFrameHeaderBytes = 4;
// The largest key and value any configuration accepts (a node's
// limits.key_bytes_max and limits.value_bytes_max, a client's options).
inline constexpr uint32_t kKeyBytesCeiling = 64u << 10;
inline constexpr uint32_t kValueBytesCeiling = 256u << 20;

struct Limits {
  // Largest frame body. Default: 64 MiB.
  uint32_t frame_bytes_max = 64u << 20;
  // Largest key. Default: 2 KiB.
  uint32_t key_bytes_max = 2u << 10;
  // Largest value. Default: 1 MiB (the paper's object size).
  uint32_t value_bytes_max = 1u << 20;
  // Deepest nesting of msgpack containers. Default: 10.
  uint32_t depth_max = 10;
  // Most elements in one array. Default: 64 Ki.
  uint32_t items_max = 64u << 10;
  // Most versions in one sibling set. Default: 64 Ki, as many as one array
  // may hold. A node's own writes stop at its siblings_max (at most 1,000),
  // but replicas merging the sets of several coordinators can pass that, and
  // such a set must still travel and read back; the frame and decoded-bytes
  // bounds limit its memory.
  uint32_t siblings_max = 64u << 10;
  // Most entries in one version vector. Default: 256.
  uint32_t clock_entries_max = 256;
  // Longest other string (node ids, addresses, error messages). Default: 4 KiB.
  uint32_t text_bytes_max = 4u << 10;
};

// Appends the frame of `message` (length prefix included) to *out.
void AppendFrame(const Message& message, std::string* out);
// The same for a message made of `request_id` and `body`, without building it.
void AppendFrame(uint64_t request_id, const Body& body, std::string* out);
// The frame of `message`, length prefix included.
std::string EncodeFrame(const Message& message);

// What could be read of a frame's envelope, to answer a frame whose payload
// failed to decode.
struct Envelope {
  bool valid = false;  // the envelope itself was well-formed
  uint64_t request_id = 0;
  uint16_t type = 0;
};

// The most memory one decoded message may take (Message::decoded_bytes):
// four times the frame limit, and at least 16 MiB. A frame of many tiny
// elements (versions of a few bytes) could otherwise decode to 11 times its
// size; legitimate ones take at most about 6 times theirs (pages of small
// entries, which senders cut at half the frame limit), or little in all (a
// Fetch reply of up to 4,096 absent keys).
inline constexpr size_t kDecodedBytesPerFrameByte = 4;
inline constexpr size_t kDecodedBytesMin = size_t{16} << 20;
inline size_t DecodedBytesMax(const Limits& limits) {
  return std::max(kDecodedBytesPerFrameByte * size_t{limits.frame_bytes_max}, kDecodedBytesMin);
}

// Decodes one frame body (without the length prefix). A message that would
// take more than DecodedBytesMax(limits) in memory is refused with
// InvalidArgument before that memory is allocated. *envelope, if given,
// tells what the envelope held even when the payload fails.
//
// The key and value limits bound what a request brings in new: the keys of
// Get, CoordPut and ReplicaPut, and the values of CoordPut and ReplicaPut. Messages that carry data
// already stored (CarriesStoredData) are read against the ceilings instead, since a value stored
// before a limit was lowered is data to serve and move, not an error.
Result<Message> DecodeMessage(std::string_view body, const Limits& limits,
                              Envelope* envelope = nullptr);

// Get replies, Fetch and its reply, Push, Purge, Transfer and its reply,
// and Merkle key lists.
bool CarriesStoredData(MessageType type);
// `limits` with the key and value bounds raised to the ceilings.
Limits WithStoredDataLimits(Limits limits);

// A sibling set as a stored record (msgpack, the same layout as on the wire).
void EncodeSiblings(const SiblingSet& set, MsgpackWriter& w);
std::string EncodeSiblingSet(const SiblingSet& set);
Result<SiblingSet> DecodeSiblingSet(std::string_view bytes, const Limits& limits);

// A member list as a stored record.
std::string EncodeMembers(const std::vector<Member>& members);
Result<std::vector<Member>> DecodeMembers(std::string_view bytes, const Limits& limits);

// The MsgpackLimits derived from `limits`.
MsgpackLimits ReaderLimits(const Limits& limits);

// Splits a byte stream into frame bodies. Feed bytes as they arrive, then
// call Next until it returns false.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t frame_bytes_max);

  // Appends bytes received.
  void Feed(std::string_view bytes);
  // Zero-copy alternative to Feed: room for at least `min_bytes` at the end
  // of the buffer, to be filled and then published with Commit.
  std::span<char> WritableTail(size_t min_bytes);
  void Commit(size_t bytes);

  // When a whole frame is buffered, sets *body to its body (valid until the
  // next Feed or WritableTail) and returns true; returns false when more
  // bytes are needed. ProtocolError when a frame declares a length of zero or
  // above the limit, detected from its 4-byte header alone; the error is
  // sticky, since the stream cannot be resynchronised.
  Result<bool> Next(std::string_view* body);

  // Bytes received but not yet returned.
  size_t buffered() const { return end_ - start_; }
  // Bytes the buffer holds, used or not (cut back after a burst: BufferTrim).
  size_t capacity() const { return buf_.size(); }

 private:
  void Compact(size_t min_free);

  uint32_t frame_bytes_max_;
  std::string buf_;
  size_t start_ = 0;
  size_t end_ = 0;
  BufferTrim trim_;
  size_t min_free_ = 0;  // the room the last WritableTail asked for
  Status error_;
};

}  // namespace dynamo::proto
