// Writes the fuzzers' seed corpus: one file per catalogue message (a frame
// for frame_fuzz, a body for decode_fuzz), plus a ring and a sibling set.
#include <cstdio>
#include <fstream>
#include <string>

#include "dynamo/proto/codec.h"
#include "support/sample_messages.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s FRAME_DIR DECODE_DIR\n", argv[0]);
    return 2;
  }
  auto write = [](const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
  };
  int i = 0;
  for (const auto& body : dynamo::proto::test::AllMessages()) {
    std::string frame = dynamo::proto::EncodeFrame({static_cast<uint64_t>(i), body});
    write(std::string(argv[1]) + "/msg" + std::to_string(i), std::string(1, '\x07') + frame);
    write(std::string(argv[2]) + "/msg" + std::to_string(i), frame.substr(4));
    ++i;
  }
  write(std::string(argv[2]) + "/ring", dynamo::Ring::Create({"a", "b", "c"}, 64)->Serialize());
  write(std::string(argv[2]) + "/siblings",
        dynamo::proto::EncodeSiblingSet(dynamo::proto::test::SampleSiblings()));
  return 0;
}
