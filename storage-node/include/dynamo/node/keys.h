// The byte layout of stored keys.
//
//   data:  [partition u32 BE][user key]
//   hints: [owner id length u8][owner id][partition u32 BE][user key]
//   meta:  fixed names (kMeta*)
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "dynamo/placement.h"
#include "dynamo/ring.h"
#include "dynamo/status.h"

namespace dynamo::node {

inline constexpr std::string_view kMetaNodeId = "node_id";
inline constexpr std::string_view kMetaCounterLease = "counter_lease";
inline constexpr std::string_view kMetaIncarnation = "incarnation";
inline constexpr std::string_view kMetaLife = "life";
inline constexpr std::string_view kMetaClusterMap = "cluster_map";
inline constexpr std::string_view kMetaMembers = "members";
inline constexpr std::string_view kMetaLastAlive = "last_alive_ms";
inline constexpr std::string_view kMetaStaleBefore = "stale_before_ms";
// Present while the node catches up (a wiped rejoin, a long absence, a scrub
// that left partitions out): a restart resumes the catch-up.
inline constexpr std::string_view kMetaCatchingUp = "catching_up";
// Partitions this node took over at a ring switch and the replicas it
// replaced there that it has not yet synced with (EncodeSwitchSync).
inline constexpr std::string_view kMetaSwitchSync = "switch_sync";

std::string DataKey(PartitionId partition, std::string_view key);
std::string PartitionPrefix(PartitionId partition);
struct DataKeyParts {
  PartitionId partition;
  std::string_view key;
};
// Splits a data key; Corruption if it is shorter than its prefix.
Result<DataKeyParts> ParseDataKey(std::string_view stored);

std::string HintKey(std::string_view owner, PartitionId partition, std::string_view key);
std::string HintOwnerPrefix(std::string_view owner);
struct HintKeyParts {
  std::string_view owner;
  PartitionId partition;
  std::string_view key;
};
Result<HintKeyParts> ParseHintKey(std::string_view stored);

// The smallest string greater than every string starting with `prefix`;
// empty when there is none (an empty or all-0xff prefix).
std::string PrefixEnd(std::string_view prefix);

// A key made unique across spaces (a space byte, then the key), e.g. to lock it.
std::string QualifiedKey(uint8_t space, std::string_view key);

// Per partition, node ids: [partition u32 BE][count u8] then per node
// [length u8][id], repeated.
using SwitchSync = std::map<PartitionId, std::set<NodeId>>;
std::string EncodeSwitchSync(const SwitchSync& sync);
// Corruption if `bytes` is cut short.
Result<SwitchSync> DecodeSwitchSync(std::string_view bytes);

std::string EncodeU64(uint64_t v);
Result<uint64_t> DecodeU64(std::string_view bytes);

}  // namespace dynamo::node
