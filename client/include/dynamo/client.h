// The dynamo client: the coordinator of every read and write.
//
// A Client pulls the cluster map and the members from the nodes, computes
// each key's preference list, and runs quorum operations itself: a causal
// write goes to one coordinating replica (which assigns the version's dot)
// and then to the other replicas; a read asks N replicas, answers at R, merges
// their versions, and afterwards repairs replicas that answered stale. When a
// replica of the first N is unreachable, the next healthy node of the ring
// stands in and keeps the write as a hint for it (sloppy quorum).
//
// Contexts are opaque bytes: pass the one a read returned to the write that
// follows it, so the write supersedes what was read. A write without a
// context is concurrent with everything stored and adds a sibling.
//
// Last-write-wins mode (ClientOptions::mode) stamps each write with the
// client's clock and writes all replicas in one round trip; the greatest
// stamp wins and CONCURRENT WRITES ARE SILENTLY DISCARDED. Use it only for
// data where that is acceptable; causal mode (the default) never drops a
// write that was acknowledged.
//
// Thread-safety: a Client is thread-safe. It owns one background I/O thread
// that holds every connection; blocking calls wait on the calling thread,
// async callbacks run on the I/O thread and must not block.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dynamo/client_types.h"
#include "dynamo/status.h"

namespace dynamo {

namespace net {
class EventLoop;
}

// The longest timeout a client or one call may have (a week): past it the
// deadlines would wrap around. Longer ones are refused with InvalidArgument.
inline constexpr uint64_t kTimeoutMsMax = 7ull * 24 * 3600 * 1000;

// Merges the values of concurrent versions into one (e.g. a set union).
using Resolver = std::function<std::string(const std::vector<std::string>& values)>;

enum class Mode {
  kCausal,  // dotted version vectors; siblings for concurrent writes (default)
  kLww,     // last write wins by client timestamp; concurrent writes are lost
};

// Which replica coordinates a causal write.
enum class Coordinator {
  // The key's healthy primary that this client ranks first, in an order of
  // nodes drawn at random for each client (rendezvous hashing): one client's
  // concurrent writes meet on few nodes and share their log syncs, and
  // different clients rank the nodes differently, so many clients spread
  // the work. A single busy client makes one node of a small cluster
  // coordinate nearly all its writes. Primaries that answered the read (or
  // acknowledged the write) the context came from rank before the others,
  // so a node the client can no longer reach is passed over. The default.
  kClientRanked,
  // The replica that answered the previous read of the key fastest (carried
  // in the context; the Dynamo paper's choice), else the first healthy
  // primary of the key's preference list: writes spread over the nodes.
  kFastestReplica,
};

struct ClientOptions {
  // HOST:PORT of nodes to learn the cluster from. Required.
  std::vector<std::string> seeds;
  // Replies a read waits for. Default: 2.
  int r = 2;
  // Acknowledgements a write waits for, the coordinator's included. Default: 2.
  int w = 2;
  // Deadline of each operation, at most kTimeoutMsMax. Default: 1000 ms.
  uint64_t timeout_ms = 1000;
  Mode mode = Mode::kCausal;
  // Whether a write is acknowledged only once a replica has synced it to
  // disk: in causal mode the coordinator syncs before answering, in LWW mode
  // every replica syncs before acknowledging. False: acknowledged once W
  // replicas applied it. Each has then written it to its log through the
  // operating system, so a crash of the node processes keeps it, but a power
  // loss or kernel crash of all of them before their next sync (within the
  // nodes' storage.sync_interval_ms, 100 ms by default) loses it. Default: true.
  bool durable_writes = true;
  // Causal mode: which replica coordinates each write (see Coordinator).
  // Default: kClientRanked.
  Coordinator coordinator = Coordinator::kClientRanked;
  // Applied to the values when a read finds concurrent versions; without
  // one, reads return every sibling. Runs on the thread that called Get.
  Resolver resolver;
  // How often the cluster map is pulled. Default: 5000 ms.
  uint64_t refresh_interval_ms = 5000;
  // After answering a read, how long to wait for the remaining replicas
  // before repairing the stale ones. Default: 100 ms.
  uint64_t read_repair_window_ms = 100;
  // Largest key and value sent. Default: 2 KiB, 1 MiB (the nodes' defaults).
  // At most 64 KiB and 256 MiB, the most a node may be configured to take.
  uint32_t key_bytes_max = 2u << 10;
  uint32_t value_bytes_max = 1u << 20;
  // Operations started and not yet reported (blocking and asynchronous
  // alike) beyond which a new one fails at once with Busy, so an
  // application that starts them faster than the cluster answers gets an
  // error instead of a queue that grows without bound. Default: 65,536.
  size_t operations_max = 65536;
};

class Client {
 public:
  // Connects to the seeds and loads the cluster map. InvalidArgument for bad
  // options; Unavailable when no seed answers within options.timeout_ms.
  static Result<std::unique_ptr<Client>> Open(ClientOptions options);
  // Stops taking calls: every call made from then on, from callbacks too,
  // fails at once with Aborted. Operations still running, and the replica
  // copies and repairs already sent, get up to options.timeout_ms to finish;
  // then the connections close, what is left fails (Unavailable), every
  // callback has run, and the I/O thread stops. Idempotent; a call that
  // starts while it runs may fail either way. Called on the I/O thread (from
  // a callback) it cannot wait for itself: it starts the close and returns,
  // and the rest follows once that callback returns.
  void Close();
  // Close(), then frees the client. On the I/O thread (a callback dropping
  // the last owner) it returns at once; the client closes as above and is
  // freed when its I/O thread stops, so the callbacks of operations still
  // running come after this returns.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Reads `key`. NotFound is not an error: the result has found == false.
  // Unavailable when fewer than R replicas answered in time; Timeout when the
  // deadline passed with no replica answering; Busy when replicas shed the
  // read (or the client's operations_max) and it fell short of R: retry
  // after a back-off. InvalidArgument for a bad key or r; Aborted once
  // closed.
  Result<GetResult> Get(std::string_view key, const ReadOptions& options = {});
  // Writes `value`. Returns the context for a further write of the key: the
  // write's own context and the write, or only its own context when the
  // coordinator kept a concurrent version it did not see (docs/client.md).
  // Unavailable when fewer than W replicas acknowledged; Timeout when no
  // coordinator answered before the deadline (always in doubt: it may have
  // applied the write). On any failure Status::in_doubt() tells whether the
  // write may have been applied anyway. Busy when
  // refused to shed load: the client's operations_max, a node's limits
  // (requests in progress, writes waiting for the key), the key's sibling
  // limit, or the client's full write queue to every coordinator tried;
  // retry after a back-off.
  Result<std::string> Put(std::string_view key, std::string_view value,
                          const WriteOptions& options = {});
  // Deletes `key` (writes a tombstone), with the same quorum rules as Put.
  // In causal mode a delete without a context first reads the key (R, within
  // the same timeout; its errors are the delete's) and deletes what that
  // read saw: a tombstone with no context would be one more sibling and
  // delete nothing. A write the read did not see survives the delete.
  Result<std::string> Delete(std::string_view key, const WriteOptions& options = {});

  // Blocking calls made on the client's I/O thread (from an async callback,
  // or from work posted to io_loop()) would wait on themselves; they fail
  // with InvalidArgument instead.

  // Asynchronous forms; `done` runs on the I/O thread, never inside the call,
  // also when the call is refused at once (bad input, Busy at
  // operations_max). Only a call made once the client is closed (or in a
  // forked child) runs `done` at once, on the calling thread, with Aborted:
  // no I/O thread may be left to run it. Async reads return every sibling:
  // the resolver is applied by the blocking Get only. Called on the I/O
  // thread, they start at the end of the loop's current pass, with no
  // wake-up or thread hop.
  void GetAsync(std::string key, ReadOptions options, std::function<void(Result<GetResult>)> done);
  void PutAsync(std::string key, std::string value, WriteOptions options,
                std::function<void(Result<std::string>)> done);
  void DeleteAsync(std::string key, WriteOptions options, std::function<void(Result<std::string>)> done);

  // The key's preference list (N nodes, then pending replicas, then the
  // fallbacks in order), as this client sees the cluster now.
  std::vector<Placement> Where(std::string_view key) const;
  // Every replica's stored versions, asked node by node (preference list and
  // pending replicas); a replica that did not answer has its error set.
  // Aborted once the client is closed (also when it closed while asking).
  Result<std::vector<ReplicaVersions>> Inspect(std::string_view key);
  // Members as this client sees them.
  std::vector<MemberInfo> Members() const;
  // The cluster map epoch, the partition count Q and the replica count N.
  struct RingInfo {
    uint64_t epoch = 0;
    uint32_t partitions = 0;
    uint32_t replicas = 0;
    std::vector<std::string> owners;  // per partition
  };
  RingInfo Ring() const;
  // Pulls the cluster map now and waits for it.
  Status Refresh();

  struct Stats {
    uint64_t gets = 0, puts = 0, deletes = 0;
    uint64_t read_repairs = 0;       // repair writes sent, after answering too
    uint64_t hints = 0;              // writes stored as hints
    uint64_t refreshes = 0;
    uint64_t errors = 0;
    uint64_t redirects = 0;  // Receipt::redirects, also after the answer
  };
  Stats stats() const;
  const ClientOptions& options() const;

  // The I/O thread's event loop (dynamo/net/event_loop.h), for callers that
  // drive operations from the thread their callbacks run on, with no hop
  // between threads: Post work to it; timers and async calls made there run
  // beside the client's own work. Nothing run there may block. It lives as
  // long as the Client.
  net::EventLoop& io_loop();

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dynamo
