#include "dynamo/proto/codec.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <type_traits>

namespace dynamo::proto {
namespace {

constexpr uint64_t kVersionFlagTombstone = 1;
constexpr uint64_t kVersionFlagLww = 2;
constexpr uint64_t kVersionFlagsKnown = kVersionFlagTombstone | kVersionFlagLww;
// Replies the Merkle answerer may build for one AeCompare request.
constexpr uint64_t kMaxAeSummaries = 16u << 10;

// ---------------------------------------------------------------- encoding

void Enc(MsgpackWriter& w, const VersionVector& vv) {
  w.Array(static_cast<uint32_t>(vv.size() * 3));
  for (const ClockEntry& e : vv.entries()) {
    w.Uint(e.actor);
    w.Uint(e.counter);
    w.Uint(e.timestamp_ms);
  }
}

void Enc(MsgpackWriter& w, const Version& v) {
  w.Array(6);
  w.Uint(v.dot.actor);
  w.Uint(v.dot.counter);
  w.Uint((v.tombstone ? kVersionFlagTombstone : 0) | (v.lww ? kVersionFlagLww : 0));
  w.Uint(v.timestamp_ms);
  Enc(w, v.context);
  w.Bin(v.value);
}

void Enc(MsgpackWriter& w, const SiblingSet& set) {
  w.Array(static_cast<uint32_t>(set.size()));
  for (const Version& v : set) Enc(w, v);
}

void Enc(MsgpackWriter& w, const Member& m) {
  w.Array(8);
  w.Str(m.id);
  w.Str(m.address);
  w.Uint(static_cast<uint64_t>(m.status));
  w.Uint(m.incarnation);
  w.Uint(m.heartbeat);
  w.Uint(m.actor);
  w.Bool(m.alive);
  w.Uint(m.life);
}

void Enc(MsgpackWriter& w, const std::vector<Member>& members) {
  w.Array(static_cast<uint32_t>(members.size()));
  for (const Member& m : members) Enc(w, m);
}

void Enc(MsgpackWriter& w, const std::vector<KeyedSiblings>& entries) {
  w.Array(static_cast<uint32_t>(entries.size()));
  for (const KeyedSiblings& e : entries) {
    w.Array(2);
    w.Bin(e.key);
    Enc(w, e.siblings);
  }
}

void EncNodes(MsgpackWriter& w, const std::vector<MerkleNodeId>& nodes) {
  w.Array(static_cast<uint32_t>(nodes.size() * 2));
  for (const MerkleNodeId& n : nodes) {
    w.Uint(n.level);
    w.Uint(n.index);
  }
}

struct PayloadEncoder {
  MsgpackWriter& w;

  void operator()(const ErrorReply& m) {
    w.Array(m.replicas.empty() ? 4 : 5);
    w.Uint(m.epoch);
    w.Uint(static_cast<uint64_t>(m.code));
    w.Str(m.message);
    w.Bool(m.in_doubt);
    if (m.replicas.empty()) return;
    w.Array(static_cast<uint32_t>(m.replicas.size()));
    for (const NodeAddress& r : m.replicas) {
      w.Array(2);
      w.Str(r.node);
      w.Str(r.address);
    }
  }
  void operator()(const Ack& m) {
    w.Array(2);
    w.Uint(m.epoch);
    w.Uint(m.count);
  }
  void operator()(const GetRequest& m) {
    w.Array(m.hint.empty() ? 1 : 2);
    w.Bin(m.key);
    if (!m.hint.empty()) w.Str(m.hint);
  }
  void operator()(const GetReply& m) {
    w.Array(2);
    w.Uint(m.epoch);
    Enc(w, m.siblings);
  }
  void operator()(const CoordPutRequest& m) {
    const uint32_t fields = !m.hint.empty() ? 7 : m.no_sync ? 6 : m.op_id != 0 ? 5 : 4;
    w.Array(fields);
    w.Bin(m.key);
    Enc(w, m.context);
    w.Bin(m.value);
    w.Bool(m.tombstone);
    if (fields >= 5) w.Uint(m.op_id);
    if (fields >= 6) w.Bool(m.no_sync);
    if (fields >= 7) w.Str(m.hint);
  }
  void operator()(const CoordPutReply& m) {
    w.Array(4);
    w.Uint(m.epoch);
    w.Uint(m.dot.actor);
    w.Uint(m.dot.counter);
    Enc(w, m.siblings);
  }
  void operator()(const ReplicaPutRequest& m) {
    w.Array(m.sync ? 4 : 3);
    w.Bin(m.key);
    Enc(w, m.siblings);
    w.Str(m.hint);
    if (m.sync) w.Bool(true);
  }
  void operator()(const RingRequest&) { w.Array(0); }
  void operator()(const RingReply& m) {
    w.Array(2);
    w.Uint(m.epoch);
    w.Bin(m.ring);
  }
  void operator()(const MembersRequest&) { w.Array(0); }
  void operator()(const MembersReply& m) {
    w.Array(2);
    w.Uint(m.epoch);
    Enc(w, m.members);
  }
  void operator()(const GossipRequest& m) {
    w.Array(3);
    w.Str(m.from);
    Enc(w, m.members);
    w.Bin(m.ring);
  }
  void operator()(const GossipReply& m) {
    w.Array(3);
    w.Uint(m.epoch);
    Enc(w, m.members);
    w.Bin(m.ring);
  }
  void operator()(const JoinRequest& m) {
    w.Array(1);
    Enc(w, m.joiner);
  }
  void operator()(const JoinReply& m) {
    w.Array(3);
    w.Uint(m.epoch);
    w.Bin(m.ring);
    Enc(w, m.members);
  }
  void operator()(const AdminRequest& m) {
    w.Array(2);
    w.Uint(static_cast<uint64_t>(m.op));
    w.Str(m.node);
  }
  void operator()(const AdminReply& m) {
    w.Array(2);
    w.Uint(m.epoch);
    w.Str(m.message);
  }
  void operator()(const StatsRequest&) { w.Array(0); }
  void operator()(const StatsReply& m) {
    w.Array(2);
    w.Uint(m.epoch);
    w.Array(static_cast<uint32_t>(m.counters.size() * 2));
    for (const auto& [name, value] : m.counters) {
      w.Str(name);
      w.Uint(value);
    }
  }
  void operator()(const AeCompareRequest& m) {
    w.Array(4);
    w.Uint(m.partition);
    EncNodes(w, m.request.expand);
    w.Uint(m.request.levels);
    EncNodes(w, m.request.fetch);
  }
  void operator()(const AeCompareReply& m) {
    w.Array(4);
    w.Uint(m.epoch);
    w.Array(static_cast<uint32_t>(m.reply.summaries.size() * 2));
    for (const MerkleSummary& s : m.reply.summaries) {
      w.Uint(s.hash);
      w.Uint(s.count);
    }
    w.Array(static_cast<uint32_t>(m.reply.keys.size()));
    for (const std::vector<MerkleKey>& list : m.reply.keys) {
      w.Array(static_cast<uint32_t>(list.size() * 2));
      for (const MerkleKey& k : list) {
        w.Bin(k.key);
        w.Uint(k.digest);
      }
    }
    w.Bool(m.catching_up);
  }
  void operator()(const FetchRequest& m) {
    w.Array(1);
    w.Array(static_cast<uint32_t>(m.keys.size()));
    for (const std::string& k : m.keys) w.Bin(k);
  }
  void operator()(const FetchReply& m) {
    w.Array(2);
    w.Uint(m.epoch);
    Enc(w, m.entries);
  }
  void operator()(const PushRequest& m) {
    w.Array(2);
    w.Uint(static_cast<uint64_t>(m.purpose));
    Enc(w, m.entries);
  }
  void operator()(const PurgeRequest& m) {
    w.Array(1);
    w.Array(static_cast<uint32_t>(m.entries.size() * 2));
    for (const PurgeRequest::Entry& e : m.entries) {
      w.Bin(e.key);
      w.Uint(e.digest);
    }
  }
  void operator()(const TransferRequest& m) {
    w.Array(4);
    w.Uint(m.partition);
    w.Bin(m.after_key);
    w.Uint(m.max_entries);
    w.Uint(m.max_bytes);
  }
  void operator()(const TransferReply& m) {
    w.Array(3);
    w.Uint(m.epoch);
    Enc(w, m.entries);
    w.Bool(m.done);
  }
  void operator()(const TransferDoneRequest& m) {
    w.Array(3);
    w.Uint(m.partition);
    w.Str(m.node);
    w.Uint(m.ring_epoch);
  }
};

// ---------------------------------------------------------------- decoding

class Decoder {
 public:
  // `decoded_bytes_max` bounds what the decoded message may take in memory
  // (Resize); records read back from storage are trusted and pass SIZE_MAX.
  Decoder(std::string_view body, const Limits& limits, size_t decoded_bytes_max = SIZE_MAX)
      : r_(body, ReaderLimits(limits)),
        lim_(&limits),
        decoded_bytes_max_(decoded_bytes_max),
        decoded_bytes_(body.size()) {}

  size_t decoded_bytes() const { return decoded_bytes_; }

  MsgpackReader& reader() { return r_; }
  // From here on reads fields against `limits` (which must outlive it).
  void UseLimits(const Limits& limits) { lim_ = &limits; }

  // Opens a payload or record array of at least `fields` fields; Close()
  // skips any extra fields a newer peer appended.
  Status Open(uint32_t fields) {
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n));
    if (n < fields) {
      return Status::ProtocolError("expected " + std::to_string(fields) + " fields, got " +
                                   std::to_string(n));
    }
    if (open_ == extra_.size()) return Status::ProtocolError("records nested too deeply");
    extra_[open_++] = n - fields;
    return Status::OK();
  }
  Status Close() { return r_.SkipN(extra_[--open_]); }
  // A field added to the open record after it was first written: left as is
  // when the record predates it.
  Status AddedUint(uint64_t* v) {
    if (extra_[open_ - 1] == 0) return Status::OK();
    --extra_[open_ - 1];
    return r_.ReadUint(v);
  }

  // Counts the memory of `n` elements of T before they are allocated: what a
  // message takes decoded is its containers' elements plus at most its
  // frame's bytes for keys, values and text, and a frame of many tiny
  // elements would otherwise decode to about 11 times its size. False (a
  // bool: a Status costs the hot path) when they would take more than
  // decoded_bytes_max.
  template <typename T>
  bool Counted(size_t n) {
    decoded_bytes_ += n * sizeof(T);
    return decoded_bytes_ <= decoded_bytes_max_;
  }
  // Resizes an empty container to `n` elements once they are counted.
  template <typename V>
  Status Resize(V* v, size_t n) {
    if (!Counted<typename V::value_type>(n)) [[unlikely]]
      return OverDecodedBytesMax();
    v->resize(n);
    return Status::OK();
  }

  Status Uint(uint64_t* v) { return r_.ReadUint(v); }
  template <typename T>
  Status UintAs(T* v, uint64_t max = std::numeric_limits<T>::max()) {
    uint64_t u = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadUintMax(&u, max));
    *v = static_cast<T>(u);
    return Status::OK();
  }
  Status Bool(bool* v) { return r_.ReadBool(v); }

  Status Key(std::string* key) {
    std::string_view v;
    DYNAMO_RETURN_IF_ERROR(r_.ReadBin(&v));
    if (v.empty()) return Status::InvalidArgument("empty key");
    if (v.size() > lim_->key_bytes_max) {
      return Status::InvalidArgument("key of " + std::to_string(v.size()) +
                                     " bytes exceeds key_bytes_max (" +
                                     std::to_string(lim_->key_bytes_max) + ")");
    }
    key->assign(v);
    return Status::OK();
  }
  Status Value(std::string* value) {
    std::string_view v;
    DYNAMO_RETURN_IF_ERROR(r_.ReadBin(&v));
    if (v.size() > lim_->value_bytes_max) {
      return Status::InvalidArgument("value of " + std::to_string(v.size()) +
                                     " bytes exceeds value_bytes_max (" +
                                     std::to_string(lim_->value_bytes_max) + ")");
    }
    value->assign(v);
    return Status::OK();
  }
  Status Text(std::string* s) {
    std::string_view v;
    DYNAMO_RETURN_IF_ERROR(r_.ReadStr(&v, lim_->text_bytes_max));
    s->assign(v);
    return Status::OK();
  }
  Status NodeIdField(std::string* s, bool allow_empty) {
    DYNAMO_RETURN_IF_ERROR(Text(s));
    if (s->empty() && allow_empty) return Status::OK();
    if (!IsValidNodeId(*s)) return Status::ProtocolError("invalid node id");
    return Status::OK();
  }
  Status Blob(std::string* s) {
    std::string_view v;
    DYNAMO_RETURN_IF_ERROR(r_.ReadBin(&v));
    s->assign(v);
    return Status::OK();
  }

  Status Clock(VersionVector* vv) {
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n, lim_->clock_entries_max * 3));
    if (n % 3 != 0) return Status::ProtocolError("version vector of " + std::to_string(n) + " items");
    if (n == 0) {
      *vv = VersionVector();
      return Status::OK();
    }
    if (!Counted<ClockEntry>(n / 3)) [[unlikely]]
      return OverDecodedBytesMax();
    std::vector<ClockEntry> entries(n / 3);
    for (ClockEntry& e : entries) {
      DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&e.actor));
      DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&e.counter));
      DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&e.timestamp_ms));
    }
    Result<VersionVector> parsed = VersionVector::FromEntries(std::move(entries));
    if (!parsed.ok()) return Status::ProtocolError(parsed.status().message());
    *vv = std::move(*parsed);
    return Status::OK();
  }

  Status Ver(Version* v) {
    DYNAMO_RETURN_IF_ERROR(Open(6));
    uint64_t flags = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&v->dot.actor));
    DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&v->dot.counter));
    DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&flags));
    DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&v->timestamp_ms));
    DYNAMO_RETURN_IF_ERROR(Clock(&v->context));
    DYNAMO_RETURN_IF_ERROR(Value(&v->value));
    if (v->dot.counter == 0) return Status::ProtocolError("version with counter 0");
    if ((flags & ~kVersionFlagsKnown) != 0) return Status::ProtocolError("unknown version flags");
    v->tombstone = (flags & kVersionFlagTombstone) != 0;
    v->lww = (flags & kVersionFlagLww) != 0;
    if (v->tombstone && !v->value.empty()) return Status::ProtocolError("tombstone with a value");
    return Close();
  }

  Status Siblings(SiblingSet* set) {
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n, lim_->siblings_max));
    DYNAMO_RETURN_IF_ERROR(Resize(set, n));
    for (Version& v : *set) DYNAMO_RETURN_IF_ERROR(Ver(&v));
    return Status::OK();
  }

  Status Mem(Member* m) {
    DYNAMO_RETURN_IF_ERROR(Open(7));
    DYNAMO_RETURN_IF_ERROR(NodeIdField(&m->id, false));
    DYNAMO_RETURN_IF_ERROR(Text(&m->address));
    uint64_t status = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&status));
    if (status < 1 || status > 4) return Status::ProtocolError("unknown member status");
    m->status = static_cast<MemberStatus>(status);
    DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&m->incarnation));
    DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&m->heartbeat));
    if (m->incarnation > kMemberCounterMax || m->heartbeat > kMemberCounterMax) {
      return Status::ProtocolError("member incarnation or heartbeat out of range");
    }
    DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&m->actor));
    DYNAMO_RETURN_IF_ERROR(r_.ReadBool(&m->alive));
    DYNAMO_RETURN_IF_ERROR(AddedUint(&m->life));
    return Close();
  }

  Status Members(std::vector<Member>* members) {
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n, kMaxMembers));
    DYNAMO_RETURN_IF_ERROR(Resize(members, n));
    for (Member& m : *members) DYNAMO_RETURN_IF_ERROR(Mem(&m));
    return Status::OK();
  }

  Status Entries(std::vector<KeyedSiblings>* entries) {
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n));
    DYNAMO_RETURN_IF_ERROR(Resize(entries, n));
    for (KeyedSiblings& e : *entries) {
      DYNAMO_RETURN_IF_ERROR(Open(2));
      DYNAMO_RETURN_IF_ERROR(Key(&e.key));
      DYNAMO_RETURN_IF_ERROR(Siblings(&e.siblings));
      DYNAMO_RETURN_IF_ERROR(Close());
    }
    return Status::OK();
  }

  Status Nodes(std::vector<MerkleNodeId>* nodes) {
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n, 2 * kMerkleRequestNodesMax));
    if (n % 2 != 0) return Status::ProtocolError("odd Merkle node list");
    DYNAMO_RETURN_IF_ERROR(Resize(nodes, n / 2));
    for (MerkleNodeId& node : *nodes) {
      DYNAMO_RETURN_IF_ERROR(UintAs(&node.level, kMerkleHashBits));
      DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&node.index));
      if (node.level < kMerkleHashBits && node.index >= (uint64_t{1} << node.level)) {
        return Status::ProtocolError("Merkle node index out of range");
      }
    }
    return Status::OK();
  }

  // Payload decoders, one per message.
  Status Payload(ErrorReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(4));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(UintAs(&m->code, kMaxStatusCode));
    DYNAMO_RETURN_IF_ERROR(Text(&m->message));
    DYNAMO_RETURN_IF_ERROR(Bool(&m->in_doubt));
    if (extra_[open_ - 1] > 0) {
      --extra_[open_ - 1];
      uint32_t n = 0;
      DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n, kMaxReplicas));
      DYNAMO_RETURN_IF_ERROR(Resize(&m->replicas, n));
      for (NodeAddress& r : m->replicas) {
        DYNAMO_RETURN_IF_ERROR(Open(2));
        DYNAMO_RETURN_IF_ERROR(NodeIdField(&r.node, false));
        DYNAMO_RETURN_IF_ERROR(Text(&r.address));
        DYNAMO_RETURN_IF_ERROR(Close());
      }
    }
    return Close();
  }
  Status Payload(Ack* m) {
    DYNAMO_RETURN_IF_ERROR(Open(2));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->count));
    return Close();
  }
  Status Payload(GetRequest* m) {
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n));
    if (n < 1) return Status::ProtocolError("expected 1 field, got 0");
    DYNAMO_RETURN_IF_ERROR(Key(&m->key));
    if (n >= 2) DYNAMO_RETURN_IF_ERROR(NodeIdField(&m->hint, true));
    return r_.SkipN(n - std::min<uint32_t>(n, 2));
  }
  Status Payload(GetReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(2));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Siblings(&m->siblings));
    return Close();
  }
  Status Payload(CoordPutRequest* m) {
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n));
    if (n < 4) return Status::ProtocolError("expected 4 fields, got " + std::to_string(n));
    DYNAMO_RETURN_IF_ERROR(Key(&m->key));
    DYNAMO_RETURN_IF_ERROR(Clock(&m->context));
    DYNAMO_RETURN_IF_ERROR(Value(&m->value));
    DYNAMO_RETURN_IF_ERROR(Bool(&m->tombstone));
    if (n >= 5) DYNAMO_RETURN_IF_ERROR(Uint(&m->op_id));
    if (n >= 6) DYNAMO_RETURN_IF_ERROR(Bool(&m->no_sync));
    if (n >= 7) DYNAMO_RETURN_IF_ERROR(NodeIdField(&m->hint, true));
    return r_.SkipN(n - std::min<uint32_t>(n, 7));
  }
  Status Payload(CoordPutReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(4));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->dot.actor));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->dot.counter));
    DYNAMO_RETURN_IF_ERROR(Siblings(&m->siblings));
    return Close();
  }
  Status Payload(ReplicaPutRequest* m) {
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n));
    if (n < 3) return Status::ProtocolError("expected 3 fields, got " + std::to_string(n));
    DYNAMO_RETURN_IF_ERROR(Key(&m->key));
    DYNAMO_RETURN_IF_ERROR(Siblings(&m->siblings));
    DYNAMO_RETURN_IF_ERROR(NodeIdField(&m->hint, true));
    if (n >= 4) DYNAMO_RETURN_IF_ERROR(Bool(&m->sync));
    return r_.SkipN(n - std::min<uint32_t>(n, 4));
  }
  Status Payload(RingRequest*) {
    DYNAMO_RETURN_IF_ERROR(Open(0));
    return Close();
  }
  Status Payload(RingReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(2));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Blob(&m->ring));
    return Close();
  }
  Status Payload(MembersRequest*) {
    DYNAMO_RETURN_IF_ERROR(Open(0));
    return Close();
  }
  Status Payload(MembersReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(2));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Members(&m->members));
    return Close();
  }
  Status Payload(GossipRequest* m) {
    DYNAMO_RETURN_IF_ERROR(Open(3));
    DYNAMO_RETURN_IF_ERROR(NodeIdField(&m->from, false));
    DYNAMO_RETURN_IF_ERROR(Members(&m->members));
    DYNAMO_RETURN_IF_ERROR(Blob(&m->ring));
    return Close();
  }
  Status Payload(GossipReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(3));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Members(&m->members));
    DYNAMO_RETURN_IF_ERROR(Blob(&m->ring));
    return Close();
  }
  Status Payload(JoinRequest* m) {
    DYNAMO_RETURN_IF_ERROR(Open(1));
    DYNAMO_RETURN_IF_ERROR(Mem(&m->joiner));
    return Close();
  }
  Status Payload(JoinReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(3));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Blob(&m->ring));
    DYNAMO_RETURN_IF_ERROR(Members(&m->members));
    return Close();
  }
  Status Payload(AdminRequest* m) {
    DYNAMO_RETURN_IF_ERROR(Open(2));
    uint64_t op = 0;
    DYNAMO_RETURN_IF_ERROR(Uint(&op));
    if (op < 1 || op > 2) return Status::ProtocolError("unknown admin operation");
    m->op = static_cast<AdminOp>(op);
    DYNAMO_RETURN_IF_ERROR(NodeIdField(&m->node, false));
    return Close();
  }
  Status Payload(AdminReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(2));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Text(&m->message));
    return Close();
  }
  Status Payload(StatsRequest*) {
    DYNAMO_RETURN_IF_ERROR(Open(0));
    return Close();
  }
  Status Payload(StatsReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(2));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n, kStatsCountersMax * 2));
    if (n % 2 != 0) return Status::ProtocolError("odd stats counter list");
    DYNAMO_RETURN_IF_ERROR(Resize(&m->counters, n / 2));
    for (auto& [name, value] : m->counters) {
      std::string_view v;
      DYNAMO_RETURN_IF_ERROR(r_.ReadStr(&v, kStatsNameBytesMax));
      name.assign(v);
      DYNAMO_RETURN_IF_ERROR(r_.ReadUint(&value));
    }
    return Close();
  }
  Status Payload(AeCompareRequest* m) {
    DYNAMO_RETURN_IF_ERROR(Open(4));
    DYNAMO_RETURN_IF_ERROR(UintAs(&m->partition, kMaxPartitions - 1));
    DYNAMO_RETURN_IF_ERROR(Nodes(&m->request.expand));
    DYNAMO_RETURN_IF_ERROR(UintAs(&m->request.levels, kMaxMerkleExpandLevels));
    DYNAMO_RETURN_IF_ERROR(Nodes(&m->request.fetch));
    if ((uint64_t{m->request.expand.size()} << m->request.levels) > kMaxAeSummaries) {
      return Status::ProtocolError("Merkle request asks for too many summaries");
    }
    return Close();
  }
  Status Payload(AeCompareReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(4));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n));
    if (n % 2 != 0) return Status::ProtocolError("odd Merkle summary list");
    DYNAMO_RETURN_IF_ERROR(Resize(&m->reply.summaries, n / 2));
    for (MerkleSummary& s : m->reply.summaries) {
      DYNAMO_RETURN_IF_ERROR(Uint(&s.hash));
      DYNAMO_RETURN_IF_ERROR(Uint(&s.count));
    }
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n));
    DYNAMO_RETURN_IF_ERROR(Resize(&m->reply.keys, n));
    for (std::vector<MerkleKey>& list : m->reply.keys) {
      uint32_t k = 0;
      DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&k));
      if (k % 2 != 0) return Status::ProtocolError("odd Merkle key list");
      DYNAMO_RETURN_IF_ERROR(Resize(&list, k / 2));
      for (MerkleKey& key : list) {
        DYNAMO_RETURN_IF_ERROR(Key(&key.key));
        DYNAMO_RETURN_IF_ERROR(Uint(&key.digest));
      }
    }
    DYNAMO_RETURN_IF_ERROR(Bool(&m->catching_up));
    return Close();
  }
  Status Payload(FetchRequest* m) {
    DYNAMO_RETURN_IF_ERROR(Open(1));
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n));
    DYNAMO_RETURN_IF_ERROR(Resize(&m->keys, n));
    for (std::string& k : m->keys) DYNAMO_RETURN_IF_ERROR(Key(&k));
    return Close();
  }
  Status Payload(FetchReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(2));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Entries(&m->entries));
    return Close();
  }
  Status Payload(PushRequest* m) {
    DYNAMO_RETURN_IF_ERROR(Open(2));
    uint64_t purpose = 0;
    DYNAMO_RETURN_IF_ERROR(Uint(&purpose));
    if (purpose < 1 || purpose > 3) return Status::ProtocolError("unknown push purpose");
    m->purpose = static_cast<PushPurpose>(purpose);
    DYNAMO_RETURN_IF_ERROR(Entries(&m->entries));
    return Close();
  }
  Status Payload(PurgeRequest* m) {
    DYNAMO_RETURN_IF_ERROR(Open(1));
    uint32_t n = 0;
    DYNAMO_RETURN_IF_ERROR(r_.ReadArray(&n));
    if (n % 2 != 0) return Status::ProtocolError("odd purge list");
    DYNAMO_RETURN_IF_ERROR(Resize(&m->entries, n / 2));
    for (PurgeRequest::Entry& e : m->entries) {
      DYNAMO_RETURN_IF_ERROR(Key(&e.key));
      DYNAMO_RETURN_IF_ERROR(Uint(&e.digest));
    }
    return Close();
  }
  Status Payload(TransferRequest* m) {
    DYNAMO_RETURN_IF_ERROR(Open(4));
    DYNAMO_RETURN_IF_ERROR(UintAs(&m->partition, kMaxPartitions - 1));
    std::string_view after;
    DYNAMO_RETURN_IF_ERROR(r_.ReadBin(&after, lim_->key_bytes_max));
    m->after_key.assign(after);
    DYNAMO_RETURN_IF_ERROR(UintAs(&m->max_entries));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->max_bytes));
    return Close();
  }
  Status Payload(TransferReply* m) {
    DYNAMO_RETURN_IF_ERROR(Open(3));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->epoch));
    DYNAMO_RETURN_IF_ERROR(Entries(&m->entries));
    DYNAMO_RETURN_IF_ERROR(Bool(&m->done));
    return Close();
  }
  Status Payload(TransferDoneRequest* m) {
    DYNAMO_RETURN_IF_ERROR(Open(3));
    DYNAMO_RETURN_IF_ERROR(UintAs(&m->partition, kMaxPartitions - 1));
    DYNAMO_RETURN_IF_ERROR(NodeIdField(&m->node, false));
    DYNAMO_RETURN_IF_ERROR(Uint(&m->ring_epoch));
    return Close();
  }

 private:
  [[gnu::cold, gnu::noinline]] Status OverDecodedBytesMax() const {
    return Status::InvalidArgument(
        "message would take over " + std::to_string(decoded_bytes_max_) +
        " bytes of memory decoded (" + std::to_string(kDecodedBytesPerFrameByte) +
        " times limits.frame_bytes_max, at least " + std::to_string(kDecodedBytesMin) + ")");
  }

  MsgpackReader r_;
  const Limits* lim_;
  const size_t decoded_bytes_max_;
  size_t decoded_bytes_ = 0;
  // Unread trailing fields of each open record; records nest at most 4 deep.
  std::array<uint32_t, 8> extra_;
  size_t open_ = 0;
};

template <typename T>
Result<Body> DecodeAs(Decoder& d) {
  T m{};
  Status s = d.Payload(&m);
  if (!s.ok()) return s;
  return Body(std::move(m));
}

Result<Body> DecodePayload(MessageType type, Decoder& d) {
  switch (type) {
    case MessageType::kError: return DecodeAs<ErrorReply>(d);
    case MessageType::kAck: return DecodeAs<Ack>(d);
    case MessageType::kGet: return DecodeAs<GetRequest>(d);
    case MessageType::kGetReply: return DecodeAs<GetReply>(d);
    case MessageType::kCoordPut: return DecodeAs<CoordPutRequest>(d);
    case MessageType::kCoordPutReply: return DecodeAs<CoordPutReply>(d);
    case MessageType::kReplicaPut: return DecodeAs<ReplicaPutRequest>(d);
    case MessageType::kRing: return DecodeAs<RingRequest>(d);
    case MessageType::kRingReply: return DecodeAs<RingReply>(d);
    case MessageType::kMembers: return DecodeAs<MembersRequest>(d);
    case MessageType::kMembersReply: return DecodeAs<MembersReply>(d);
    case MessageType::kGossip: return DecodeAs<GossipRequest>(d);
    case MessageType::kGossipReply: return DecodeAs<GossipReply>(d);
    case MessageType::kJoin: return DecodeAs<JoinRequest>(d);
    case MessageType::kJoinReply: return DecodeAs<JoinReply>(d);
    case MessageType::kAdmin: return DecodeAs<AdminRequest>(d);
    case MessageType::kAdminReply: return DecodeAs<AdminReply>(d);
    case MessageType::kStats: return DecodeAs<StatsRequest>(d);
    case MessageType::kStatsReply: return DecodeAs<StatsReply>(d);
    case MessageType::kAeCompare: return DecodeAs<AeCompareRequest>(d);
    case MessageType::kAeCompareReply: return DecodeAs<AeCompareReply>(d);
    case MessageType::kFetch: return DecodeAs<FetchRequest>(d);
    case MessageType::kFetchReply: return DecodeAs<FetchReply>(d);
    case MessageType::kPush: return DecodeAs<PushRequest>(d);
    case MessageType::kPurge: return DecodeAs<PurgeRequest>(d);
    case MessageType::kTransfer: return DecodeAs<TransferRequest>(d);
    case MessageType::kTransferReply: return DecodeAs<TransferReply>(d);
    case MessageType::kTransferDone: return DecodeAs<TransferDoneRequest>(d);
  }
  return Status::ProtocolError("unknown message type " +
                               std::to_string(static_cast<unsigned>(type)));
}

}  // namespace

static_assert(kErrorMessageBytesMax <= Limits{}.text_bytes_max);

bool CarriesStoredData(MessageType type) {
  switch (type) {
    case MessageType::kGetReply:
    case MessageType::kFetch:
    case MessageType::kFetchReply:
    case MessageType::kPush:
    case MessageType::kPurge:
    case MessageType::kTransfer:
    case MessageType::kTransferReply:
    case MessageType::kAeCompareReply:
      return true;
    default:
      return false;
  }
}

Limits WithStoredDataLimits(Limits limits) {
  limits.key_bytes_max = std::max(limits.key_bytes_max, kKeyBytesCeiling);
  limits.value_bytes_max = std::max(limits.value_bytes_max, kValueBytesCeiling);
  return limits;
}

MsgpackLimits ReaderLimits(const Limits& limits) {
  MsgpackLimits m;
  m.depth_max = limits.depth_max;
  m.items_max = limits.items_max;
  // Each string field checks its own, smaller bound; the frame bounds all.
  m.bytes_max = limits.frame_bytes_max;
  return m;
}

void AppendFrame(const Message& message, std::string* out) {
  AppendFrame(message.request_id, message.body, out);
}

void AppendFrame(uint64_t request_id, const Body& body, std::string* out) {
  const size_t at = out->size();
  out->append(kFrameHeaderBytes, '\0');
  MsgpackWriter w(out);
  w.Array(4);
  w.Uint(kProtocolVersion);
  w.Uint(static_cast<uint64_t>(TypeOf(body)));
  w.Uint(request_id);
  std::visit(PayloadEncoder{w}, body);
  const size_t len = out->size() - at - kFrameHeaderBytes;
  DYNAMO_CHECK(len <= UINT32_MAX);
  (*out)[at] = static_cast<char>(len >> 24);
  (*out)[at + 1] = static_cast<char>(len >> 16);
  (*out)[at + 2] = static_cast<char>(len >> 8);
  (*out)[at + 3] = static_cast<char>(len);
}

std::string EncodeFrame(const Message& message) {
  std::string out;
  AppendFrame(message, &out);
  return out;
}

Result<Message> DecodeMessage(std::string_view body, const Limits& limits, Envelope* envelope) {
  if (envelope) *envelope = Envelope{};
  if (body.size() > limits.frame_bytes_max) {
    return Status::ProtocolError("frame of " + std::to_string(body.size()) +
                                 " bytes exceeds frame_bytes_max (" +
                                 std::to_string(limits.frame_bytes_max) + ")");
  }
  Decoder d(body, limits, DecodedBytesMax(limits));
  MsgpackReader& r = d.reader();
  uint32_t fields = 0;
  uint64_t version = 0, type = 0, id = 0;
  Status s = r.ReadArray(&fields);
  if (s.ok() && fields < 4) s = Status::ProtocolError("envelope needs 4 fields");
  if (s.ok()) s = r.ReadUint(&version);
  if (s.ok() && version != kProtocolVersion) {
    s = Status::ProtocolError("unsupported protocol version " + std::to_string(version));
  }
  if (s.ok()) s = r.ReadUintMax(&type, UINT16_MAX);
  if (s.ok()) s = r.ReadUint(&id);
  if (!s.ok()) return s;
  if (envelope) *envelope = Envelope{true, id, static_cast<uint16_t>(type)};
  const Limits stored = WithStoredDataLimits(limits);
  if (CarriesStoredData(static_cast<MessageType>(type))) d.UseLimits(stored);
  Result<Body> payload = DecodePayload(static_cast<MessageType>(type), d);
  if (!payload.ok()) return payload.status();
  s = r.SkipN(fields - 4);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return s;
  return Message{id, std::move(*payload), sizeof(Message) + d.decoded_bytes()};
}

void EncodeSiblings(const SiblingSet& set, MsgpackWriter& w) { Enc(w, set); }

std::string EncodeSiblingSet(const SiblingSet& set) {
  // Room for the whole record at once: the headers and integers of a
  // version take at most 48 bytes, a clock entry at most 27.
  size_t bytes = 5;
  for (const Version& v : set) bytes += 48 + v.value.size() + 27 * v.context.size();
  std::string out;
  out.reserve(bytes);
  MsgpackWriter w(&out);
  Enc(w, set);
  return out;
}

Result<SiblingSet> DecodeSiblingSet(std::string_view bytes, const Limits& limits) {
  Decoder d(bytes, limits);
  SiblingSet set;
  Status s = d.Siblings(&set);
  if (s.ok()) s = d.reader().ExpectEnd();
  if (!s.ok()) return s;
  return set;
}

std::string EncodeMembers(const std::vector<Member>& members) {
  std::string out;
  MsgpackWriter w(&out);
  Enc(w, members);
  return out;
}

Result<std::vector<Member>> DecodeMembers(std::string_view bytes, const Limits& limits) {
  Decoder d(bytes, limits);
  std::vector<Member> members;
  Status s = d.Members(&members);
  if (s.ok()) s = d.reader().ExpectEnd();
  if (!s.ok()) return s;
  return members;
}

// ---------------------------------------------------------------- frames

FrameDecoder::FrameDecoder(uint32_t frame_bytes_max) : frame_bytes_max_(frame_bytes_max) {}

void FrameDecoder::Compact(size_t min_free) {
  if (start_ == end_) {
    start_ = end_ = 0;
    if (const size_t to = trim_.TrimTo(buf_.size())) {
      buf_.resize(to);
      buf_.shrink_to_fit();
    }
  } else if (start_ > 0 && (buf_.size() - end_ < min_free || start_ >= buf_.size() / 2)) {
    std::memmove(buf_.data(), buf_.data() + start_, end_ - start_);
    end_ -= start_;
    start_ = 0;
  }
  if (buf_.size() - end_ < min_free) buf_.resize(std::max(buf_.size() * 2, end_ + min_free));
  min_free_ = min_free;
}

void FrameDecoder::Feed(std::string_view bytes) {
  std::span<char> tail = WritableTail(bytes.size());
  std::memcpy(tail.data(), bytes.data(), bytes.size());
  Commit(bytes.size());
}

std::span<char> FrameDecoder::WritableTail(size_t min_bytes) {
  Compact(min_bytes);
  return {buf_.data() + end_, buf_.size() - end_};
}

void FrameDecoder::Commit(size_t bytes) {
  DYNAMO_CHECK(end_ + bytes <= buf_.size());
  end_ += bytes;
  // A read may fill all the room it was given, more than it asked for: the
  // need is what the buffer holds after it, and room for the next.
  trim_.Use(end_ - start_ + min_free_);
}

Result<bool> FrameDecoder::Next(std::string_view* body) {
  if (!error_.ok()) return error_;
  if (end_ - start_ < kFrameHeaderBytes) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(buf_.data() + start_);
  const uint32_t len = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
  if (len == 0 || len > frame_bytes_max_) {
    error_ = Status::ProtocolError("frame of " + std::to_string(len) + " bytes " +
                                   (len == 0 ? std::string("is empty")
                                             : "exceeds frame_bytes_max (" +
                                                   std::to_string(frame_bytes_max_) + ")"));
    return error_;
  }
  const size_t frame = size_t{kFrameHeaderBytes} + len;
  if (end_ - start_ < frame) return false;
  *body = std::string_view(buf_.data() + start_ + kFrameHeaderBytes, len);
  start_ += frame;
  return true;
}

}  // namespace dynamo::proto
