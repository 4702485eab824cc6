// libFuzzer target: one frame body through every decoder that takes bytes
// from outside (messages, stored sibling sets, serialized rings, raw msgpack).
#include <cstddef>
#include <cstdint>
#include <string>

#include "dynamo/check.h"
#include "dynamo/msgpack_io.h"
#include "dynamo/proto/codec.h"
#include "dynamo/ring.h"
#include "dynamo/version.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  dynamo::proto::Limits limits;
  auto msg = dynamo::proto::DecodeMessage(bytes, limits);
  if (msg.ok()) {
    std::string frame = dynamo::proto::EncodeFrame(*msg);
    DYNAMO_CHECK(dynamo::proto::DecodeMessage(std::string_view(frame).substr(4), limits).ok());
  }
  auto set = dynamo::proto::DecodeSiblingSet(bytes, limits);
  if (set.ok()) {
    // Merging anything decoded must be safe and idempotent.
    dynamo::SiblingSet merged = dynamo::MergeSiblings(*set, *set);
    DYNAMO_CHECK(dynamo::MergeSiblings(merged, *set) == merged);
    (void)dynamo::ContextOf(merged);
  }
  auto ring = dynamo::Ring::Deserialize(bytes);
  if (ring.ok()) {
    DYNAMO_CHECK(dynamo::Ring::Deserialize(ring->Serialize()).ok());
    (void)ring->ExtendedList(static_cast<dynamo::PartitionId>(size % ring->partition_count()));
  }
  dynamo::MsgpackReader reader(bytes, dynamo::MsgpackLimits{});
  (void)reader.Skip();
  return 0;
}
