// Results of dynamo::Client calls: values with their context, receipts of
// what each operation did, and views of the cluster.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dynamo {

// What happened on the way: who acknowledged, who stood in, what was repaired.
struct Receipt {
  struct Ack {
    std::string node;
    std::string role;  // "coordinator", "primary" or "fallback"
    std::string hint;  // for a fallback: the primary it stands in for
  };
  std::vector<Ack> acks;        // nodes that acknowledged (writes) or answered (reads)
  size_t hints = 0;             // copies stored as hints on fallbacks
  size_t read_repairs = 0;      // replicas found stale by the time the read answered
  std::string version_vector;   // the resulting clock, e.g. "{a1b2c3:4, ...}"
  uint64_t epoch = 0;           // cluster map epoch used
  size_t coordinator_retries = 0;
  // Replicas asked in place of a node that refused as no longer replicating
  // the key on a map newer than this client's (the refusal names them).
  size_t redirects = 0;
};

struct ReadOptions {
  int r = 0;                   // 0: the client's default
  uint64_t timeout_ms = 0;     // 0: the client's default; at most kTimeoutMsMax
  Receipt* receipt = nullptr;  // filled when given, also on failure
};

struct WriteOptions {
  // From the read this write follows; empty for a blind write.
  std::string context;
  int w = 0;                   // 0: the client's default
  uint64_t timeout_ms = 0;     // 0: the client's default; at most kTimeoutMsMax
  Receipt* receipt = nullptr;  // filled when given, also on failure
  // Whether this write waits for a synced copy (ClientOptions::durable_writes
  // explains both ways); unset: the client's durable_writes.
  std::optional<bool> durable;
};

struct GetResult {
  // Live values: one after a resolver ran, else every sibling (in a stable
  // order). Empty when the key is not found.
  std::vector<std::string> values;
  // Pass to the next write of this key.
  std::string context;
  bool found = false;
};

struct MemberInfo {
  std::string id;
  std::string address;
  std::string state;  // "up", "down", "joining", "leaving"
  size_t partitions = 0;
};

struct Placement {
  std::string id;
  std::string address;
  std::string state;  // as in MemberInfo, as this client judges it
  std::string role;   // "primary", "pending" (receiving the partition) or "fallback"
};

// One replica's stored versions of a key, as that node reports them.
struct ReplicaVersions {
  std::string node;
  std::string error;  // empty when the node answered
  struct Version {
    std::string dot;    // "actor:counter"
    std::string value;  // empty for tombstones
    bool tombstone = false;
    bool lww = false;
    uint64_t timestamp_ms = 0;
    std::string context;  // the version vector it was written against
  };
  std::vector<Version> versions;
};

}  // namespace dynamo
