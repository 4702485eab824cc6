// Client::Inspect for tests that expect it to succeed.
#pragma once

#include <gtest/gtest.h>

#include <string_view>
#include <vector>

#include "dynamo/client.h"

namespace dynamo::test {

// Every replica's versions of `key`; a failed Inspect fails the test and
// gives none.
inline std::vector<ReplicaVersions> InspectAll(Client& client, std::string_view key) {
  Result<std::vector<ReplicaVersions>> r = client.Inspect(key);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : std::vector<ReplicaVersions>{};
}

}  // namespace dynamo::test
