#include "dynamo/node/node_core.h"

#include <algorithm>
#include <cstdio>

#include "dynamo/node/keys.h"
#include "node_core_util.h"

namespace dynamo::node {
namespace {

// Pages an expiry pass over a down node's hints scans before it gives way
// to other handoffs.
constexpr uint32_t kHintExpiryPagesPerTurn = 16;

// Bounds on what one Transfer request may ask of this node.
constexpr uint32_t kTransferEntriesMax = 4096;
constexpr uint64_t kTransferBytesMax = 8u << 20;
// Bounds on a Fetch: keys it may list, and stored sets read at once (reading
// stops once the reply holds ExchangeBytesMax, so a request of many large
// keys costs at most one window of them in memory).
constexpr size_t kFetchKeysMax = 4096;
// Longest HOST:PORT a joiner may give (a DNS name takes at most 253 bytes).
constexpr size_t kAddressBytesMax = 300;
constexpr size_t kFetchReadWindow = 32;
// Peers told of our departure before exiting.
constexpr size_t kFarewellPeers = 3;
// How often a node records that it is alive (kMetaLastAlive, unsynced).
constexpr uint64_t kAliveRecordMs = 10000;
template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// Most versions (and items of any array) read from one stored record: a
// corrupt record's count allocates no more.
constexpr uint32_t kStoredItemsMax = 1u << 20;

// What stored sibling sets are read against: the largest any configuration
// accepts, not the node's current limits. A value stored before a limit was
// lowered, or a set that replicas merged past the sibling limit, is data to
// serve and hand off, never "corrupt" (which the next merge would replace);
// a record's own length bounds its fields.
proto::Limits StoredLimits(proto::Limits limits) {
  limits = proto::WithStoredDataLimits(limits);
  limits.frame_bytes_max = UINT32_MAX;
  limits.items_max = kStoredItemsMax;
  limits.siblings_max = kStoredItemsMax;
  return limits;
}

}  // namespace

struct NodeCore::Transfer {
  PartitionId partition = 0;
  NodeId source;
  std::string address;
  std::string after;
  uint64_t keys = 0;
  uint64_t started_ms = 0;
  // The pending change stopped moving the partition here while it ran: it
  // stops, and counts for nothing (writes in between went elsewhere, so a
  // later change owing it again starts a new one).
  bool abandoned = false;
};

// Drains a key range to other nodes: pushes a page, then deletes each pushed
// key whose stored value is still the one pushed.
struct NodeCore::Handoff {
  Space space = Space::kData;
  std::string prefix;
  std::vector<std::string> addresses;  // push targets; empty: merge into own data
  proto::PushPurpose purpose = proto::PushPurpose::kTransfer;
  std::string after;
  uint64_t keys = 0;
  PartitionId partition = 0;  // data handoffs
  NodeId owner;               // hint handoffs
  std::string what;
  std::function<void()> page_done;  // releases the page's background slot
  ActorId scanned_actor = 0;        // this node's actor when the page was scanned
  // A write into the range completed while it ran: its scans may have missed
  // it (a scan's answer comes after writes applied meanwhile complete), so
  // an empty scan does not show the range drained.
  bool written_meanwhile = false;
  uint64_t unreadable = 0;  // entries that failed to decode: kept, not pushed
  // A down owner's hints: entries whose versions are all past the grace
  // period are deleted and nothing is pushed.
  bool expire_only = false;
  uint32_t pages = 0;            // pages scanned in this turn (expiry passes)
  bool gave_way = false;         // an expiry pass that stopped for other work
  uint64_t expired_deleted = 0;  // versions deleted by an expiry pass
};

NodeCore::NodeCore(NodeOptions options, NodeState state, uint64_t rng_seed, LogSink log)
    : options_(std::move(options)),
      stored_limits_(StoredLimits(options_.limits)),
      state_(std::move(state)),
      rng_(rng_seed),
      log_(std::move(log)),
      membership_(proto::Member{options_.id, options_.address, proto::MemberStatus::kJoining,
                                state_.incarnation, 0, state_.actor, true, state_.life},
                  options_.failure_detector) {
  for (const proto::Member& m : state_.members) {
    if (m.id == options_.id && m.status != proto::MemberStatus::kRemoved) {
      membership_.SetSelfStatus(m.status);
    }
  }
  map_ = std::move(state_.map);
  state_.map.reset();
  if (map_) last_ring_ = map_->ring();
  std::erase_if(state_.switch_sync, [this](const auto& entry) {
    return !map_ || entry.first >= map_->ring().partition_count();
  });
}

NodeCore::~NodeCore() = default;

// ------------------------------------------------------------------ plumbing

void NodeCore::Storage(StorageOp op, StorageDone done) {
  uint64_t token = next_token_++;
  bool unsynced_write = false;
  if (const auto* write = std::get_if<WriteOp>(&op)) {
    // A sync covers every write applied before it is issued, which is every
    // write whose completion has been seen.
    if (write->sync) unsynced_since_ms_.reset();
    unsynced_write = !write->sync;
  }
  storage_waiting_.emplace(token, StorageWaiting{std::move(done), unsynced_write});
  actions_.push_back(StorageAction{token, std::move(op)});
}

void NodeCore::Call(const std::string& address, proto::Body body, CallDone done) {
  uint64_t token = next_token_++;
  calls_waiting_.emplace(token, std::move(done));
  actions_.push_back(CallAction{token, address, std::move(body), options_.peer_timeout_ms});
}

void NodeCore::Reply(uint64_t conn, uint64_t request_id, proto::Body body) {
  if (requests_in_flight_ > 0) --requests_in_flight_;
  // A peer may reuse the id of a request still in progress: each reply
  // takes one entry, so every request's bytes are released once.
  auto started = carrying_.lower_bound({conn, request_id});
  if (started != carrying_.end() && started->first == std::pair{conn, request_id}) {
    if (started->second.foreground) {
      governor_.RecordForeground(now_ms_,
                                 static_cast<double>(now_ms_ - started->second.started_ms));
    }
    request_bytes_in_flight_ -= started->second.bytes;
    carrying_.erase(started);
  }
  actions_.push_back(ReplyAction{conn, request_id, std::move(body)});
}

void NodeCore::ReplyError(uint64_t conn, uint64_t request_id, const Status& status) {
  ++stats_.errors;
  Reply(conn, request_id, proto::MakeError(status, epoch()));
}

void NodeCore::RefuseUntracked(uint64_t conn, uint64_t request_id, const Status& status) {
  if (requests_in_flight_ > 0) --requests_in_flight_;
  ++stats_.errors;
  actions_.push_back(ReplyAction{conn, request_id, proto::MakeError(status, epoch())});
}

void NodeCore::Log(LogLevel level, const std::string& message) {
  if (log_) log_(level, message);
}

void NodeCore::WithKeyLock(std::string key, std::function<void(Unlock)> fn) {
  WithKeyLock(std::move(key), SIZE_MAX, std::move(fn));
}

bool NodeCore::WithKeyLock(std::string key, size_t queued_max, std::function<void(Unlock)> fn) {
  auto [it, fresh] = key_locks_.try_emplace(std::move(key));
  if (!fresh) {
    if (it->second.size() >= queued_max) return false;
    it->second.Push(std::move(fn));
    return true;
  }
  fn(MakeUnlock(&it->first));
  return true;
}

Status NodeCore::KeyQueueFull() const {
  return Status::Busy("node " + options_.id + " already has " +
                      std::to_string(options_.key_writes_queued_max) +
                      " writes of this key waiting (limits.key_writes_queued_max)");
}

NodeCore::Unlock NodeCore::MakeUnlock(const std::string* key) {
  // `key` is the lock's own map key: it stays put until the lock is erased.
  return [this, key] {
    auto held = key_locks_.find(*key);
    DYNAMO_CHECK(held != key_locks_.end());
    if (held->second.empty()) {
      key_locks_.erase(held);
      return;
    }
    // The lock passes straight to the next waiter.
    std::function<void(Unlock)> next = held->second.Pop();
    next(MakeUnlock(key));
  };
}

std::vector<Action> NodeCore::TakeActions() {
  std::vector<Action> out;
  out.swap(actions_);
  return out;
}

uint64_t NodeCore::NextWakeMs() const {
  uint64_t next = std::min(next_gossip_ms_, next_handoff_ms_);
  if (!map_) next = std::min(next, next_join_ms_);
  return next;
}

bool NodeCore::Idle() const { return requests_in_flight_ == 0 && storage_waiting_.empty(); }

size_t NodeCore::RequestBytesInFlightMax() const {
  return std::max(options_.request_bytes_in_flight_max,
                  2 * size_t{options_.limits.value_bytes_max});
}

std::optional<std::string> NodeCore::AddressOf(const NodeId& id) const {
  std::optional<proto::Member> m = membership_.Find(id);
  if (!m || m->address.empty()) return std::nullopt;
  return m->address;
}

bool NodeCore::InPreferenceList(const Ring& ring, PartitionId p) const {
  std::optional<NodeIndex> me = ring.IndexOf(options_.id);
  if (!me) return false;
  std::span<const NodeIndex> pref = ring.PreferenceIndices(p);
  return std::find(pref.begin(), pref.end(), *me) != pref.end();
}

bool NodeCore::Replicates(PartitionId p) const {
  if (!map_) return false;
  return InPreferenceList(map_->ring(), p) || (map_->next() && InPreferenceList(*map_->next(), p));
}

bool NodeCore::ForAReplica(std::string_view hint) const {
  return hint.empty() || hint == options_.id;
}

bool NodeCore::RefusedAsNoReplica(uint64_t conn, uint64_t id, PartitionId p, bool applied) {
  if (Replicates(p)) return false;
  ++stats_.requests_refused_not_replica;
  ++stats_.errors;
  std::string names;
  std::vector<proto::NodeAddress> replicas;
  for (const NodeId& node : map_->ring().PreferenceList(p)) {
    names += (names.empty() ? "" : ", ") + node;
    replicas.push_back(proto::NodeAddress{node, AddressOf(node).value_or("")});
  }
  proto::ErrorReply refusal = proto::MakeError(
      Status::Unavailable("node " + options_.id + " does not replicate partition " +
                          std::to_string(p) + " in its map (epoch " + std::to_string(epoch()) +
                          "), whose replicas are " + names +
                          "; a client on an older map should ask them" +
                          (applied ? " (applied here before this node gave the partition up)" : ""))
          .WithInDoubt(applied),
      epoch());
  refusal.replicas = std::move(replicas);
  Reply(conn, id, std::move(refusal));
  return true;
}

Status MerkleTreesFit(uint64_t partitions, uint32_t depth, const std::string& partitions_source) {
  // A node holding data of every partition keeps a tree for each.
  const uint64_t trees_bytes = partitions * MerkleTree::EmptyBytes(depth);
  if (trees_bytes <= kMerkleTreesBytesMax) return Status::OK();
  return Status::InvalidArgument("anti_entropy.merkle_depth " + std::to_string(depth) + " with " +
                                 partitions_source + " may keep " +
                                 std::to_string(trees_bytes >> 20) +
                                 " MiB of Merkle trees; the depth must be lower (at most " +
                                 std::to_string(kMerkleTreesBytesMax >> 20) + " MiB in all)");
}

// ------------------------------------------------------------------ events

void NodeCore::Start(Now now) {
  now_ms_ = now.mono_ms;
  if (now.wall_ms != 0) wall_ms_ = now.wall_ms;
  started_ = true;
  // The stored members count as heard from now: at an earlier time on this
  // run's clock their next heartbeat would add a spell as long as that
  // clock's reading (the host's uptime) to their failure detectors.
  membership_.Merge(state_.members, now.mono_ms);
  state_.members.clear();
  next_gossip_ms_ = now.mono_ms;
  next_handoff_ms_ = now.mono_ms + options_.handoff_interval_ms;
  map_changed_ms_ = now.mono_ms;
  build_queue_.assign(state_.partitions_with_data.begin(), state_.partitions_with_data.end());
  trees_ready_ = build_queue_.empty();
  ae_next_cycle_ms_ = now.mono_ms + options_.gossip_interval_ms;
  if (map_ && !TreesFit()) return;
  if (map_) {
    resumed_ = true;
    if (AloneInItsRing()) HoldJoinsWhileAlone(now);
    Log(LogLevel::kInfo, "resuming in a cluster of " + std::to_string(map_->ring().nodes().size()) +
                             " nodes at epoch " + std::to_string(epoch()));
    if (state_.catching_up) {
      BeginCatchUp(
          "resuming a catch-up an earlier run did not finish: reads wait for a full "
          "anti-entropy round");
    }
    if (state_.last_alive_wall_ms != 0 &&
        now.wall_ms > state_.last_alive_wall_ms + options_.tombstone_grace_ms) {
      BeginCatchUp("away for " + std::to_string((now.wall_ms - state_.last_alive_wall_ms) / 1000) +
                   " s, longer than the tombstone grace period: reads wait for a full "
                   "anti-entropy round, and data held through the absence is not handed "
                   "off to partitions' new replicas");
      // What it held through the absence was stamped before its last record
      // of being alive, by a record interval and a clock skew at most. Its
      // clock may be ahead now (the absence measured too long): versions it
      // takes after its return must not fall under the mark.
      state_.stale_before_wall_ms =
          std::max(state_.stale_before_wall_ms,
                   std::min(now.wall_ms, state_.last_alive_wall_ms + kAliveRecordMs +
                                             options_.clock_skew_max_ms));
      // Durable before the first record of this run's life, which follows it
      // in the log: a restart must not forget the absence.
      WriteOp stale;
      stale.sync = true;
      stale.batch.Put(Space::kMeta, std::string(kMetaStaleBefore),
                      EncodeU64(state_.stale_before_wall_ms));
      Storage(std::move(stale), [this](Now, StorageResult r) {
        if (!r.status.ok()) Log(LogLevel::kError, "recording the absence: " + r.status.ToString());
      });
    }
    if (state_.last_alive_wall_ms > now.wall_ms + options_.clock_skew_max_ms) {
      BeginCatchUp("the clock reads " +
                   std::to_string((state_.last_alive_wall_ms - now.wall_ms) / 1000) +
                   " s before this node's last record of being alive, so the absence cannot be "
                   "measured: reads wait for a full anti-entropy round");
    }
    AfterClusterChange(now, false, true);
    Persist(true);
  } else if (options_.seeds.empty()) {
    CreateCluster(now);
  } else {
    next_join_ms_ = now.mono_ms;
    TryJoin(now);
  }
}

void NodeCore::OnRequest(Now now, uint64_t conn, proto::Message message) {
  now_ms_ = now.mono_ms;
  if (now.wall_ms != 0) wall_ms_ = now.wall_ms;
  ++stats_.requests;
  ++requests_in_flight_;
  const uint64_t id = message.request_id;
  if (shutting_down_ || exited_) {
    RefuseUntracked(conn, id, Status::Unavailable("node " + options_.id + " is shutting down"));
    return;
  }
  const bool put = std::holds_alternative<proto::CoordPutRequest>(message.body) ||
                   std::holds_alternative<proto::ReplicaPutRequest>(message.body);
  const bool push = std::holds_alternative<proto::PushRequest>(message.body);
  const bool foreground = put || std::holds_alternative<proto::GetRequest>(message.body);
  if (disk_low_ && (put || push)) {
    ++stats_.requests_refused_disk_low;
    RefuseUntracked(conn, id, Status::IOError(DiskLowReason() + ": writes refused, none applied"));
    return;
  }
  if (!foreground && !push && carrying_.contains({conn, id})) {
    // Its reply would release the bytes of the counted request in progress
    // under that id.
    RefuseUntracked(conn, id,
                    Status::ProtocolError("request id " + std::to_string(id) +
                                          " is in use by a read or write in progress"));
    return;
  }
  if (foreground || push) {
    // What the request holds in memory (limits.request_bytes_in_flight_max),
    // which takes in its keys and values; a message built in memory counts
    // those alone.
    const size_t bytes =
        message.decoded_bytes != 0 ? message.decoded_bytes : proto::CarriedBytes(message.body);
    const size_t bytes_max = RequestBytesInFlightMax();
    std::string overloaded;
    if (foreground && requests_in_flight_ > options_.requests_in_flight_max) {
      overloaded = std::to_string(requests_in_flight_ - 1) +
                   " requests in progress (limits.requests_in_flight_max)";
    } else if (request_bytes_in_flight_ > 0 && request_bytes_in_flight_ + bytes > bytes_max) {
      overloaded = std::to_string(request_bytes_in_flight_) +
                   " bytes of requests in progress, with this request's " + std::to_string(bytes) +
                   " over limits.request_bytes_in_flight_max (" + std::to_string(bytes_max) + ")";
    }
    if (!overloaded.empty()) {
      ++stats_.requests_refused_busy;
      RefuseUntracked(conn, id,
                      Status::Busy("node " + options_.id + " is overloaded: " + overloaded));
      return;
    }
    request_bytes_in_flight_ += bytes;
    carrying_.emplace(std::pair{conn, id}, Carrying{now.mono_ms, bytes, foreground});
  }
  std::visit(
      Overloaded{
          [&](proto::GetRequest& r) { HandleGet(now, conn, id, std::move(r)); },
          [&](proto::CoordPutRequest& r) { HandleCoordPut(now, conn, id, std::move(r)); },
          [&](proto::ReplicaPutRequest& r) { HandleReplicaPut(now, conn, id, std::move(r)); },
          [&](proto::RingRequest&) {
            if (!map_) {
              ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
              return;
            }
            Reply(conn, id, proto::RingReply{epoch(), map_->Serialize()});
          },
          [&](proto::MembersRequest&) {
            Reply(conn, id, proto::MembersReply{epoch(), membership_.View(now.mono_ms)});
          },
          [&](proto::GossipRequest& r) { HandleGossip(now, conn, id, std::move(r)); },
          [&](proto::JoinRequest& r) { HandleJoin(now, conn, id, std::move(r)); },
          [&](proto::AdminRequest& r) { HandleAdmin(now, conn, id, std::move(r)); },
          [&](proto::StatsRequest&) { Reply(conn, id, StatsNow()); },
          [&](proto::FetchRequest& r) { HandleFetch(now, conn, id, std::move(r)); },
          [&](proto::PushRequest& r) { HandlePush(now, conn, id, std::move(r)); },
          [&](proto::TransferRequest& r) { HandleTransfer(now, conn, id, std::move(r)); },
          [&](proto::TransferDoneRequest& r) { HandleTransferDone(now, conn, id, std::move(r)); },
          [&](proto::AeCompareRequest& r) { HandleAeCompare(conn, id, r); },
          [&](proto::PurgeRequest& r) { HandlePurge(conn, id, std::move(r)); },
          [&](auto&) {
            ReplyError(conn, id,
                       Status::ProtocolError(std::string("unexpected ") +
                                             std::string(proto::MessageTypeName(
                                                 proto::TypeOf(message.body)))));
          },
      },
      message.body);
}

void NodeCore::OnCallDone(Now now, uint64_t token, Result<proto::Message> reply) {
  now_ms_ = now.mono_ms;
  if (now.wall_ms != 0) wall_ms_ = now.wall_ms;
  auto it = calls_waiting_.find(token);
  if (it == calls_waiting_.end()) return;
  CallDone done = std::move(it->second);
  calls_waiting_.erase(it);
  done(now, std::move(reply));
}

void NodeCore::OnStorageDone(Now now, uint64_t token, StorageResult result) {
  now_ms_ = now.mono_ms;
  if (now.wall_ms != 0) wall_ms_ = now.wall_ms;
  auto it = storage_waiting_.find(token);
  if (it == storage_waiting_.end()) return;
  StorageDone done = std::move(it->second.done);
  if (it->second.unsynced_write && result.status.ok() && !unsynced_since_ms_) {
    unsynced_since_ms_ = now.mono_ms;
  }
  storage_waiting_.erase(it);
  if (result.status.code() == StatusCode::kCorruption) StopOnCorruption(result.status);
  if (result.status.code() == StatusCode::kIOError) NoteStorageError(now, result.status);
  done(now, std::move(result));
}

void NodeCore::StopOnCorruption(const Status& status) {
  if (exited_) return;
  // Data that fails its checksum must be neither served nor spread (by
  // anti-entropy, handoff or a transfer): stop. The next start scrubs
  // (scrub.h), and anti-entropy refills what it left out from the replicas.
  actions_.push_back(ExitAction{
      kExitCorruptData, "stored data is corrupt (" + status.ToString() +
                            "); its next start scrubs it, keeping what reads back intact for "
                            "anti-entropy to refill the rest from its replicas (docs/cluster.md)"});
  exited_ = true;
}

void NodeCore::NoteStorageError(Now now, const Status& status) {
  ++stats_.storage_errors;
  if (storage_error_logged_ms_ &&
      now.mono_ms < *storage_error_logged_ms_ + kStorageErrorLogIntervalMs) {
    ++storage_errors_unlogged_;
    return;
  }
  std::string more;
  if (storage_errors_unlogged_ > 0) {
    more = " (and " + std::to_string(storage_errors_unlogged_) +
           " more storage errors since the last one logged)";
  }
  Log(LogLevel::kError, "storage: " + status.ToString() + more);
  storage_error_logged_ms_ = now.mono_ms;
  storage_errors_unlogged_ = 0;
}

uint64_t NodeCore::DiskResumeBytes() const {
  return options_.disk_free_bytes_min + options_.disk_free_bytes_min / 8;
}

std::string NodeCore::DiskLowReason() const {
  return "node " + options_.id + "'s disk is nearly full (" +
         std::to_string(disk_free_bytes_.value_or(0)) +
         " bytes free, under storage.free_bytes_min of " +
         std::to_string(options_.disk_free_bytes_min) + ")";
}

void NodeCore::OnDiskSpace(Now now, uint64_t free_bytes) {
  now_ms_ = now.mono_ms;
  disk_free_bytes_ = free_bytes;
  const uint64_t low = options_.disk_free_bytes_min;
  if (!disk_low_ && low > 0 && free_bytes < low) {
    disk_low_ = true;
    Log(LogLevel::kError, DiskLowReason() +
                              ": refusing writes, replica copies, hints and pushes, and pausing "
                              "anti-entropy and transfers, until " +
                              std::to_string(DiskResumeBytes()) + " bytes are free");
  } else if (disk_low_ && (low == 0 || free_bytes >= DiskResumeBytes())) {
    disk_low_ = false;
    Log(LogLevel::kInfo,
        std::to_string(free_bytes) + " bytes free on the disk: taking writes again");
  }
}

void NodeCore::OnTick(Now now) {
  now_ms_ = now.mono_ms;
  if (now.wall_ms != 0) wall_ms_ = now.wall_ms;
  if (!started_ || exited_) return;
  if (persist_due_) Persist(false);
  if (options_.sync_interval_ms != 0 && unsynced_since_ms_ &&
      now.mono_ms - *unsynced_since_ms_ >= options_.sync_interval_ms) {
    ++stats_.interval_syncs;
    Storage(WriteOp{WriteBatch{}, true}, [](Now, StorageResult) {});
  }
  if (!map_) {
    if (now.mono_ms >= next_join_ms_) TryJoin(now);
    return;
  }
  if (now.mono_ms >= next_gossip_ms_) {
    next_gossip_ms_ = now.mono_ms + options_.gossip_interval_ms;
    GossipRound(now);
  }
  if (shutting_down_) return;
  if (now.mono_ms >= next_alive_write_ms_) {
    next_alive_write_ms_ = now.mono_ms + kAliveRecordMs;
    WriteOp alive;
    alive.batch.Put(Space::kMeta, std::string(kMetaLastAlive), EncodeU64(now.wall_ms));
    Storage(std::move(alive), [](Now, StorageResult) {});
  }
  BuildTreesStep();
  TreeCheckTick(now);
  StartTransfers(now);
  if (now.mono_ms >= next_handoff_ms_) {
    next_handoff_ms_ = now.mono_ms + options_.handoff_interval_ms;
    StartHandoff(now);
  }
  AntiEntropyTick(now);
  RunBackground();
  CheckSelfStatus(now);
}

void NodeCore::BeginShutdown(Now now) {
  now_ms_ = now.mono_ms;
  if (!shutting_down_) Log(LogLevel::kInfo, "shutting down");
  shutting_down_ = true;
  if (persist_due_) Persist(false);
}

// ------------------------------------------------------------------ data requests

void NodeCore::HandleGet(Now now, uint64_t conn, uint64_t id, proto::GetRequest req) {
  (void)now;
  ++stats_.gets;
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  const PartitionId p = map_->ring().KeyPartition(req.key);
  if (ForAReplica(req.hint) && RefusedAsNoReplica(conn, id, p)) return;
  if (catching_up_) {
    ReplyError(conn, id,
               Status::Unavailable("node " + options_.id +
                                   " is catching up after an absence; ask another replica"));
    return;
  }
  if (Status gated = SwitchSyncPending(p); !gated.ok()) {
    ReplyError(conn, id, gated.Annotate("ask another replica"));
    return;
  }
  if (ForAReplica(req.hint) && !InPreferenceList(map_->ring(), p)) {
    // A pending replica: it holds what its transfer copied, and a write its
    // copy missed; its own switch gates the partition until it synced with
    // the replicas it replaces. A client whose map switched first asks it.
    ReplyError(
        conn, id,
        Status::Unavailable("node " + options_.id + " replicates partition " + std::to_string(p) +
                            " only in the ring it is moving to, and has not switched to "
                            "it yet; ask another replica"));
    return;
  }
  const bool leftovers = !ForAReplica(req.hint) && !Replicates(p);  // a stand-in's read
  std::vector<std::pair<Space, std::string>> keys = {{Space::kData, DataKey(p, req.key)}};
  if (!ForAReplica(req.hint)) {
    // A stand-in answers with every hinted copy of the key it holds, not only
    // the named primary's: two stand-ins may have swapped primaries between a
    // write and a later read (each client op assigns them as replicas fail).
    std::vector<NodeId> owners = map_->ring().PreferenceList(p);
    if (std::find(owners.begin(), owners.end(), req.hint) == owners.end())
      owners.push_back(req.hint);
    for (const NodeId& owner : owners) {
      if (owner != options_.id) keys.emplace_back(Space::kHints, HintKey(owner, p, req.key));
    }
  }
  auto merged = std::make_shared<SiblingSet>();
  auto join = std::make_shared<Countdown>(keys.size(), [this, conn, id, merged](Status s) {
    if (!s.ok()) {
      ReplyError(conn, id, s);
      return;
    }
    Reply(conn, id, proto::GetReply{epoch(), std::move(*merged)});
  });
  for (auto& [space, key] : keys) {
    Storage(ReadOp{space, key},
            [this, hints = space == Space::kHints, leftovers, merged, join](Now, StorageResult r) {
              if (r.status.ok() && r.value) {
                Result<SiblingSet> decoded = proto::DecodeSiblingSet(*r.value, stored_limits_);
                if (!decoded.ok()) {
                  Log(LogLevel::kError, "corrupt stored value: " + decoded.status().ToString());
                  join->One(Status::Corruption("stored value is corrupt"));
                  return;
                }
                // Read, an expired hint, or a stand-in's own copy of a
                // partition it does not replicate that a handoff would drop,
                // would be repaired back onto the replicas.
                if (hints) {
                  std::erase_if(*decoded, [this](const Version& v) { return HintExpired(v); });
                } else if (leftovers) {
                  stats_.handoff_stale_dropped += DropUntrustedLeftovers(*decoded);
                }
                *merged = MergeSiblings(*merged, *decoded);
              }
              join->One(r.status);
            });
  }
}

void NodeCore::HandleCoordPut(Now now, uint64_t conn, uint64_t id, proto::CoordPutRequest req) {
  ++stats_.coord_puts;
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  const PartitionId p = map_->ring().KeyPartition(req.key);
  // A fallback coordinates into its own data, handed off to the replicas.
  if (ForAReplica(req.hint) && RefusedAsNoReplica(conn, id, p)) return;
  // One state for the request's three steps, shared by their callbacks rather
  // than copied into each.
  struct CoordPut {
    uint64_t conn, id, wall_ms;
    std::string key;
    proto::CoordPutRequest request;
    Unlock unlock;
    CoordinatorResult result;
  };
  auto op = std::make_shared<CoordPut>(
      CoordPut{conn, id, now.wall_ms, DataKey(p, req.key), std::move(req), {}, {}});
  std::string lock = LockKey(Space::kData, op->key);
  const size_t max = options_.key_writes_queued_max;
  const bool queued = WithKeyLock(std::move(lock), max, [this, op](Unlock unlock) {
    op->unlock = std::move(unlock);
    Storage(ReadOp{Space::kData, op->key}, [this, op](Now, StorageResult r) {
      const uint64_t conn = op->conn, id = op->id;
      if (!r.status.ok()) {
        ReplyError(conn, id, r.status);
        op->unlock();
        return;
      }
      SiblingSet local;
      if (r.value) {
        Result<SiblingSet> decoded = proto::DecodeSiblingSet(*r.value, stored_limits_);
        if (!decoded.ok()) {
          ReplyError(conn, id, Status::Corruption("stored value is corrupt"));
          op->unlock();
          return;
        }
        local = std::move(*decoded);
      }
      proto::CoordPutRequest& request = op->request;
      if (request.op_id != 0) {
        if (std::optional<Dot> seen = recent_puts_.Find(op->key, request.op_id)) {
          // A repeat of a write already applied: answer it, do not write again.
          ++stats_.coord_put_repeats;
          Reply(conn, id, proto::CoordPutReply{epoch(), *seen, std::move(local)});
          op->unlock();
          return;
        }
      }
      if (!r.value) CheckNothingWasStored(op->key);
      WriteIntent intent;
      intent.context = std::move(request.context);
      intent.value = std::move(request.value);
      intent.tombstone = request.tombstone;
      intent.timestamp_ms = op->wall_ms;
      CoordinatorOptions copts;
      copts.clock_entries_max = options_.clock_entries_max;
      copts.siblings_max = options_.siblings_max;
      copts.retired = [this](ActorId a) { return !membership_.IsLiveActor(a); };
      Result<CoordinatorResult> update =
          CoordinatorUpdate(local, state_.actor, state_.counter_next, intent, copts);
      if (update.ok() && update->written.dot.counter != state_.counter_next) {
        // This run's actor has issued only counters below counter_next: a
        // context (or a stored version) naming a later one is forged or
        // corrupt, and taking it would move the counter past it, up to
        // wrapping around.
        update = Status::InvalidArgument("the write's context or the key's versions name version " +
                                         std::to_string(update->written.dot.counter - 1) +
                                         " of node " + options_.id +
                                         "'s actor, which it has not issued (its next is " +
                                         std::to_string(state_.counter_next) + ")");
      }
      if (!update.ok()) {
        ReplyError(conn, id, update.status());
        op->unlock();
        return;
      }
      std::string encoded = proto::EncodeSiblingSet(update->siblings);
      if (Status s = CheckSetBytes(update->siblings.size(), encoded.size()); !s.ok()) {
        ReplyError(conn, id, s);
        op->unlock();
        return;
      }
      state_.counter_next = update->written.dot.counter + 1;
      WriteOp write;
      write.sync = options_.coord_put_sync && !request.no_sync;
      if (request.no_sync) ++stats_.coord_puts_unsynced;
      write.batch.Put(Space::kData, op->key, std::move(encoded));
      if (state_.counter_next >= state_.counter_lease_end) {
        // Synced, so a restart starts above it; an unsynced write past the
        // old bound may still be answered first (inline), which the next
        // start's new actor makes harmless (docs/cluster.md).
        state_.counter_lease_end = state_.counter_next + options_.counter_lease;
        write.batch.Put(Space::kMeta, std::string(kMetaCounterLease),
                        EncodeU64(state_.counter_lease_end));
        write.sync = true;
      }
      op->result = std::move(*update);
      Storage(std::move(write), [this, op](Now, StorageResult w) {
        if (!w.status.ok()) {
          ReplyError(op->conn, op->id, w.status.WithInDoubt(true));
          NoteStoredAfterFailedWrite(op->key, [op] { op->unlock(); });
          return;
        }
        NoteStored(op->key, &op->result.siblings);
        if (op->request.op_id != 0) {
          recent_puts_.Remember(op->key, op->request.op_id, op->result.written.dot);
        }
        if (!ForAReplica(op->request.hint) ||
            !RefusedAsNoReplica(op->conn, op->id, map_->ring().KeyPartition(op->request.key),
                                true)) {
          Reply(op->conn, op->id,
                proto::CoordPutReply{epoch(), op->result.written.dot,
                                     std::move(op->result.siblings)});
        }
        op->unlock();
      });
    });
  });
  if (!queued) {
    ++stats_.requests_refused_busy;
    ReplyError(conn, id, KeyQueueFull());
  }
}

Status NodeCore::CheckSetBytes(size_t versions, size_t encoded_bytes) const {
  const size_t max = options_.limits.frame_bytes_max / 2;
  if (versions < 2 || encoded_bytes <= max) return Status::OK();
  return Status::Busy("write would leave " + std::to_string(versions) + " siblings taking " +
                      std::to_string(encoded_bytes) + " bytes, over half of frame_bytes_max (" +
                      std::to_string(max) + "); read the key and write back a resolved value");
}

bool NodeCore::MergeInto(std::string key, SiblingSet incoming, std::string hint_for, bool sync,
                         size_t queued_max, std::function<void(Now, Status)> done) {
  // One state for the merge's steps, shared by their callbacks rather than
  // copied into each.
  struct Merge {
    std::string key;
    Space space;
    SiblingSet incoming;
    std::string hint_for;
    bool sync;
    std::function<void(Now, Status)> done;
    Unlock unlock;
    SiblingSet stored;
  };
  const Space space = hint_for.empty() ? Space::kData : Space::kHints;
  auto m = std::make_shared<Merge>(Merge{std::move(key),
                                         space,
                                         std::move(incoming),
                                         std::move(hint_for),
                                         sync,
                                         std::move(done),
                                         {},
                                         {}});
  return WithKeyLock(LockKey(space, m->key), queued_max, [this, m](Unlock unlock) {
    m->unlock = std::move(unlock);
    Storage(ReadOp{m->space, m->key}, [this, m](Now now, StorageResult r) {
      if (!r.status.ok()) {
        m->unlock();
        m->done(now, r.status);
        return;
      }
      SiblingSet local;
      bool readable = false;
      if (r.value) {
        Result<SiblingSet> decoded = proto::DecodeSiblingSet(*r.value, stored_limits_);
        if (decoded.ok()) {
          local = std::move(*decoded);
          readable = true;
        } else {
          // A corrupt local copy is replaced by the incoming one, never spread.
          Log(LogLevel::kError, "replacing a corrupt stored value: " + decoded.status().ToString());
        }
      }
      if (m->space == Space::kData && !readable) CheckNothingWasStored(m->key);
      SiblingSet merged = MergeSiblings(local, m->incoming);
      // Nothing stored and nothing to store: an empty set is written nowhere.
      if ((r.value && merged == local) || merged.empty()) {
        m->unlock();
        if (!m->sync) {
          m->done(now, Status::OK());
          return;
        }
        // What is stored may have come unsynced (a repair, another
        // client's copy) or still wait for its sync: an asked-for sync is
        // made before the answer either way.
        Storage(WriteOp{WriteBatch{}, true},
                [m](Now now2, StorageResult w) { m->done(now2, w.status); });
        return;
      }
      WriteOp write;
      write.sync = m->sync;
      write.batch.Put(m->space, m->key, proto::EncodeSiblingSet(merged));
      m->stored = std::move(merged);
      Storage(std::move(write), [this, m](Now now2, StorageResult w) {
        if (!w.status.ok() && m->space == Space::kData) {
          NoteStoredAfterFailedWrite(m->key, [m, now2, status = w.status] {
            m->unlock();
            m->done(now2, status);
          });
          return;
        }
        if (w.status.ok()) {
          if (m->space == Space::kData) {
            NoteStored(m->key, &m->stored);
          } else {
            state_.hint_owners.insert(m->hint_for);
            NoteHandoffRangeWritten(Space::kHints, 0, m->hint_for);
          }
        }
        m->unlock();
        m->done(now2, w.status);
      });
    });
  });
}

void NodeCore::HandleReplicaPut(Now now, uint64_t conn, uint64_t id, proto::ReplicaPutRequest req) {
  (void)now;
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  const PartitionId p = map_->ring().KeyPartition(req.key);
  const bool hinted = !ForAReplica(req.hint);
  if (!hinted && RefusedAsNoReplica(conn, id, p)) return;
  if (hinted && !membership_.Find(req.hint) && !InRingOrNext(req.hint)) {
    // It could never be delivered (and would hold up this node's leave).
    ReplyError(
        conn, id,
        Status::Unavailable("a hint for " + req.hint + ", which is no member this node knows"));
    return;
  }
  if (hinted && !req.siblings.empty() &&
      std::all_of(req.siblings.begin(), req.siblings.end(),
                  [this](const Version& v) { return HintExpired(v); })) {
    // It would be dropped unread: acknowledged, it would count toward W.
    ReplyError(conn, id,
               Status::InvalidArgument("a hint older than the tombstone grace period (a writer's "
                                       "clock behind this node's?)"));
    return;
  }
  std::string key = hinted ? HintKey(req.hint, p, req.key) : DataKey(p, req.key);
  const bool sync = req.sync || (hinted ? options_.hint_sync : options_.replica_put_sync);
  const bool queued = MergeInto(
      std::move(key), std::move(req.siblings), hinted ? std::move(req.hint) : std::string(), sync,
      options_.key_writes_queued_max, [this, conn, id, p, hinted](Now, Status s) {
        if (!s.ok()) {
          ReplyError(conn, id, s.WithInDoubt(true));
        } else if (hinted || !RefusedAsNoReplica(conn, id, p, true)) {
          Reply(conn, id, proto::Ack{epoch(), 1});
        }
      });
  if (!queued) {
    ++stats_.requests_refused_busy;
    ReplyError(conn, id, KeyQueueFull());
    return;
  }
  ++(hinted ? stats_.hints_stored : stats_.replica_puts);
}

void NodeCore::HandleFetch(Now now, uint64_t conn, uint64_t id, proto::FetchRequest req) {
  (void)now;
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  if (req.keys.size() > kFetchKeysMax) {
    ReplyError(conn, id,
               Status::InvalidArgument("Fetch of " + std::to_string(req.keys.size()) +
                                       " keys; at most " + std::to_string(kFetchKeysMax)));
    return;
  }
  auto fetch = std::make_shared<FetchState>();
  fetch->conn = conn;
  fetch->id = id;
  fetch->keys = std::move(req.keys);
  FetchWindow(std::move(fetch));
}

void NodeCore::FetchWindow(std::shared_ptr<FetchState> f) {
  const size_t begin = f->reply.entries.size();
  const size_t n = std::min(kFetchReadWindow, f->keys.size() - begin);
  if (n == 0 || f->full) {
    f->reply.epoch = epoch();
    Reply(f->conn, f->id, std::move(f->reply));
    return;
  }
  auto window = std::make_shared<std::vector<std::pair<size_t, std::optional<SiblingSet>>>>(n);
  auto join = std::make_shared<Countdown>(n, [this, f, window, begin](Status s) {
    if (!s.ok()) {
      ReplyError(f->conn, f->id, s);
      return;
    }
    // In order, up to the byte budget (the first key whatever its size).
    for (size_t i = 0; i < window->size(); ++i) {
      auto& [bytes, set] = (*window)[i];
      if (!f->reply.entries.empty() && f->bytes + bytes > ExchangeBytesMax()) {
        f->full = true;
        break;
      }
      f->bytes += bytes;
      f->reply.entries.push_back(proto::KeyedSiblings{std::move(f->keys[begin + i]),
                                                      set ? std::move(*set) : SiblingSet{}});
    }
    FetchWindow(f);
  });
  for (size_t i = 0; i < n; ++i) {
    const std::string& key = f->keys[begin + i];
    const PartitionId p = map_->ring().KeyPartition(key);
    Storage(ReadOp{Space::kData, DataKey(p, key)},
            [this, window, join, i, p, key_bytes = key.size()](Now, StorageResult r) {
              auto& [bytes, set] = (*window)[i];
              bytes = key_bytes;
              if (r.status.ok() && r.value) {
                bytes += r.value->size();
                Result<SiblingSet> decoded = proto::DecodeSiblingSet(*r.value, stored_limits_);
                if (decoded.ok()) set = std::move(*decoded);
                // Asked by the node that took the partition over: what a
                // handoff would drop goes no further.
                if (set && !Replicates(p))
                  stats_.handoff_stale_dropped += DropUntrustedLeftovers(*set);
              }
              join->One(r.status);
            });
  }
}

bool NodeCore::InRingOrNext(const NodeId& node) const {
  return map_ && (map_->ring().Contains(node) || (map_->next() && map_->next()->Contains(node)));
}

size_t NodeCore::ExchangeBytesMax() const {
  return std::min<uint64_t>(kTransferBytesMax, options_.limits.frame_bytes_max / 2);
}

void NodeCore::HandlePush(Now now, uint64_t conn, uint64_t id, proto::PushRequest req) {
  (void)now;
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  const size_t n = req.entries.size();
  // The sender deletes its copy once we acknowledge a transfer or a hint, so
  // those are made durable first.
  const bool durable = req.purpose != proto::PushPurpose::kRepair;
  auto join = std::make_shared<Countdown>(n, [this, conn, id, n, durable](Status s) {
    if (!s.ok()) {
      ReplyError(conn, id, s.WithInDoubt(true));
      return;
    }
    if (!durable) {
      Reply(conn, id, proto::Ack{epoch(), n});
      return;
    }
    Storage(WriteOp{WriteBatch{}, true}, [this, conn, id, n](Now, StorageResult w) {
      if (!w.status.ok()) {
        ReplyError(conn, id, w.status.WithInDoubt(true));
      } else {
        Reply(conn, id, proto::Ack{epoch(), n});
      }
    });
  });
  for (proto::KeyedSiblings& e : req.entries) {
    const PartitionId p = map_->ring().KeyPartition(e.key);
    MergeInto(DataKey(p, e.key), std::move(e.siblings), "", false, SIZE_MAX,
              [join](Now, Status s) { join->One(s); });
  }
}

void NodeCore::HandleTransfer(Now now, uint64_t conn, uint64_t id, proto::TransferRequest req) {
  (void)now;
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  if (req.partition >= map_->ring().partition_count()) {
    ReplyError(conn, id, Status::InvalidArgument("no partition " + std::to_string(req.partition)));
    return;
  }
  if (catching_up_) {
    // What it holds may lack what the others have: the joiner copies from
    // another replica (this call's failure marks this node down to it).
    ReplyError(conn, id,
               Status::Unavailable("node " + options_.id +
                                   " is catching up and cannot give a whole partition"));
    return;
  }
  if (Status gated = SwitchSyncPending(req.partition); !gated.ok()) {
    ReplyError(conn, id, gated.Annotate("it cannot give the whole partition yet"));
    return;
  }
  ScanOp scan;
  scan.space = Space::kData;
  scan.options.prefix = PartitionPrefix(req.partition);
  if (!req.after_key.empty()) scan.options.after = DataKey(req.partition, req.after_key);
  scan.options.max_entries = std::clamp<uint32_t>(req.max_entries, 1, kTransferEntriesMax);
  scan.options.max_bytes = std::clamp<uint64_t>(req.max_bytes, 1, ExchangeBytesMax());
  Storage(std::move(scan), [this, conn, id](Now, StorageResult r) {
    if (!r.status.ok()) {
      ReplyError(conn, id, r.status);
      return;
    }
    proto::TransferReply reply;
    reply.epoch = epoch();
    reply.done = r.scan.done;
    for (auto& [k, v] : r.scan.entries) {
      Result<DataKeyParts> parts = ParseDataKey(k);
      Result<SiblingSet> set = proto::DecodeSiblingSet(v, stored_limits_);
      if (!parts.ok() || !set.ok() || parts->key.empty()) {
        Log(LogLevel::kError, "skipping a corrupt record in a transfer");
        continue;
      }
      reply.entries.push_back(proto::KeyedSiblings{std::string(parts->key), std::move(*set)});
    }
    if (!reply.done && reply.entries.empty() && !r.scan.entries.empty()) {
      // Every record of the page was corrupt: resume after the last one.
      reply.entries.push_back(proto::KeyedSiblings{
          std::string(ParseDataKey(r.scan.entries.back().first)->key), {}});
    }
    Reply(conn, id, std::move(reply));
  });
}

// ------------------------------------------------------------------ cluster requests

void NodeCore::HandleGossip(Now now, uint64_t conn, uint64_t id, proto::GossipRequest req) {
  Status merged = MergePeerGossip(now, req.from, req.members, req.ring);
  if (!merged.ok()) {
    ReplyError(conn, id, merged);
    return;
  }
  membership_.Contact(req.from, true, now.mono_ms);
  Reply(conn, id,
        proto::GossipReply{epoch(), membership_.View(now.mono_ms), map_ ? map_->Serialize() : ""});
}

void NodeCore::HandleJoin(Now now, uint64_t conn, uint64_t id, proto::JoinRequest req) {
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  if (now.mono_ms < joins_refused_until_ms_ && AloneInItsRing()) {
    ReplyError(conn, id,
               Status::Unavailable("node " + options_.id +
                                   " has just started alone in its cluster and takes joins in " +
                                   std::to_string(joins_refused_until_ms_ - now.mono_ms) +
                                   " ms, once a cluster it was in before (had its data directory "
                                   "been lost) could have reached it"));
    return;
  }
  const proto::Member& j = req.joiner;
  if (j.id == options_.id) {
    ReplyError(conn, id, Status::InvalidArgument("node id '" + j.id + "' is this node's own id"));
    return;
  }
  // Spread by gossip to every node and client, an address must be one they
  // can print and dial: HOST:PORT in printable ASCII.
  const size_t colon = j.address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == j.address.size() ||
      j.address.size() > kAddressBytesMax ||
      !std::all_of(j.address.begin(), j.address.end(),
                   [](char c) { return c > ' ' && c < 0x7f; })) {
    ReplyError(conn, id, Status::InvalidArgument("node '" + j.id + "' gave no HOST:PORT address"));
    return;
  }
  std::optional<proto::Member> known = membership_.Find(j.id);
  if (known && known->life != j.life && known->status != proto::MemberStatus::kRemoved &&
      membership_.IsAlive(j.id, now.mono_ms) && known->address != j.address) {
    ReplyError(conn, id,
               Status::InvalidArgument("node id '" + j.id + "' is in use by a live node at " +
                                       known->address));
    return;
  }
  if (known && known->life == j.life && known->life != 0 &&
      known->status == proto::MemberStatus::kRemoved) {
    ReplyError(conn, id,
               Status::InvalidArgument("node '" + j.id +
                                       "' with this data directory was removed from the cluster; "
                                       "start it with a fresh data directory to join again"));
    return;
  }
  if (known && known->life == j.life && known->life != 0 &&
      known->status == proto::MemberStatus::kLeaving) {
    // Its join was applied (the reply was lost) and an admin asked it to
    // leave before it heard: with the map it hands off what it holds and
    // exits, as any leaving node.
    Log(LogLevel::kInfo, "node " + j.id +
                             " asked to join again while it is leaving: sent the map, so that it "
                             "finishes its leave");
    Reply(conn, id, proto::JoinReply{epoch(), map_->Serialize(), membership_.View(now.mono_ms)});
    return;
  }
  if (Status room = RoomForJoiner(j.id, known.has_value()); !room.ok()) {
    Log(LogLevel::kWarn, "refused the join of node " + j.id + ": " + room.ToString());
    ReplyError(conn, id, room);
    return;
  }
  proto::Member added = membership_.AddJoiner(j, now.mono_ms);
  Log(LogLevel::kInfo, "node " + added.id + " at " + added.address + " is joining");
  AfterClusterChange(now, false, true);
  Reply(conn, id, proto::JoinReply{epoch(), map_->Serialize(), membership_.View(now.mono_ms)});
}

Status NodeCore::RoomForJoiner(const NodeId& joiner, bool known) const {
  const std::vector<NodeId> members = membership_.RingMembers();
  const size_t most = std::min<size_t>(map_->ring().partition_count(), kMaxRingNodes);
  if (members.size() >= most && !std::binary_search(members.begin(), members.end(), joiner)) {
    return Status::InvalidArgument("the ring has " + std::to_string(members.size()) +
                                   " nodes, the most it can hold: one per partition (" +
                                   std::to_string(map_->ring().partition_count()) +
                                   ", fixed when the cluster was created) and at most " +
                                   std::to_string(kMaxRingNodes));
  }
  if (!known && membership_.size() >= kMaxMembersForJoins) {
    return Status::InvalidArgument(
        "the cluster has had " + std::to_string(membership_.size()) +
        " node ids, the most it keeps (removed members stay listed so that gossip cannot "
        "bring them back); join under the id of a removed member");
  }
  return Status::OK();
}

proto::StatsReply NodeCore::StatsNow() {
  proto::StatsReply r;
  r.epoch = epoch();
  r.counters = {
      {"ae_bytes_fetched", stats_.ae_bytes_fetched},
      {"ae_bytes_pushed", stats_.ae_bytes_pushed},
      {"ae_cycles", ae_cycles_done_},
      {"ae_keys_differing", stats_.ae_keys_differing},
      {"ae_sessions", stats_.ae_sessions},
      {"background_deferred", governor_.deferred()},
      {"catching_up", catching_up_ ? 1u : 0u},
      {"coord_put_repeats", stats_.coord_put_repeats},
      {"coord_puts", stats_.coord_puts},
      {"coord_puts_unsynced", stats_.coord_puts_unsynced},
      {"epoch", epoch()},
      {"errors", stats_.errors},
      {"foreground_p99_us", static_cast<uint64_t>(governor_.ForegroundP99(now_ms_) * 1000)},
      {"gets", stats_.gets},
      {"handoff_keys", stats_.handoff_keys},
      {"hint_owners", state_.hint_owners.size()},
      {"hints_delivered", stats_.hints_delivered},
      {"hints_expired", stats_.hints_expired},
      {"handoff_stale_dropped", stats_.handoff_stale_dropped},
      {"hints_stored", stats_.hints_stored},
      {"interval_syncs", stats_.interval_syncs},
      {"merkle_trees", merkle_trees()},
      {"partitions_with_data", state_.partitions_with_data.size()},
      {"replica_puts", stats_.replica_puts},
      {"requests", stats_.requests},
      {"request_bytes_in_flight", request_bytes_in_flight_},
      {"requests_refused_busy", stats_.requests_refused_busy},
      {"requests_refused_disk_low", stats_.requests_refused_disk_low},
      {"disk_free_bytes", disk_free_bytes_.value_or(0)},
      {"disk_low", disk_low_ ? 1u : 0u},
      {"requests_refused_not_replica", stats_.requests_refused_not_replica},
      {"storage_errors", stats_.storage_errors},
      {"storage_losses_found", stats_.storage_losses_found},
      {"switch_sync_partitions",
       static_cast<uint64_t>(std::count_if(
           state_.switch_sync.begin(), state_.switch_sync.end(),
           [this](const auto& gate) { return !SwitchSyncPending(gate.first).ok(); }))},
      {"tombstones_purged", stats_.tombstones_purged},
      {"transfers_done", stats_.transfers_done},
      {"tree_build_failures", stats_.tree_build_failures},
      {"tree_keys_corrected", stats_.tree_keys_corrected},
      {"trees_checked", stats_.trees_checked},
      {"trees_ready", trees_ready_ ? 1u : 0u},
  };
  if (counter_source_) counter_source_(r.counters);
  std::sort(r.counters.begin(), r.counters.end());
  return r;
}

void NodeCore::HandleAdmin(Now now, uint64_t conn, uint64_t id, proto::AdminRequest req) {
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  std::optional<proto::Member> target = membership_.Find(req.node);
  if (target && target->status == proto::MemberStatus::kRemoved) {
    // A retried removal or leave (its first node timed out after applying it,
    // or the leaver has left since) succeeds.
    Reply(
        conn, id,
        proto::AdminReply{epoch(), req.node + (req.op == proto::AdminOp::kRemove
                                                   ? " is already removed"
                                                   : " is already gone (it left or was removed)")});
    return;
  }
  if (!target || target->status == proto::MemberStatus::kRemoved) {
    ReplyError(conn, id, Status::NotFound("no member '" + req.node + "' in the cluster"));
    return;
  }
  std::vector<NodeId> remaining = membership_.RingMembers();
  std::erase(remaining, req.node);
  if (remaining.empty()) {
    ReplyError(conn, id, Status::InvalidArgument("'" + req.node + "' is the last node of the cluster"));
    return;
  }
  std::string message;
  if (req.op == proto::AdminOp::kLeave) {
    if (target->status == proto::MemberStatus::kLeaving) {
      Reply(conn, id, proto::AdminReply{epoch(), req.node + " is already leaving"});
      return;
    }
    DYNAMO_CHECK(membership_.SetStatusOf(req.node, proto::MemberStatus::kLeaving, now.mono_ms).ok());
    message = req.node + " is leaving: its partitions move to the other nodes, then it exits";
  } else {
    if (req.node == options_.id) {
      ReplyError(conn, id, Status::InvalidArgument("a node cannot remove itself; use leave"));
      return;
    }
    // Silent, not merely unreachable from here: a node cut off from this one
    // alone still serves the others, and removed it would exit.
    if (!membership_.IsSilent(req.node, now.mono_ms)) {
      ReplyError(conn, id,
                 Status::InvalidArgument(
                     req.node + (membership_.IsAlive(req.node, now.mono_ms)
                                     ? " is up; use leave for a live node (one that has just "
                                       "stopped is seen down within seconds: retry then)"
                                     : " is still heard through other members, or was moments "
                                       "ago; use leave for a live node, or retry once it is "
                                       "down for the whole cluster")));
      return;
    }
    // Every other node of the ring silent as well: this node may be the one
    // cut off, and a live node removed exits without handing anything off.
    std::vector<NodeId> others = map_->ring().nodes();
    if (map_->next())
      others.insert(others.end(), map_->next()->nodes().begin(), map_->next()->nodes().end());
    std::erase_if(others, [&](const NodeId& n) { return n == options_.id || n == req.node; });
    if (!others.empty() && !membership_.HearsOthers(now.mono_ms)) {
      ReplyError(conn, id,
                 Status::Unavailable(
                     "node " + options_.id +
                     " hears no other node either, so it may be the one cut off: ask a node that "
                     "hears the cluster (if every other node is down for good, start a new node "
                     "that joins through this one first)"));
      return;
    }
    DYNAMO_CHECK(membership_.SetStatusOf(req.node, proto::MemberStatus::kRemoved, now.mono_ms).ok());
    message = req.node + " removed: its partitions are refilled from the surviving replicas";
  }
  Log(LogLevel::kInfo, "admin: " + message);
  AfterClusterChange(now, false, true);
  // Answered once the change is durable here: a crash right after must not
  // undo a leave or removal the operator was told of.
  Persist(true, [this, conn, id, message](Status s) {
    if (s.ok()) {
      Reply(conn, id, proto::AdminReply{epoch(), message});
    } else {
      ReplyError(conn, id,
                 Status::IOError("recording the change failed (" + s.ToString() +
                                 "); it may still reach the cluster by gossip")
                     .WithInDoubt(true));
    }
  });
}

void NodeCore::HandleTransferDone(Now now, uint64_t conn, uint64_t id,
                                  proto::TransferDoneRequest req) {
  bool changed = false;
  if (map_ && req.ring_epoch == map_->epoch()) {
    changed = map_->MarkDone(dynamo::Transfer{req.partition, req.node});
  }
  AfterClusterChange(now, changed, false);
  Reply(conn, id, proto::Ack{epoch(), changed ? 1u : 0u});
}

// ------------------------------------------------------------------ cluster state

void NodeCore::HoldJoinsWhileAlone(Now now) {
  joins_refused_until_ms_ =
      now.mono_ms + options_.create_quiet_rounds * options_.gossip_interval_ms;
}

bool NodeCore::TreesFit() {
  const Status fit = MerkleTreesFit(
      map_->ring().partition_count(), options_.merkle_depth,
      "the cluster's " + std::to_string(map_->ring().partition_count()) + " partitions");
  if (fit.ok()) return true;
  // A joiner's seed has taken the join: started again with a lower depth, it
  // goes on with it (or an admin removes it).
  actions_.push_back(
      ExitAction{2, std::string(fit.message()) + "; start this node again with a lower depth"});
  exited_ = true;
  return false;
}

void NodeCore::CreateCluster(Now now) {
  Result<Ring> ring = Ring::Create({options_.id}, options_.partitions, options_.replicas);
  if (!ring.ok()) {
    actions_.push_back(ExitAction{2, "cannot create the cluster: " + ring.status().ToString()});
    exited_ = true;
    return;
  }
  // Drawn from this run's actor (random) rather than the node's generator,
  // which steers gossip.
  map_ = ClusterMap(std::move(*ring), Mix64(state_.actor ^ Mix64(now.wall_ms)) | 1);
  membership_.SetSelfStatus(proto::MemberStatus::kNormal);
  Log(LogLevel::kInfo, "created a new cluster: " + std::to_string(options_.partitions) +
                           " partitions, " + std::to_string(options_.replicas) + " replicas");
  map_changed_ms_ = now.mono_ms;
  last_ring_ = map_->ring();
  HoldJoinsWhileAlone(now);
  Persist(true);
}

void NodeCore::TryJoin(Now now) {
  if (join_in_flight_ || map_ || exited_) return;
  next_join_ms_ = now.mono_ms + options_.join_retry_ms;
  if (disk_low_) {
    // A joiner copies its partitions before the change completes; started
    // without room for them, it would hold the change (and any other) open.
    if (!join_waits_for_disk_) {
      Log(LogLevel::kError, DiskLowReason() + ": not asking to join until " +
                                std::to_string(DiskResumeBytes()) + " bytes are free");
    }
    join_waits_for_disk_ = true;
    return;
  }
  join_waits_for_disk_ = false;
  const std::string seed = options_.seeds[join_attempts_++ % options_.seeds.size()];
  join_in_flight_ = true;
  proto::Member me = membership_.self();
  me.status = proto::MemberStatus::kJoining;
  Call(seed, proto::JoinRequest{me}, [this, seed](Now now2, Result<proto::Message> reply) {
    join_in_flight_ = false;
    Status s = ReplyStatusOf(reply);
    if (s.ok() && !std::holds_alternative<proto::JoinReply>(reply->body)) {
      s = Status::ProtocolError("unexpected reply to Join");
    }
    if (!s.ok()) {
      if (s.code() == StatusCode::kInvalidArgument) {
        actions_.push_back(ExitAction{2, "join refused by " + seed + ": " + s.ToString()});
        exited_ = true;
      } else {
        Log(LogLevel::kWarn, "join through " + seed + " failed: " + s.ToString() + "; retrying");
      }
      return;
    }
    auto& jr = std::get<proto::JoinReply>(reply->body);
    Result<ClusterMap> map = ClusterMap::FromPeer(jr.ring);
    if (!map.ok()) {
      Log(LogLevel::kWarn, "join reply with a bad cluster map: " + map.status().ToString());
      return;
    }
    map_ = std::move(*map);
    Log(LogLevel::kInfo, "joined the cluster through " + seed + " at epoch " + std::to_string(epoch()));
    if (!TreesFit()) return;
    bool transfers_done = false;
    if (map_->next()) {
      for (const dynamo::Transfer& t : map_->Transfers())
        transfers_done |= t.node == options_.id && map_->IsDone(t);
    }
    if (map_->ring().Contains(options_.id) || transfers_done) {
      // Already a replica of partitions it holds no data for, or marked as
      // holding them at the coming switch: catch up first.
      BeginCatchUp(
          "rejoining with an empty data directory: reads wait for a full "
          "anti-entropy round");
    }
    membership_.Merge(jr.members, now2.mono_ms);
    AfterClusterChange(now2, true, true);
    next_gossip_ms_ = now2.mono_ms;
  });
}

void NodeCore::AfterClusterChange(Now now, bool map_changed, bool members_changed) {
  if (!map_) return;
  // Also after a merge: a map adopted from a peer may not reflect members
  // this node knows of (the peer switched before it heard of them).
  if (members_changed || map_changed) map_changed |= map_->Reconcile(membership_.RingMembers());
  if (map_changed) {
    map_changed_ms_ = now.mono_ms;
    AbandonTransfersNoLongerOwed();
    // Also a ring of the same epoch: two changes switched apart (removals
    // through two nodes) tie on the epoch, and the merge keeps one by hash.
    if (!last_ring_ || !(*last_ring_ == map_->ring())) {
      if (last_ring_) NoteRingSwitch(*last_ring_);
      last_ring_ = map_->ring();
    }
  }
  if (map_changed && epoch() != logged_epoch_) {
    logged_epoch_ = epoch();
    std::string state = map_->next() ? "moving to " + std::to_string(map_->next()->nodes().size()) +
                                           " nodes, " + std::to_string(map_->Awaiting().size()) +
                                           " transfers owed"
                                     : std::to_string(map_->ring().nodes().size()) + " nodes";
    Log(LogLevel::kInfo, "cluster map at epoch " + std::to_string(epoch()) + ": " + state);
  }
  // A new ring or pending change is durable before this node acts on it, and
  // members' states are written (unsynced) at once, as before a reply. A map
  // that only gained marks of finished transfers is written unsynced at the
  // next tick, once for all the marks until then: a forgotten mark repeats
  // an idempotent transfer, and gossip brings it back.
  if (map_changed && map_->ContentHash() != synced_map_hash_) {
    Persist(true);
  } else if (members_changed) {
    Persist(false);
  } else if (map_changed) {
    persist_due_ = true;
  }
  CheckSelfStatus(now);
}

Status NodeCore::MergePeerGossip(Now now, const std::string& from,
                                 const std::vector<proto::Member>& members,
                                 std::string_view map_bytes) {
  std::optional<ClusterMap> theirs;
  if (map_ && !map_bytes.empty()) {
    Result<ClusterMap> parsed = ClusterMap::FromPeer(map_bytes);
    if (!parsed.ok()) {
      Log(LogLevel::kWarn,
          "ignoring a bad cluster map from " + from + ": " + parsed.status().ToString());
    } else if (!map_->SameCluster(*parsed) && !RejoinsItsCluster(*parsed)) {
      char ids[64];
      std::snprintf(ids, sizeof ids, "id %016llx, this one's %016llx",
                    static_cast<unsigned long long>(parsed->cluster_id()),
                    static_cast<unsigned long long>(map_->cluster_id()));
      const Status foreign = Status::InvalidArgument(
          from + " is a node of another cluster (" + ids + "; " +
          std::to_string(parsed->ring().partition_count()) + " partitions and " +
          std::to_string(parsed->ring().replicas()) + " replicas, this one " +
          std::to_string(map_->ring().partition_count()) + " and " +
          std::to_string(map_->ring().replicas()) +
          "): a seed or an address of another cluster? Neither its map nor its members are taken "
          "in");
      Log(LogLevel::kWarn, std::string(foreign.message()));
      return foreign;
    } else {
      theirs = std::move(*parsed);
    }
  }
  // Only the records of this node's own cluster tell of its id: a cluster it
  // is about to rejoin (RejoinsItsCluster) knows an earlier life of it, which
  // it outranks as a joiner from a new directory does.
  if (theirs && !map_->SameCluster(*theirs)) membership_.OutrankEarlierLives(members);
  if (theirs && map_->SameCluster(*theirs)) {
    if (std::optional<proto::Member> other = IdTakenByAnotherLife(members)) {
      const std::string why = "node id " + options_.id +
                              " joined the cluster afresh from another data directory (at " +
                              other->address +
                              ") while this one was away; start this one with a fresh data "
                              "directory, or under another id, to join again";
      Log(LogLevel::kError, why);
      actions_.push_back(ExitAction{3, why});
      exited_ = true;
      return Status::InvalidArgument(why);
    }
  }
  const bool members_changed = membership_.Merge(members, now.mono_ms);
  const bool map_changed = theirs && MergePeerMap(std::move(*theirs));
  AfterClusterChange(now, map_changed, members_changed);
  return Status::OK();
}

// A ring of this node alone meets one that already had it among others: its
// directory was wiped and it started a cluster anew (the first node runs
// without a seed), so what it should hold is on the other replicas.
bool NodeCore::RejoinsItsCluster(const ClusterMap& theirs) const {
  return AloneInItsRing() && theirs.ring().nodes().size() > 1 &&
         theirs.ring().Contains(options_.id) && map_->SameShape(theirs);
}

std::optional<proto::Member> NodeCore::IdTakenByAnotherLife(
    const std::vector<proto::Member>& members) const {
  const proto::Member& me = membership_.self();
  if (!resumed_ || !map_ || AloneInItsRing() || me.life == 0) return std::nullopt;
  for (const proto::Member& m : members) {
    if (m.id == options_.id && m.life != 0 && m.life != me.life &&
        m.incarnation >= me.incarnation) {
      return m;
    }
  }
  return std::nullopt;
}

bool NodeCore::AloneInItsRing() const { return map_->ring().nodes().size() == 1 && !map_->next(); }

bool NodeCore::MergePeerMap(ClusterMap theirs) {
  const bool alone = AloneInItsRing();
  if (!map_->SameCluster(theirs)) {
    map_ = std::move(theirs);  // RejoinsItsCluster: the cluster this node was created anew beside
  } else if (!map_->Merge(theirs)) {
    return false;
  }
  if (alone && map_->ring().nodes().size() > 1 && map_->ring().Contains(options_.id)) {
    BeginCatchUp(
        "found an existing cluster that already had this node (started afresh with an empty "
        "data directory): reads wait for a full anti-entropy round");
  }
  return true;
}

void NodeCore::Persist(bool sync, std::function<void(Status)> done) {
  if (!map_) {
    if (done) done(Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  persist_due_ = false;
  WriteOp write;
  write.sync = sync;
  if (sync) synced_map_hash_ = map_->ContentHash();
  write.batch.Put(Space::kMeta, std::string(kMetaClusterMap), map_->Serialize());
  write.batch.Put(Space::kMeta, std::string(kMetaSwitchSync), EncodeSwitchSync(state_.switch_sync));
  write.batch.Put(Space::kMeta, std::string(kMetaMembers),
                  proto::EncodeMembers(membership_.View(now_ms_)));
  Storage(std::move(write), [this, done = std::move(done)](Now, StorageResult r) {
    if (!r.status.ok()) Log(LogLevel::kError, "persisting cluster state: " + r.status.ToString());
    if (done) done(r.status);
  });
}

void NodeCore::CheckSelfStatus(Now now) {
  if (!map_ || exited_) return;
  const proto::Member& me = membership_.self();
  if (me.status == proto::MemberStatus::kRemoved && !leave_complete_) {
    Log(LogLevel::kError,
        "this node was removed from the cluster (it left, or an administrator "
        "removed it)");
    actions_.push_back(ExitAction{3,
                                  "removed from the cluster (it left, or an administrator "
                                  "removed it); start with a fresh data directory to join "
                                  "again"});
    exited_ = true;
    return;
  }
  if (me.status == proto::MemberStatus::kJoining && map_->ring().Contains(options_.id)) {
    membership_.SetSelfStatus(proto::MemberStatus::kNormal);
    Log(LogLevel::kInfo, "now a full member of the ring");
    Persist(false);
  }
  if (me.status == proto::MemberStatus::kLeaving && !map_->ring().Contains(options_.id) &&
      !(map_->next() && map_->next()->Contains(options_.id)) &&
      state_.partitions_with_data.empty() && state_.hint_owners.empty() && !handoff_ &&
      transfers_.empty() && key_locks_.empty()) {
    leave_complete_ = true;
    membership_.SetSelfStatus(proto::MemberStatus::kRemoved);
    Persist(true);
    Log(LogLevel::kInfo, "left the cluster: every partition was handed off");
    FinalGossipAndExit(now, 0, "left the cluster");
  }
}

void NodeCore::FinalGossipAndExit(Now now, int code, std::string reason) {
  exited_ = true;
  std::vector<std::string> peers;
  for (const proto::Member& m : membership_.View(now.mono_ms)) {
    if (m.id != options_.id && m.alive && m.status != proto::MemberStatus::kRemoved) {
      peers.push_back(m.address);
    }
    if (peers.size() == kFarewellPeers) break;
  }
  auto join = std::make_shared<Countdown>(peers.size(), [this, code, reason](Status) {
    actions_.push_back(ExitAction{code, reason});
  });
  for (const std::string& address : peers) {
    Call(address,
         proto::GossipRequest{options_.id, membership_.View(now.mono_ms), map_->Serialize()},
         [join](Now, Result<proto::Message>) { join->One(Status::OK()); });
  }
}

void NodeCore::GossipRound(Now now) {
  membership_.Beat();
  ++gossip_rounds_;
  std::vector<std::pair<std::optional<NodeId>, std::string>> targets;
  if (std::optional<NodeId> peer = membership_.NextGossipTarget(rng_)) {
    if (std::optional<std::string> addr = AddressOf(*peer)) targets.emplace_back(*peer, *addr);
  }
  if (!options_.seeds.empty() && gossip_rounds_ % options_.seed_gossip_every == 0) {
    const std::string& seed = options_.seeds[rng_() % options_.seeds.size()];
    if (seed != options_.address &&
        (targets.empty() || targets.front().second != seed)) {
      targets.emplace_back(std::nullopt, seed);
    }
  }
  for (const auto& target : targets) {
    const std::optional<NodeId> peer = target.first;
    proto::GossipRequest req{options_.id, membership_.View(now.mono_ms), map_->Serialize()};
    Call(target.second, std::move(req),
         [this, peer, address = target.second](Now now2, Result<proto::Message> reply) {
           Status s = ReplyStatusOf(reply);
           if (peer) membership_.Contact(*peer, s.ok(), now2.mono_ms);
           if (!s.ok()) return;
           auto* gr = std::get_if<proto::GossipReply>(&reply->body);
           if (gr == nullptr) return;
           Status merged = MergePeerGossip(now2, peer ? *peer : address, gr->members, gr->ring);
           // The peer's address now serves another cluster: ours is not there.
           if (!merged.ok() && peer) membership_.Contact(*peer, false, now2.mono_ms);
         });
  }
}

// ------------------------------------------------------------------ transfers (pull)

// The replica whose place this node takes copies best: the new set then
// holds what the old one held, so a read at R meets every write acknowledged
// at W (N < R + W) as before. (The first replica up may lack a write another
// two acknowledged, and the new set would hold it once.) A displaced replica
// up stands in otherwise, then any replica up.
std::optional<NodeId> NodeCore::TransferSource(Now now, PartitionId p) const {
  const std::vector<NodeId> before = map_->ring().PreferenceList(p);
  const std::vector<NodeId> after = map_->next()->PreferenceList(p);
  auto in = [](const std::vector<NodeId>& list, const NodeId& n) {
    return std::find(list.begin(), list.end(), n) != list.end();
  };
  auto up = [&](const NodeId& n) {
    return n != options_.id && membership_.IsAlive(n, now.mono_ms) && AddressOf(n).has_value();
  };
  std::vector<NodeId> displaced, gained;
  for (const NodeId& n : before) {
    if (!in(after, n)) displaced.push_back(n);
  }
  for (const NodeId& n : after) {
    if (!in(before, n)) gained.push_back(n);
  }
  const auto self = std::find(gained.begin(), gained.end(), options_.id);
  if (self != gained.end() && !displaced.empty()) {
    const NodeId& mine = displaced[static_cast<size_t>(self - gained.begin()) % displaced.size()];
    if (up(mine)) return mine;
  }
  for (const NodeId& n : displaced) {
    if (up(n)) return n;
  }
  for (const NodeId& n : before) {
    if (up(n)) return n;
  }
  return std::nullopt;
}

void NodeCore::StartTransfers(Now now) {
  if (!map_ || !map_->next() || shutting_down_ || disk_low_) return;
  for (const dynamo::Transfer& owed : map_->Awaiting()) {
    if (transfers_.size() >= options_.transfers_in_flight) break;
    if (owed.node != options_.id || transfers_.count(owed.partition)) continue;
    std::optional<NodeId> source = TransferSource(now, owed.partition);
    if (!source) continue;  // no live replica to copy from yet
    auto t = std::make_shared<Transfer>();
    t->partition = owed.partition;
    t->source = *source;
    t->address = *AddressOf(*source);
    t->started_ms = now.mono_ms;
    transfers_.emplace(owed.partition, t);
    PullPage(now, t);
  }
}

void NodeCore::PullPage(Now now, std::shared_ptr<Transfer> t) {
  (void)now;
  Background([this, t](std::function<void()> page_done) {
    proto::TransferRequest req{t->partition, t->after, options_.transfer_page_entries,
                               options_.transfer_page_bytes};
    Call(t->address, std::move(req), [this, t, page_done](Now now2, Result<proto::Message> reply) {
      Status s = ReplyStatusOf(reply);
      if (s.ok() && !std::holds_alternative<proto::TransferReply>(reply->body)) {
        s = Status::ProtocolError("unexpected reply to Transfer");
      }
      if (!s.ok()) {
        page_done();
        membership_.Contact(t->source, false, now2.mono_ms);
        FinishTransfer(now2, t, s);
        return;
      }
      auto page = std::make_shared<proto::TransferReply>(std::move(std::get<proto::TransferReply>(reply->body)));
      if (!page->entries.empty()) t->after = page->entries.back().key;
      t->keys += page->entries.size();
      auto join = std::make_shared<Countdown>(page->entries.size(), [this, t, page, page_done](Status merged) {
        page_done();
        Now later{now_ms_, 0};
        if (!merged.ok() || t->abandoned) {
          FinishTransfer(later, t, merged);
        } else if (disk_low_) {
          FinishTransfer(later, t, Status::IOError(DiskLowReason() + ": transfer paused"));
        } else if (!page->done) {
          PullPage(later, t);
        } else {
          // Everything merged must be durable before the transfer counts as done.
          Storage(WriteOp{WriteBatch{}, true},
                  [this, t](Now now3, StorageResult w) { FinishTransfer(now3, t, w.status); });
        }
      });
      for (proto::KeyedSiblings& e : page->entries) {
        if (e.siblings.empty()) {
          join->One(Status::OK());
          continue;
        }
        MergeInto(DataKey(t->partition, e.key), std::move(e.siblings), "", false, SIZE_MAX,
                  [join](Now, Status m) { join->One(m); });
      }
    });
  });
}

void NodeCore::AbandonTransfersNoLongerOwed() {
  for (auto it = transfers_.begin(); it != transfers_.end();) {
    const dynamo::Transfer owed{it->first, options_.id};
    const std::vector<dynamo::Transfer>& all = map_->Transfers();
    if (map_->next() && std::binary_search(all.begin(), all.end(), owed)) {
      ++it;
      continue;
    }
    Log(LogLevel::kInfo, "transfer of partition " + std::to_string(it->first) + " from " +
                             it->second->source +
                             " abandoned: the pending change no longer moves it here");
    it->second->abandoned = true;
    it = transfers_.erase(it);
  }
}

void NodeCore::FinishTransfer(Now now, std::shared_ptr<Transfer> t, Status status) {
  auto it = transfers_.find(t->partition);
  if (it != transfers_.end() && it->second == t) transfers_.erase(it);
  if (t->abandoned) {
    if (t->keys > 0) state_.partitions_with_data.insert(t->partition);
    return;
  }
  if (!status.ok()) {
    Log(LogLevel::kWarn, "transfer of partition " + std::to_string(t->partition) + " from " +
                             t->source + " failed: " + status.ToString() + "; will retry");
    return;
  }
  ++stats_.transfers_done;
  if (t->keys > 0) state_.partitions_with_data.insert(t->partition);
  Log(LogLevel::kDebug, "received partition " + std::to_string(t->partition) + " from " + t->source +
                            " (" + std::to_string(t->keys) + " keys)");
  if (!map_) return;
  const uint64_t at_epoch = map_->epoch();
  const bool changed = map_->MarkDone(dynamo::Transfer{t->partition, options_.id});
  if (changed) {
    // Tell the source now; gossip tells everyone else.
    Call(t->address, proto::TransferDoneRequest{t->partition, options_.id, at_epoch},
         [](Now, Result<proto::Message>) {});
  }
  AfterClusterChange(now, changed, false);
  StartTransfers(now);
}

// ------------------------------------------------------------------ handoff (push)

void NodeCore::StartHandoff(Now now) {
  if (handoff_ || !map_ || shutting_down_) return;
  // Expiry passes come before ranges that failed are tried again: a range
  // that always fails would otherwise keep them from ever running.
  if (StartHandoffOfNextRange(now) || StartHintExpiryPass(now)) return;
  if (!handoff_turned_.empty()) {
    handoff_turned_.clear();
    if (StartHandoffOfNextRange(now)) return;
  }
  if (handoff_failed_.empty()) return;
  handoff_failed_.clear();
  StartHandoffOfNextRange(now);
}

NodeCore::HintsFate NodeCore::FateOfHintsFor(const NodeId& owner, uint64_t now_ms,
                                             std::string* label) const {
  std::optional<proto::Member> rec = membership_.Find(owner);
  // An owner no member record nor ring names (hints stored before such
  // were refused, or its record was lost) goes the way of a removed one,
  // and so does a leaver out of the ring and the next: it replicates
  // nothing any more, and if its own word that it left never arrived it
  // stays leaving in every record.
  const bool in_ring = InRingOrNext(owner);
  const bool unknown = !rec && !in_ring;
  if (!rec && !unknown) return HintsFate::kNone;
  const bool left = rec && rec->status == proto::MemberStatus::kLeaving && !in_ring;
  if (unknown || left || rec->status == proto::MemberStatus::kRemoved) {
    *label = unknown ? "unknown" : left ? "departed" : "removed";
    return HintsFate::kOwnData;
  }
  return membership_.IsAlive(owner, now_ms) ? HintsFate::kDeliver : HintsFate::kHold;
}

std::shared_ptr<NodeCore::Handoff> NodeCore::NewHintHandoff(const NodeId& owner) {
  auto h = std::make_shared<Handoff>();
  h->space = Space::kHints;
  h->prefix = HintOwnerPrefix(owner);
  h->purpose = proto::PushPurpose::kHint;
  h->owner = owner;
  return h;
}

bool NodeCore::StartHandoffOfNextRange(Now now) {
  for (const NodeId& owner : state_.hint_owners) {
    std::string prefix = HintOwnerPrefix(owner);
    std::string label;
    const HintsFate fate = FateOfHintsFor(owner, now.mono_ms, &label);
    // Hints that become own data are written again first: not while the
    // disk is nearly full.
    if (fate == HintsFate::kNone || fate == HintsFate::kHold ||
        (fate == HintsFate::kOwnData && disk_low_) ||
        handoff_failed_.contains({Space::kHints, prefix}) ||
        handoff_turned_.contains({Space::kHints, prefix})) {
      continue;
    }
    auto h = NewHintHandoff(owner);
    if (fate == HintsFate::kOwnData) {
      h->what = "hints for " + label + " node " + owner + " (into own data)";
    } else {
      h->addresses = {membership_.Find(owner)->address};
      h->what = "hints for " + owner;
      // A later expiry pass starts over: this delivery may leave keys below
      // where the last one stopped.
      if (auto pass = hint_expiry_.find(owner); pass != hint_expiry_.end())
        pass->second.after.clear();
    }
    handoff_ = h;
    HandoffPage(now, h);
    return true;
  }
  if (now.mono_ms < map_changed_ms_ + options_.handoff_delay_ms) return false;
  for (PartitionId p : state_.partitions_with_data) {
    std::string prefix = PartitionPrefix(p);
    if (Replicates(p) || handoff_failed_.contains({Space::kData, prefix}) ||
        handoff_turned_.contains({Space::kData, prefix})) {
      continue;
    }
    std::vector<std::string> addresses;
    bool all_alive = true;
    for (const NodeId& n : map_->ring().PreferenceList(p)) {
      std::optional<std::string> addr = AddressOf(n);
      if (!addr || !membership_.IsAlive(n, now.mono_ms)) all_alive = false;
      if (addr) addresses.push_back(*addr);
    }
    if (!all_alive || addresses.empty()) continue;
    auto h = std::make_shared<Handoff>();
    h->space = Space::kData;
    h->prefix = std::move(prefix);
    h->addresses = std::move(addresses);
    h->purpose = proto::PushPurpose::kTransfer;
    h->partition = p;
    h->what = "partition " + std::to_string(p);
    handoff_ = h;
    HandoffPage(now, h);
    return true;
  }
  return false;
}

bool NodeCore::StartHintExpiryPass(Now now) {
  std::string label;
  for (const NodeId& owner : state_.hint_owners) {
    if (FateOfHintsFor(owner, now.mono_ms, &label) != HintsFate::kHold) continue;
    HintExpiry& pass = hint_expiry_[owner];
    if (now.mono_ms < pass.due_ms) continue;
    auto h = NewHintHandoff(owner);
    h->after = pass.after;
    h->expire_only = true;
    h->what = "expired hints for down node " + owner;
    handoff_ = h;
    HandoffPage(now, h);
    return true;
  }
  return false;
}

void NodeCore::EndHintExpiryPass(Now now, const Handoff& h, const Status& status) {
  stats_.hints_expired += h.expired_deleted;
  HintExpiry& pass = hint_expiry_[h.owner];
  pass.deleted += h.expired_deleted;
  if (h.gave_way && status.ok()) {
    pass.after = h.after;
    return;
  }
  if (pass.deleted > 0) {
    Log(LogLevel::kWarn, h.what + ": deleted " + std::to_string(pass.deleted) +
                             " versions older than the tombstone grace period (a delete that "
                             "superseded them may be purged)");
  }
  if (!status.ok()) {
    Log(LogLevel::kWarn, "expiry pass over " + h.what + " failed: " + status.ToString() +
                             "; the next one in " +
                             std::to_string(options_.hint_expiry_interval_ms) + " ms");
  }
  pass = HintExpiry{now.mono_ms + options_.hint_expiry_interval_ms, "", 0};
}

void NodeCore::HandoffPage(Now now, std::shared_ptr<Handoff> h) {
  // An expiry pass gives way between pages to the owner's return and, every
  // few pages, to any other handoff; it goes on from there when none is due.
  if (h->expire_only && h->pages > 0 &&
      (h->pages >= kHintExpiryPagesPerTurn || membership_.IsAlive(h->owner, now.mono_ms))) {
    h->gave_way = true;
    FinishHandoff(now, h, Status::OK(), false);
    return;
  }
  ++h->pages;
  Background([this, h](std::function<void()> page_done) {
  h->page_done = std::move(page_done);
  ScanOp scan;
  scan.space = h->space;
  scan.options.prefix = h->prefix;
  scan.options.after = h->after;
  scan.options.max_entries = options_.transfer_page_entries;
  scan.options.max_bytes = options_.transfer_page_bytes;
  Storage(std::move(scan), [this, h](Now now2, StorageResult r) {
    if (!r.status.ok()) {
      FinishHandoff(now2, h, r.status, false);
      return;
    }
    if (StillReplicated(*h)) {
      FinishHandoff(now2, h, Status::OK(), false);
      return;
    }
    if (r.scan.entries.empty()) {
      FinishHandoff(now2, h, Status::OK(), h->after.empty() && !h->written_meanwhile);
      return;
    }
    auto page = std::make_shared<ScanResult>(std::move(r.scan));
    std::vector<proto::KeyedSiblings> entries;
    std::vector<PartitionId> partitions;
    uint64_t expired = 0;
    h->scanned_actor = state_.actor;
    std::vector<PageEntry> fates(page->entries.size());
    for (size_t i = 0; i < page->entries.size(); ++i) {
      const auto& [k, v] = page->entries[i];
      Result<SiblingSet> set = proto::DecodeSiblingSet(v, stored_limits_);
      if (set.ok()) {
        fates[i].own_dots = MentionsActor(*set, h->scanned_actor);
        fates[i].expired = static_cast<uint32_t>(DropStaleVersions(*h, *set));
        expired += fates[i].expired;
        fates[i].pushed = !set->empty();
      } else {
        fates[i].readable = false;
      }
      std::string_view user_key;
      PartitionId p = 0;
      if (h->space == Space::kData) {
        Result<DataKeyParts> parts = ParseDataKey(k);
        if (parts.ok()) {
          user_key = parts->key;
          p = parts->partition;
        }
      } else {
        Result<HintKeyParts> parts = ParseHintKey(k);
        if (parts.ok()) {
          user_key = parts->key;
          p = parts->partition;
        }
      }
      if (user_key.empty()) fates[i].readable = false;
      if (!fates[i].readable) {
        ++h->unreadable;
        continue;
      }
      if (set->empty()) continue;
      entries.push_back(proto::KeyedSiblings{std::string(user_key), std::move(*set)});
      partitions.push_back(p);
    }
    if (expired > 0 && !h->expire_only) {
      (h->space == Space::kHints ? stats_.hints_expired : stats_.handoff_stale_dropped) += expired;
      Log(LogLevel::kWarn,
          h->what + ": dropped " + std::to_string(expired) +
              (h->space == Space::kHints
                   ? " versions older than the tombstone grace period"
                   : " versions older than the tombstone grace period or held through an "
                     "absence longer than it") +
              " (a delete that superseded them may be purged)");
    }
    if (h->expire_only) {
      for (PageEntry& fate : fates) {
        fate.kept = fate.pushed;
        fate.pushed = false;
      }
      entries.clear();
    }
    auto delivered = [this, h, page, fates = std::move(fates)](Status s) mutable {
      Now later{now_ms_, 0};
      if (!s.ok()) {
        FinishHandoff(later, h, s, false);
        return;
      }
      DeleteAcknowledged(later, h, std::move(*page), std::move(fates));
    };
    if (entries.empty()) {  // every version of the page was dropped, or an expiry pass
      delivered(Status::OK());
      return;
    }
    if (h->addresses.empty()) {
      // Hints for a removed or departed node become this node's data; the
      // data handoff then moves them to wherever they belong. Durably, as a
      // push is, before the hint is deleted.
      auto join = std::make_shared<Countdown>(entries.size(), delivered);
      for (size_t i = 0; i < entries.size(); ++i) {
        MergeInto(DataKey(partitions[i], entries[i].key), std::move(entries[i].siblings), "", true,
                  SIZE_MAX, [join](Now, Status s) { join->One(s); });
      }
      return;
    }
    auto join = std::make_shared<Countdown>(h->addresses.size(), delivered);
    for (const std::string& address : h->addresses) {
      Call(address, proto::PushRequest{h->purpose, entries}, [join](Now, Result<proto::Message> reply) {
        Status s = ReplyStatusOf(reply);
        if (s.ok() && !std::holds_alternative<proto::Ack>(reply->body)) {
          s = Status::ProtocolError("unexpected reply to Push");
        }
        join->One(s);
      });
    }
  });
  });
}

bool NodeCore::HintExpired(const Version& v) const {
  // Not v.timestamp_ms + grace: a stamp near 2^64 (bad input) would wrap.
  return wall_ms_ >= options_.tombstone_grace_ms &&
         v.timestamp_ms <= wall_ms_ - options_.tombstone_grace_ms;
}

// Hints older than the grace period, and versions of a partition this
// node does not replicate that are as old or that it held through an
// absence longer than it, may have been superseded by a delete whose
// tombstones are purged since: pushing them would bring the key back.
size_t NodeCore::DropStaleVersions(const Handoff& h, SiblingSet& set) const {
  if (h.space == Space::kHints)
    return std::erase_if(set, [this](const Version& v) { return HintExpired(v); });
  return DropUntrustedLeftovers(set);
}

size_t NodeCore::DropUntrustedLeftovers(SiblingSet& set) const {
  // A copy off the replicas for that long (a stand-in's write, a leftover of
  // a ring change) was never asked by a purge, and the node may have been
  // cut off all along, alive, with no absence of its own to measure.
  const size_t expired = std::erase_if(set, [this](const Version& v) { return HintExpired(v); });
  return expired + DropHeldThroughAbsence(set);
}

size_t NodeCore::DropHeldThroughAbsence(SiblingSet& set) const {
  if (state_.stale_before_wall_ms == 0) return 0;
  return std::erase_if(
      set, [this](const Version& v) { return v.timestamp_ms < state_.stale_before_wall_ms; });
}

void NodeCore::DeleteAcknowledged(Now now, std::shared_ptr<Handoff> h, ScanResult page,
                                  std::vector<PageEntry> fates) {
  (void)now;
  h->after = page.entries.back().first;
  const bool last = page.done;
  auto shared_page = std::make_shared<ScanResult>(std::move(page));
  auto join = std::make_shared<Countdown>(shared_page->entries.size(), [this, h, last](Status s) {
    ReleasePage(h);
    Now later{now_ms_, 0};
    if (!s.ok()) {
      FinishHandoff(later, h, s, false);
    } else if (last && h->unreadable > 0) {
      FinishHandoff(later, h,
                    Status::Corruption(std::to_string(h->unreadable) +
                                       " stored entries could not be read; they are kept"),
                    false);
    } else if (last) {
      // Deleted keys are gone; anything written since stays for the next round.
      FinishHandoff(later, h, Status::OK(), false);
    } else {
      HandoffPage(later, h);
    }
  });
  for (size_t i = 0; i < shared_page->entries.size(); ++i) {
    const std::string& key = shared_page->entries[i].first;
    const PageEntry fate = fates[i];
    if (!fate.readable || fate.kept) {
      join->One(Status::OK());
      continue;
    }
    WithKeyLock(LockKey(h->space, key), [this, h, shared_page, i, fate, join](Unlock unlock) {
      const auto& [k, v] = shared_page->entries[i];
      Storage(ReadOp{h->space, k}, [this, h, shared_page, i, fate, join, unlock](Now,
                                                                                 StorageResult r) {
        const auto& [k2, v2] = shared_page->entries[i];
        if (!r.status.ok() || !r.value || *r.value != v2) {
          unlock();
          join->One(r.status);  // changed since it was pushed: kept for the next round
          return;
        }
        if (StillReplicated(*h)) {
          unlock();
          join->One(Status::OK());  // the partition is this node's again: kept
          return;
        }
        const bool data = h->space == Space::kData;
        WriteOp del;
        // Hints are not what this node coordinates from; its data is. The
        // entry is unchanged since the scan, so it records no event of an
        // actor taken after it.
        if (data && fate.own_dots && state_.actor == h->scanned_actor) {
          RotateActor("deleting keys of " + h->what + " after handing them off");
        }
        del.batch.Delete(h->space, k2);
        if (fate.pushed) ++h->keys;
        const uint32_t expired = h->expire_only ? fate.expired : 0;
        Storage(std::move(del),
                [this, h, expired, join, unlock, data, k3 = k2](Now, StorageResult w) {
                  if (!w.status.ok() && data) {
                    NoteStoredAfterFailedWrite(k3, [join, unlock, status = w.status] {
                      unlock();
                      join->One(status);
                    });
                    return;
                  }
                  if (w.status.ok()) h->expired_deleted += expired;
                  if (w.status.ok() && data) NoteStored(k3, nullptr);
                  unlock();
                  join->One(w.status);
                });
      });
      (void)v;
    });
  }
}

bool NodeCore::GainsPartitionsAtSwitch() const {
  if (!map_ || !map_->next()) return false;
  for (PartitionId p : map_->next()->PartitionsReplicatedBy(options_.id)) {
    const std::vector<NodeId> now = map_->ring().PreferenceList(p);
    if (std::find(now.begin(), now.end(), options_.id) == now.end()) return true;
  }
  return false;
}

void NodeCore::NoteRingSwitch(const Ring& before) {
  const Ring& after = map_->ring();
  std::erase_if(state_.switch_sync, [&](const auto& entry) { return !Replicates(entry.first); });
  if (before.partition_count() != after.partition_count()) return;
  auto in = [](const std::vector<NodeId>& list, const NodeId& n) {
    return std::find(list.begin(), list.end(), n) != list.end();
  };
  size_t gained = 0;
  for (PartitionId p : after.PartitionsReplicatedBy(options_.id)) {
    const std::vector<NodeId> was = before.PreferenceList(p);
    if (in(was, options_.id)) continue;
    const std::vector<NodeId> now = after.PreferenceList(p);
    // Grown lists (a cluster smaller than N) displace no one: every replica
    // that took a write still serves the partition's reads.
    if (std::all_of(was.begin(), was.end(), [&](const NodeId& n) { return in(now, n); })) continue;
    state_.switch_sync[p].insert(was.begin(), was.end());
    ++gained;
  }
  if (gained > 0) {
    Log(LogLevel::kInfo, "took over " + std::to_string(gained) +
                             " partitions at the ring switch: their reads wait for a sync with "
                             "the replicas they had before");
  }
}

Status NodeCore::SwitchSyncPending(PartitionId p) const {
  auto gate = state_.switch_sync.find(p);
  if (gate == state_.switch_sync.end()) return Status::OK();
  const bool hears = membership_.HearsOthers(now_ms_);
  std::string with;
  for (const NodeId& n : gate->second) {
    if (!hears || !membership_.IsSilent(n, now_ms_)) with += (with.empty() ? "" : ", ") + n;
  }
  if (with.empty()) return Status::OK();
  return Status::Unavailable("node " + options_.id + " took over partition " + std::to_string(p) +
                             " at a ring switch and has not synced it with " + with + " yet");
}

void NodeCore::BeginCatchUp(const std::string& why) {
  Log(LogLevel::kWarn, why);
  if (catching_up_) return;
  catching_up_ = true;
  caught_up_.clear();
  catch_up_progress_.clear();
  WriteOp mark;
  mark.sync = true;
  mark.batch.Put(Space::kMeta, std::string(kMetaCatchingUp), "1");
  Storage(std::move(mark), [this](Now, StorageResult r) {
    if (!r.status.ok()) Log(LogLevel::kError, "recording the catch-up: " + r.status.ToString());
  });
}

void NodeCore::EndCatchUp(const std::string& how) {
  if (!catching_up_) return;
  catching_up_ = false;
  Log(LogLevel::kInfo, how);
  // Synced, and with it every repair the catch-up merged unsynced: a log
  // written over a prefilled file keeps no order among its unsynced pages
  // in a power loss, so the mark's delete could outlive the repairs.
  WriteOp done;
  done.sync = true;
  done.batch.Delete(Space::kMeta, std::string(kMetaCatchingUp));
  Storage(std::move(done), [](Now, StorageResult) {});
}

void NodeCore::RotateActor(const std::string& why) {
  ActorId next = 0;
  while (next == 0 || next == state_.actor) next = rng_();
  char ids[64];
  std::snprintf(ids, sizeof ids, "%016llx to %016llx",
                static_cast<unsigned long long>(state_.actor),
                static_cast<unsigned long long>(next));
  Log(LogLevel::kInfo, std::string("actor id changed from ") + ids + ": " + why);
  state_.actor = next;
  membership_.SetSelfActor(next);
}

void NodeCore::ReleasePage(const std::shared_ptr<Handoff>& h) {
  if (h->page_done) {
    auto done = std::move(h->page_done);
    h->page_done = nullptr;
    done();
  }
}

void NodeCore::NoteHandoffRangeWritten(Space space, PartitionId partition, const NodeId& owner) {
  if (!handoff_ || handoff_->space != space) return;
  if (space == Space::kData ? handoff_->partition == partition : handoff_->owner == owner) {
    handoff_->written_meanwhile = true;
  }
}

std::optional<PartitionId> NodeCore::partition_handing_off() const {
  if (!handoff_ || handoff_->space != Space::kData) return std::nullopt;
  return handoff_->partition;
}

bool NodeCore::StillReplicated(const Handoff& h) const {
  return h.space == Space::kData && Replicates(h.partition);
}

void NodeCore::FinishHandoff(Now now, std::shared_ptr<Handoff> h, Status status, bool drained) {
  ReleasePage(h);
  handoff_.reset();
  stats_.handoff_keys += h->keys;
  if (h->expire_only) EndHintExpiryPass(now, *h, status);
  if (!status.ok()) {
    if (h->expire_only) return;  // retried after hint_expiry_interval_ms
    const bool first = handoff_warned_.emplace(h->space, h->prefix).second;
    Log(first ? LogLevel::kWarn : LogLevel::kDebug, "handoff of " + h->what +
                                                        " failed: " + status.ToString() +
                                                        "; will retry after the other ranges");
    handoff_failed_.emplace(h->space, h->prefix);
    return;
  }
  handoff_failed_.erase({h->space, h->prefix});
  if (handoff_warned_.erase({h->space, h->prefix}) > 0) {
    Log(LogLevel::kInfo, "handoff of " + h->what + " succeeded after failing");
  }
  if (h->keys > 0) {
    Log(LogLevel::kInfo, "handed off " + h->what + ": " + std::to_string(h->keys) + " keys");
  }
  if (h->space == Space::kHints) stats_.hints_delivered += h->keys;
  if (!drained) {
    handoff_turned_.emplace(h->space, h->prefix);
  } else {
    handoff_turned_.erase({h->space, h->prefix});
    if (h->space == Space::kData) {
      state_.partitions_with_data.erase(h->partition);
      if (h->partition < known_with_data_.size()) known_with_data_[h->partition] = false;
    } else {
      state_.hint_owners.erase(h->owner);
      hint_expiry_.erase(h->owner);
    }
  }
  // Go on with the next range at once; a range that was not drained is
  // scanned again and then found empty or holding what was written meanwhile.
  CheckSelfStatus(now);
  if (!exited_) StartHandoff(now);
}

}  // namespace dynamo::node
