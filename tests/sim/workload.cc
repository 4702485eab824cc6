#include "sim/workload.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "dynamo/node/keys.h"
#include "dynamo/node/scrub.h"
#include "sim/sim_client.h"

namespace dynamo::sim {
namespace {

// Longer than any run (the heal phase ends by 120 s of virtual time).
constexpr uint64_t kNoAntiEntropyPauseMs = 24ull * 3600 * 1000;

std::set<std::string> Elements(const SiblingSet& set) {
  std::set<std::string> out;
  for (const Version& v : set) {
    if (v.tombstone) continue;
    std::stringstream ss(v.value);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (!item.empty()) out.insert(item);
    }
  }
  return out;
}

std::string ClockText(const VersionVector& vv) {
  std::string out = "{";
  for (const ClockEntry& e : vv.entries()) out += std::to_string(e.actor % 1000) + ":" + std::to_string(e.counter) + " ";
  return out + "}";
}

std::string SetText(const SiblingSet& set) {
  std::string out;
  for (const Version& v : set) {
    out += std::to_string(v.dot.actor % 1000) + ":" + std::to_string(v.dot.counter) +
           (v.tombstone ? " tomb" : " live") + " ctx" + ClockText(v.context) + "; ";
  }
  return out;
}

std::string Join(const std::set<std::string>& items) {
  std::string out;
  for (const std::string& i : items) out += (out.empty() ? "" : ",") + i;
  return out;
}

struct DeleteKey {
  std::string key;
  int state = 0;  // 0 unused, 1 in progress, 2 finished
  bool write_acked = false;
  VersionVector write_clock;
  bool delete_acked = false;
  bool delete_covers_write = false;
};

SimOptions SimOptionsFor(const WorkloadConfig& config) {
  SimOptions o;
  o.scan_answer_delay_ms = config.scan_answer_delay_ms;
  return o;
}

class Run {
 public:
  Run(uint64_t seed, const WorkloadConfig& config)
      : config_(config), sim_(seed * 0x9e3779b97f4a7c15ULL + 1, SimOptionsFor(config)), rng_(seed) {
    report_.seed = seed;
    report_.r = config.r;
    report_.w = config.w;
  }

  WorkloadReport Go() {
    if (!Form()) return Finish();
    StartClients();
    StartFaults();
    sim_.RunFor(config_.fault_phase_ms);
    Heal();
    // Clients finish their operations on the healed cluster.
    if (!sim_.RunUntil([&] { return clients_done_ == config_.clients; }, 120000)) {
      Fail("clients did not finish");
      return Finish();
    }
    for (auto& c : clients_) c->Stop();
    const uint64_t healed_at = sim_.now();
    std::string why;
    bool quiet = false;
    while (sim_.now() < healed_at + config_.heal_phase_max_ms) {
      sim_.RunFor(250);
      why.clear();
      if ((quiet = Quiet(&why))) break;
    }
    report_.heal_ms = sim_.now() - healed_at;
    if (!quiet) {
      Fail("no convergence " + std::to_string(config_.heal_phase_max_ms) + " ms after healing: " + why);
      return Finish();
    }
    if (config_.short_grace) {
      // Every tombstone is past its grace period and skew bound, and purge
      // passes (one a second) ran over it; then quiet again.
      sim_.RunFor(kShortGraceMs + SkewMaxMs() + 3000);
      const uint64_t purged_at = sim_.now();
      while (!(quiet = Quiet(&why)) && sim_.now() < purged_at + config_.heal_phase_max_ms) {
        sim_.RunFor(250);
      }
      if (!quiet) {
        Fail("no convergence " + std::to_string(config_.heal_phase_max_ms) +
             " ms after the purges: " + why);
        return Finish();
      }
    }
    Check();
    return Finish();
  }

 private:
  std::string Node(int i) const { return "n" + std::to_string(i); }

  void Tweak(node::NodeOptions& o) const {
    o.partitions = config_.partitions;
    o.create_quiet_rounds = node::NodeOptions{}.create_quiet_rounds;
    if (config_.short_grace) {
      o.tombstone_grace_ms = kShortGraceMs;
      o.clock_skew_max_ms = SkewMaxMs();
    }
    o.tree_check_interval_ms =
        config_.tree_checks && !config_.tree_checks_control ? kTreeCheckIntervalMs : 0;
    if (!config_.anti_entropy) o.ae_cycle_pause_ms = kNoAntiEntropyPauseMs;
  }

  uint64_t SkewMaxMs() const { return 2 * static_cast<uint64_t>(config_.clock_skew_ms) + 1000; }

  bool Form() {
    auto tweak = [this](node::NodeOptions& o) { Tweak(o); };
    sim_.AddNode(Node(1), {}, tweak);
    for (int i = 2; i <= config_.nodes; ++i) sim_.AddNode(Node(i), {Node(1)}, tweak);
    next_node_ = config_.nodes + 1;
    members_ = config_.nodes;
    if (!sim_.RunUntil([&] { return MapsAgree(nullptr) && RingSize() == static_cast<size_t>(config_.nodes); },
                       60000)) {
      Fail("the cluster did not form");
      return false;
    }
    return true;
  }

  size_t RingSize() {
    for (const std::string& id : sim_.ids()) {
      if (sim_.IsUp(id) && sim_.core(id).map()) return sim_.core(id).map()->ring().nodes().size();
    }
    return 0;
  }

  bool MapsAgree(std::string* why) {
    std::optional<uint64_t> hash;
    for (const std::string& id : sim_.ids()) {
      if (!sim_.IsUp(id)) continue;
      const auto& map = sim_.core(id).map();
      if (!map || map->next()) {
        if (why) *why = id + " has a change in progress";
        return false;
      }
      if (hash && *hash != map->ContentHash()) {
        if (why) *why = "maps differ";
        return false;
      }
      hash = map->ContentHash();
    }
    return hash.has_value();
  }

  // ---------------------------------------------------------------- clients

  void StartClients() {
    std::vector<std::string> seeds;
    for (int i = 1; i <= config_.nodes; ++i) seeds.push_back(Node(i));
    for (int k = 0; k < config_.set_keys; ++k) set_keys_.push_back("set" + std::to_string(k));
    for (int k = 0; k < config_.delete_keys; ++k) deletes_.push_back(DeleteKey{"del" + std::to_string(k)});
    SimClientOptions opts;
    opts.lww = config_.lww;
    opts.durable_writes = config_.durable_writes;
    opts.ranked_coordinator = config_.ranked_coordinator;
    opts.r = config_.r;
    opts.w = config_.w;
    opts.refused_when_down = config_.refused_when_down;
    opts.queue_full_per_mille = config_.queue_full_per_mille;
    const uint64_t refresh_ms = opts.refresh_ms;
    for (int c = 0; c < config_.clients; ++c) {
      opts.refresh_ms = c == 0 && config_.stale_map_client ? kStaleMapRefreshMs : refresh_ms;
      clients_.push_back(std::make_unique<SimClient>(sim_, seeds, opts, 1000 + c));
      clients_.back()->Start();
      ops_left_.push_back(config_.ops_per_client);
      // The stale client starts once the first membership change may have
      // switched, still with the map it pulled at the start.
      const uint64_t start_ms = c == 0 && config_.stale_map_client
                                    ? config_.fault_phase_ms / 2 + 1000 + rng_() % 2000
                                    : 50 + rng_() % 50;
      sim_.At(sim_.now() + start_ms, [this, c] { NextOp(c); });
    }
  }

  void NextOp(int c) {
    if (ops_left_[c]-- <= 0) {
      ++clients_done_;
      return;
    }
    const uint64_t gap_max =
        config_.spread_ops ? 2 * config_.fault_phase_ms / std::max(config_.ops_per_client, 1) : 19;
    auto then = [this, c, gap_max] {
      report_.load_end_ms = std::max(report_.load_end_ms, sim_.now() - fault_start_);
      sim_.At(sim_.now() + rng_() % (gap_max + 1), [this, c] { NextOp(c); });
    };
    DeleteKey* d = nullptr;
    if (rng_() % 4 == 0) {
      for (DeleteKey& k : deletes_) {
        if (k.state == 0) {
          d = &k;
          break;
        }
      }
    }
    if (d != nullptr) {
      DeleteFlow(c, d, then);
    } else {
      AddElement(c, then);
    }
  }

  void AddElement(int c, std::function<void()> then) {
    const std::string key = set_keys_[rng_() % set_keys_.size()];
    const std::string element = "c" + std::to_string(c) + "e" + std::to_string(next_element_++);
    SimClient& client = *clients_[c];
    const VersionVector acked_before = acked_clock_[key];
    client.Get(key, [this, c, key, element, then, acked_before](SimClient::ReadResult r) {
      if (!r.status.ok()) {
        then();
        return;
      }
      // A read that missed an acknowledged write (it answered from replicas
      // that lost their unsynced copy, or from fallbacks) makes the write
      // that follows concurrent with it: one more possible sibling.
      if (!ContextOf(r.siblings).Descends(acked_before)) {
        ++stale_reads_[key];
        ++report_.stale_reads;
      }
      std::set<std::string> items = Elements(r.siblings);
      items.insert(element);
      attempted_[key].insert(element);
      clients_[c]->Put(key, Join(items), false, ContextOf(r.siblings), r.fastest, r.reached,
                       [this, key, element, then](SimClient::WriteResult w) {
                         if (w.status.ok()) {
                           acked_[key].insert(element);
                           acked_clock_[key].Merge(w.clock);
                           // Its own dot too, which the clock may leave out:
                           // a read that misses the write is stale.
                           if (w.dot) acked_clock_[key].Add(*w.dot, 0);
                         } else if (w.status.in_doubt()) {
                           ++in_doubt_[key];
                           ++report_.in_doubt;
                         } else {
                           not_applied_[key].insert(element);
                           ++report_.not_applied;
                         }
                         then();
                       });
    });
  }

  void DeleteFlow(int c, DeleteKey* d, std::function<void()> then) {
    d->state = 1;
    SimClient& client = *clients_[c];
    client.Put(d->key, "doomed", false, {}, "", {}, [this, c, d, then](SimClient::WriteResult w) {
      if (!w.status.ok()) {
        d->state = 2;
        then();
        return;
      }
      d->write_acked = true;
      d->write_clock = w.clock;
      clients_[c]->Get(d->key, [this, c, d, then](SimClient::ReadResult r) {
        if (!r.status.ok()) {
          d->state = 2;
          then();
          return;
        }
        VersionVector ctx = ContextOf(r.siblings);
        const bool covers = config_.lww ? true : ctx.Descends(d->write_clock);
        clients_[c]->Put(d->key, "", true, ctx, r.fastest, r.reached,
                         [d, covers, then](SimClient::WriteResult del) {
                           d->state = 2;
                           d->delete_acked = del.status.ok();
                           d->delete_covers_write = covers;
                           then();
                         });
      });
    });
  }

  // ---------------------------------------------------------------- faults

  void StartFaults() {
    sim_.SetFaults(config_.network);
    if (config_.clock_skew_ms != 0) {
      for (int i = 1; i <= config_.nodes; ++i) {
        const int64_t skew = static_cast<int64_t>(rng_() % (2 * config_.clock_skew_ms + 1)) - config_.clock_skew_ms;
        sim_.SkewClock(Node(i), skew);
      }
    }
    fault_start_ = sim_.now();
    fault_end_ = sim_.now() + config_.fault_phase_ms;
    if (config_.membership_change) {
      uint64_t at = sim_.now() + config_.fault_phase_ms / 2;
      sim_.At(at, [this] { ChangeMembership(); });
      for (int i = 0; i < config_.more_membership_changes; ++i) {
        at += 1000 + rng_() % 2000;
        sim_.At(at, [this] { ChangeMembershipAgain(); });
      }
    }
    ScheduleFault();
  }

  void ScheduleFault() {
    const uint64_t at = sim_.now() + config_.fault_interval_ms / 2 + rng_() % config_.fault_interval_ms;
    if (at >= fault_end_) return;
    sim_.At(at, [this] {
      InjectFault();
      ScheduleFault();
    });
  }

  std::vector<std::string> LiveNodes() {
    std::vector<std::string> out;
    for (const std::string& id : sim_.ids()) {
      if (sim_.IsUp(id)) out.push_back(id);
    }
    return out;
  }

  void InjectFault() {
    std::vector<std::string> live = LiveNodes();
    if (live.size() < 2) return;
    const std::string a = live[rng_() % live.size()];
    std::string b = live[rng_() % live.size()];
    switch (rng_() % 3) {
      case 0:
        if (config_.crashes && crashed_.empty() && live.size() > 2) {
          ++report_.faults;
          if (config_.power_loss && report_.power_losses == 0) {
            PowerLoss(live);
            break;
          }
          // With scrubs or a lost disk, a crash is a stop that syncs on its
          // way out (LosesUnsynced), and with scrubs the first may be a stop
          // on a block of a set key that fails its checksum, after which the
          // node is scrubbed before it starts again.
          // One lost copy at most: a second corrupt replica of the same
          // partition, or a crash that lost a replica's unsynced copy of a
          // write, could take every copy of an acknowledged write, which no
          // quorum of W=2 survives.
          // A lost disk is that copy too; not of a node asked to leave,
          // which with a new disk joins afresh.
          const bool wipe =
              config_.lost_disk && !corrupted_ && !leaving_.count(a) && rng_() % 3 == 0;
          const bool corrupt = !wipe && config_.scrubs && !corrupted_ && rng_() % 3 == 0;
          if (corrupt && config_.tree_checks && rng_() % 2 == 0) {
            // Instead, the running node's storage loses a set key without an
            // error; a write of the key or a tree check must find the loss.
            corrupted_ = true;
            const std::string key = set_keys_[rng_() % set_keys_.size()];
            if (!sim_.Stored(a, key)) break;
            node::WriteBatch drop;
            drop.Delete(node::Space::kData,
                        node::DataKey(KeyPartition(key, config_.partitions), key));
            if (sim_.engine(a).Write(drop, true).ok()) ++silently_lost_;
            break;
          }
          CountStats(a);
          sim_.Crash(a, LosesUnsynced());
          if (wipe) {
            corrupted_ = true;
            ++report_.disks_lost;
            sim_.Wipe(a);
          }
          if (corrupt) {
            corrupted_ = true;
            // Where the node holds hints, the bad block may be the first
            // hint held for a node instead: a scrub must keep every other
            // node's hints the stored state names.
            std::optional<NodeId> owner;
            if (!sim_.HintKeys(a).empty() && rng_() % 2 == 0) {
              owner = sim_.CorruptFirstHint(a, rng_());
            }
            if (owner) {
              hint_scrub_[a] = *owner;
            } else {
              sim_.CorruptDataKey(a, set_keys_[rng_() % set_keys_.size()]);
            }
            scrub_.insert(a);
          }
          crashed_.insert(a);
          crashed_at_[a] = sim_.now();
          uint64_t down_ms = 200 + rng_() % 1800;
          // Healing may start it sooner: Restart counts the nodes really
          // kept away past the grace period.
          if (config_.short_grace && rng_() % 2 == 0)
            down_ms = kShortGraceMs + 1000 + rng_() % 3000;
          sim_.At(sim_.now() + down_ms, [this, a] { Restart(a); });
        }
        break;
      case 1:
        if (config_.cuts && a != b) {
          ++report_.faults;
          // Or between a node and a client, which then reaches the node's
          // replicas only through others (sloppy quorum, hints).
          if (config_.client_cuts && rng_() % 2 == 0) {
            b = clients_[rng_() % clients_.size()]->Name();
            ++report_.client_cuts;
          }
          const bool one_way = rng_() % 3 == 0;
          if (one_way) {
            sim_.CutOneWay(a, b);
          } else {
            sim_.Cut(a, b);
          }
          sim_.At(sim_.now() + 300 + rng_() % 2700, [this, a, b, one_way] {
            if (one_way) {
              sim_.CutOneWay(a, b, false);
            } else {
              sim_.Cut(a, b, false);
            }
          });
        }
        break;
      default:
        if (config_.full_disks && rng_() % 2 == 0) {
          ++report_.faults;
          ++report_.disks_filled;
          sim_.core(a).OnDiskSpace(node::Now{sim_.now(), sim_.WallMs(a)}, 0);
          sim_.At(sim_.now() + 300 + rng_() % 2700, [this, a] {
            // A node restarted meanwhile was told of no full disk.
            if (sim_.IsUp(a)) {
              sim_.core(a).OnDiskSpace(node::Now{sim_.now(), sim_.WallMs(a)}, UINT64_MAX);
            }
          });
        } else if (config_.pauses) {
          ++report_.faults;
          sim_.Pause(a, 200 + rng_() % 1800);
        }
    }
  }

  // Counts what a node's core found before the core goes (a crash) or at the end.
  void CountStats(const std::string& id) {
    const node::NodeStats& stats = sim_.core(id).stats();
    report_.tombstones_purged += stats.tombstones_purged;
    tree_keys_corrected_ += stats.tree_keys_corrected;
    report_.trees_checked += stats.trees_checked;
    report_.refused_not_replica += stats.requests_refused_not_replica;
    report_.refused_disk_low += stats.requests_refused_disk_low;
  }

  void PowerLoss(const std::vector<std::string>& live) {
    ++report_.power_losses;
    for (const std::string& id : live) {
      CountStats(id);
      sim_.Crash(id, true);
      crashed_.insert(id);
      crashed_at_[id] = sim_.now();
    }
    sim_.At(sim_.now() + 200 + rng_() % 1800, [this, live] {
      for (const std::string& id : live) Restart(id);
    });
  }

  void Restart(const std::string& id) {
    if (!crashed_.count(id) || removing_.count(id)) return;
    crashed_.erase(id);
    if (config_.short_grace && sim_.now() > crashed_at_[id] + kShortGraceMs) {
      ++report_.away_past_grace;
    }
    if (scrub_.erase(id)) {
      const std::set<std::string> hints = sim_.HintKeys(id);
      const std::vector<NodeId> named = node::HintOwnersNamedIn(sim_.engine(id));
      const node::ScrubReport scrubbed = sim_.Scrub(id);
      report_.partitions_scrubbed += scrubbed.lost_partitions.size();
      report_.hint_owners_scrubbed += scrubbed.lost_hint_owners.size();
      auto bad = hint_scrub_.find(id);
      const NodeId owner = bad == hint_scrub_.end() ? NodeId() : bad->second;
      if (bad != hint_scrub_.end()) hint_scrub_.erase(bad);
      const std::set<std::string> kept = sim_.HintKeys(id);
      for (const std::string& key : hints) {
        Result<node::HintKeyParts> parts = node::ParseHintKey(key);
        if (!parts.ok()) continue;
        const NodeId held_for(parts->owner);
        if (held_for == owner) continue;
        const bool named_here = std::binary_search(named.begin(), named.end(), held_for);
        if (kept.count(key)) {
          if (named_here && !owner.empty()) ++report_.hints_kept_past_a_bad_hint;
          continue;
        }
        if (named_here) {
          Fail(id + "'s scrub dropped a readable hint held for " + held_for +
               ", which its stored state names (" + scrubbed.Summary() + ")");
          break;
        }
      }
    }
    if (!sim_.IsUp(id) && !sim_.Exited(id)) sim_.Restart(id);
  }

  void ChangeMembership() {
    ++report_.faults;
    if (rng_() % 2 == 0 || config_.nodes < 4) {
      AddMember();
      return;
    }
    Leave();
  }

  void ChangeMembershipAgain() {
    ++report_.faults;
    const uint64_t kind = rng_() % 3;
    if (kind == 0 || members_ <= 3) {
      AddMember();
    } else if (kind == 1 || !config_.lost_disk || corrupted_ || !crashed_.empty()) {
      Leave();
    } else {
      Remove();
    }
  }

  void AddMember() {
    ++report_.membership_changes;
    ++members_;
    const std::string id = Node(next_node_++);
    sim_.AddNode(id, {Node(1)}, [this](node::NodeOptions& o) { Tweak(o); });
  }

  // Node 1 takes the admin requests, and is never the node that goes.
  std::vector<std::string> Removable() {
    std::vector<std::string> live = LiveNodes();
    std::erase(live, Node(1));
    std::erase_if(live, [this](const std::string& id) { return leaving_.count(id) > 0; });
    return live;
  }

  void Leave() {
    std::vector<std::string> live = Removable();
    if (live.empty()) return;
    ++report_.membership_changes;
    --members_;
    const std::string leaving = live[rng_() % live.size()];
    leaving_.insert(leaving);
    sim_.Send(Node(1), proto::AdminRequest{proto::AdminOp::kLeave, leaving},
              [this, leaving](Result<proto::Message> r) {
                // With node 1 down it may have been applied: counted as such,
                // which keeps the ring at three nodes or more.
                if (!sim_.IsUp(Node(1)) || Applied(r, leaving, proto::MemberStatus::kLeaving))
                  return;
                leaving_.erase(leaving);
                ++members_;
              });
  }

  // Whether a crash loses the node's unsynced writes: not in runs that lose
  // a copy otherwise (a scrub, a lost disk), since no quorum of W=2 survives
  // two lost copies (WorkloadConfig::lost_disk).
  bool LosesUnsynced() const { return !config_.scrubs && !config_.lost_disk; }

  // Whether an admin request to node 1 about `id` took effect: answered, or
  // its reply lost but node 1 holds the status (or one past it).
  bool Applied(const Result<proto::Message>& r, const std::string& id, proto::MemberStatus status) {
    if (r.ok() && std::holds_alternative<proto::AdminReply>(r->body)) return true;
    if (!sim_.IsUp(Node(1))) return false;
    std::optional<proto::Member> m = sim_.core(Node(1)).membership().Find(id);
    return m && m->status >= status;
  }

  // A node crashes for good: kept down, it is removed once node 1 takes it
  // for down (or, after a few refusals, it restarts after all).
  void Remove() {
    std::vector<std::string> live = Removable();
    if (live.size() < 2) return;
    ++report_.membership_changes;
    --members_;
    const std::string gone = live[rng_() % live.size()];
    corrupted_ = true;
    CountStats(gone);
    sim_.Crash(gone, LosesUnsynced());
    crashed_.insert(gone);
    crashed_at_[gone] = sim_.now();
    removing_.insert(gone);
    leaving_.insert(gone);
    sim_.At(sim_.now() + 3000, [this, gone] { AskRemoval(gone, 5); });
  }

  void AskRemoval(const std::string& gone, int tries) {
    sim_.Send(Node(1), proto::AdminRequest{proto::AdminOp::kRemove, gone},
              [this, gone, tries](Result<proto::Message> r) {
                if (Applied(r, gone, proto::MemberStatus::kRemoved)) {
                  ++report_.disks_lost;
                  removing_.erase(gone);
                  crashed_.erase(gone);
                  return;
                }
                if (tries > 1) {
                  sim_.At(sim_.now() + 1000, [this, gone, tries] { AskRemoval(gone, tries - 1); });
                  return;
                }
                removing_.erase(gone);
                leaving_.erase(gone);
                ++members_;
                Restart(gone);
              });
  }

  void Heal() {
    sim_.SetFaults({});
    sim_.HealAll();
    for (const std::string& id : std::vector<std::string>(crashed_.begin(), crashed_.end())) Restart(id);
  }

  // ---------------------------------------------------------------- checks

  bool Quiet(std::string* why) {
    if (!MapsAgree(why)) return false;
    std::string any;
    for (const std::string& id : sim_.ids()) {
      if (!sim_.IsUp(id)) continue;
      any = id;
      node::NodeCore& core = sim_.core(id);
      if (!core.trees_ready() || core.catching_up()) {
        *why = id + " is not ready";
        return false;
      }
      if (sim_.engine(id).size(node::Space::kHints) != 0) {
        *why = id + " still holds hints";
        return false;
      }
    }
    const Ring& ring = sim_.core(any).map()->ring();
    for (const NodeId& n : ring.nodes()) {
      if (!sim_.IsUp(n)) {
        *why = n + " is in the ring but down";
        return false;
      }
    }
    // Every node's Merkle trees hold what its storage holds: anti-entropy
    // can only repair what the trees show, so a key storage lost without an
    // error is repaired once the node found the loss (at a write of the key
    // or a tree check).
    for (const std::string& id : sim_.ids()) {
      if (!sim_.IsUp(id)) continue;
      if (std::optional<PartitionId> p = sim_.TreeDifferingFromStorage(id)) {
        *why =
            id + "'s Merkle tree of partition " + std::to_string(*p) + " differs from its storage";
        return false;
      }
    }
    for (PartitionId p = 0; p < ring.partition_count(); ++p) {
      std::vector<NodeId> pref = ring.PreferenceList(p);
      std::optional<MerkleSummary> root;
      for (const NodeId& n : pref) {
        MerkleSummary r = sim_.core(n).MerkleRoot(p);
        if (root && !(*root == r)) {
          *why = "partition " + std::to_string(p) + " differs between replicas";
          return false;
        }
        root = r;
      }
      for (const std::string& id : sim_.ids()) {
        if (!sim_.IsUp(id) || std::find(pref.begin(), pref.end(), id) != pref.end()) continue;
        node::ScanOptions probe;
        probe.prefix = node::PartitionPrefix(p);
        probe.max_entries = 1;
        Result<node::ScanResult> r = sim_.engine(id).Scan(node::Space::kData, probe);
        if (r.ok() && !r->entries.empty()) {
          *why = id + " still holds data of partition " + std::to_string(p);
          return false;
        }
      }
    }
    return true;
  }

  void Check() {
    std::string any;
    for (const std::string& id : sim_.ids()) {
      if (sim_.IsUp(id)) any = id;
    }
    const Ring& ring = sim_.core(any).map()->ring();
    for (const std::string& id : sim_.ids()) {
      if (sim_.IsUp(id) || sim_.Exited(id)) CountStats(id);
    }
    if (tree_keys_corrected_ > silently_lost_) {
      Fail("tree checks found " + std::to_string(tree_keys_corrected_) +
           " keys whose Merkle tree entry storage contradicted, and storage lost " +
           std::to_string(silently_lost_) + " without an error");
    }
    auto replicas_of = [&](const std::string& key) {
      std::vector<SiblingSet> sets;
      for (const NodeId& n : ring.PreferenceList(ring.KeyPartition(key))) {
        std::optional<SiblingSet> s = sim_.Stored(n, key);
        sets.push_back(s ? *s : SiblingSet{});
      }
      return sets;
    };
    for (const std::string& key : set_keys_) {
      std::vector<SiblingSet> sets = replicas_of(key);
      for (size_t i = 1; i < sets.size(); ++i) {
        if (sets[i] != sets[0]) Fail(key + " differs between its replicas");
      }
      const std::set<std::string> present = Elements(sets[0]);
      for (const std::string& e : acked_[key]) {
        ++report_.acknowledged;
        if (!present.count(e)) {
          ++report_.lost;
          if (!config_.lww) Fail("acknowledged element " + e + " of " + key + " was lost");
        }
      }
      for (const std::string& e : present) {
        if (!attempted_[key].count(e)) Fail("element " + e + " of " + key + " was never written");
        if (not_applied_[key].count(e)) {
          Fail("element " + e + " of " + key +
               " is present, though its write failed as not applied (not in doubt)");
        }
      }
      report_.max_siblings = std::max(report_.max_siblings, sets[0].size());
      const size_t writers = static_cast<size_t>(config_.clients) + in_doubt_[key];
      if (sets[0].size() > writers) ++report_.keys_past_writers;
      const size_t bound = writers + stale_reads_[key];
      if (!config_.lww && sets[0].size() > bound) {
        Fail(key + " holds " + std::to_string(sets[0].size()) + " siblings, more than " +
             std::to_string(bound) + " possible writers");
      }
    }
    for (const DeleteKey& d : deletes_) {
      if (!(d.write_acked && d.delete_acked && d.delete_covers_write)) continue;
      ++report_.deletes_checked;
      for (const SiblingSet& s : replicas_of(d.key)) {
        if (HasLiveValue(s)) {
          ++report_.resurrected;
          std::string detail = "deleted key " + d.key + " holds a live value again; write clock " +
                               ClockText(d.write_clock) + ", replicas hold:";
          for (const SiblingSet& r : replicas_of(d.key)) detail += " [" + SetText(r) + "]";
          Fail(detail);
          break;
        }
      }
    }
  }

  void Fail(const std::string& why) {
    report_.ok = false;
    report_.failures.push_back(why);
  }

  WorkloadReport Finish() {
    report_.trace_hash = sim_.trace_hash();
    report_.keys_silently_lost = silently_lost_;
    report_.messages = sim_.messages();
    for (const auto& c : clients_) {
      report_.refused_unsent += c->refused_unsent();
      report_.coordinator_retries += c->coordinator_retries();
      report_.redirects += c->redirects();
      report_.late_coordinator_answers += c->late_coordinator_answers();
    }
    if (!report_.ok) report_.failures.push_back("node log tail:\n" + sim_.LogTail());
    return report_;
  }

  WorkloadConfig config_;
  SimCluster sim_;
  std::mt19937_64 rng_;
  WorkloadReport report_;
  std::vector<std::unique_ptr<SimClient>> clients_;
  std::vector<int> ops_left_;
  int clients_done_ = 0;
  std::vector<std::string> set_keys_;
  std::vector<DeleteKey> deletes_;
  std::map<std::string, std::set<std::string>> acked_;
  std::map<std::string, size_t> in_doubt_;
  std::map<std::string, VersionVector> acked_clock_;  // clocks of acknowledged writes, merged
  std::map<std::string, size_t> stale_reads_;         // reads that missed an acknowledged write
  std::map<std::string, std::set<std::string>> attempted_;    // per key
  std::map<std::string, std::set<std::string>> not_applied_;  // per key
  uint64_t fault_start_ = 0;
  std::map<std::string, uint64_t> crashed_at_;  // the last crash of each node
  uint64_t next_element_ = 0;
  std::set<std::string> crashed_;
  std::set<std::string> scrub_;  // crashed with a corrupt key: scrubbed before the restart
  std::map<std::string, NodeId>
      hint_scrub_;               // of those, the ones whose bad key is a hint: its node
  bool corrupted_ = false;       // a corrupt stop happened in this run
  uint64_t tree_keys_corrected_ = 0;  // by the nodes' tree checks, crashed cores included
  uint64_t silently_lost_ = 0;        // set keys a running node's storage lost without an error
  uint64_t fault_end_ = 0;
  int next_node_ = 0;
  int members_ = 0;                 // ring members once the changes asked for are made
  std::set<std::string> leaving_;   // asked to leave, or crashed to be removed
  std::set<std::string> removing_;  // kept down until node 1 removes it
};

}  // namespace

WorkloadConfig ConfigForSeed(uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x5eed5eed5eedULL);
  WorkloadConfig c;
  c.nodes = 3 + static_cast<int>(rng() % 3);
  c.clients = 2 + static_cast<int>(rng() % 3);
  c.set_keys = 2 + static_cast<int>(rng() % 4);
  c.ops_per_client = 25 + static_cast<int>(rng() % 25);
  c.network.drop = rng() % 3 == 0 ? 0 : static_cast<double>(rng() % 50) / 1000.0;
  c.network.duplicate = rng() % 3 == 0 ? static_cast<double>(rng() % 30) / 1000.0 : 0;
  c.network.jitter_ms = rng() % 20;
  c.crashes = rng() % 4 != 0;
  c.cuts = rng() % 3 != 0;
  c.pauses = rng() % 3 != 0;
  const int64_t skews[] = {0, 1000, 60000};
  c.clock_skew_ms = skews[rng() % 3];
  c.membership_change = c.nodes >= 4 && rng() % 3 == 0;
  c.durable_writes = c.crashes || rng() % 2 == 0;
  c.ranked_coordinator = rng() % 2 == 0;
  c.scrubs = c.crashes && rng() % 2 == 0;
  c.tree_checks = rng() % 2 == 0;
  switch (rng() % 8) {
    case 0:
      c.w = c.scrubs ? 2 : 1;
      break;
    case 1:
      c.w = 3;
      break;
    case 2:
      c.r = 1;
      break;
    case 3:
      c.r = 3;
      break;
    default:
      break;
  }
  c.refused_when_down = rng() % 2 == 0;
  c.queue_full_per_mille = rng() % 4 == 0 ? 20 : 0;
  c.scan_answer_delay_ms = rng() % 3 == 0 ? 1 + rng() % 20 : 0;
  // Drawn last, so that seeds which draw neither run as before.
  if (c.membership_change) c.more_membership_changes = static_cast<int>(rng() % 3);
  c.lost_disk = c.crashes && c.w >= 2 && rng() % 4 == 0;
  c.stale_map_client = c.membership_change && rng() % 2 == 0;
  c.full_disks = rng() % 4 == 0;
  c.spread_ops = rng() % 2 == 0;
  c.power_loss = c.crashes && c.durable_writes && !c.scrubs && !c.lost_disk && rng() % 2 == 0;
  c.short_grace = c.clock_skew_ms <= 1000 && rng() % 4 == 0;
  c.client_cuts = c.cuts && rng() % 2 == 0;
  return c;
}

std::string WorkloadReport::Summary() const {
  std::ostringstream os;
  os << "SEED=" << seed << " " << (ok ? "ok" : "FAILED") << " (R=" << r << " W=" << w
     << "): " << acknowledged << " acknowledged adds, " << lost << " lost, " << in_doubt
     << " in doubt, " << not_applied << " not applied, " << stale_reads << " stale reads, "
     << keys_past_writers << " keys with siblings past their writers, " << deletes_checked
     << " deletes checked, " << resurrected << " resurrected, max " << max_siblings << " siblings, "
     << faults << " faults (" << membership_changes << " membership changes, " << disks_lost
     << " disks lost, " << disks_filled << " disks filled, " << power_losses
     << " power losses, " << away_past_grace << " away past the grace period), "
     << tombstones_purged << " tombstones purged, " << client_cuts << " cuts of a client, load until " << load_end_ms << " ms, " << messages << " messages, "
     << refused_unsent << " requests refused unsent, " << refused_not_replica
     << " refused as no replica, " << refused_disk_low << " refused for a full disk, " << redirects
     << " redirects, " << coordinator_retries << " coordinator retries, "
     << late_coordinator_answers << " coordinators answered past the deadline, "
     << partitions_scrubbed << " partitions and " << hint_owners_scrubbed
     << " nodes' hints scrubbed away (" << hints_kept_past_a_bad_hint
     << " hints kept past an unreadable one), " << keys_silently_lost << " keys silently lost, "
     << trees_checked << " trees checked, quiet " << heal_ms << " ms after healing, trace "
     << std::hex << trace_hash;
  for (const std::string& f : failures) os << "\n  " << f;
  return os.str();
}

WorkloadReport RunWorkload(uint64_t seed, const WorkloadConfig& config) { return Run(seed, config).Go(); }

}  // namespace dynamo::sim
