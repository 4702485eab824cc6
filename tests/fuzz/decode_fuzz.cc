// libFuzzer target: one frame body through every decoder that takes bytes
// from outside: messages, stored sibling sets, member lists and cluster maps,
// serialized rings, the client's contexts (bytes an application hands back),
// raw msgpack. Whatever decodes must encode to bytes that decode again.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/quorum.h"
#include "dynamo/check.h"
#include "dynamo/cluster_map.h"
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
  auto members = dynamo::proto::DecodeMembers(bytes, limits);
  if (members.ok()) {
    const std::string encoded = dynamo::proto::EncodeMembers(*members);
    auto again = dynamo::proto::DecodeMembers(encoded, limits);
    DYNAMO_CHECK(again.ok() && dynamo::proto::EncodeMembers(*again) == encoded);
  }
  auto map = dynamo::ClusterMap::Deserialize(bytes);
  if (map.ok()) {
    auto again = dynamo::ClusterMap::Deserialize(map->Serialize());
    DYNAMO_CHECK(again.ok() && *again == *map);
    (void)map->Awaiting();
    (void)map->PendingReplicas(
        static_cast<dynamo::PartitionId>(size % map->ring().partition_count()));
    DYNAMO_CHECK(!again->Merge(*map));
  }
  auto context = dynamo::client::DecodeContext(bytes);
  if (context.ok()) {
    auto again = dynamo::client::DecodeContext(dynamo::client::EncodeContext(
        context->clock, context->fastest, context->reached, context->key_hash));
    DYNAMO_CHECK(again.ok() && again->clock == context->clock &&
                 again->fastest == context->fastest && again->reached == context->reached &&
                 again->key_hash == context->key_hash);
  }
  dynamo::MsgpackReader reader(bytes, dynamo::MsgpackLimits{});
  (void)reader.Skip();
  return 0;
}
