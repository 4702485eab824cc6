// libFuzzer target: a byte stream arriving in arbitrary pieces, split into
// frames and decoded as messages. Whatever decodes must re-encode to frames
// that decode again to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dynamo/check.h"
#include "dynamo/proto/codec.h"

namespace {

dynamo::proto::Limits SmallLimits() {
  dynamo::proto::Limits l;
  l.frame_bytes_max = 1 << 16;
  l.key_bytes_max = 64;
  l.value_bytes_max = 4096;
  l.items_max = 1024;
  return l;
}

void CheckRoundTrip(const dynamo::proto::Message& m, const dynamo::proto::Limits& limits) {
  std::string frame = dynamo::proto::EncodeFrame(m);
  auto again = dynamo::proto::DecodeMessage(std::string_view(frame).substr(4), limits);
  DYNAMO_CHECK(again.ok());
  DYNAMO_CHECK(dynamo::proto::EncodeFrame(*again) == frame);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const dynamo::proto::Limits limits = SmallLimits();
  if (size == 0) return 0;
  // The first byte picks how the stream is cut into reads.
  const size_t chunk = 1 + data[0] % 64;
  std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  dynamo::proto::FrameDecoder decoder(limits.frame_bytes_max);
  for (size_t off = 0; off < stream.size(); off += chunk) {
    decoder.Feed(stream.substr(off, chunk));
    while (true) {
      std::string_view body;
      auto next = decoder.Next(&body);
      if (!next.ok()) return 0;
      if (!*next) break;
      auto msg = dynamo::proto::DecodeMessage(body, limits);
      if (msg.ok()) CheckRoundTrip(*msg, limits);
    }
  }
  return 0;
}
