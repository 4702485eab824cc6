// The message catalogue: every request and reply that crosses the wire,
// between clients and nodes and between nodes.
//
// A frame is [u32 big-endian body length][msgpack body], and the body is the
// array [protocol version, message type, request id, payload] with the payload
// an array of the message's fields in the order declared here (codec.h). A
// reply carries the id of its request; requests on one connection are
// pipelined and replies may come in any order. Every reply carries the ring
// epoch of the node that sent it, so a client learns when its view is stale.
//
// Request -> reply pairs:
//   Get -> GetReply            a key's stored sibling set
//   CoordPut -> CoordPutReply  the coordinator assigns a dot and writes
//   ReplicaPut -> Ack          a replica merges a sibling set (maybe a hint)
//   Ring -> RingReply, Members -> MembersReply     cluster state pulls
//   Gossip -> GossipReply, Join -> JoinReply       membership between nodes
//   Admin -> AdminReply        leave, remove
//   Stats -> StatsReply        a node's counters, for operators and tests
//   AeCompare -> AeCompareReply                    Merkle comparison round
//   Fetch -> FetchReply, Push -> Ack               batches of sibling sets
//   Purge -> Ack               drop tombstones every replica holds
//   Transfer -> TransferReply, TransferDone -> Ack partition streaming
// Any request may instead get an ErrorReply.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "dynamo/merkle.h"
#include "dynamo/placement.h"
#include "dynamo/ring.h"
#include "dynamo/status.h"
#include "dynamo/version.h"

namespace dynamo::proto {

inline constexpr uint64_t kProtocolVersion = 1;

enum class MessageType : uint16_t {
  kError = 1,
  kAck = 2,
  kGet = 10,
  kGetReply = 11,
  kCoordPut = 12,
  kCoordPutReply = 13,
  kReplicaPut = 14,
  kRing = 20,
  kRingReply = 21,
  kMembers = 22,
  kMembersReply = 23,
  kGossip = 24,
  kGossipReply = 25,
  kJoin = 26,
  kJoinReply = 27,
  kAdmin = 28,
  kAdminReply = 29,
  kStats = 50,
  kStatsReply = 51,
  kAeCompare = 30,
  kAeCompareReply = 31,
  kFetch = 32,
  kFetchReply = 33,
  kPush = 34,
  kPurge = 36,
  kTransfer = 40,
  kTransferReply = 41,
  kTransferDone = 42,
};

// --- replies common to many requests ---

// A node and where to reach it.
struct NodeAddress {
  NodeId node;
  std::string address;  // HOST:PORT; empty if the sender knows none
  bool operator==(const NodeAddress&) const = default;
};

struct ErrorReply {
  uint64_t epoch = 0;
  StatusCode code = StatusCode::kInternal;
  std::string message;
  bool in_doubt = false;
  // Set when the node refused a request meant for a replica of a partition
  // it does not replicate in its map (one of the two maps is out of date): that
  // partition's replicas in the node's map, at most kMaxReplicas. Optional.
  std::vector<NodeAddress> replicas;
};

struct Ack {
  uint64_t epoch = 0;
  uint64_t count = 0;  // entries applied, for batches; 1 otherwise
};

// --- data ---

struct GetRequest {
  std::string key;
  // When the receiver stands in for this node (sloppy quorum), the versions
  // it holds as hints for that node are merged into the reply. Optional.
  std::string hint;
};
struct GetReply {
  uint64_t epoch = 0;
  SiblingSet siblings;  // empty when the node holds nothing for the key
};

struct CoordPutRequest {
  std::string key;
  VersionVector context;
  std::string value;
  bool tombstone = false;
  // Chosen by the client for each write; a node that sees the same (key,
  // op id) again answers with the first outcome instead of writing twice.
  // 0: none. Optional.
  uint64_t op_id = 0;
  // The client acknowledges this write without a synced copy (its
  // durable_writes option is off): answer once the write is applied, without
  // syncing it, whatever storage.coord_put_sync says. Optional.
  bool no_sync = false;
  // The primary the receiver stands in for when it coordinates as a
  // fallback (sloppy quorum): it takes the write though it does not
  // replicate the key's partition. Empty: the sender takes the receiver for
  // a replica. Optional.
  std::string hint;
};
struct CoordPutReply {
  uint64_t epoch = 0;
  Dot dot;              // the new version's dot
  SiblingSet siblings;  // the key's whole set on the coordinator after the write
};

struct ReplicaPutRequest {
  std::string key;
  SiblingSet siblings;
  // The node this copy is meant for when the receiver stands in for it
  // (sloppy quorum); empty for a primary replica.
  std::string hint;
  // Sync before acknowledging, whatever the node's policy: LWW writes have
  // no coordinator whose synced write would make them durable. Optional.
  bool sync = false;
};

// --- cluster state ---

struct RingRequest {};
struct RingReply {
  uint64_t epoch = 0;
  std::string ring;  // the cluster map: ClusterMap::Serialize()
};

enum class MemberStatus : uint8_t {
  kJoining = 1,  // joined the ring, receiving its partitions
  kNormal = 2,
  kLeaving = 3,  // handing its partitions off
  kRemoved = 4,  // left or removed; kept so gossip does not resurrect it
};

// Member records a message may carry: every id the cluster has had,
// removed ones included (they stay listed so gossip cannot bring them back).
inline constexpr size_t kMaxMembers = 4 * kMaxRingNodes;

// Largest incarnation and heartbeat a member record may carry; larger ones
// are refused when read, so that a node's own steps (one up) never wrap.
inline constexpr uint64_t kMemberCounterMax = uint64_t{1} << 62;

struct Member {
  NodeId id;
  std::string address;  // HOST:PORT
  MemberStatus status = MemberStatus::kNormal;
  uint64_t incarnation = 0;  // version of this record; the higher wins in gossip
  uint64_t heartbeat = 0;    // grows while the node runs
  ActorId actor = 0;
  bool alive = true;  // the sender's local judgement
  // The node's data directory: drawn when the directory is created and kept
  // across restarts, so a node that joins afresh under an id has a new one.
  // An admin's leave or removal holds for the life it was set on. 0: a
  // record from before lives were kept.
  uint64_t life = 0;
};

struct MembersRequest {};
struct MembersReply {
  uint64_t epoch = 0;
  std::vector<Member> members;
};

struct GossipRequest {
  NodeId from;
  std::vector<Member> members;
  std::string ring;
};
struct GossipReply {
  uint64_t epoch = 0;
  std::vector<Member> members;
  std::string ring;
};

struct JoinRequest {
  Member joiner;
};
struct JoinReply {
  uint64_t epoch = 0;
  std::string ring;
  std::vector<Member> members;
};

enum class AdminOp : uint8_t {
  kLeave = 1,   // the named node hands its partitions off and exits
  kRemove = 2,  // drop a dead node; the others refill its partitions
};
struct AdminRequest {
  AdminOp op = AdminOp::kLeave;
  NodeId node;
};
struct AdminReply {
  uint64_t epoch = 0;
  std::string message;
};

// Counters a node reports; names are [a-z0-9_.] and at most
// kStatsNameBytesMax bytes, at most kStatsCountersMax of them.
inline constexpr size_t kStatsCountersMax = 256;
inline constexpr size_t kStatsNameBytesMax = 64;
struct StatsRequest {};
struct StatsReply {
  uint64_t epoch = 0;
  std::vector<std::pair<std::string, uint64_t>> counters;  // in name order
};

// --- anti-entropy, hints, transfers ---

struct AeCompareRequest {
  PartitionId partition = 0;
  MerkleRequest request;
};
struct AeCompareReply {
  uint64_t epoch = 0;
  MerkleReply reply;
  // The replier is catching up and pulls what it lacks itself: the
  // initiator then only fetches and does not push to it.
  bool catching_up = false;
};

struct KeyedSiblings {
  std::string key;
  SiblingSet siblings;
};

struct FetchRequest {
  std::vector<std::string> keys;
};
struct FetchReply {
  uint64_t epoch = 0;
  // One per requested key, in order, empty set when absent; for a prefix of
  // the keys only when the rest would take the reply past the node's byte
  // budget for an exchange (at least one): the rest is asked for again.
  std::vector<KeyedSiblings> entries;
};

enum class PushPurpose : uint8_t {
  kRepair = 1,    // anti-entropy or read repair
  kHint = 2,      // hinted handoff delivery to the intended owner
  kTransfer = 3,  // partition handoff pushed by a leaving node
};
struct PushRequest {
  PushPurpose purpose = PushPurpose::kRepair;
  std::vector<KeyedSiblings> entries;
};

// Deletes each key whose stored set still has the given digest: tombstones
// that every replica holds and whose grace period is over. Ack.count tells
// how many were deleted.
struct PurgeRequest {
  struct Entry {
    std::string key;
    uint64_t digest = 0;
  };
  std::vector<Entry> entries;
};

struct TransferRequest {
  PartitionId partition = 0;
  std::string after_key;  // resume after this key; empty to start
  uint32_t max_entries = 0;
  uint64_t max_bytes = 0;
};
struct TransferReply {
  uint64_t epoch = 0;
  std::vector<KeyedSiblings> entries;  // in key order
  bool done = false;                   // no keys after the last entry
};

struct TransferDoneRequest {
  PartitionId partition = 0;
  NodeId node;              // the node that now holds the partition
  uint64_t ring_epoch = 0;  // the ring the transfer was made for
};

using Body = std::variant<ErrorReply, Ack, GetRequest, GetReply, CoordPutRequest, CoordPutReply,
                          ReplicaPutRequest, RingRequest, RingReply, MembersRequest, MembersReply,
                          GossipRequest, GossipReply, JoinRequest, JoinReply, AdminRequest,
                          AdminReply, StatsRequest, StatsReply, AeCompareRequest, AeCompareReply, FetchRequest, FetchReply,
                          PushRequest, PurgeRequest, TransferRequest, TransferReply,
                          TransferDoneRequest>;

struct Message {
  uint64_t request_id = 0;
  Body body;
  // About the memory the message takes (its structures, keys and values), as
  // counted by DecodeMessage; 0 for a message built in memory.
  size_t decoded_bytes = 0;
};

MessageType TypeOf(const Body& body);
// True for replies (ErrorReply and Ack included), false for requests.
bool IsReply(MessageType type);
// The type's name, e.g. "CoordPut".
std::string_view MessageTypeName(MessageType type);

// Longest error message sent: one cut to it ends in "...", so that every
// decoder (Limits::text_bytes_max) takes it in.
inline constexpr size_t kErrorMessageBytesMax = 4u << 10;
// An ErrorReply for `status` (which must not be OK), its message cut to
// kErrorMessageBytesMax.
ErrorReply MakeError(const Status& status, uint64_t epoch);
// The Status an ErrorReply stands for.
Status ToStatus(const ErrorReply& error);
// The key and value bytes a read, a write or a push carries; 0 for other
// messages.
size_t CarriedBytes(const Body& body);

}  // namespace dynamo::proto
