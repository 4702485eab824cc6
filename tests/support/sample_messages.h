// Populated instances of every wire message, for round-trip tests and as the
// fuzzers' seed corpus.
#pragma once

#include <vector>

#include "dynamo/proto/message.h"

namespace dynamo::proto::test {

Version SampleVersion(uint64_t n, bool tombstone = false);
SiblingSet SampleSiblings();
// One instance of every message type, every field set to a non-default value.
std::vector<Body> AllMessages();

}  // namespace dynamo::proto::test
