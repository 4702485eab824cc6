#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "dynamo/proto/codec.h"
#include "support/sample_messages.h"

namespace dynamo::proto {
namespace {

using test::AllMessages;
using test::SampleSiblings;
using test::SampleVersion;

std::string Body_(const std::string& frame) { return frame.substr(kFrameHeaderBytes); }

TEST(ProtoTest, CatalogueIsComplete) {
  std::set<MessageType> types;
  for (const Body& b : AllMessages()) types.insert(TypeOf(b));
  EXPECT_EQ(types.size(), std::variant_size_v<Body>);
  for (MessageType t : types) EXPECT_NE(MessageTypeName(t), "Unknown");
  EXPECT_TRUE(IsReply(MessageType::kError));
  EXPECT_TRUE(IsReply(MessageType::kGetReply));
  EXPECT_FALSE(IsReply(MessageType::kReplicaPut));
}

// Every message round-trips: decoding and re-encoding gives the same bytes,
// and every field was set to a non-default value.
TEST(ProtoTest, EveryMessageRoundTrips) {
  uint64_t id = 1;
  for (const Body& body : AllMessages()) {
    Message m{id++ * 0x100000001ULL, body};
    std::string frame = EncodeFrame(m);
    uint32_t len = (uint8_t(frame[0]) << 24) | (uint8_t(frame[1]) << 16) | (uint8_t(frame[2]) << 8) |
                   uint8_t(frame[3]);
    ASSERT_EQ(len + kFrameHeaderBytes, frame.size());
    Envelope env;
    Result<Message> back = DecodeMessage(Body_(frame), Limits{}, &env);
    ASSERT_TRUE(back.ok()) << MessageTypeName(TypeOf(body)) << ": " << back.status().ToString();
    EXPECT_TRUE(env.valid);
    EXPECT_EQ(env.request_id, m.request_id);
    EXPECT_EQ(back->request_id, m.request_id);
    EXPECT_EQ(TypeOf(back->body), TypeOf(body));
    EXPECT_EQ(EncodeFrame(*back), frame) << MessageTypeName(TypeOf(body));
  }
}

TEST(ProtoTest, SpotCheckDecodedFields) {
  Message m{3, ReplicaPutRequest{"k", SampleSiblings(), "n2"}};
  Result<Message> back = DecodeMessage(Body_(EncodeFrame(m)), Limits{});
  ASSERT_TRUE(back.ok());
  const auto& r = std::get<ReplicaPutRequest>(back->body);
  EXPECT_EQ(r.siblings, SampleSiblings());
  EXPECT_EQ(r.hint, "n2");
  Status s = ToStatus(std::get<ErrorReply>(
      DecodeMessage(Body_(EncodeFrame({1, MakeError(Status::Busy("full").WithInDoubt(true), 4)})),
                    Limits{})
          ->body));
  EXPECT_EQ(s.code(), StatusCode::kBusy);
  EXPECT_TRUE(s.in_doubt());
}

// The replicas an ErrorReply may name came later: a reply without them
// decodes as before, and their count is checked before they are read.
TEST(ProtoTest, AnErrorNamesAtMostMaxReplicasReplicas) {
  ErrorReply e{9, StatusCode::kUnavailable, "not a replica", false, {{"n4", "127.0.0.1:7004"}}};
  Result<Message> back = DecodeMessage(Body_(EncodeFrame({1, e})), Limits{});
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(std::get<ErrorReply>(back->body).replicas, e.replicas);
  e.replicas.clear();
  back = DecodeMessage(Body_(EncodeFrame({1, e})), Limits{});
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(std::get<ErrorReply>(back->body).replicas.empty());
  e.replicas.assign(kMaxReplicas + 1, NodeAddress{"n4", ""});
  EXPECT_EQ(DecodeMessage(Body_(EncodeFrame({1, e})), Limits{}).status().code(),
            StatusCode::kProtocolError);
  e.replicas.assign(1, NodeAddress{"", "127.0.0.1:1"});
  EXPECT_EQ(DecodeMessage(Body_(EncodeFrame({1, e})), Limits{}).status().code(),
            StatusCode::kProtocolError);
}

TEST(ProtoTest, SiblingSetRecordRoundTrips) {
  std::string bytes = EncodeSiblingSet(SampleSiblings());
  Result<SiblingSet> back = DecodeSiblingSet(bytes, Limits{});
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, SampleSiblings());
  EXPECT_FALSE(DecodeSiblingSet(bytes.substr(0, bytes.size() - 1), Limits{}).ok());
  EXPECT_FALSE(DecodeSiblingSet(bytes + "x", Limits{}).ok());
}

TEST(ProtoTest, EveryTruncationIsRejected) {
  for (const Body& body : AllMessages()) {
    std::string b = Body_(EncodeFrame({1, body}));
    for (size_t cut = 0; cut < b.size(); ++cut) {
      Result<Message> r = DecodeMessage(std::string_view(b).substr(0, cut), Limits{});
      ASSERT_FALSE(r.ok()) << MessageTypeName(TypeOf(body)) << " cut at " << cut;
      EXPECT_EQ(r.status().code(), StatusCode::kProtocolError);
    }
  }
}

TEST(ProtoTest, OversizeKeyAndValueNameTheLimit) {
  Limits limits;
  Result<Message> r = DecodeMessage(Body_(EncodeFrame({9, GetRequest{std::string(2049, 'k')}})), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("key_bytes_max (2048)"), std::string_view::npos);
  EXPECT_TRUE(DecodeMessage(Body_(EncodeFrame({9, GetRequest{std::string(2048, 'k')}})), limits).ok());

  Envelope env;
  r = DecodeMessage(
      Body_(EncodeFrame({10, CoordPutRequest{"k", {}, std::string((1 << 20) + 1, 'v'), false}})),
      limits, &env);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("value_bytes_max (1048576)"), std::string_view::npos);
  EXPECT_EQ(env.request_id, 10u);  // so the error can be answered
  EXPECT_EQ(env.type, static_cast<uint16_t>(MessageType::kCoordPut));

  limits.value_bytes_max = 10;
  r = DecodeMessage(Body_(EncodeFrame({10, CoordPutRequest{"k", {}, "eleven char", false}})), limits);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeMessage(Body_(EncodeFrame({1, GetRequest{""}})), Limits{}).status().code(),
            StatusCode::kInvalidArgument);
}

// Data already stored travels against the ceilings, not the receiver's
// current limits: a value stored before value_bytes_max was lowered on every
// node is still handed off, transferred and compared. What a request brings
// in new is held to the limits.
TEST(ProtoTest, StoredDataIsReadAgainstTheCeilingsAndNewDataAgainstTheLimits) {
  Limits lowered;
  lowered.key_bytes_max = 1024;
  lowered.value_bytes_max = 1024;
  const std::string long_key(4096, 'k');
  auto with_value = [](std::string value) {
    return Version{Dot{1, 1}, {}, 0, false, false, std::move(value)};
  };
  const SiblingSet big = {with_value(std::string(4096, 'v'))};
  const std::vector<Body> stored = {
      GetReply{1, big},
      FetchRequest{{long_key}},
      FetchReply{1, {KeyedSiblings{long_key, big}}},
      PushRequest{PushPurpose::kHint, {KeyedSiblings{long_key, big}}},
      PurgeRequest{{PurgeRequest::Entry{long_key, 7}}},
      TransferRequest{3, long_key, 10, 1 << 20},
      TransferReply{1, {KeyedSiblings{long_key, big}}, false},
  };
  for (const Body& body : stored) {
    Result<Message> r = DecodeMessage(Body_(EncodeFrame({5, body})), lowered);
    EXPECT_TRUE(r.ok()) << static_cast<int>(TypeOf(body)) << ": " << r.status().ToString();
    EXPECT_TRUE(CarriesStoredData(TypeOf(body)));
  }
  const std::vector<Body> fresh = {
      GetRequest{long_key},
      CoordPutRequest{"k", {}, std::string(4096, 'v'), false},
      ReplicaPutRequest{"k", big, ""},
      ReplicaPutRequest{long_key, {with_value("v")}, ""},
  };
  for (const Body& body : fresh) {
    EXPECT_EQ(DecodeMessage(Body_(EncodeFrame({5, body})), lowered).status().code(),
              StatusCode::kInvalidArgument)
        << static_cast<int>(TypeOf(body));
    EXPECT_FALSE(CarriesStoredData(TypeOf(body)));
  }
  // The ceilings still hold.
  Limits wide;
  wide.frame_bytes_max = 1u << 30;
  EXPECT_EQ(
      DecodeMessage(Body_(EncodeFrame({5, FetchRequest{{std::string(kKeyBytesCeiling + 1, 'k')}}})),
                    wide)
          .status()
          .code(),
      StatusCode::kInvalidArgument);
}

// An error's message is cut so that every decoder takes it in: a Busy that
// quoted a long key was a ProtocolError at the client, which closed the
// connection and failed every call on it.
TEST(ProtoTest, ALongErrorMessageIsCutToWhatDecodersTakeIn) {
  // A 3-byte UTF-8 character straddles the cut.
  std::string message = std::string(kErrorMessageBytesMax - 5, 'm') + "\xe2\x82\xac" + "tail";
  message += std::string(5000, 'x');
  ErrorReply e = MakeError(Status::Busy(message), 3);
  EXPECT_LE(e.message.size(), kErrorMessageBytesMax);
  EXPECT_EQ(e.message.substr(e.message.size() - 3), "...");
  EXPECT_EQ(e.message.find("\xe2"), std::string::npos);  // not cut inside the character
  Result<Message> r = DecodeMessage(Body_(EncodeFrame({4, e})), Limits{});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(std::get<ErrorReply>(r->body).code, StatusCode::kBusy);
  EXPECT_EQ(MakeError(Status::Busy("short"), 0).message, "short");
}

// A push of many minimal versions (8 bytes each on the wire) would take
// about 11 times its frame in memory decoded; what a message takes decoded is
// counted before it is allocated and bounded by four times the frame limit
// (at least 16 MiB), and ordinary messages take about their frame's size.
TEST(ProtoTest, DecodedMemoryIsCountedAndBoundedBeforeItIsAllocated) {
  PushRequest push{PushPurpose::kRepair, {}};
  Version tiny;
  tiny.dot = {1, 1};
  for (int i = 0; i < 2'000; ++i) push.entries.push_back({"k", SiblingSet(100, tiny)});
  const std::string frame = Body_(EncodeFrame({3, push}));
  ASSERT_LT(frame.size(), 2'000'000u);
  Limits limits;
  limits.frame_bytes_max = 2u << 20;  // bound: the 16 MiB floor
  Envelope env;
  Result<Message> r = DecodeMessage(frame, limits, &env);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);  // answered, connection kept
  EXPECT_NE(r.status().message().find("16777216 bytes of memory decoded"), std::string_view::npos)
      << r.status().ToString();
  EXPECT_EQ(env.request_id, 3u);
  limits.frame_bytes_max = 8u << 20;  // bound: 32 MiB
  r = DecodeMessage(frame, limits);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->decoded_bytes, 8 * frame.size());
  EXPECT_LE(r->decoded_bytes, DecodedBytesMax(limits));

  const std::string put =
      Body_(EncodeFrame({4, CoordPutRequest{"key", {}, std::string(100'000, 'v'), false}}));
  r = DecodeMessage(put, Limits{});
  ASSERT_TRUE(r.ok());
  EXPECT_GE(r->decoded_bytes, 100'003u);
  EXPECT_LT(r->decoded_bytes, put.size() + 1024);
}

std::string Envelope4(uint64_t version, uint64_t type, uint64_t id, const std::function<void(MsgpackWriter&)>& payload) {
  std::string out;
  MsgpackWriter w(&out);
  w.Array(4);
  w.Uint(version);
  w.Uint(type);
  w.Uint(id);
  payload(w);
  return out;
}

TEST(ProtoTest, TypeConfusedFramesAreRejected) {
  auto code = [](const std::string& body) { return DecodeMessage(body, Limits{}).status().code(); };
  // Key as str instead of bin.
  EXPECT_EQ(code(Envelope4(1, 10, 1, [](MsgpackWriter& w) { w.Array(1); w.Str("k"); })),
            StatusCode::kProtocolError);
  // Payload not an array.
  EXPECT_EQ(code(Envelope4(1, 10, 1, [](MsgpackWriter& w) { w.Uint(5); })), StatusCode::kProtocolError);
  // Too few fields.
  EXPECT_EQ(code(Envelope4(1, 12, 1, [](MsgpackWriter& w) { w.Array(1); w.Bin("k"); })),
            StatusCode::kProtocolError);
  // Unknown type, bad version, envelope not an array, bad enum values.
  EXPECT_EQ(code(Envelope4(1, 999, 1, [](MsgpackWriter& w) { w.Array(0); })), StatusCode::kProtocolError);
  EXPECT_EQ(code(Envelope4(2, 10, 1, [](MsgpackWriter& w) { w.Array(1); w.Bin("k"); })),
            StatusCode::kProtocolError);
  EXPECT_EQ(code(std::string("\x01", 1)), StatusCode::kProtocolError);
  EXPECT_EQ(code(Envelope4(1, 28, 1, [](MsgpackWriter& w) { w.Array(2); w.Uint(9); w.Str("n1"); })),
            StatusCode::kProtocolError);
  EXPECT_EQ(code(Envelope4(1, 1, 1, [](MsgpackWriter& w) {
              w.Array(4); w.Uint(1); w.Uint(200); w.Str("x"); w.Bool(false);
            })),
            StatusCode::kProtocolError);
  // Version with counter 0, unknown flags, tombstone carrying a value, unsorted clock.
  auto version = [&](uint64_t counter, uint64_t flags, std::string value,
                     std::vector<uint64_t> clock) {
    return code(Envelope4(1, 11, 1, [&](MsgpackWriter& w) {
      w.Array(2);
      w.Uint(1);
      w.Array(1);
      w.Array(6);
      w.Uint(1);
      w.Uint(counter);
      w.Uint(flags);
      w.Uint(0);
      w.Array(static_cast<uint32_t>(clock.size()));
      for (uint64_t c : clock) w.Uint(c);
      w.Bin(value);
    }));
  };
  EXPECT_EQ(version(1, 0, "v", {}), StatusCode::kOk);
  EXPECT_EQ(version(0, 0, "v", {}), StatusCode::kProtocolError);
  EXPECT_EQ(version(1, 4, "v", {}), StatusCode::kProtocolError);
  EXPECT_EQ(version(1, 1, "v", {}), StatusCode::kProtocolError);
  EXPECT_EQ(version(1, 0, "v", {2, 1, 0, 1, 1, 0}), StatusCode::kProtocolError);
  EXPECT_EQ(version(1, 0, "v", {2, 1}), StatusCode::kProtocolError);
  // Trailing bytes after the envelope.
  EXPECT_EQ(code(Envelope4(1, 20, 1, [](MsgpackWriter& w) { w.Array(0); }) + "x"),
            StatusCode::kProtocolError);
}

TEST(ProtoTest, GetHintIsOptional) {
  Result<Message> plain = DecodeMessage(Body_(EncodeFrame({1, GetRequest{"k", ""}})), Limits{});
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(std::get<GetRequest>(plain->body).hint.empty());
  Result<Message> hinted = DecodeMessage(Body_(EncodeFrame({1, GetRequest{"k", "n3"}})), Limits{});
  ASSERT_TRUE(hinted.ok());
  EXPECT_EQ(std::get<GetRequest>(hinted->body).hint, "n3");
}

TEST(ProtoTest, CoordPutNoSyncIsOptionalAndNeedsNoOpId) {
  auto decode = [](CoordPutRequest req) {
    Result<Message> m = DecodeMessage(Body_(EncodeFrame({1, std::move(req)})), Limits{});
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return std::get<CoordPutRequest>(m->body);
  };
  CoordPutRequest plain = decode(CoordPutRequest{"k", {}, "v", false, 7});
  EXPECT_FALSE(plain.no_sync);
  EXPECT_EQ(plain.op_id, 7u);
  CoordPutRequest unsynced = decode(CoordPutRequest{"k", {}, "v", false, 0, true});
  EXPECT_TRUE(unsynced.no_sync);
  EXPECT_EQ(unsynced.op_id, 0u);
}

// Member records stored before lives were kept have seven fields.
TEST(ProtoTest, AMemberRecordWithoutALifeReadsAsLifeZero) {
  std::string old;
  MsgpackWriter w(&old);
  w.Array(1);
  w.Array(7);
  w.Str("n1");
  w.Str("127.0.0.1:7000");
  w.Uint(static_cast<uint64_t>(MemberStatus::kNormal));
  w.Uint(3);
  w.Uint(40);
  w.Uint(0xabc);
  w.Bool(true);
  Result<std::vector<Member>> members = DecodeMembers(old, Limits{});
  ASSERT_TRUE(members.ok()) << members.status().ToString();
  ASSERT_EQ(members->size(), 1u);
  EXPECT_EQ((*members)[0].actor, 0xabcu);
  EXPECT_EQ((*members)[0].life, 0u);
  Member now = (*members)[0];
  now.life = 77;
  Result<std::vector<Member>> again = DecodeMembers(EncodeMembers({now}), Limits{});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[0].life, 77u);
}

// A record past the largest incarnation or heartbeat is refused: a node
// refuting one of itself (one incarnation up) wrapped to 0, and its own
// records were never newer again.
TEST(ProtoTest, AMemberRecordPastTheLargestIncarnationOrHeartbeatIsRefused) {
  Member m{"n1",
           "127.0.0.1:7000",
           MemberStatus::kNormal,
           kMemberCounterMax,
           kMemberCounterMax,
           0xabc,
           true,
           1};
  ASSERT_TRUE(DecodeMembers(EncodeMembers({m}), Limits{}).ok());
  for (int field = 0; field < 2; ++field) {
    Member bad = m;
    (field == 0 ? bad.incarnation : bad.heartbeat) = UINT64_MAX;
    Result<std::vector<Member>> decoded = DecodeMembers(EncodeMembers({bad}), Limits{});
    EXPECT_EQ(decoded.status().code(), StatusCode::kProtocolError) << field;
  }
}

TEST(ProtoTest, NewerPeersMayAppendFields) {
  std::string body = Envelope4(1, 10, 5, [](MsgpackWriter& w) {
    w.Array(4);
    w.Bin("key");
    w.Str("n1");
    w.Str("a future field");
    w.Array(2);
    w.Uint(1);
    w.Uint(2);
  });
  Result<Message> r = DecodeMessage(body, Limits{});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(std::get<GetRequest>(r->body).key, "key");
}

TEST(ProtoTest, LyingLengthsAndDeepNestingAreRejected) {
  // A sibling list claiming 2^32-1 versions in a few bytes.
  std::string body = Envelope4(1, 11, 1, [](MsgpackWriter& w) {
    w.Array(2);
    w.Uint(1);
    w.out().append("\xdd\xff\xff\xff\xff", 5);
  });
  EXPECT_EQ(DecodeMessage(body, Limits{}).status().code(), StatusCode::kProtocolError);
  // Deeply nested extra field.
  std::string deep = Envelope4(1, 10, 1, [](MsgpackWriter& w) {
    w.Array(3);
    w.Bin("k");
    w.Str("");
    for (int i = 0; i < 100; ++i) w.Array(1);
    w.Uint(0);
  });
  Result<Message> r = DecodeMessage(deep, Limits{});
  EXPECT_EQ(r.status().code(), StatusCode::kProtocolError);
  EXPECT_NE(r.status().message().find("nesting"), std::string_view::npos);
  // A Merkle request asking for more summaries than a reply may hold.
  MerkleRequest huge;
  huge.levels = 8;
  huge.expand.assign(1000, MerkleNodeId{10, 1});
  std::string frame = EncodeFrame({1, AeCompareRequest{0, huge}});
  EXPECT_EQ(DecodeMessage(Body_(frame), Limits{}).status().code(), StatusCode::kProtocolError);
}

TEST(ProtoTest, RandomMutationsNeverCrash) {
  std::mt19937_64 rng(99);
  std::vector<Body> all = AllMessages();
  size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string b = Body_(EncodeFrame({1, all[rng() % all.size()]}));
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<char>(rng());
    Result<Message> r = DecodeMessage(b, Limits{});
    if (r.ok()) {
      ++accepted;
      // Whatever decodes must re-encode and decode again.
      EXPECT_TRUE(DecodeMessage(Body_(EncodeFrame(*r)), Limits{}).ok());
    }
  }
  EXPECT_LT(accepted, 20000u);
}

TEST(FrameDecoderTest, SplitsAStreamFedByteByByte) {
  std::string stream;
  std::vector<Body> all = AllMessages();
  for (size_t i = 0; i < all.size(); ++i) AppendFrame({i, all[i]}, &stream);
  FrameDecoder dec(Limits{}.frame_bytes_max);
  size_t got = 0;
  for (char c : stream) {
    dec.Feed(std::string_view(&c, 1));
    std::string_view body;
    Result<bool> next = dec.Next(&body);
    ASSERT_TRUE(next.ok());
    if (*next) {
      Result<Message> m = DecodeMessage(body, Limits{});
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      EXPECT_EQ(m->request_id, got);
      ++got;
    }
  }
  EXPECT_EQ(got, all.size());
  EXPECT_EQ(dec.buffered(), 0u);
}

TEST(FrameDecoderTest, ManyFramesInOneFeed) {
  std::string stream;
  for (uint64_t i = 0; i < 100; ++i) AppendFrame({i, GetRequest{"k" + std::to_string(i)}}, &stream);
  FrameDecoder dec(1024);
  dec.Feed(stream);
  std::string_view body;
  for (uint64_t i = 0; i < 100; ++i) {
    ASSERT_TRUE(*dec.Next(&body));
    EXPECT_EQ(DecodeMessage(body, Limits{})->request_id, i);
  }
  EXPECT_FALSE(*dec.Next(&body));
}

// A limit near 4 GiB: the header's length plus its own 4 bytes wrapped
// around in 32 bits, and a body of 4 GiB was taken from a 5-byte buffer.
TEST(FrameDecoderTest, ALengthNearTheTopOfItsRangeDoesNotWrap) {
  FrameDecoder dec(0xFFFFFFFCu);
  dec.Feed(std::string("\xff\xff\xff\xfc\x01", 5));
  std::string_view body;
  Result<bool> r = dec.Next(&body);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
}

TEST(FrameDecoderTest, OversizeHeaderFailsBeforeTheBody) {
  FrameDecoder dec(1000);
  dec.Feed(std::string("\x00\x00\x03\xe9", 4));  // 1001 bytes declared, none sent
  std::string_view body;
  Result<bool> r = dec.Next(&body);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kProtocolError);
  EXPECT_NE(r.status().message().find("frame_bytes_max (1000)"), std::string_view::npos);
  dec.Feed("more");
  EXPECT_FALSE(dec.Next(&body).ok());  // sticky

  FrameDecoder empty(1000);
  empty.Feed(std::string("\x00\x00\x00\x00", 4));
  EXPECT_FALSE(empty.Next(&body).ok());

  FrameDecoder huge(Limits{}.frame_bytes_max);
  huge.Feed(std::string("\xff\xff\xff\xff", 4));
  EXPECT_FALSE(huge.Next(&body).ok());
}

// Feeds `frame` the way a connection reads: asking for room for 64 KiB and
// filling all the room it gets.
void FeedInChunks(FrameDecoder& dec, std::string_view frame) {
  constexpr size_t kChunk = 64u << 10;
  while (!frame.empty()) {
    std::span<char> tail = dec.WritableTail(kChunk);
    const size_t n = std::min(frame.size(), tail.size());
    std::copy_n(frame.data(), n, tail.data());
    dec.Commit(n);
    frame.remove_prefix(n);
  }
}

// A frame of `body_bytes` (its content is not decoded here).
std::string RawFrame(uint32_t body_bytes) {
  std::string frame(kFrameHeaderBytes + body_bytes, 'x');
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>(body_bytes >> (24 - 8 * i));
  return frame;
}

TEST(FrameDecoderTest, ABufferGrownForABigFrameIsCutBackAfterSmallOnes) {
  FrameDecoder dec(Limits{}.frame_bytes_max);
  std::string_view body;
  FeedInChunks(dec, RawFrame(4u << 20));
  ASSERT_TRUE(*dec.Next(&body));
  EXPECT_EQ(body.size(), 4u << 20);
  EXPECT_GE(dec.capacity(), 4u << 20);
  const std::string small = RawFrame(100);
  // The window holding the big frame keeps the buffer; the next one cuts it.
  for (uint32_t i = 0; i <= 2 * kBufferTrimUses; ++i) {
    FeedInChunks(dec, small);
    ASSERT_TRUE(*dec.Next(&body));
  }
  FeedInChunks(dec, small);
  EXPECT_LE(dec.capacity(), kBufferKeepBytes);
  ASSERT_TRUE(*dec.Next(&body));
  EXPECT_EQ(body, std::string(100, 'x'));
}

TEST(FrameDecoderTest, ASteadyStreamOfBigFramesKeepsItsBuffer) {
  FrameDecoder dec(Limits{}.frame_bytes_max);
  std::string_view body;
  const std::string big = RawFrame(1u << 20);
  FeedInChunks(dec, big);
  ASSERT_TRUE(*dec.Next(&body));
  const size_t grown = dec.capacity();
  for (uint32_t i = 0; i < 4 * kBufferTrimUses; ++i) {
    FeedInChunks(dec, big);
    ASSERT_TRUE(*dec.Next(&body));
    ASSERT_EQ(dec.capacity(), grown) << "frame " << i;
  }
}

TEST(FrameDecoderTest, ZeroCopyTail) {
  std::string frame = EncodeFrame({5, GetRequest{"zero-copy"}});
  FrameDecoder dec(1 << 20);
  std::span<char> tail = dec.WritableTail(frame.size());
  ASSERT_GE(tail.size(), frame.size());
  std::copy(frame.begin(), frame.end(), tail.begin());
  dec.Commit(frame.size());
  std::string_view body;
  ASSERT_TRUE(*dec.Next(&body));
  EXPECT_EQ(std::get<GetRequest>(DecodeMessage(body, Limits{})->body).key, "zero-copy");
}

}  // namespace
}  // namespace dynamo::proto
