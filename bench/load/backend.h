// A store dynamo-bench drives: the dynamo SDK, Redis or etcd.
//
// Open and Close run on the caller's thread and block. Read and Write run on
// the driver's loop thread, at most `slots` at once, each with its own slot
// index in [0, slots) (a backend may keep one connection per slot), and call
// `done` exactly once, on the loop thread, and never from within Read or
// Write (the driver starts its next operation from `done`).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dynamo/net/event_loop.h"
#include "dynamo/status.h"

namespace dynamo::bench {

// An operation's key: its number in [0, keys) and its name.
struct Key {
  uint64_t index = 0;
  std::string name;
};

struct OpOutcome {
  Status status;      // OK, or why the operation failed
  size_t values = 0;  // reads: values returned (0: not found; > 1: siblings)
};
using OpDone = std::function<void(OpOutcome)>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;
  virtual Status Open(net::EventLoop& loop, size_t slots) = 0;
  // After Open: a loop of the backend's own whose thread already runs its
  // completions; the driver then runs there too, with no hand-off between
  // threads, and Read, Write and `done` run on it. Null: the loop given to
  // Open.
  virtual net::EventLoop* OwnLoop() { return nullptr; }
  virtual void Read(size_t slot, const Key& key, OpDone done) = 0;
  virtual void Write(size_t slot, const Key& key, std::string_view value, OpDone done) = 0;
  virtual void Close() = 0;
};

struct DynamoBackendOptions {
  std::vector<std::string> seeds;
  int r = 2, w = 2;
  bool lww = false;
  uint64_t timeout_ms = 1000;
  bool durable_writes = true;  // ClientOptions::durable_writes
  bool fastest_coordinator = false;  // ClientOptions::coordinator = kFastestReplica
  // Key numbers below this get their context slot at Open, so the run does
  // not grow the table (and fault in its pages) while it measures.
  uint64_t keys = 0;
};
// Writes carry the context of the last read or write of the key by this
// process (the first write of a key reads it first), so a single writer per
// key never makes siblings.
std::unique_ptr<Backend> MakeDynamoBackend(DynamoBackendOptions options);
// Redis through hiredis: one connection per slot, one command in flight on
// each (no pipelining). SET and GET.
std::unique_ptr<Backend> MakeRedisBackend(std::vector<std::string> addresses, uint64_t timeout_ms);
// etcd v3 through its HTTP/JSON gateway (/v3/kv/put, /v3/kv/range): one
// keep-alive connection per slot, spread over the addresses.
std::unique_ptr<Backend> MakeEtcdBackend(std::vector<std::string> addresses, uint64_t timeout_ms);

}  // namespace dynamo::bench
