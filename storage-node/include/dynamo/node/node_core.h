// NodeCore: every decision a storage node makes, with no I/O inside.
//
// Events go in (a request arrived, a storage operation or a call to a peer
// finished, time passed) and actions come out (reply, call a peer, run a
// storage operation, exit). The runtime (server.h) executes actions with
// libuv and a storage thread; the simulator executes them over a virtual
// network and clock. Time and randomness come in from outside.
//
// The node is passive: it never coordinates a client request. It stores
// versions (assigning dots for CoordPut, merging for ReplicaPut), keeps
// hinted versions apart, gossips membership and the cluster map, judges
// liveness, and moves data when membership changes: a node that a pending
// change adds to a partition's preference list pulls the partition from a
// current replica and then records the transfer as done; a node holding data
// of a partition it no longer replicates pushes it to the current replicas
// and deletes it, key by key, once they acknowledged.
//
// Read-modify-write operations on one key (CoordPut, ReplicaPut, merges from
// transfers and pushes) are serialized by a per-key lock, so the storage
// layer only needs plain reads and atomic batch writes.
//
// Thread-safety: none; one thread drives a NodeCore.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "dynamo/cluster_map.h"
#include "dynamo/fifo_vector.h"
#include "dynamo/merkle.h"
#include "dynamo/node/engine.h"
#include "dynamo/node/governor.h"
#include "dynamo/node/keys.h"
#include "dynamo/node/membership.h"
#include "dynamo/node/recent_puts.h"
#include "dynamo/proto/codec.h"
#include "dynamo/proto/message.h"
#include "dynamo/version.h"

namespace dynamo::node {

inline constexpr size_t kDefaultRequestsInFlightMax = 16384;
inline constexpr size_t kDefaultKeyWritesQueuedMax = 256;
inline constexpr size_t kDefaultRequestBytesInFlightMax = 256u << 20;
inline constexpr uint64_t kDefaultDiskFreeBytesMin = 1ull << 30;
// A node logs at most one storage error in this period (NodeStats::storage_errors counts them all).
inline constexpr uint64_t kStorageErrorLogIntervalMs = 60'000;
// The largest value any configuration accepts (limits.value_bytes_max): a
// node reads what it stored under an earlier configuration against it.
inline constexpr uint32_t kValueBytesMaxLimit = proto::kValueBytesCeiling;
// The most memory the Merkle trees of a node holding data of every
// partition may take.
inline constexpr uint64_t kMerkleTreesBytesMax = uint64_t{4} << 30;

// OK when a tree of `depth` for each of `partitions` stays within
// kMerkleTreesBytesMax; otherwise InvalidArgument naming the figures and
// `partitions_source` (where the partition count came from).
Status MerkleTreesFit(uint64_t partitions, uint32_t depth, const std::string& partitions_source);

struct NodeOptions {
  NodeId id;
  // HOST:PORT other nodes and clients reach this node at.
  std::string address;
  // HOST:PORT of nodes to join through and to gossip with now and then.
  std::vector<std::string> seeds;
  // Q and N for a cluster this node creates (ignored when joining).
  uint32_t partitions = kDefaultPartitions;
  uint32_t replicas = kDefaultReplicas;
  proto::Limits limits;

  // Sync the coordinator's write before replying to CoordPut, unless the
  // request asks for no sync (a client whose durable_writes is off).
  // Default: true.
  bool coord_put_sync = true;
  // Sync a replica's merge before acknowledging ReplicaPut. Default: false
  // (the paper's "one durable write": the coordinator's).
  bool replica_put_sync = false;
  // Sync hinted versions before acknowledging. Default: false.
  bool hint_sync = false;
  // Longest time a write stays unsynced: a tick this long after the first
  // write not yet covered by a sync syncs the log (0: only when a write asks).
  // Default: 100 ms.
  uint64_t sync_interval_ms = 100;
  // Versions a coordinated write may leave on a key (CheckSetBytes bounds
  // their bytes too). Default: 100.
  size_t siblings_max = kDefaultSiblingsMax;
  // Clock entries kept per version. Default: 10.
  size_t clock_entries_max = kDefaultClockEntriesMax;
  // Requests in progress (answered or not) beyond which a new Get, CoordPut
  // or ReplicaPut is refused with Busy at once, so a flood of them costs the
  // node bounded memory and its other work (gossip, anti-entropy,
  // transfers, admin) goes on. Default: 16,384.
  size_t requests_in_flight_max = kDefaultRequestsInFlightMax;
  // Bytes the Gets, CoordPuts, ReplicaPuts and Pushes in progress hold in
  // memory (proto::Message::decoded_bytes, else their keys and values)
  // beyond which a new one is refused with Busy at once (one is always
  // taken when none is in progress), so that large values in flight cannot
  // take more memory than this however many requests the count above
  // allows. At least twice limits.value_bytes_max is used whatever it is
  // set to, so a value of the largest size is taken beside others.
  // Default: 256 MiB.
  size_t request_bytes_in_flight_max = kDefaultRequestBytesInFlightMax;
  // Writes of one key from clients (CoordPut, ReplicaPut) waiting behind the
  // one being applied beyond which a new one is refused with Busy: writes of
  // one key are applied one after another, each after the sync of the last,
  // so one hot key would otherwise take every slot above. Default: 256.
  size_t key_writes_queued_max = kDefaultKeyWritesQueuedMax;
  // Free bytes on the data directory's file system (NodeCore::OnDiskSpace)
  // below which the node takes no new data: client writes, replica copies
  // and hints, and pushes from other nodes are refused with an IOError that
  // is not in doubt (the client writes elsewhere), and its own anti-entropy
  // and transfers pause. The storage engine then never meets a full disk,
  // where RocksDB stops every write (until the node is restarted, when the
  // write that met it was synced). Reads,
  // gossip, and hint deliveries and handoffs from the node (which free
  // space) go on. Writes are taken again once the free space is an eighth
  // above this. 0: never. Default: 1 GiB.
  uint64_t disk_free_bytes_min = kDefaultDiskFreeBytesMin;
  // Counters reserved per durable lease write. Default: 2^20.
  uint64_t counter_lease = 1u << 20;

  // Gossip round period. Default: 1000 ms.
  uint64_t gossip_interval_ms = 1000;
  // Every this many rounds, also gossip with a seed. Default: 5.
  uint32_t seed_gossip_every = 5;
  FailureDetectorOptions failure_detector;
  // Deadline of a call to another node. Default: 2000 ms.
  uint64_t peer_timeout_ms = 2000;
  // Retry period for joining through the seeds. Default: 1000 ms.
  uint64_t join_retry_ms = 1000;
  // Gossip rounds after starting alone in its ring (creating a cluster, or
  // resuming a map of this node alone) during which joins are refused
  // (Unavailable) while the node is still alone: if it was a member of a
  // cluster before its data directory was lost, that cluster's nodes gossip
  // to it within as many rounds as they have peers, and it takes their map
  // instead (a joiner taken first would make a second cluster). 0: joins
  // at once. Default: 5.
  uint32_t create_quiet_rounds = 5;

  // Entries and bytes per transfer page. Default: 256, 1 MiB.
  uint32_t transfer_page_entries = 256;
  uint64_t transfer_page_bytes = 1u << 20;
  // Partitions pulled at once. Default: 2.
  size_t transfers_in_flight = 2;
  // Wait after the map last changed before handing misplaced data off.
  // Default: 5000 ms.
  uint64_t handoff_delay_ms = 5000;
  // How often to look for misplaced data. Default: 1000 ms.
  uint64_t handoff_interval_ms = 1000;

  // Anti-entropy compares every partition this node replicates with another
  // replica (rotating through them), then pauses this long. Default: 10 s.
  uint64_t ae_cycle_pause_ms = 10000;
  // Keys fetched and pushed per anti-entropy batch. Default: 256.
  size_t ae_batch_keys = 256;
  // Levels of each partition's Merkle tree kept in memory. Default: 6.
  uint32_t merkle_depth = 6;
  // A tombstone is purged once every replica holds it and it is older than
  // this; a node away longer catches up before serving reads, and hinted
  // versions older than this are dropped, not delivered. Default: 24 h.
  uint64_t tombstone_grace_ms = 24ull * 3600 * 1000;
  // The most two nodes' clocks may differ. A tombstone is purged only this
  // long after its grace period, so that hints of what it deletes, which
  // their holders drop by their own clocks, are gone first. Default: 10 min.
  uint64_t clock_skew_max_ms = 10ull * 60 * 1000;
  // How often the hints held for a member that is down are scanned for
  // versions past the grace period, which are then deleted (delivered, they
  // would be dropped anyway), so hints for a node down for good and never
  // removed do not pile up without bound. Default: 1 h.
  uint64_t hint_expiry_interval_ms = 3600ull * 1000;
  // How often the owner of a partition looks for purgeable tombstones in
  // it. Default: 60 s.
  uint64_t purge_interval_ms = 60000;
  // Every partition's Merkle tree is checked against storage once in this
  // period (longer while other background work or slow foreground requests
  // hold it back), one partition at a time spread over it: the node reads the
  // partition back (a block that fails its checksum stops the node, as a
  // request's read would, though no request reads it) and corrects the tree
  // where storage disagrees, so anti-entropy repairs a key the storage lost
  // without an error. 0: never. Default: 24 h.
  uint64_t tree_check_interval_ms = 24ull * 3600 * 1000;
  // Background work admission (paper 6.5).
  GovernorOptions governor;
};

// What the runtime loaded from the data directory before starting the core.
struct NodeState {
  ActorId actor = 0;
  uint64_t incarnation = 1;
  uint64_t life = 0;          // proto::Member::life: this data directory's
  uint64_t counter_next = 1;  // first counter this run may issue
  uint64_t counter_lease_end = 1;  // counters below it are covered by a durable lease
  std::optional<ClusterMap> map;
  std::vector<proto::Member> members;
  std::set<PartitionId> partitions_with_data;
  std::set<NodeId> hint_owners;  // nodes this one holds hints for
  // When the previous run last recorded itself alive (wall ms; 0: unknown).
  uint64_t last_alive_wall_ms = 0;
  // When this node last came back from an absence longer than the tombstone
  // grace period (wall ms; 0: never). Versions stamped before it may have
  // been deleted, and the tombstones purged, while it was away.
  uint64_t stale_before_wall_ms = 0;
  // An earlier run began a catch-up (kMetaCatchingUp) it did not finish.
  bool catching_up = false;
  // Partitions this node took over at a ring switch, with the replicas they
  // had before that it has not synced with since (kMetaSwitchSync).
  SwitchSync switch_sync;
};

struct Now {
  uint64_t mono_ms = 0;  // monotonic, for deadlines
  uint64_t wall_ms = 0;  // wall clock, stamped on versions
};

// --- storage operations the runtime runs for the core ---
struct ReadOp {
  Space space;
  std::string key;
};
struct WriteOp {
  WriteBatch batch;
  bool sync = false;
};
struct ScanOp {
  Space space;
  ScanOptions options;
};
using StorageOp = std::variant<ReadOp, WriteOp, ScanOp>;

struct StorageResult {
  Status status;
  std::optional<std::string> value;  // ReadOp
  ScanResult scan;                   // ScanOp
};

// --- actions ---
struct ReplyAction {
  uint64_t conn;
  uint64_t request_id;
  proto::Body body;
};
struct CallAction {
  uint64_t token;
  std::string address;  // HOST:PORT
  proto::Body body;
  uint64_t timeout_ms;
};
struct StorageAction {
  uint64_t token;
  StorageOp op;
};
struct ExitAction {
  int code;
  std::string reason;
};
// The exit status of a node that stopped on stored data failing its
// checksum: scrub it (scrub.h) to bring it back.
inline constexpr int kExitCorruptData = 4;
using Action = std::variant<ReplyAction, CallAction, StorageAction, ExitAction>;

enum class LogLevel { kDebug, kInfo, kWarn, kError };
using LogSink = std::function<void(LogLevel, const std::string&)>;

struct NodeStats {
  uint64_t requests = 0;
  uint64_t coord_puts = 0;
  uint64_t coord_put_repeats = 0;  // CoordPuts answered as repeats, not written again
  uint64_t coord_puts_unsynced = 0;  // CoordPuts answered without a sync, as asked
  uint64_t interval_syncs = 0;       // syncs made because a write stayed unsynced too long
  uint64_t replica_puts = 0;
  uint64_t hints_stored = 0;
  uint64_t hints_delivered = 0;  // hinted keys acknowledged by their owner
  uint64_t hints_expired = 0;    // hinted versions dropped past the tombstone grace period
  uint64_t handoff_stale_dropped = 0;  // held through a long absence: dropped, not handed off
  uint64_t gets = 0;
  uint64_t transfers_done = 0;
  uint64_t handoff_keys = 0;
  uint64_t errors = 0;
  uint64_t ae_sessions = 0;
  uint64_t ae_keys_differing = 0;
  uint64_t ae_bytes_fetched = 0;   // encoded sibling sets received from peers
  uint64_t ae_bytes_pushed = 0;    // encoded sibling sets sent to peers
  uint64_t tombstones_purged = 0;
  uint64_t background_deferred = 0;
  uint64_t trees_checked = 0;        // partitions whose tree was checked against storage
  uint64_t tree_build_failures = 0;  // tree build scans that failed (retried with a growing wait)
  uint64_t tree_keys_corrected = 0;  // keys whose tree entry storage contradicted
  uint64_t storage_losses_found = 0;  // writes that found storage lost their key
  // over requests_in_flight_max, request_bytes_in_flight_max or key_writes_queued_max
  uint64_t requests_refused_busy = 0;
  // Reads and writes meant for a replica of a partition this node does not
  // replicate (the sender's map, or this node's, is out of date)
  uint64_t requests_refused_not_replica = 0;
  // Writes and pushes refused while the disk was nearly full
  uint64_t requests_refused_disk_low = 0;
  // Storage reads and writes that failed with an I/O error (a full or
  // failing disk); logged at most once a minute
  uint64_t storage_errors = 0;
};

class NodeCore {
 public:
  NodeCore(NodeOptions options, NodeState state, uint64_t rng_seed, LogSink log = {});
  ~NodeCore();

  // Creates the cluster (no seeds, no stored map), resumes (stored map) or
  // starts joining through the seeds.
  void Start(Now now);
  // A request from a client or peer on connection `conn`.
  void OnRequest(Now now, uint64_t conn, proto::Message message);
  // The outcome of a CallAction.
  void OnCallDone(Now now, uint64_t token, Result<proto::Message> reply);
  // The outcome of a StorageAction.
  void OnStorageDone(Now now, uint64_t token, StorageResult result);
  // Time passed; call at NextWakeMs() or earlier.
  void OnTick(Now now);
  // The free bytes on the data directory's file system, as the runtime
  // measured them (call at start and then every second or so; never called:
  // the disk is taken to have room).
  void OnDiskSpace(Now now, uint64_t free_bytes);
  // Stop taking new work; requests in flight finish.
  void BeginShutdown(Now now);

  // Actions produced since the last call, in order.
  std::vector<Action> TakeActions();
  // Monotonic time by which OnTick should run next.
  uint64_t NextWakeMs() const;
  // Nothing in flight (no request awaiting storage or peers).
  bool Idle() const;

  uint64_t epoch() const { return map_ ? map_->epoch() : 0; }
  // Whether the node refuses reads until anti-entropy caught it up.
  bool catching_up() const { return catching_up_; }
  // Whether the node refuses new data for want of disk space.
  bool disk_low() const { return disk_low_; }
  // Partitions taken over at a ring switch whose reads wait for a sync with
  // the replicas they had before, by partition.
  const SwitchSync& switch_sync() const { return state_.switch_sync; }
  // Whether every partition's Merkle tree has been built from storage.
  bool trees_ready() const { return trees_ready_; }
  // Partitions with a Merkle tree in memory.
  size_t merkle_trees() const;
  // The root of the partition's Merkle tree (empty summary if none).
  MerkleSummary MerkleRoot(PartitionId partition);
  // The partition whose copy this node is handing off now, if any.
  std::optional<PartitionId> partition_handing_off() const;
  // Completed anti-entropy cycles over every replicated partition.
  uint64_t ae_cycles() const { return ae_cycles_done_; }
  double foreground_p99_ms() { return governor_.ForegroundP99(now_ms_); }
  const std::optional<ClusterMap>& map() const { return map_; }
  const Membership& membership() const { return membership_; }
  const NodeStats& stats() const { return stats_; }
  ActorId actor() const { return state_.actor; }
  // Counters the stats reply adds to the node's own, such as the engine's.
  void SetCounterSource(std::function<void(EngineCounters&)> source) {
    counter_source_ = std::move(source);
  }

 private:
  struct Transfer;
  struct Handoff;
  struct AeSession;
  struct TreeCheck;
  using StorageDone = std::function<void(Now, StorageResult)>;
  using CallDone = std::function<void(Now, Result<proto::Message>)>;
  using Unlock = std::function<void()>;

  // Plumbing.
  void Storage(StorageOp op, StorageDone done);
  void Call(const std::string& address, proto::Body body, CallDone done);
  void Reply(uint64_t conn, uint64_t request_id, proto::Body body);
  void ReplyError(uint64_t conn, uint64_t request_id, const Status& status);
  // Answers a request refused before it was tracked in carrying_: unlike
  // Reply, it releases no bytes of a request in progress under the same
  // (conn, id).
  void RefuseUntracked(uint64_t conn, uint64_t request_id, const Status& status);
  void Log(LogLevel level, const std::string& message);
  // Runs `fn` once no other holder has `key`; fn must call the Unlock it gets.
  void WithKeyLock(std::string key, std::function<void(Unlock)> fn);
  // The same, or false without running fn when `queued_max` others already
  // wait for `key`.
  bool WithKeyLock(std::string key, size_t queued_max, std::function<void(Unlock)> fn);
  Unlock MakeUnlock(const std::string* key);

  // Requests.
  void HandleGet(Now now, uint64_t conn, uint64_t id, proto::GetRequest req);
  void HandleCoordPut(Now now, uint64_t conn, uint64_t id, proto::CoordPutRequest req);
  void HandleReplicaPut(Now now, uint64_t conn, uint64_t id, proto::ReplicaPutRequest req);
  void HandleFetch(Now now, uint64_t conn, uint64_t id, proto::FetchRequest req);
  // A Fetch being answered: its keys are read kFetchReadWindow at a time, in
  // order, until the reply holds ExchangeBytesMax.
  struct FetchState {
    uint64_t conn = 0, id = 0;
    std::vector<std::string> keys;
    proto::FetchReply reply;
    size_t bytes = 0;   // of the entries in reply
    bool full = false;  // the next key would take reply past the budget
  };
  void FetchWindow(std::shared_ptr<FetchState> f);
  void HandlePush(Now now, uint64_t conn, uint64_t id, proto::PushRequest req);
  void HandleTransfer(Now now, uint64_t conn, uint64_t id, proto::TransferRequest req);
  void HandleGossip(Now now, uint64_t conn, uint64_t id, proto::GossipRequest req);
  void HandleJoin(Now now, uint64_t conn, uint64_t id, proto::JoinRequest req);
  void HandleAdmin(Now now, uint64_t conn, uint64_t id, proto::AdminRequest req);
  proto::StatsReply StatsNow();
  void HandleTransferDone(Now now, uint64_t conn, uint64_t id, proto::TransferDoneRequest req);
  void HandleAeCompare(uint64_t conn, uint64_t id, const proto::AeCompareRequest& req);
  void HandlePurge(uint64_t conn, uint64_t id, proto::PurgeRequest req);
  // Deletes each entry's key whose stored set is still tombstones with that digest.
  void PurgeLocal(std::vector<proto::PurgeRequest::Entry> entries,
                  std::function<void(Status, uint64_t deleted)> done);

  // Background steps (pages, exchanges) wait for the governor; each gets a
  // `done` to call when it ends.
  using Step = std::function<void(std::function<void()> done)>;
  void Background(Step step);
  void RunBackground();

  // Merkle trees.
  MerkleTree& TreeFor(PartitionId p);
  // The partition's tree if it has one, else an empty tree (never stored).
  const MerkleTree& TreeOrEmpty(PartitionId p);
  // Records a data-space write (set) or delete (null) of `data_key`. The
  // tree change waits in tree_updates_ until ApplyTreeUpdates.
  void NoteStored(const std::string& data_key, const SiblingSet* set);
  // Called under the key's lock when a write or delete of `data_key`
  // failed: it may still have been applied (an inline write whose log sync
  // then failed), so the tree follows what storage holds, read back; then
  // `then`. Otherwise the tree would disagree with storage until a tree
  // check, and anti-entropy, finding the stored version already there,
  // would not correct it.
  void NoteStoredAfterFailedWrite(const std::string& data_key, std::function<void()> then);
  // Called under the key's lock when a write read nothing (or nothing
  // readable) at `data_key`. If the key's Merkle tree entry says this node
  // stored a set there, storage lost it without an error: the node removes
  // the entry, so anti-entropy repairs the key, and takes a fresh actor,
  // since the dots of its actor elsewhere claim events it no longer holds
  // (riak_kv#679, for a node that keeps running). An older copy that comes
  // back is left to the tree checks: comparing every read with the tree
  // would cost a tree lookup per write.
  void CheckNothingWasStored(const std::string& data_key);
  // Applies the recorded tree changes in order, a pass per step over up to
  // a chunk of them so that their cache misses overlap. Called before
  // anything reads a tree, and when kTreeUpdatesMax wait.
  void ApplyTreeUpdates();
  void BuildTreesStep();
  // Tree checks (NodeOptions::tree_check_interval_ms): starts the next
  // partition's when due, reads it a page at a time, then corrects the
  // partition's tree where it disagrees with what was read. A key written
  // while the check runs keeps what its write recorded. A page waits while
  // other background steps wait or foreground requests are slow, so checks
  // neither slow transfers, handoffs and anti-entropy nor add to a backlog.
  void TreeCheckTick(Now now);
  void TreeCheckPage();
  void FinishTreeCheck();

  // Anti-entropy and tombstone collection.
  void AntiEntropyTick(Now now);
  void AeRound(std::shared_ptr<AeSession> s);
  void AeExchange(std::shared_ptr<AeSession> s);
  // Pushes the repairs in `batches`, one message after another, then goes
  // on with the exchange.
  void AePushRepairs(std::shared_ptr<AeSession> s,
                     std::shared_ptr<std::vector<std::vector<proto::KeyedSiblings>>> batches,
                     size_t next);
  // Most bytes of stored sets one Fetch, Push or Transfer message carries
  // (a single set may exceed it).
  size_t ExchangeBytesMax() const;
  // Whether the map's ring or its pending one holds `node`.
  bool InRingOrNext(const NodeId& node) const;
  void FinishAe(std::shared_ptr<AeSession> s, Status status);
  void PurgeTombstones(std::shared_ptr<AeSession> s);
  // One page of a purge pass: scans it, confirms its tombstones with
  // `others` (the partition's other replicas, at their addresses), purges
  // them, then goes on with the next page (NextPurgePage).
  void PurgePage(std::shared_ptr<AeSession> s, std::vector<std::string> others);
  void NextPurgePage(std::shared_ptr<AeSession> s, std::vector<std::string> others);
  // Asks `others` to purge `confirmed`, then purges them here once all did.
  void SendPurges(std::shared_ptr<AeSession> s, PartitionId p,
                  const std::vector<std::string>& others,
                  const std::vector<proto::PurgeRequest::Entry>& confirmed);

  // Merges `incoming` into the stored set of `key` (data space, or the hint
  // space when `hint_for` is set) and calls `done` once written. False,
  // without calling `done`, when `queued_max` writes of the key already wait.
  bool MergeInto(std::string key, SiblingSet incoming, std::string hint_for, bool sync,
                 size_t queued_max, std::function<void(Now, Status)> done);
  // The Busy answer to a client write of `key` refused at key_writes_queued_max.
  Status KeyQueueFull() const;

  // Cluster state.
  void CreateCluster(Now now);
  void TryJoin(Now now);
  void AfterClusterChange(Now now, bool map_changed, bool members_changed);
  // Merges a peer's gossip (its members, and its map unless empty), then
  // reconciles. InvalidArgument, with nothing merged, for a peer of another
  // cluster (another id or shape), which the caller answers or ignores.
  Status MergePeerGossip(Now now, const std::string& from,
                         const std::vector<proto::Member>& members, std::string_view map_bytes);
  // Whether this node, alone in a cluster it created, meets the cluster that
  // had it among its members (its directory was wiped).
  bool RejoinsItsCluster(const ClusterMap& theirs) const;
  // Whether `members` name this node's id with another life of at least its
  // incarnation while it resumed a stored map of several nodes: the id
  // joined afresh from another data directory while this one was away.
  std::optional<proto::Member> IdTakenByAnotherLife(
      const std::vector<proto::Member>& members) const;
  // The ring holds this node alone, with no change pending.
  bool AloneInItsRing() const;
  // Refuses joins for options_.create_quiet_rounds gossip rounds from now,
  // while the node stays alone in its ring.
  void HoldJoinsWhileAlone(Now now);
  // Whether this node's Merkle trees for the map's partitions fit
  // (MerkleTreesFit); if not, it exits with status 2.
  bool TreesFit();
  // Merges a peer's cluster map of this cluster (or, RejoinsItsCluster,
  // takes it); returns whether ours changed.
  bool MergePeerMap(ClusterMap theirs);
  // Writes the map and members; `done`, when given, runs once the write is
  // finished (synced when `sync`) with its status.
  void Persist(bool sync, std::function<void(Status)> done = {});
  void GossipRound(Now now);
  void CheckSelfStatus(Now now);

  // Data movement.
  void StartTransfers(Now now);
  void PullPage(Now now, std::shared_ptr<Transfer> t);
  void FinishTransfer(Now now, std::shared_ptr<Transfer> t, Status status);
  // Stops the transfers the map no longer owes this node (see Transfer).
  void AbandonTransfersNoLongerOwed();
  void StartHandoff(Now now);
  bool StartHandoffOfNextRange(Now now);
  // What becomes of the hints held for `owner` now: delivered (alive),
  // made this node's data (label: why; the owner left or is unknown), or
  // held (down). kNone: nothing to do with them now.
  enum class HintsFate { kNone, kDeliver, kOwnData, kHold };
  HintsFate FateOfHintsFor(const NodeId& owner, uint64_t now_ms, std::string* label) const;
  // A handoff of the hints held for `owner`, from the first.
  static std::shared_ptr<Handoff> NewHintHandoff(const NodeId& owner);
  // Lowest priority, when no other handoff is due: the next expiry pass
  // over a down owner's hints (hint_expiry_interval_ms).
  bool StartHintExpiryPass(Now now);
  // A pass ended or gave way to other handoffs (`h.gave_way`).
  void EndHintExpiryPass(Now now, const Handoff& h, const Status& status);
  void HandoffPage(Now now, std::shared_ptr<Handoff> h);
  // What a handoff page's scan found out about one of its entries.
  struct PageEntry {
    bool pushed = true;    // false: every version expired, so it was not pushed
    bool own_dots = true;  // records events of the actor current at the scan
    bool readable = true;  // false: not decoded, so neither pushed nor deleted
    bool kept = false;     // an expiry pass left versions in it: not deleted
    uint32_t expired = 0;  // versions past the grace period (an expiry pass counts them deleted)
  };
  // Deletes the page's entries still stored as they were pushed; those not
  // pushed count as deleted only. Deleting data that records events of this
  // node's actor first moves the node to a fresh actor (RotateActor).
  void DeleteAcknowledged(Now now, std::shared_ptr<Handoff> h, ScanResult page,
                          std::vector<PageEntry> fates);
  // Moves this node to a fresh actor id (until its next start, which takes
  // another): the node is about to stop holding every event of its current
  // actor on some key, and a dot of that actor would then claim events the
  // node has not seen.
  void RotateActor(const std::string& why);
  // Drops the versions of `set` that handoff `h` must not push; returns how many.
  size_t DropStaleVersions(const Handoff& h, SiblingSet& set) const;
  // Drops the data versions this node held through an absence longer than
  // the grace period (stale_before_wall_ms); returns how many.
  size_t DropHeldThroughAbsence(SiblingSet& set) const;
  // Aborted when an anti-entropy peer answered with a newer cluster map
  // than this node's: the partitions this node replicates, and so what its
  // session may merge and push, may have changed (a node back from an
  // absence whose gossip has not yet brought the map).
  Status PeerMapNotNewer(uint64_t peer_epoch) const;
  // Of a set of a partition this node does not replicate: drops the versions
  // older than the grace period (as HintExpired) and those held through an
  // absence; returns how many.
  size_t DropUntrustedLeftovers(SiblingSet& set) const;
  // A hinted version older than the grace period: a tombstone over it may
  // be purged, so it is neither delivered nor read.
  bool HintExpired(const Version& v) const;
  void StopOnCorruption(const Status& status);
  // A data handoff whose partition this node replicates again (a change
  // undone while it ran): it stops, and deletes nothing more.
  bool StillReplicated(const Handoff& h) const;
  void FinishHandoff(Now now, std::shared_ptr<Handoff> h, Status status, bool drained);
  // A write into a handoff's range (a data partition, or the hints for
  // `owner`) completed: the running handoff of that range is not drained by
  // an empty scan.
  void NoteHandoffRangeWritten(Space space, PartitionId partition, const NodeId& owner);
  void ReleasePage(const std::shared_ptr<Handoff>& h);
  void FinalGossipAndExit(Now now, int code, std::string reason);
  // In the current ring's preference list of `p`, or the next ring's.
  bool Replicates(PartitionId p) const;
  bool InPreferenceList(const Ring& ring, PartitionId p) const;
  // InvalidArgument when admitting `joiner` (`known`: an id with a record
  // here) would need more ring nodes than the ring can hold, or a member
  // record past kMaxMembersForJoins. Each seed judges by what it knows:
  // joins other seeds take at the same time can still take a ring past its
  // last place (that joiner then waits until a node leaves or is removed).
  Status RoomForJoiner(const NodeId& joiner, bool known) const;
  // A request with this hint is meant for a replica of the key (none, or
  // this node's own id), not for a stand-in keeping another's copy.
  bool ForAReplica(std::string_view hint) const;
  // Unless this node replicates `p` (in its ring or the next), answers
  // request `id` with Unavailable naming the partition's replicas in its
  // map, and returns true: one of the two maps is out of date (mostly the
  // sender's: a client on the map from before a switch), and a write taken
  // here after the switch would miss the sync of the replica that took this
  // node's place, a read would miss what the replicas took since. Asked
  // again as a write completes (`applied`, the refusal then in doubt): the
  // switch may have come while it was stored, and the sync read this
  // node's tree before it.
  bool RefusedAsNoReplica(uint64_t conn, uint64_t id, PartitionId p, bool applied = false);
  std::optional<std::string> AddressOf(const NodeId& id) const;
  // options_.request_bytes_in_flight_max, raised to twice the largest value.
  size_t RequestBytesInFlightMax() const;
  // Why new data is refused while disk_low_.
  std::string DiskLowReason() const;
  // Free bytes at which a node whose disk was nearly full takes data again:
  // an eighth over disk_free_bytes_min.
  uint64_t DiskResumeBytes() const;
  // Busy when a coordinated write would leave a key more than one version
  // taking over half of frame_bytes_max encoded: the set must fit every
  // message that carries it (a read's reply, a replica's copy, a transfer's
  // page), with room for another coordinator's set merged into it. A write
  // leaving one version is always taken (its value is within the limits).
  Status CheckSetBytes(size_t versions, size_t encoded_bytes) const;
  // Counts a storage operation's I/O error and logs it, at most one line
  // per kStorageErrorLogIntervalMs (a failing disk fails every write).
  void NoteStorageError(Now now, const Status& status);

  NodeOptions options_;
  proto::Limits stored_limits_;  // for decoding stored sibling sets
  NodeState state_;
  std::mt19937_64 rng_;
  LogSink log_;
  std::function<void(EngineCounters&)> counter_source_;
  Membership membership_;
  std::optional<ClusterMap> map_;
  NodeStats stats_;

  std::vector<Action> actions_;
  uint64_t next_token_ = 1;
  struct StorageWaiting {
    StorageDone done;
    bool unsynced_write = false;
  };
  std::unordered_map<uint64_t, StorageWaiting> storage_waiting_;
  // When the oldest write applied without a sync and not yet covered by one
  // completed; nullopt when every applied write is covered (or syncing).
  std::optional<uint64_t> unsynced_since_ms_;
  std::unordered_map<uint64_t, CallDone> calls_waiting_;
  // Per held key, the writes waiting for it in arrival order.
  std::unordered_map<std::string, FifoVector<std::function<void(Unlock)>>> key_locks_;
  size_t requests_in_flight_ = 0;

  bool started_ = false;
  bool resumed_ = false;  // started from a stored map
  bool shutting_down_ = false;
  bool exited_ = false;
  bool disk_low_ = false;                    // OnDiskSpace: under disk_free_bytes_min
  std::optional<uint64_t> storage_error_logged_ms_;
  uint64_t storage_errors_unlogged_ = 0;     // since the last logged one
  std::optional<uint64_t> disk_free_bytes_;  // as last measured
  uint64_t now_ms_ = 0;
  uint64_t wall_ms_ = 0;
  uint64_t next_gossip_ms_ = 0;
  uint64_t next_join_ms_ = 0;
  uint64_t joins_refused_until_ms_ = 0;
  uint64_t next_handoff_ms_ = 0;
  uint64_t map_changed_ms_ = 0;
  uint64_t logged_epoch_ = 0;
  uint64_t synced_map_hash_ = 0;  // ContentHash of the map last persisted with a sync
  bool persist_due_ = false;      // the map gained transfer marks since the last Persist
  uint64_t gossip_rounds_ = 0;
  bool join_in_flight_ = false;
  bool join_waits_for_disk_ = false;  // TryJoin logged that the disk is too full to join
  bool leave_complete_ = false;
  size_t join_attempts_ = 0;
  std::map<PartitionId, std::shared_ptr<Transfer>> transfers_;
  std::shared_ptr<Handoff> handoff_;
  // Ranges (space, key prefix) whose last handoff failed: they wait until
  // every other range had its turn, so one target that refuses every push
  // does not hold up the rest.
  std::set<std::pair<Space, std::string>> handoff_failed_;
  // Ranges handed off without draining (written meanwhile) this turn: each
  // other range gets its turn before they are taken again, so that a range
  // written without pause does not hold up the rest.
  std::set<std::pair<Space, std::string>> handoff_turned_;
  // Failed ranges warned about: later failures of one are logged at debug
  // level until it succeeds.
  std::set<std::pair<Space, std::string>> handoff_warned_;
  // Each down hint owner's expiry passes: when the next is due, and where a
  // pass that gave way to other handoffs goes on from.
  struct HintExpiry {
    uint64_t due_ms = 0;  // 0: at once (an owner first seen down, or after a start)
    std::string after;
    uint64_t deleted = 0;  // versions the current pass deleted so far
  };
  std::map<NodeId, HintExpiry> hint_expiry_;

  // Coordinated writes remembered for answering repeats.
  static constexpr size_t kRecentPutsMax = 16384;
  // Tree changes recorded before ApplyTreeUpdates runs on its own.
  static constexpr size_t kTreeUpdatesMax = 64;
  RecentPuts recent_puts_{kRecentPutsMax};

  BackgroundGovernor governor_;
  std::deque<Step> background_;
  bool running_background_ = false;
  // A read, write or push in progress (by (conn, id)).
  struct Carrying {
    uint64_t started_ms = 0;
    size_t bytes = 0;         // counted in request_bytes_in_flight_
    bool foreground = false;  // a client's read or write: its latency feeds the governor
  };
  std::multimap<std::pair<uint64_t, uint64_t>, Carrying> carrying_;
  size_t request_bytes_in_flight_ = 0;

  std::vector<std::unique_ptr<MerkleTree>> trees_;  // by partition, null until used
  std::unique_ptr<MerkleTree> empty_tree_;          // TreeOrEmpty's, made on first use
  // A write's tree change not yet applied: the key's new digest, or nullopt
  // for a delete.
  struct TreeUpdate {
    PartitionId partition;
    std::string key;
    std::optional<uint64_t> digest;
  };
  std::vector<TreeUpdate> tree_updates_;
  // Partitions NoteStored already put in state_.partitions_with_data.
  std::vector<bool> known_with_data_;
  std::deque<PartitionId> build_queue_;
  std::string build_after_;
  bool build_in_flight_ = false;
  uint64_t build_retry_ms_ = 0;     // the wait after the last failed build scan
  uint64_t build_retry_at_ms_ = 0;  // no build scan before this
  bool trees_ready_ = false;
  std::set<std::string> removed_during_build_;
  std::unique_ptr<TreeCheck> check_;  // the partition being checked, if any
  std::vector<PartitionId> check_cycle_;
  size_t check_pos_ = 0;
  uint64_t next_check_ms_ = 0;  // 0: not scheduled yet

  std::shared_ptr<AeSession> ae_;
  std::vector<PartitionId> ae_cycle_;
  size_t ae_pos_ = 0;
  bool ae_cycle_had_session_ = false;
  uint64_t ae_next_cycle_ms_ = 0;
  uint64_t ae_cycles_done_ = 0;
  std::map<PartitionId, uint32_t> ae_rotation_;
  // Peers that answered a session as not ready (trees being built, not
  // joined yet), by when they are asked again (mono ms).
  std::map<NodeId, uint64_t> ae_not_ready_until_;
  std::map<PartitionId, uint64_t> last_purge_ms_;
  std::map<PartitionId, std::string> purge_after_;
  // Reads wait for a full anti-entropy round; recorded, so that a restart
  // resumes it.
  void BeginCatchUp(const std::string& why);
  void EndCatchUp(const std::string& how);
  // Whether the pending change gives this node partitions it does not
  // replicate now: a catch-up waits for the switch, then covers them too.
  bool GainsPartitionsAtSwitch() const;
  // The replica to copy partition `p` from for the pending change, or none up.
  std::optional<NodeId> TransferSource(Now now, PartitionId p) const;
  // After the ring moved on from `before`: each partition this node gained in
  // place of a replica waits for a sync with every replica it had before.
  // Those took the writes the new one may have missed (a send during the
  // change that failed, a client still on the old map): a write acknowledged
  // by W of them is on one that is up unless all its holders are down, when
  // no read could find it either. Until then this node refuses the
  // partition's reads, and a reader waits for the others.
  void NoteRingSwitch(const Ring& before);
  // Unavailable, naming the replicas awaited, while `p`'s reads wait so: a
  // replica awaited that is silent (Membership::IsSilent) holds no read up
  // while this node hears the others, and does again once it is heard.
  Status SwitchSyncPending(PartitionId p) const;
  // Drops the replicas removed since from the waits, and the waits left
  // empty.
  void SettleSwitchSync();
  // Starts an anti-entropy session that pulls a gained partition from a
  // replica it waits for, if one is due and up; false if none started.
  bool StartSwitchSync(Now now);
  void StartAeSession(PartitionId p, const NodeId& peer, bool switch_sync);
  void FinishSwitchSync(const AeSession& s);
  std::optional<Ring> last_ring_;  // the ring AfterClusterChange last saw
  uint64_t switch_sync_next_ms_ = 0;
  uint64_t switch_sync_turn_ = 0;
  bool catching_up_ = false;
  std::set<PartitionId> caught_up_;
  // Catching up on a partition: the other replicas it synced with, and
  // whether one of them was not catching up itself. The partition is caught
  // up once the node synced with every other replica that is up, one of
  // them not catching up (a write W=2 acknowledged may be on one replica
  // besides this node: any other may lack it); or, when all were catching
  // up (the whole set was away: none knows more), with every one of them.
  struct CatchUpProgress {
    std::set<NodeId> synced;
    bool with_current = false;
  };
  std::map<PartitionId, CatchUpProgress> catch_up_progress_;
  uint64_t next_alive_write_ms_ = 0;
};

}  // namespace dynamo::node
