// A deterministic simulation of a dynamo cluster: the real NodeCore logic of
// every node, over a virtual network and clock, each node with a memory
// engine. Everything, message latencies included, derives from one seed, so a
// run replays exactly.
//
// Messages cross the wire codec (encoded and decoded) on every hop. Storage
// operations complete after a configurable delay. A crash discards a node's
// core and, by default, every write its engine never synced.
//
// Thread-safety: none; single-threaded by design.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "dynamo/node/memory_engine.h"
#include "dynamo/node/node_core.h"
#include "dynamo/node/scrub.h"

namespace dynamo::sim {

struct SimOptions {
  // One-way message latency, uniform in [min, max]. Default: 1-3 ms.
  uint64_t latency_min_ms = 1;
  uint64_t latency_max_ms = 3;
  // Time a storage operation takes. Default: 0 ms.
  uint64_t storage_latency_ms = 0;
  // Period of each node's OnTick. Default: 10 ms.
  uint64_t tick_ms = 10;
  // Time from a scan reading the engine to its result reaching the core,
  // during which other storage operations run and complete. The node's
  // storage thread answers a scan only after the writes and sync of its
  // group, while writes the loop thread applies meanwhile complete at once.
  // Default: 0 ms.
  uint64_t scan_answer_delay_ms = 0;
};

// Message faults, changeable while the simulation runs. They apply to every
// message, requests and replies, between nodes and from clients.
struct NetworkFaults {
  double drop = 0;       // probability a message is lost
  double duplicate = 0;  // probability a message is delivered twice
  uint64_t jitter_ms = 0;  // extra delay, uniform in [0, jitter]: reorders messages
};

class SimCluster {
 public:

  explicit SimCluster(uint64_t seed, SimOptions options = {});
  ~SimCluster();

  // Node options with fast timers for simulation (gossip 100 ms, handoff
  // delay 500 ms, anti-entropy cycles 1 s apart), joins taken at once after
  // a cluster is created.
  node::NodeOptions DefaultOptions(const std::string& id) const;
  // Adds and starts a node that joins through `seeds` (ids); none creates
  // the cluster. `tweak` may change its options.
  void AddNode(const std::string& id, const std::vector<std::string>& seeds = {},
               const std::function<void(node::NodeOptions&)>& tweak = {});
  // Tells node `id` (now, and at each later start, as the runtime measures it
  // before starting the core) that its disk has `free_bytes` free; may be
  // called before AddNode.
  void SetDiskFree(const std::string& id, uint64_t free_bytes);
  // Kills a node: its core is gone and, with lose_unsynced, so is every write
  // its engine had not synced.
  void Crash(const std::string& id, bool lose_unsynced = true);
  // Starts a crashed node again from what its engine holds.
  void Restart(const std::string& id);
  // Replaces a crashed node's engine with an empty one (lost disk).
  void Wipe(const std::string& id);
  // Scrubs a stopped node's engine as `dynamo-node --scrub` does (scrub.h):
  // its entries that CorruptDataKey or CorruptFirstHint made unreadable, and
  // the rest of their partitions or of the hints held for their node, are
  // left out of the engine it restarts with.
  node::ScrubReport Scrub(const std::string& id);
  // Cuts (or restores) both directions between two nodes.
  void Cut(const std::string& a, const std::string& b, bool cut = true);
  // Cuts (or restores) messages from `from` to `to` only.
  void CutOneWay(const std::string& from, const std::string& to, bool cut = true);
  // Restores every cut.
  void HealAll() { cuts_.clear(); }
  // The node processes nothing until now + ms (a stopped process, a GC pause).
  void Pause(const std::string& id, uint64_t ms);
  // From now on, the node's engine answers every read or scan that touches
  // data key `key` with Corruption, as RocksDB does for a block that fails
  // its checksum.
  void CorruptDataKey(const std::string& id, const std::string& key);
  // The same for the first hint the node holds for one of the nodes it holds
  // hints for (the `pick`-th, modulo their number, in id order). Returns that
  // node, or nullopt when the node holds no hint.
  std::optional<NodeId> CorruptFirstHint(const std::string& id, uint64_t pick);
  // The keys of every hint the node's engine holds.
  std::set<std::string> HintKeys(const std::string& id);
  // Offsets the node's wall clock (its version timestamps) by `ms`.
  void SkewClock(const std::string& id, int64_t ms);
  // The node's wall clock now, in ms (skew included).
  uint64_t WallMs(const std::string& id) const { return NowFor(id).wall_ms; }
  void SetFaults(NetworkFaults faults) { faults_ = faults; }
  // Runs on every reply a node sends, before it leaves: (node, caller, reply);
  // the caller is empty for outside requests. Plays a misbehaving peer.
  using ReplyTamper = std::function<void(const std::string&, const std::string&, proto::Message&)>;
  void TamperReplies(ReplyTamper tamper) { tamper_replies_ = std::move(tamper); }
  // Drops every request between nodes for which `drop(from, to, request)`
  // is true (none: drops nothing), as a network that loses one kind of
  // message.
  using RequestFilter =
      std::function<bool(const std::string&, const std::string&, const proto::Message&)>;
  void DropRequests(RequestFilter drop) { drop_requests_ = std::move(drop); }
  // Runs `fn` at virtual time `at` (for simulated clients).
  void At(uint64_t at, std::function<void()> fn) { Schedule(at, std::move(fn)); }
  // A hash of every event processed so far; equal for runs of one seed.
  uint64_t trace_hash() const { return trace_; }
  std::string LogTail() const;

  bool IsUp(const std::string& id) const;
  bool Exited(const std::string& id) const;
  // The reason the node's last exit gave.
  const std::string& ExitReason(const std::string& id) const;
  // Changes a stopped node's options for its next start.
  void Retune(const std::string& id, const std::function<void(node::NodeOptions&)>& tweak);
  node::NodeCore& core(const std::string& id);
  node::MemoryEngine& engine(const std::string& id);
  std::vector<std::string> ids() const;
  static std::string AddressOf(const std::string& id) { return id + ":7000"; }

  uint64_t now() const { return now_; }
  // Advances virtual time by `ms`, running every event due.
  void RunFor(uint64_t ms);
  // Runs until `done()` holds (checked after each event) or `max_ms` pass.
  bool RunUntil(const std::function<bool()>& done, uint64_t max_ms);

  // A request from outside to node `id`, answered on the virtual network.
  // `client` names the sender for cuts (Cut(id, client) drops the request
  // or its reply); empty: never cut.
  void Send(const std::string& id, proto::Body body,
            std::function<void(Result<proto::Message>)> done,
            uint64_t timeout_ms = 5000, const std::string& client = "");
  // Send and run until the reply (or the timeout).
  Result<proto::Message> Request(const std::string& id, proto::Body body, uint64_t timeout_ms = 5000);

  // The sibling set node `id` stores for `key`, read straight from its engine.
  std::optional<SiblingSet> Stored(const std::string& id, const std::string& key);
  // Every (key, set) in node `id`'s data space.
  std::map<std::string, SiblingSet> AllStored(const std::string& id);
  // The first partition whose Merkle tree in up node `id`'s core differs from
  // what its engine stores; nullopt when every tree holds what storage holds.
  std::optional<PartitionId> TreeDifferingFromStorage(const std::string& id);

  uint64_t messages() const { return messages_; }
  std::mt19937_64& rng() { return rng_; }

 private:
  struct Node;
  struct Route {
    std::string caller;  // empty: an external request
    uint64_t caller_gen = 0;
    uint64_t token = 0;
    std::function<void(Result<proto::Message>)> external;
    std::string client;  // an external caller's name for cuts; empty: never cut
  };
  void Schedule(uint64_t at, std::function<void()> fn);
  void Pump(const std::string& id);
  // Sends `from`'s reply on `conn` to the caller its route names.
  void SendReply(const std::string& from, uint64_t conn, uint64_t request_id, proto::Body body);
  void ScheduleTick(const std::string& id);
  uint64_t Latency();
  bool Reachable(const std::string& from, const std::string& to) const;
  void Deliver(const std::string& from, uint64_t from_gen, const std::string& to, proto::Message msg,
               Route route);
  void StartCore(const std::string& id);
  node::Now NowFor(const std::string& id) const;

  SimOptions options_;
  std::mt19937_64 rng_;
  uint64_t now_ = 0;
  uint64_t seq_ = 0;
  std::multimap<std::pair<uint64_t, uint64_t>, std::function<void()>> events_;
  std::map<std::string, std::unique_ptr<Node>> nodes_;
  std::map<std::string, uint64_t> disk_free_;  // SetDiskFree
  std::map<std::string, std::string> by_address_;
  std::set<std::pair<std::string, std::string>> cuts_;
  std::map<uint64_t, Route> routes_;  // connection id -> who awaits the reply
  uint64_t next_conn_ = 1;
  uint64_t messages_ = 0;
  NetworkFaults faults_;
  ReplyTamper tamper_replies_;
  RequestFilter drop_requests_;
  std::map<std::string, uint64_t> paused_until_;
  std::map<std::string, int64_t> skew_;
  uint64_t trace_ = 0;
  std::vector<std::string> log_;  // recent node log lines
  void Trace(uint64_t a, uint64_t b = 0);
  // Runs `fn` at `at`, or when node `id` is no longer paused if later.
  void ScheduleOn(const std::string& id, uint64_t at, std::function<void()> fn);
  // Schedules a message's arrival at node `to` (empty: an outside client)
  // under the current faults.
  void Transmit(const std::string& to, std::function<void()> arrive);
};

}  // namespace dynamo::sim
