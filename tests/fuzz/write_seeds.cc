// Writes the fuzzers' seed corpus: one file per catalogue message (a frame
// for frame_fuzz, a body for decode_fuzz), plus a ring, a sibling set, a
// member list, a cluster map with a change under way and a client context.
#include <cstdio>
#include <fstream>
#include <string>

#include "core/quorum.h"
#include "dynamo/cluster_map.h"
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
  dynamo::proto::Member member;
  member.id = "a";
  member.address = "127.0.0.1:7000";
  member.incarnation = 3;
  member.heartbeat = 42;
  member.actor = 7;
  dynamo::proto::Member other = member;
  other.id = "b";
  other.address = "127.0.0.1:7001";
  other.alive = false;
  write(std::string(argv[2]) + "/members", dynamo::proto::EncodeMembers({member, other}));
  dynamo::ClusterMap map(*dynamo::Ring::Create({"a", "b", "c"}, 64));
  map.Reconcile({"a", "b", "c", "d"});
  if (!map.Transfers().empty()) map.MarkDone(map.Transfers().front());
  write(std::string(argv[2]) + "/cluster_map", map.Serialize());
  const dynamo::SiblingSet siblings = dynamo::proto::test::SampleSiblings();
  write(std::string(argv[2]) + "/context",
        dynamo::client::EncodeContext(dynamo::ContextOf(siblings), "a", {"a", "b"},
                                      dynamo::client::ContextKeyHash("k")));
  return 0;
}
