#include "dynamo/proto/message.h"

#include <type_traits>

namespace dynamo::proto {

MessageType TypeOf(const Body& body) {
  return std::visit(
      [](const auto& m) -> MessageType {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, ErrorReply>) return MessageType::kError;
        if constexpr (std::is_same_v<T, Ack>) return MessageType::kAck;
        if constexpr (std::is_same_v<T, GetRequest>) return MessageType::kGet;
        if constexpr (std::is_same_v<T, GetReply>) return MessageType::kGetReply;
        if constexpr (std::is_same_v<T, CoordPutRequest>) return MessageType::kCoordPut;
        if constexpr (std::is_same_v<T, CoordPutReply>) return MessageType::kCoordPutReply;
        if constexpr (std::is_same_v<T, ReplicaPutRequest>) return MessageType::kReplicaPut;
        if constexpr (std::is_same_v<T, RingRequest>) return MessageType::kRing;
        if constexpr (std::is_same_v<T, RingReply>) return MessageType::kRingReply;
        if constexpr (std::is_same_v<T, MembersRequest>) return MessageType::kMembers;
        if constexpr (std::is_same_v<T, MembersReply>) return MessageType::kMembersReply;
        if constexpr (std::is_same_v<T, GossipRequest>) return MessageType::kGossip;
        if constexpr (std::is_same_v<T, GossipReply>) return MessageType::kGossipReply;
        if constexpr (std::is_same_v<T, JoinRequest>) return MessageType::kJoin;
        if constexpr (std::is_same_v<T, JoinReply>) return MessageType::kJoinReply;
        if constexpr (std::is_same_v<T, AdminRequest>) return MessageType::kAdmin;
        if constexpr (std::is_same_v<T, AdminReply>) return MessageType::kAdminReply;
        if constexpr (std::is_same_v<T, StatsRequest>) return MessageType::kStats;
        if constexpr (std::is_same_v<T, StatsReply>) return MessageType::kStatsReply;
        if constexpr (std::is_same_v<T, AeCompareRequest>) return MessageType::kAeCompare;
        if constexpr (std::is_same_v<T, AeCompareReply>) return MessageType::kAeCompareReply;
        if constexpr (std::is_same_v<T, FetchRequest>) return MessageType::kFetch;
        if constexpr (std::is_same_v<T, FetchReply>) return MessageType::kFetchReply;
        if constexpr (std::is_same_v<T, PushRequest>) return MessageType::kPush;
        if constexpr (std::is_same_v<T, PurgeRequest>) return MessageType::kPurge;
        if constexpr (std::is_same_v<T, TransferRequest>) return MessageType::kTransfer;
        if constexpr (std::is_same_v<T, TransferReply>) return MessageType::kTransferReply;
        if constexpr (std::is_same_v<T, TransferDoneRequest>) return MessageType::kTransferDone;
      },
      body);
}

bool IsReply(MessageType type) {
  switch (type) {
    case MessageType::kError:
    case MessageType::kAck:
    case MessageType::kGetReply:
    case MessageType::kCoordPutReply:
    case MessageType::kRingReply:
    case MessageType::kMembersReply:
    case MessageType::kGossipReply:
    case MessageType::kJoinReply:
    case MessageType::kAdminReply:
    case MessageType::kStatsReply:
    case MessageType::kAeCompareReply:
    case MessageType::kFetchReply:
    case MessageType::kTransferReply:
      return true;
    default:
      return false;
  }
}

std::string_view MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kError: return "Error";
    case MessageType::kAck: return "Ack";
    case MessageType::kGet: return "Get";
    case MessageType::kGetReply: return "GetReply";
    case MessageType::kCoordPut: return "CoordPut";
    case MessageType::kCoordPutReply: return "CoordPutReply";
    case MessageType::kReplicaPut: return "ReplicaPut";
    case MessageType::kRing: return "Ring";
    case MessageType::kRingReply: return "RingReply";
    case MessageType::kMembers: return "Members";
    case MessageType::kMembersReply: return "MembersReply";
    case MessageType::kGossip: return "Gossip";
    case MessageType::kGossipReply: return "GossipReply";
    case MessageType::kJoin: return "Join";
    case MessageType::kJoinReply: return "JoinReply";
    case MessageType::kAdmin: return "Admin";
    case MessageType::kAdminReply: return "AdminReply";
    case MessageType::kStats: return "Stats";
    case MessageType::kStatsReply: return "StatsReply";
    case MessageType::kAeCompare: return "AeCompare";
    case MessageType::kAeCompareReply: return "AeCompareReply";
    case MessageType::kFetch: return "Fetch";
    case MessageType::kFetchReply: return "FetchReply";
    case MessageType::kPush: return "Push";
    case MessageType::kPurge: return "Purge";
    case MessageType::kTransfer: return "Transfer";
    case MessageType::kTransferReply: return "TransferReply";
    case MessageType::kTransferDone: return "TransferDone";
  }
  return "Unknown";
}

namespace {

size_t ValueBytes(const SiblingSet& set) {
  size_t bytes = 0;
  for (const Version& v : set) bytes += v.value.size();
  return bytes;
}

}  // namespace

size_t CarriedBytes(const Body& body) {
  if (const auto* put = std::get_if<CoordPutRequest>(&body))
    return put->key.size() + put->value.size();
  if (const auto* put = std::get_if<ReplicaPutRequest>(&body)) {
    return put->key.size() + ValueBytes(put->siblings);
  }
  if (const auto* push = std::get_if<PushRequest>(&body)) {
    size_t bytes = 0;
    for (const KeyedSiblings& e : push->entries) bytes += e.key.size() + ValueBytes(e.siblings);
    return bytes;
  }
  if (const auto* get = std::get_if<GetRequest>(&body)) return get->key.size();
  return 0;
}

ErrorReply MakeError(const Status& status, uint64_t epoch) {
  DYNAMO_CHECK(!status.ok());
  std::string_view message = status.message();
  std::string text;
  if (message.size() <= kErrorMessageBytesMax) {
    text.assign(message);
  } else {
    constexpr std::string_view kCut = "...";
    size_t keep = kErrorMessageBytesMax - kCut.size();
    // Not inside a UTF-8 sequence: back up over its continuation bytes.
    while (keep > 0 && (static_cast<unsigned char>(message[keep]) & 0xC0) == 0x80) --keep;
    text.assign(message.substr(0, keep)).append(kCut);
  }
  return ErrorReply{epoch, status.code(), std::move(text), status.in_doubt()};
}

Status ToStatus(const ErrorReply& error) {
  StatusCode code = error.code == StatusCode::kOk ? StatusCode::kInternal : error.code;
  return Status(code, error.message, error.in_doubt);
}

}  // namespace dynamo::proto
