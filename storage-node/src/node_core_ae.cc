// NodeCore, part two: background admission, Merkle trees, anti-entropy and
// tombstone collection.
#include <algorithm>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "dynamo/check.h"
#include "dynamo/node/keys.h"
#include "dynamo/node/node_core.h"
#include "dynamo/placement.h"
#include "node_core_util.h"

namespace dynamo::node {
namespace {

constexpr size_t kBuildPageEntries = 512;
// A tree build whose scan failed waits this long before it tries again,
// doubled per failure in a row up to kBuildRetryMaxMs: a disk that cannot
// be read gets a log line every half minute, not one per tick.
constexpr uint64_t kBuildRetryMinMs = 100;
constexpr uint64_t kBuildRetryMaxMs = 30000;
// Most keys one AeCompare request may fetch in all: the initiator plans
// kMerkleFetchKeysMax by the counts of an earlier round, and writes since may
// have added some.
constexpr uint64_t kAeFetchKeysServedMax = 2 * kMerkleFetchKeysMax;
// Bytes a key listed in an AeCompare answer takes beyond its own: its
// digest and encoding.
constexpr size_t kAeListedKeyOverheadBytes = 16;
constexpr size_t kPurgePageEntries = 256;
// Pages one purge pass (one session of the partition's owner, at most every
// purge_interval_ms) goes through before it ends; the next pass goes on
// where it stopped.
constexpr size_t kPurgePagesPerPass = 64;

uint64_t NewestTimestamp(const SiblingSet& set) {
  uint64_t t = 0;
  for (const Version& v : set) t = std::max(t, v.timestamp_ms);
  return t;
}

}  // namespace

struct NodeCore::AeSession {
  PartitionId partition = 0;
  NodeId peer;
  std::string address;
  std::unique_ptr<MerkleComparison> comparison;
  std::vector<std::string> keys;  // differing keys, once compared
  size_t next = 0;
  bool peer_catching_up = false;  // the peer pulls itself; nothing is pushed
  // A sync of a partition this node took over at a ring switch (switch_sync):
  // it only pulls.
  bool switch_sync = false;
  // The map epoch of the peer's first answer: whether it had switched when
  // the session began (a write it took as a replica later could fall in a
  // subtree already compared).
  std::optional<uint64_t> peer_epoch;
  // The peer's last answer to this session came back (maybe an error): a
  // failure then is no sign that it is down.
  bool peer_answered = false;
  size_t purge_pages_left = 0;
  std::function<void()> done;     // releases the background slot
};

// ------------------------------------------------------------------ admission

void NodeCore::Background(Step step) {
  background_.push_back(std::move(step));
  RunBackground();
}

void NodeCore::RunBackground() {
  if (running_background_) return;
  running_background_ = true;
  while (!background_.empty() && !exited_ && governor_.TryStart(now_ms_)) {
    Step step = std::move(background_.front());
    background_.pop_front();
    step([this] {
      governor_.Finished();
      RunBackground();
    });
  }
  running_background_ = false;
  stats_.background_deferred = governor_.deferred();
}

// ------------------------------------------------------------------ Merkle trees

MerkleTree& NodeCore::TreeFor(PartitionId p) {
  DYNAMO_CHECK(p < kMaxPartitions);
  if (p >= trees_.size()) trees_.resize(p + 1);
  std::unique_ptr<MerkleTree>& t = trees_[p];
  if (!t) t = std::make_unique<MerkleTree>(options_.merkle_depth);
  return *t;
}

const MerkleTree& NodeCore::TreeOrEmpty(PartitionId p) {
  if (p < trees_.size() && trees_[p]) return *trees_[p];
  if (!empty_tree_) empty_tree_ = std::make_unique<MerkleTree>(options_.merkle_depth);
  return *empty_tree_;
}

size_t NodeCore::merkle_trees() const {
  return static_cast<size_t>(
      std::count_if(trees_.begin(), trees_.end(),
                    [](const std::unique_ptr<MerkleTree>& t) { return t != nullptr; }));
}

MerkleSummary NodeCore::MerkleRoot(PartitionId p) {
  ApplyTreeUpdates();
  return p < trees_.size() && trees_[p] ? trees_[p]->Root() : MerkleSummary{};
}

void NodeCore::NoteStored(const std::string& data_key, const SiblingSet* set) {
  Result<DataKeyParts> parts = ParseDataKey(data_key);
  if (!parts.ok() || parts->partition >= kMaxPartitions) return;
  if (set != nullptr) {
    // Most writes land in a partition already known to hold data: a bitmap
    // answers that without walking the set.
    if (parts->partition >= known_with_data_.size()) known_with_data_.resize(parts->partition + 1);
    if (!known_with_data_[parts->partition]) {
      known_with_data_[parts->partition] = true;
      state_.partitions_with_data.insert(parts->partition);
    }
    NoteHandoffRangeWritten(Space::kData, parts->partition, {});
    tree_updates_.push_back(
        TreeUpdate{parts->partition, std::string(parts->key), SiblingDigest(*set)});
    removed_during_build_.erase(data_key);
  } else {
    tree_updates_.push_back(TreeUpdate{parts->partition, std::string(parts->key), std::nullopt});
    if (!trees_ready_) removed_during_build_.insert(data_key);
  }
  if (check_ && check_->partition == parts->partition) check_->Touch(parts->key);
  if (tree_updates_.size() >= kTreeUpdatesMax) ApplyTreeUpdates();
}

void NodeCore::NoteStoredAfterFailedWrite(const std::string& data_key, std::function<void()> then) {
  Storage(ReadOp{Space::kData, data_key},
          [this, data_key, then = std::move(then)](Now, StorageResult r) {
            if (r.status.ok() && !r.value) {
              NoteStored(data_key, nullptr);
            } else if (r.status.ok()) {
              Result<SiblingSet> set = proto::DecodeSiblingSet(*r.value, stored_limits_);
              if (set.ok()) NoteStored(data_key, &*set);
            }
            then();
          });
}

void NodeCore::CheckNothingWasStored(const std::string& data_key) {
  if (!trees_ready_) return;  // the trees are still being read from storage
  Result<DataKeyParts> parts = ParseDataKey(data_key);
  if (!parts.ok()) return;
  bool recorded = false;
  auto pending = std::find_if(
      tree_updates_.rbegin(), tree_updates_.rend(),
      [&](const TreeUpdate& u) { return u.partition == parts->partition && u.key == parts->key; });
  if (pending != tree_updates_.rend()) {
    recorded = pending->digest.has_value();
  } else if (parts->partition < trees_.size() && trees_[parts->partition]) {
    recorded = trees_[parts->partition]->Get(parts->key).has_value();
  }
  if (!recorded) return;
  ++stats_.storage_losses_found;
  Log(LogLevel::kWarn,
      "a write found nothing stored for a key of partition " + std::to_string(parts->partition) +
          " where this node had stored it (lost without an error); its Merkle "
          "tree entry is removed, so anti-entropy repairs it from the other replicas");
  NoteStored(data_key, nullptr);
  RotateActor("storage lost a key this node had stored");
}

void NodeCore::ApplyTreeUpdates() {
  // The passes: the trees, then their index slots and summary paths, then
  // the entries those slots name, then the changes.
  constexpr size_t kChunk = 16;
  MerkleTree* trees[kChunk];
  for (size_t at = 0; at < tree_updates_.size(); at += kChunk) {
    const size_t n = std::min(kChunk, tree_updates_.size() - at);
    const TreeUpdate* u = &tree_updates_[at];
    for (size_t i = 0; i < n; ++i) {
      // A delete from a partition without a tree has nothing to remove.
      trees[i] = u[i].digest                      ? &TreeFor(u[i].partition)
                 : u[i].partition < trees_.size() ? trees_[u[i].partition].get()
                                                  : nullptr;
      if (trees[i] == nullptr) continue;
      const char* t = reinterpret_cast<const char*>(trees[i]);
      for (size_t line = 0; line < sizeof(MerkleTree); line += 64) __builtin_prefetch(t + line);
      __builtin_prefetch(t + sizeof(MerkleTree) - 1);
    }
    for (size_t i = 0; i < n; ++i) {
      if (trees[i] != nullptr) trees[i]->Prefetch(u[i].key);
    }
    for (size_t i = 0; i < n; ++i) {
      if (trees[i] != nullptr) trees[i]->PrefetchEntry(u[i].key);
    }
    for (size_t i = 0; i < n; ++i) {
      if (trees[i] == nullptr) continue;
      if (u[i].digest) {
        trees[i]->Put(u[i].key, *u[i].digest);
      } else {
        trees[i]->Remove(u[i].key);
      }
    }
  }
  tree_updates_.clear();
}

void NodeCore::BuildTreesStep() {
  if (trees_ready_ || build_in_flight_ || now_ms_ < build_retry_at_ms_) return;
  if (build_queue_.empty()) {
    trees_ready_ = true;
    removed_during_build_.clear();
    return;
  }
  build_in_flight_ = true;
  const PartitionId p = build_queue_.front();
  ScanOp scan;
  scan.space = Space::kData;
  scan.options.prefix = PartitionPrefix(p);
  scan.options.after = build_after_;
  scan.options.max_entries = kBuildPageEntries;
  scan.options.fill_cache = false;  // a tree check must find a block that went bad later
  Storage(std::move(scan), [this, p](Now now, StorageResult r) {
    build_in_flight_ = false;
    if (exited_) return;  // corrupt data stops the node (OnStorageDone)
    if (!r.status.ok()) {
      ++stats_.tree_build_failures;
      build_retry_ms_ = std::clamp(2 * build_retry_ms_, kBuildRetryMinMs, kBuildRetryMaxMs);
      build_retry_at_ms_ = now.mono_ms + build_retry_ms_;
      Log(LogLevel::kError, "building Merkle trees: " + r.status.ToString() + "; retrying in " +
                                std::to_string(build_retry_ms_) + " ms");
      return;
    }
    build_retry_ms_ = 0;
    ApplyTreeUpdates();
    MerkleTree& tree = TreeFor(p);
    for (auto& [k, v] : r.scan.entries) {
      Result<DataKeyParts> parts = ParseDataKey(k);
      if (!parts.ok() || removed_during_build_.count(k) || tree.Get(parts->key)) continue;
      Result<SiblingSet> set = proto::DecodeSiblingSet(v, stored_limits_);
      if (set.ok()) tree.Put(parts->key, SiblingDigest(*set));
    }
    if (r.scan.done || r.scan.entries.empty()) {
      build_queue_.pop_front();
      build_after_.clear();
    } else {
      build_after_ = r.scan.entries.back().first;
    }
    if (build_queue_.empty()) {
      trees_ready_ = true;
      removed_during_build_.clear();
      size_t keys = 0, partitions = 0;
      for (const std::unique_ptr<MerkleTree>& t : trees_) {
        if (t) keys += t->size(), ++partitions;
      }
      Log(LogLevel::kInfo, "Merkle trees built: " + std::to_string(keys) + " keys in " +
                               std::to_string(partitions) + " partitions");
      return;
    }
    BuildTreesStep();
  });
}

// ------------------------------------------------------------------ tree checks

void NodeCore::TreeCheckTick(Now now) {
  const uint64_t interval = options_.tree_check_interval_ms;
  if (interval == 0 || !trees_ready_ || shutting_down_ || exited_) return;
  if (check_) {
    if (check_->waiting) TreeCheckPage();
    return;
  }
  if (check_pos_ >= check_cycle_.size()) {
    std::set<PartitionId> held(state_.partitions_with_data.begin(),
                               state_.partitions_with_data.end());
    for (PartitionId p = 0; p < trees_.size(); ++p) {
      if (trees_[p]) held.insert(p);
    }
    check_cycle_.assign(held.begin(), held.end());
    check_pos_ = 0;
  }
  const uint64_t slice = std::max<uint64_t>(1, interval / std::max<size_t>(1, check_cycle_.size()));
  if (next_check_ms_ == 0) next_check_ms_ = now.mono_ms + slice;  // the trees were just built
  if (now.mono_ms < next_check_ms_) return;
  // Behind the schedule (slices shorter than a tick, or a slow check),
  // checks run back to back, catching up on at most one period.
  next_check_ms_ = std::max(next_check_ms_, now.mono_ms - std::min(now.mono_ms, interval)) + slice;
  if (check_cycle_.empty()) return;
  check_ = std::make_unique<TreeCheck>(check_cycle_[check_pos_++], options_.merkle_depth);
  TreeCheckPage();
}

void NodeCore::TreeCheckPage() {
  // The last of background work: while other steps wait for the governor
  // (transfers, anti-entropy, handoffs), or foreground requests are slow,
  // the check waits for a later tick.
  check_->waiting = !background_.empty() || governor_.BackingOff(now_ms_);
  if (check_->waiting) return;
  Background([this](std::function<void()> done) {
    if (!check_ || exited_) {
      done();
      return;
    }
    ScanOp scan;
    scan.space = Space::kData;
    scan.options.prefix = PartitionPrefix(check_->partition);
    scan.options.after = check_->after;
    scan.options.max_entries = kBuildPageEntries;
    scan.options.fill_cache = false;
    Storage(std::move(scan), [this, done](Now, StorageResult r) {
      done();
      if (exited_ || !check_) return;  // corrupt data stops the node (OnStorageDone)
      if (!r.status.ok()) {
        Log(LogLevel::kWarn, "checking the Merkle tree of partition " +
                                 std::to_string(check_->partition) + ": " + r.status.ToString() +
                                 "; checked again in the next pass");
        check_.reset();
        return;
      }
      for (auto& [k, v] : r.scan.entries) {
        Result<DataKeyParts> parts = ParseDataKey(k);
        if (!parts.ok()) continue;
        Result<SiblingSet> set = proto::DecodeSiblingSet(v, stored_limits_);
        if (set.ok()) check_->read.Put(parts->key, SiblingDigest(*set));
      }
      if (r.scan.done || r.scan.entries.empty()) {
        FinishTreeCheck();
        TreeCheckTick(Now{now_ms_, wall_ms_});
      } else {
        check_->after = r.scan.entries.back().first;
        TreeCheckPage();
      }
    });
  });
}

void NodeCore::FinishTreeCheck() {
  std::unique_ptr<TreeCheck> c = std::move(check_);
  const PartitionId p = c->partition;
  if (c->overflowed) {
    Log(LogLevel::kDebug, "partition " + std::to_string(p) +
                              " was written too much while its Merkle tree was checked; checked "
                              "again in the next pass");
    return;
  }
  ++stats_.trees_checked;
  ApplyTreeUpdates();
  if (c->read.size() == 0 && (p >= trees_.size() || !trees_[p])) return;
  MerkleTree& tree = TreeFor(p);
  // A key written during the check may have been read before or after its
  // write: its tree entry, which the write set, stands.
  for (const std::string& key : c->touched) {
    if (std::optional<uint64_t> digest = tree.Get(key)) {
      c->read.Put(key, *digest);
    } else {
      c->read.Remove(key);
    }
  }
  if (c->read.Root() == tree.Root()) return;
  MerkleComparison comparison(&tree, MerkleComparisonOptions{});
  while (std::optional<MerkleRequest> request = comparison.NextRequest()) {
    Result<MerkleReply> answer = c->read.Answer(*request);
    Status handled = answer.ok() ? comparison.HandleReply(*answer) : answer.status();
    if (!handled.ok()) {
      Log(LogLevel::kError, "comparing the Merkle tree of partition " + std::to_string(p) +
                                " with storage: " + handled.ToString());
      return;
    }
  }
  uint64_t corrected = 0;
  for (const std::string& key : comparison.DifferingKeys()) {
    // A write of the key in flight sets its entry when it completes.
    if (key_locks_.count(LockKey(Space::kData, DataKey(p, key)))) continue;
    if (std::optional<uint64_t> digest = c->read.Get(key)) {
      tree.Put(key, *digest);
    } else {
      tree.Remove(key);
    }
    ++corrected;
  }
  if (corrected == 0) return;
  stats_.tree_keys_corrected += corrected;
  Log(LogLevel::kWarn,
      "the Merkle tree of partition " + std::to_string(p) + " disagreed with storage on " +
          std::to_string(corrected) +
          " keys; corrected, so anti-entropy repairs them from the other replicas");
  RotateActor("storage lost versions this node had stored");
}

// ------------------------------------------------------------------ serving peers

void NodeCore::HandleAeCompare(uint64_t conn, uint64_t id, const proto::AeCompareRequest& req) {
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  if (!trees_ready_) {
    ReplyError(conn, id, Status::Unavailable("Merkle trees are still being built"));
    return;
  }
  if (req.partition >= map_->ring().partition_count()) {
    ReplyError(conn, id, Status::InvalidArgument("no partition " + std::to_string(req.partition)));
    return;
  }
  ApplyTreeUpdates();
  // A partition this node holds nothing of is answered from an empty tree,
  // not given one of its own that would stay for good.
  const MerkleTree& tree = TreeOrEmpty(req.partition);
  uint64_t fetch_keys = 0;
  for (const MerkleNodeId& node : req.request.fetch) {
    Result<MerkleSummary> s = tree.Summary(node);
    if (!s.ok()) {
      ReplyError(conn, id, s.status());
      return;
    }
    fetch_keys += s->count;
    if (fetch_keys > kAeFetchKeysServedMax) {
      ReplyError(conn, id,
                 Status::InvalidArgument("Merkle fetch of more than " +
                                         std::to_string(kAeFetchKeysServedMax) + " keys in all"));
      return;
    }
  }
  Result<MerkleReply> answer = tree.Answer(req.request);
  if (!answer.ok()) {
    ReplyError(conn, id, answer.status());
    return;
  }
  // Nor is a partition taken over at a switch current before its sync with
  // the replicas it replaced: a node catching up must not take it for one.
  const bool pulling = (catching_up_ && !caught_up_.count(req.partition)) ||
                       state_.switch_sync.count(req.partition) > 0;
  Reply(conn, id, proto::AeCompareReply{epoch(), std::move(*answer), pulling});
}

void NodeCore::HandlePurge(uint64_t conn, uint64_t id, proto::PurgeRequest req) {
  if (!map_) {
    ReplyError(conn, id, Status::Unavailable("node has not joined a cluster yet"));
    return;
  }
  // The tombstones the owner saw here may have come unsynced (its repair of
  // this replica a moment ago): synced before they go, a crash cannot bring
  // back what they deleted once no other replica holds them.
  Storage(WriteOp{WriteBatch{}, true},
          [this, conn, id, entries = std::move(req.entries)](Now, StorageResult w) mutable {
            if (!w.status.ok()) {
              ReplyError(conn, id, w.status);
              return;
            }
            PurgeLocal(std::move(entries), [this, conn, id](Status s, uint64_t deleted) {
              if (!s.ok()) {
                ReplyError(conn, id, s);
              } else {
                Reply(conn, id, proto::Ack{epoch(), deleted});
              }
            });
          });
}

void NodeCore::PurgeLocal(std::vector<proto::PurgeRequest::Entry> entries,
                          std::function<void(Status, uint64_t)> done) {
  auto deleted = std::make_shared<uint64_t>(0);
  auto all = std::make_shared<Countdown>(entries.size(), [this, deleted, done](Status s) {
    stats_.tombstones_purged += *deleted;
    done(s, *deleted);
  });
  for (const proto::PurgeRequest::Entry& e : entries) {
    const std::string key = DataKey(map_->ring().KeyPartition(e.key), e.key);
    const uint64_t digest = e.digest;
    WithKeyLock(LockKey(Space::kData, key), [this, key, digest, deleted, all](Unlock unlock) {
      Storage(ReadOp{Space::kData, key}, [this, key, digest, deleted, all, unlock](
                                             Now, StorageResult r) {
        Result<SiblingSet> set = r.status.ok() && r.value
                                     ? proto::DecodeSiblingSet(*r.value, stored_limits_)
                                     : Result<SiblingSet>(Status::NotFound("absent"));
        // Only a set of tombstones unchanged since the owner checked it goes.
        if (!set.ok() || HasLiveValue(*set) || SiblingDigest(*set) != digest) {
          unlock();
          all->One(r.status);
          return;
        }
        WriteOp del;
        del.batch.Delete(Space::kData, key);
        Storage(std::move(del), [this, key, deleted, all, unlock](Now, StorageResult w) {
          if (!w.status.ok()) {
            NoteStoredAfterFailedWrite(key, [all, unlock, status = w.status] {
              unlock();
              all->One(status);
            });
            return;
          }
          NoteStored(key, nullptr);
          ++*deleted;
          unlock();
          all->One(w.status);
        });
      });
    });
  }
}

// ------------------------------------------------------------------ anti-entropy

void NodeCore::AntiEntropyTick(Now now) {
  if (ae_ || !map_ || !trees_ready_ || shutting_down_ || exited_ || disk_low_) return;
  if (StartSwitchSync(now)) return;
  const Ring& ring = map_->ring();
  while (true) {
    if (ae_pos_ >= ae_cycle_.size()) {
      if (!ae_cycle_.empty()) {
        ++ae_cycles_done_;
        ae_cycle_.clear();
        // Catching up, the next round starts at once, unless this one found
        // no replica up to ask (it would only find none again).
        const bool again = catching_up_ && ae_cycle_had_session_;
        ae_next_cycle_ms_ = now.mono_ms + (again ? 0 : options_.ae_cycle_pause_ms);
      }
      if (now.mono_ms < ae_next_cycle_ms_) return;
      ae_cycle_ = ring.PartitionsReplicatedBy(options_.id);
      ae_pos_ = 0;
      ae_cycle_had_session_ = false;
      if (ae_cycle_.empty()) {
        ae_next_cycle_ms_ = now.mono_ms + options_.ae_cycle_pause_ms;
        if (!GainsPartitionsAtSwitch()) EndCatchUp("caught up: no partition to catch up on");
        return;
      }
    }
    const PartitionId p = ae_cycle_[ae_pos_++];
    std::vector<NodeId> peers;
    const std::vector<NodeId> pref = ring.PreferenceList(p);
    // Listed from a ring this node has left since (the round's list is made
    // at its start): what it holds of p is a leftover for handoff.
    if (std::find(pref.begin(), pref.end(), options_.id) == pref.end()) continue;
    for (const NodeId& n : pref) {
      auto not_ready = ae_not_ready_until_.find(n);
      if (not_ready != ae_not_ready_until_.end() && now.mono_ms >= not_ready->second) {
        ae_not_ready_until_.erase(not_ready);
        not_ready = ae_not_ready_until_.end();
      }
      if (n != options_.id && membership_.IsAlive(n, now.mono_ms) && AddressOf(n) &&
          not_ready == ae_not_ready_until_.end()) {
        peers.push_back(n);
      }
    }
    if (peers.empty()) {
      // A partition no other replica holds has nothing to catch up from.
      if (pref.size() == 1) caught_up_.insert(p);
      continue;
    }
    ae_cycle_had_session_ = true;
    StartAeSession(p, peers[ae_rotation_[p]++ % peers.size()], false);
    return;
  }
}

void NodeCore::SettleSwitchSync() {
  bool changed = false;
  for (auto gate = state_.switch_sync.begin(); gate != state_.switch_sync.end();) {
    changed |= std::erase_if(gate->second, [&](const NodeId& n) {
                 std::optional<proto::Member> m = membership_.Find(n);
                 return !m || m->status == proto::MemberStatus::kRemoved;
               }) > 0;
    if (!gate->second.empty()) {
      ++gate;
      continue;
    }
    Log(LogLevel::kDebug, "partition " + std::to_string(gate->first) +
                              " synced with the replicas it had before: serving its reads");
    gate = state_.switch_sync.erase(gate);
    changed = true;
  }
  if (!changed) return;
  if (state_.switch_sync.empty()) {
    Log(LogLevel::kInfo, "every partition taken over at the ring switch synced: serving reads");
  }
  // Unsynced: lost, the waits only run again.
  Persist(false);
}

bool NodeCore::StartSwitchSync(Now now) {
  if (state_.switch_sync.empty() || now.mono_ms < switch_sync_next_ms_) return false;
  SettleSwitchSync();
  std::vector<std::pair<PartitionId, NodeId>> due;
  for (const auto& [p, nodes] : state_.switch_sync) {
    for (const NodeId& n : nodes) {
      if (membership_.IsAlive(n, now.mono_ms) && AddressOf(n)) due.emplace_back(p, n);
    }
  }
  if (due.empty()) return false;
  const auto& [p, peer] = due[switch_sync_turn_++ % due.size()];
  StartAeSession(p, peer, true);
  return true;
}

void NodeCore::StartAeSession(PartitionId p, const NodeId& peer, bool switch_sync) {
  auto s = std::make_shared<AeSession>();
  s->partition = p;
  s->peer = peer;
  s->address = *AddressOf(peer);
  s->switch_sync = switch_sync;
  ae_ = s;
  Background([this, s](std::function<void()> done) {
    s->done = std::move(done);
    if (ae_ != s) {  // the session was abandoned while it waited
      FinishAe(s, Status::Aborted("abandoned"));
      return;
    }
    // The keys one answer lists (with their digests) fit an exchange's
    // bytes, as long as the keys are.
    MerkleComparisonOptions opts;
    opts.fetch_keys_max = std::clamp<size_t>(
        ExchangeBytesMax() / (options_.limits.key_bytes_max + kAeListedKeyOverheadBytes), 1,
        kMerkleFetchKeysMax);
    opts.bucket_keys_max = std::min(opts.bucket_keys_max, opts.fetch_keys_max);
    ApplyTreeUpdates();
    s->comparison = std::make_unique<MerkleComparison>(&TreeFor(s->partition), opts);
    ++stats_.ae_sessions;
    AeRound(s);
  });
}

void NodeCore::AeRound(std::shared_ptr<AeSession> s) {
  ApplyTreeUpdates();  // the comparison reads the partition's tree
  std::optional<MerkleRequest> request = s->comparison->NextRequest();
  if (!request) {
    s->keys = s->comparison->DifferingKeys();
    // A peer listing another partition's key would have it stored here under
    // this one, where no read finds it and no purge covers it.
    const Ring& ring = map_->ring();
    for (const std::string& key : s->keys) {
      if (ring.KeyPartition(key) != s->partition) {
        FinishAe(s, Status::ProtocolError("the peer listed a key of partition " +
                                          std::to_string(ring.KeyPartition(key)) +
                                          " as one of partition " + std::to_string(s->partition)));
        return;
      }
    }
    stats_.ae_keys_differing += s->keys.size();
    AeExchange(s);
    return;
  }
  Call(s->address, proto::AeCompareRequest{s->partition, std::move(*request)},
       [this, s](Now, Result<proto::Message> reply) {
         s->peer_answered = reply.ok();
         Status st = ReplyStatusOf(reply);
         const auto* compare = st.ok() ? std::get_if<proto::AeCompareReply>(&reply->body) : nullptr;
         if (st.ok() && compare == nullptr) {
           st = Status::ProtocolError("unexpected reply to AeCompare");
         }
         if (compare != nullptr) st = PeerMapNotNewer(compare->epoch);
         if (st.ok()) {
           s->peer_catching_up |= compare->catching_up;
           if (!s->peer_epoch) s->peer_epoch = compare->epoch;
           ApplyTreeUpdates();
           st = s->comparison->HandleReply(compare->reply);
         }
         if (!st.ok()) {
           FinishAe(s, st);
           return;
         }
         AeRound(s);
       });
}

// Fetches the peer's versions of one batch of differing keys, merges them
// here, then pushes back the merged sets the peer lacks, so both sides end
// equal. A peer that is catching up on the partition gets no pushes: it
// pulls the same keys in its own round, and pushing would move them twice.
void NodeCore::AeExchange(std::shared_ptr<AeSession> s) {
  if (disk_low_) {
    FinishAe(s, Status::IOError(DiskLowReason() + ": anti-entropy paused"));
    return;
  }
  if (s->next >= s->keys.size()) {
    PurgeTombstones(s);
    return;
  }
  // Up to ae_batch_keys keys, as many as an exchange's bytes hold (one at
  // least).
  size_t n = 0;
  for (size_t bytes = 0; n < options_.ae_batch_keys && s->next + n < s->keys.size(); ++n) {
    bytes += s->keys[s->next + n].size() + kAeListedKeyOverheadBytes;
    if (n > 0 && bytes > ExchangeBytesMax()) break;
  }
  std::vector<std::string> batch(s->keys.begin() + static_cast<std::ptrdiff_t>(s->next),
                                 s->keys.begin() + static_cast<std::ptrdiff_t>(s->next + n));
  s->next += n;
  Call(s->address, proto::FetchRequest{batch},
       [this, s, batch](Now, Result<proto::Message> reply) mutable {
         s->peer_answered = reply.ok();
         Status st = ReplyStatusOf(reply);
         if (st.ok() && !std::holds_alternative<proto::FetchReply>(reply->body)) {
           st = Status::ProtocolError("unexpected reply to Fetch");
         }
         if (st.ok()) st = PeerMapNotNewer(std::get<proto::FetchReply>(reply->body).epoch);
         if (st.ok()) {
           const size_t answered = std::get<proto::FetchReply>(reply->body).entries.size();
           if (answered == 0 || answered > batch.size()) {
             st = Status::ProtocolError("a Fetch reply answered " + std::to_string(answered) +
                                        " of " + std::to_string(batch.size()) + " keys");
           } else {
             // The peer answered a prefix to keep within its byte budget: the
             // rest goes in the next batch.
             s->next -= batch.size() - answered;
             batch.resize(answered);
             const auto& entries = std::get<proto::FetchReply>(reply->body).entries;
             for (size_t i = 0; i < answered && st.ok(); ++i) {
               if (entries[i].key != batch[i]) {
                 st = Status::ProtocolError("a Fetch reply answered a key not asked for");
               }
             }
           }
         }
         if (!st.ok()) {
           FinishAe(s, st);
           return;
         }
         auto fetched = std::make_shared<proto::FetchReply>(
             std::move(std::get<proto::FetchReply>(reply->body)));
         // A key whose merged set here equals the peer's is not pushed back: the
         // peer already holds it.
         auto peer_digests = std::make_shared<std::unordered_map<std::string, uint64_t>>();
         for (const proto::KeyedSiblings& e : fetched->entries) {
           if (!e.siblings.empty()) (*peer_digests)[e.key] = SiblingDigest(e.siblings);
         }
         auto push_back = [this, s, batch, peer_digests](Status merged) {
           if (!merged.ok()) {
             FinishAe(s, merged);
             return;
           }
           if (s->peer_catching_up || s->switch_sync) {
             AeExchange(s);
             return;
           }
           auto entries = std::make_shared<std::vector<proto::KeyedSiblings>>(batch.size());
           auto read = std::make_shared<Countdown>(
               batch.size(), [this, s, entries, peer_digests](Status rs) {
                 if (!rs.ok()) {
                   FinishAe(s, rs);
                   return;
                 }
                 std::erase_if(*entries, [&](const proto::KeyedSiblings& e) {
                   if (e.siblings.empty()) return true;
                   auto it = peer_digests->find(e.key);
                   return it != peer_digests->end() && it->second == SiblingDigest(e.siblings);
                 });
                 auto batches = std::make_shared<std::vector<std::vector<proto::KeyedSiblings>>>();
                 size_t batch_bytes = 0;
                 for (proto::KeyedSiblings& e : *entries) {
                   const size_t bytes = e.key.size() + proto::EncodeSiblingSet(e.siblings).size();
                   stats_.ae_bytes_pushed += bytes - e.key.size();
                   if (batches->empty() || batch_bytes + bytes > ExchangeBytesMax()) {
                     batches->emplace_back();
                     batch_bytes = 0;
                   }
                   batches->back().push_back(std::move(e));
                   batch_bytes += bytes;
                 }
                 AePushRepairs(s, std::move(batches), 0);
               });
           for (size_t i = 0; i < batch.size(); ++i) {
             (*entries)[i].key = batch[i];
             Storage(ReadOp{Space::kData, DataKey(s->partition, batch[i])},
                     [this, entries, read, i](Now, StorageResult r) {
                       if (r.status.ok() && r.value) {
                         Result<SiblingSet> set = proto::DecodeSiblingSet(*r.value, stored_limits_);
                         if (set.ok()) (*entries)[i].siblings = std::move(*set);
                       }
                       read->One(r.status);
                     });
           }
         };
         auto merges = std::make_shared<Countdown>(fetched->entries.size(), push_back);
         for (proto::KeyedSiblings& e : fetched->entries) {
           if (e.siblings.empty() || e.key.empty()) {
             merges->One(Status::OK());
             continue;
           }
           stats_.ae_bytes_fetched += proto::EncodeSiblingSet(e.siblings).size();
           MergeInto(DataKey(s->partition, e.key), std::move(e.siblings), "", false, SIZE_MAX,
                     [merges](Now, Status m) { merges->One(m); });
         }
       });
}

void NodeCore::AePushRepairs(
    std::shared_ptr<AeSession> s,
    std::shared_ptr<std::vector<std::vector<proto::KeyedSiblings>>> batches, size_t next) {
  if (next == batches->size()) {
    AeExchange(s);
    return;
  }
  Call(s->address, proto::PushRequest{proto::PushPurpose::kRepair, std::move((*batches)[next])},
       [this, s, batches, next](Now, Result<proto::Message> ack) {
         s->peer_answered = ack.ok();
         Status as = ReplyStatusOf(ack);
         if (!as.ok()) {
           FinishAe(s, as);
           return;
         }
         AePushRepairs(s, batches, next + 1);
       });
}

// On the partition's owner, after a successful exchange: tombstones older
// than the grace period that every replica holds identically are deleted
// everywhere.
void NodeCore::SendPurges(std::shared_ptr<AeSession> s, PartitionId p,
                          const std::vector<std::string>& others,
                          const std::vector<proto::PurgeRequest::Entry>& confirmed) {
  auto remote = std::make_shared<Countdown>(others.size(), [this, s, p, others,
                                                            confirmed](Status ps) {
    if (!ps.ok()) {
      FinishAe(s, Status::OK());
      return;
    }
    // Every other replica has dropped them (or kept newer data): drop ours.
    PurgeLocal(confirmed, [this, s, p, others](Status, uint64_t deleted) {
      Log(LogLevel::kDebug,
          "purged " + std::to_string(deleted) + " tombstones in partition " + std::to_string(p));
      NextPurgePage(s, others);
    });
  });
  for (const std::string& address : others) {
    Call(address, proto::PurgeRequest{confirmed},
         [remote](Now, Result<proto::Message> ack) { remote->One(ReplyStatusOf(ack)); });
  }
}

void NodeCore::PurgeTombstones(std::shared_ptr<AeSession> s) {
  const PartitionId p = s->partition;
  if (!map_ || map_->ring().Owner(p) != options_.id || map_->next() || s->switch_sync ||
      now_ms_ < last_purge_ms_[p] + options_.purge_interval_ms || last_purge_ms_[p] == 0) {
    if (last_purge_ms_[p] == 0) last_purge_ms_[p] = now_ms_;  // first pass only arms the timer
    FinishAe(s, Status::OK());
    return;
  }
  last_purge_ms_[p] = now_ms_;
  std::vector<std::string> others;
  for (const NodeId& n : map_->ring().PreferenceList(p)) {
    if (n == options_.id) continue;
    std::optional<std::string> addr = AddressOf(n);
    if (!addr || !membership_.IsAlive(n, now_ms_)) {
      FinishAe(s, Status::OK());  // every replica must confirm; try next time
      return;
    }
    others.push_back(*addr);
  }
  s->purge_pages_left = kPurgePagesPerPass;
  PurgePage(s, std::move(others));
}

void NodeCore::NextPurgePage(std::shared_ptr<AeSession> s, std::vector<std::string> others) {
  if (s->purge_pages_left == 0 || purge_after_[s->partition].empty() || ae_ != s || disk_low_ ||
      shutting_down_) {
    FinishAe(s, Status::OK());
    return;
  }
  PurgePage(s, std::move(others));
}

void NodeCore::PurgePage(std::shared_ptr<AeSession> s, std::vector<std::string> others) {
  const PartitionId p = s->partition;
  --s->purge_pages_left;
  // The page's keys go in one Fetch: an exchange's bytes hold them.
  ScanOp scan;
  scan.space = Space::kData;
  scan.options.prefix = PartitionPrefix(p);
  scan.options.after = purge_after_[p];
  scan.options.max_entries = kPurgePageEntries;
  scan.options.max_bytes = ExchangeBytesMax();
  Storage(std::move(scan), [this, s, p, others](Now, StorageResult r) {
    if (!r.status.ok()) {
      FinishAe(s, Status::OK());
      return;
    }
    purge_after_[p] = r.scan.done || r.scan.entries.empty() ? "" : r.scan.entries.back().first;
    struct Candidate {
      std::string key;
      uint64_t digest;
      size_t confirmations = 0;
    };
    auto candidates = std::make_shared<std::vector<Candidate>>();
    for (auto& [k, v] : r.scan.entries) {
      Result<SiblingSet> set = proto::DecodeSiblingSet(v, stored_limits_);
      Result<DataKeyParts> parts = ParseDataKey(k);
      if (!set.ok() || !parts.ok() || set->empty() || HasLiveValue(*set)) continue;
      // Purgeable once its newest stamp is grace plus skew old (compared
      // without a sum that a stamp near 2^64 would wrap).
      const uint64_t age_min = options_.tombstone_grace_ms + options_.clock_skew_max_ms;
      if (wall_ms_ < age_min || NewestTimestamp(*set) > wall_ms_ - age_min) continue;
      candidates->push_back(Candidate{std::string(parts->key), SiblingDigest(*set)});
    }
    if (candidates->empty()) {
      NextPurgePage(s, others);
      return;
    }
    std::vector<std::string> keys;
    for (const Candidate& c : *candidates) keys.push_back(c.key);
    auto purge = [this, s, p, others, candidates](Status fetched) {
      std::vector<proto::PurgeRequest::Entry> confirmed;
      if (fetched.ok()) {
        for (const Candidate& c : *candidates) {
          if (c.confirmations == others.size()) confirmed.push_back({c.key, c.digest});
        }
      }
      if (confirmed.empty()) {
        NextPurgePage(s, others);
        return;
      }
      // This node's tombstones are the last copies once the others purged:
      // synced first, as each replica syncs its own before it purges.
      Storage(WriteOp{WriteBatch{}, true}, [this, s, p, others, confirmed](Now, StorageResult w) {
        if (!w.status.ok()) {
          FinishAe(s, Status::OK());
          return;
        }
        SendPurges(s, p, others, confirmed);
      });
    };
    auto fetch = std::make_shared<Countdown>(others.size(), purge);
    for (const std::string& address : others) {
      Call(address, proto::FetchRequest{keys}, [candidates, fetch](Now, Result<proto::Message> reply) {
        Status st = ReplyStatusOf(reply);
        if (st.ok()) {
          if (const auto* fr = std::get_if<proto::FetchReply>(&reply->body)) {
            for (const proto::KeyedSiblings& e : fr->entries) {
              for (Candidate& c : *candidates) {
                if (c.key == e.key && !e.siblings.empty() && SiblingDigest(e.siblings) == c.digest) {
                  ++c.confirmations;
                }
              }
            }
          }
        }
        fetch->One(st);
      });
    }
  });
}

Status NodeCore::PeerMapNotNewer(uint64_t peer_epoch) const {
  if (peer_epoch <= epoch()) return Status::OK();
  return Status::Aborted("the peer has a newer cluster map (epoch " + std::to_string(peer_epoch) +
                         ", this node's " + std::to_string(epoch()) +
                         "): the session waits until gossip brings it here");
}

void NodeCore::FinishSwitchSync(const AeSession& s) {
  auto gate = state_.switch_sync.find(s.partition);
  if (!map_ || gate == state_.switch_sync.end() || !gate->second.count(s.peer)) return;
  if (!s.peer_epoch || *s.peer_epoch < map_->ring().epoch()) {
    // The peer has not switched yet, so it may still take the partition's
    // writes as a replica: sync again once it has.
    switch_sync_next_ms_ = now_ms_ + options_.gossip_interval_ms;
    return;
  }
  gate->second.erase(s.peer);
  SettleSwitchSync();
}

void NodeCore::FinishAe(std::shared_ptr<AeSession> s, Status status) {
  if (s->done) {
    auto done = std::move(s->done);
    s->done = nullptr;
    done();
  }
  if (ae_ == s) ae_.reset();
  if (!status.ok()) {
    const bool unavailable = status.code() == StatusCode::kUnavailable;
    if (s->peer_answered && unavailable) {
      // Up, and not ready to compare (building its trees): asked again after
      // a round's pause rather than at every partition of the round.
      ae_not_ready_until_[s->peer] = now_ms_ + options_.ae_cycle_pause_ms;
      Log(LogLevel::kDebug, "anti-entropy: " + s->peer + " is not ready (" + status.ToString() +
                                "); asked again in " + std::to_string(options_.ae_cycle_pause_ms) +
                                " ms");
    } else if (status.code() != StatusCode::kAborted) {
      // A peer's malformed answer is a bug or a version mismatch to see.
      Log(status.code() == StatusCode::kProtocolError ? LogLevel::kWarn : LogLevel::kDebug,
          "anti-entropy of partition " + std::to_string(s->partition) + " with " + s->peer + ": " +
              status.ToString());
    }
    if (!s->peer_answered && (unavailable || status.IsTimeout())) {
      membership_.Contact(s->peer, false, now_ms_);
    }
    if (s->switch_sync) switch_sync_next_ms_ = now_ms_ + options_.gossip_interval_ms;
  } else if (s->switch_sync) {
    FinishSwitchSync(*s);
  } else {
    if (!s->keys.empty()) {
      Log(LogLevel::kInfo, "anti-entropy of partition " + std::to_string(s->partition) + " with " +
                               s->peer + ": " + std::to_string(s->keys.size()) + " keys repaired");
    }
    if (catching_up_) {
      CatchUpProgress& progress = catch_up_progress_[s->partition];
      progress.synced.insert(s->peer);
      progress.with_current |= !s->peer_catching_up;
      bool every = true, every_up = true;
      for (const NodeId& n : map_->ring().PreferenceList(s->partition)) {
        if (n == options_.id) continue;
        const bool synced = progress.synced.count(n) > 0;
        every &= synced;
        every_up &= synced || !membership_.IsAlive(n, now_ms_);
      }
      if (every || (progress.with_current && every_up)) caught_up_.insert(s->partition);
      bool all = true;
      for (PartitionId p : map_->ring().PartitionsReplicatedBy(options_.id)) all &= caught_up_.count(p) > 0;
      if (all && !GainsPartitionsAtSwitch())
        EndCatchUp("caught up by anti-entropy: serving reads again");
    }
  }
  if (!exited_ && !shutting_down_) AntiEntropyTick(Now{now_ms_, wall_ms_});
}

}  // namespace dynamo::node
