#include "dynamo/msgpack_io.h"

#include <gtest/gtest.h>

#include <msgpack/pack.hpp>
#include <string>
#include <vector>

namespace dynamo {
namespace {

std::string Bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

// msgpack-c's packer, writing to a string: the reference for our writer.
struct StringSink {
  std::string* out;
  void write(const char* p, size_t n) { out->append(p, n); }
};

TEST(MsgpackTest, WriterMatchesMsgpackCAtEveryBoundary) {
  std::vector<uint64_t> ints;
  for (int bits = 0; bits <= 64; ++bits) {
    const uint64_t p = bits == 64 ? 0 : uint64_t{1} << bits;
    for (uint64_t v : {p - 1, p, p + 1}) ints.push_back(v);
  }
  ints.push_back(UINT64_MAX);
  const std::vector<uint32_t> lengths = {0,  1,   15,  16,  17,    31,    32,
                                         33, 255, 256, 257, 65535, 65536, 70000};
  std::string ours;
  std::string theirs;
  MsgpackWriter w(&ours);
  StringSink sink{&theirs};
  msgpack::packer<StringSink> ref(sink);
  for (uint64_t v : ints) {
    w.Uint(v);
    ref.pack_uint64(v);
  }
  for (uint32_t n : lengths) {
    const std::string s(n, 'x');
    w.Str(s);
    ref.pack_str(n);
    ref.pack_str_body(s.data(), n);
    w.Bin(s);
    ref.pack_bin(n);
    ref.pack_bin_body(s.data(), n);
    w.Array(n);
    ref.pack_array(n);
  }
  w.Bool(true);
  ref.pack_true();
  w.Bool(false);
  ref.pack_false();
  w.Nil();
  ref.pack_nil();
  ASSERT_EQ(ours.size(), theirs.size());
  EXPECT_TRUE(ours == theirs);
}

TEST(MsgpackTest, RoundTripsEveryWidth) {
  std::string buf;
  MsgpackWriter w(&buf);
  const uint64_t ints[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 0xffffffffULL, 1ULL << 40, UINT64_MAX};
  w.Array(static_cast<uint32_t>(std::size(ints)) + 6);
  for (uint64_t v : ints) w.Uint(v);
  w.Bool(true);
  w.Bool(false);
  w.Nil();
  w.Str(std::string(40, 's'));      // str8
  w.Bin(std::string(300, 'b'));     // bin16
  w.Str(std::string(70000, 'S'));   // str32

  MsgpackReader r(buf, MsgpackLimits{});
  uint32_t n = 0;
  ASSERT_TRUE(r.ReadArray(&n).ok());
  EXPECT_EQ(n, std::size(ints) + 6);
  for (uint64_t v : ints) {
    uint64_t got = 0;
    ASSERT_TRUE(r.ReadUint(&got).ok());
    EXPECT_EQ(got, v);
  }
  bool b = false;
  ASSERT_TRUE(r.ReadBool(&b).ok());
  EXPECT_TRUE(b);
  ASSERT_TRUE(r.ReadBool(&b).ok());
  EXPECT_FALSE(b);
  EXPECT_TRUE(r.TryNil());
  std::string_view s;
  ASSERT_TRUE(r.ReadStr(&s).ok());
  EXPECT_EQ(s, std::string(40, 's'));
  ASSERT_TRUE(r.ReadBin(&s).ok());
  EXPECT_EQ(s, std::string(300, 'b'));
  ASSERT_TRUE(r.ReadStr(&s).ok());
  EXPECT_EQ(s.size(), 70000u);
  EXPECT_TRUE(r.ExpectEnd().ok());
}

TEST(MsgpackTest, SignedNonNegativeIntegersAreAccepted) {
  uint64_t v = 0;
  std::string r_bytes = Bytes({0xd1, 0x01, 0x00});
  MsgpackReader r(r_bytes, MsgpackLimits{});
  ASSERT_TRUE(r.ReadUint(&v).ok());
  EXPECT_EQ(v, 256u);
  std::string neg_bytes = Bytes({0xff});
  MsgpackReader neg(neg_bytes, MsgpackLimits{});
  EXPECT_EQ(neg.ReadUint(&v).code(), StatusCode::kProtocolError);
  std::string neg16_bytes = Bytes({0xd1, 0xff, 0x00});
  MsgpackReader neg16(neg16_bytes, MsgpackLimits{});
  EXPECT_FALSE(neg16.ReadUint(&v).ok());
}

TEST(MsgpackTest, TypeMismatchIsAnError) {
  uint64_t v = 0;
  std::string_view s;
  std::string r_bytes = Bytes({0xa1, 'x'});
  MsgpackReader r(r_bytes, MsgpackLimits{});
  Status st = r.ReadUint(&v);
  EXPECT_EQ(st.code(), StatusCode::kProtocolError);
  EXPECT_NE(st.message().find("expected unsigned integer"), std::string_view::npos);
  std::string r2_bytes = Bytes({0xa1, 'x'});
  MsgpackReader r2(r2_bytes, MsgpackLimits{});
  EXPECT_FALSE(r2.ReadBin(&s).ok());  // str is not bin
}

TEST(MsgpackTest, LyingArrayCountFailsBeforeAllocation) {
  // array32 claiming 4 billion items with 2 bytes behind it.
  std::string r_bytes = Bytes({0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02});
  MsgpackReader r(r_bytes, MsgpackLimits{});
  uint32_t n = 0;
  Status s = r.ReadArray(&n);
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  MsgpackLimits small;
  small.items_max = 2;
  std::string r2_bytes = Bytes({0x93, 1, 2, 3});
  MsgpackReader r2(r2_bytes, small);
  EXPECT_FALSE(r2.ReadArray(&n).ok());
  std::string r3_bytes = Bytes({0x93, 1, 2, 3});
  MsgpackReader r3(r3_bytes, MsgpackLimits{});
  EXPECT_FALSE(r3.ReadArray(&n, 2).ok());
}

TEST(MsgpackTest, LyingStringLengthIsTruncation) {
  std::string_view s;
  std::string r_bytes = Bytes({0xdb, 0x00, 0x10, 0x00, 0x00, 'a'});
  MsgpackReader r(r_bytes, MsgpackLimits{});
  Status st = r.ReadStr(&s);
  EXPECT_EQ(st.code(), StatusCode::kProtocolError);
  MsgpackLimits small;
  small.bytes_max = 3;
  std::string r2_bytes = Bytes({0xa4, 'a', 'b', 'c', 'd'});
  MsgpackReader r2(r2_bytes, small);
  st = r2.ReadStr(&s);
  EXPECT_NE(st.message().find("over the limit of 3"), std::string_view::npos) << st.ToString();
  std::string r3_bytes = Bytes({0xa4, 'a', 'b', 'c', 'd'});
  MsgpackReader r3(r3_bytes, MsgpackLimits{});
  EXPECT_FALSE(r3.ReadStr(&s, 2).ok());
}

TEST(MsgpackTest, NestingDepthIsBounded) {
  std::string deep(40, static_cast<char>(0x91));
  deep.push_back(0x00);
  MsgpackLimits limits;
  limits.depth_max = 8;
  MsgpackReader r(deep, limits);
  Status s = r.Skip();
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_NE(s.message().find("nesting deeper than 8"), std::string_view::npos);

  limits.depth_max = 64;
  MsgpackReader ok(deep, limits);
  EXPECT_TRUE(ok.Skip().ok());
  EXPECT_TRUE(ok.ExpectEnd().ok());

  // Siblings at the same depth do not accumulate.
  std::string wide = Bytes({0x94, 0x91, 0x91, 0x00, 0x91, 0x00, 0x91, 0x00, 0x91, 0x00});
  limits.depth_max = 3;
  MsgpackReader w(wide, limits);
  EXPECT_TRUE(w.Skip().ok());
}

TEST(MsgpackTest, SkipHandlesEveryType) {
  std::string buf = Bytes({
      0x8f & 0x82,                         // fixmap of 2 pairs
      0x01, 0xc0,                          // 1 -> nil
      0xa1, 'k', 0xcb, 0, 0, 0, 0, 0, 0, 0, 0,  // "k" -> float64
      0xd4, 0x01, 0x02,                    // fixext1
      0xc7, 0x02, 0x05, 'a', 'b',          // ext8 of 2 bytes
      0xca, 0, 0, 0, 0,                    // float32
      0xe0,                                // negative fixint
      0xc4, 0x01, 'z',                     // bin8
      0xde, 0x00, 0x01, 0xc2, 0xc3,        // map16 of 1 pair
  });
  MsgpackReader r(buf, MsgpackLimits{});
  ASSERT_TRUE(r.SkipN(7).ok());
  EXPECT_TRUE(r.ExpectEnd().ok());
  std::string bad_bytes = Bytes({0xc1});
  MsgpackReader bad(bad_bytes, MsgpackLimits{});
  EXPECT_FALSE(bad.Skip().ok());
}

TEST(MsgpackTest, TrailingBytesAreReported) {
  std::string r_bytes = Bytes({0x01, 0x02});
  MsgpackReader r(r_bytes, MsgpackLimits{});
  uint64_t v;
  ASSERT_TRUE(r.ReadUint(&v).ok());
  EXPECT_FALSE(r.ExpectEnd().ok());
}

TEST(MsgpackTest, EveryTruncationFails) {
  std::string buf;
  MsgpackWriter w(&buf);
  w.Array(3);
  w.Uint(1ULL << 40);
  w.Str("hello world");
  w.Array(2);
  w.Bin(std::string(200, 'x'));
  w.Uint(7);
  for (size_t cut = 0; cut < buf.size(); ++cut) {
    MsgpackReader r(std::string_view(buf).substr(0, cut), MsgpackLimits{});
    Status s = r.Skip();
    if (s.ok()) s = r.ExpectEnd();
    EXPECT_FALSE(s.ok()) << cut;
  }
}

}  // namespace
}  // namespace dynamo
