#include "support/sample_messages.h"

#include <string>

namespace dynamo::proto::test {

Version SampleVersion(uint64_t n, bool tombstone) {
  Version v;
  v.dot = Dot{0x1234 + n, 7 + n};
  v.context.Add(Dot{11, 3}, 1700000000000);
  v.context.Add(Dot{0xffffffffffULL, 1ULL << 40}, 5);
  v.timestamp_ms = 1700000000123 + n;
  v.tombstone = tombstone;
  if (!tombstone) v.value = "value-" + std::to_string(n) + std::string(100, 'x');
  return v;
}

SiblingSet SampleSiblings() { return {SampleVersion(1), SampleVersion(2, true), SampleVersion(3)}; }

namespace {

Member SampleMember(int i) {
  return Member{"node-" + std::to_string(i),
                "127.0.0.1:" + std::to_string(7000 + i),
                MemberStatus::kLeaving,
                9u + i,
                12345u + i,
                0xabcdefULL + i,
                i % 2 == 0,
                0x5eedULL + i};
}

std::vector<KeyedSiblings> SampleEntries() {
  return {{"k1", SampleSiblings()}, {std::string("bin\0key", 7), {}}};
}

}  // namespace

std::vector<Body> AllMessages() {
  MerkleRequest mreq;
  mreq.expand = {{3, 5}, {3, 6}};
  mreq.levels = 4;
  mreq.fetch = {{64, UINT64_MAX}, {0, 0}};
  MerkleReply mrep;
  mrep.summaries = {{1, 2}, {UINT64_MAX, 0}};
  mrep.keys = {{{"a", 1}, {"b", 2}}, {}};
  return {
      ErrorReply{5, StatusCode::kTimeout, "deadline passed", true},
      ErrorReply{7,
                 StatusCode::kUnavailable,
                 "not a replica",
                 false,
                 {{"n2", "127.0.0.1:7002"}, {"n3", ""}}},
      Ack{6, 42},
      GetRequest{"user:1", "n7"},
      GetReply{7, SampleSiblings()},
      CoordPutRequest{"user:1", SampleVersion(9).context, "new value", false, 0xfeedULL},
      CoordPutRequest{"user:2", {}, "unsynced", false, 0, true},
      CoordPutRequest{"user:3", {}, "as a fallback", false, 0x17ULL, false, "n4"},
      CoordPutReply{8, Dot{1, 2}, SampleSiblings()},
      ReplicaPutRequest{"user:1", SampleSiblings(), "n3", true},
      RingRequest{},
      RingReply{9, Ring::Create({"n1", "n2"}, 64)->Serialize()},
      MembersRequest{},
      MembersReply{10, {SampleMember(1), SampleMember(2)}},
      GossipRequest{"n1", {SampleMember(3)}, "ring-bytes"},
      GossipReply{11, {SampleMember(4)}, "ring"},
      JoinRequest{SampleMember(5)},
      JoinReply{12, "ring", {SampleMember(6)}},
      AdminRequest{AdminOp::kRemove, "n4"},
      AdminReply{13, "removing n4"},
      StatsRequest{},
      StatsReply{16, {{"ae_sessions", 3}, {"hints_pending", 0}}},
      AeCompareRequest{77, mreq},
      AeCompareReply{14, mrep, true},
      FetchRequest{{"a", "b", "c"}},
      FetchReply{15, SampleEntries()},
      PushRequest{PushPurpose::kHint, SampleEntries()},
      PurgeRequest{{{"gone", 0x1234567890abcdefULL}, {"also-gone", 7}}},
      TransferRequest{33, "after-me", 500, 1u << 20},
      TransferReply{16, SampleEntries(), true},
      TransferDoneRequest{33, "n5", 99},
  };
}

}  // namespace dynamo::proto::test
