// Versions and causality: dotted version vectors (Preguica et al.; Riak's
// dvvset follows the same idea).
//
// Every stored version carries a *dot*, the event that created it, and the
// *context*, the version vector of what its writer had seen. A key holds a set
// of concurrent versions (siblings). Version w supersedes version v when w's
// context covers v's dot. Tombstones are versions whose value is deleted.
//
// Dots are assigned by the coordinating storage node, atomically with its
// local write (CoordinatorUpdate). A node's counters come from a node-wide
// floor that only grows, so a dot is never issued twice: a node that lost its
// data cannot reissue a counter that other replicas already hold (riak_kv#679).
// A node issues dot (a, c) on a key only while its local state records every
// earlier dot of `a` on that key (as a version, or covered by one), because a
// context built from the new version claims all of them. A node that may have
// lost such a record (a restart after unsynced writes, keys deleted after a
// handoff) therefore continues under a fresh actor id.
//
// Replicas receive the coordinator's whole resulting sibling set, not only the
// new version, and merge it into theirs (MergeSiblings). This keeps the rule
// that makes a summarised context safe: whoever holds a dot (a, c) also holds,
// or holds a version that supersedes, every earlier dot of actor a on that key.
//
// Clock truncation (paper 4.4): a context with more than `max_entries`
// entries loses entries, first those of actors that have left the ring, then
// the oldest by timestamp. Truncation only ever makes a context cover *less*.
// It can therefore make a version that was superseded reappear as a sibling
// (a stale value or a deleted one offered again to the resolver), but it can
// never make a write look superseded when it was not, so it never loses an
// acknowledged write; nor can it cause a dot to be reissued, because counters
// come from the node's floor, not from the clock.
//
// Last-write-wins mode: versions are stamped by the writing client, with the
// dot (client id, timestamp in microseconds) and the `lww` flag. Merging a set
// that holds any LWW version keeps only the greatest LWW version by (timestamp,
// client id): concurrent writes are discarded by design. Causal and LWW writes
// to the same key do not mix; an LWW version present beats causal ones.
//
// All functions are pure. Thread-safety: values.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dynamo/status.h"

namespace dynamo {

using ActorId = uint64_t;

// Entries a context keeps after truncation (paper: 10). Default for
// CoordinatorUpdate.
inline constexpr size_t kDefaultClockEntriesMax = 10;
// Siblings a coordinated write may leave on a key; beyond it the write is
// refused until a reader resolves them.
inline constexpr size_t kDefaultSiblingsMax = 100;

struct Dot {
  ActorId actor = 0;
  uint64_t counter = 0;
  friend auto operator<=>(const Dot&, const Dot&) = default;
};

struct ClockEntry {
  ActorId actor = 0;
  uint64_t counter = 0;
  // When the actor last advanced this entry, ms since the Unix epoch; used
  // only to pick entries for truncation.
  uint64_t timestamp_ms = 0;
  friend bool operator==(const ClockEntry&, const ClockEntry&) = default;
};

// A version vector: the highest counter seen per actor, sorted by actor.
class VersionVector {
 public:
  VersionVector() = default;
  // Validates that entries are sorted by actor without duplicates and have
  // non-zero counters; InvalidArgument otherwise.
  static Result<VersionVector> FromEntries(std::vector<ClockEntry> entries);

  // The counter seen for `actor`, 0 if none.
  uint64_t Get(ActorId actor) const;
  // True when the dot's counter is at most what this vector holds for its actor.
  bool Covers(const Dot& dot) const { return dot.counter != 0 && Get(dot.actor) >= dot.counter; }
  // True when this vector is at or above `other` for every actor.
  bool Descends(const VersionVector& other) const;
  // Raises the entry of dot.actor to dot.counter (no-op if already higher).
  void Add(const Dot& dot, uint64_t timestamp_ms);
  // Per-actor maximum with `other`.
  void Merge(const VersionVector& other);
  // Drops entries until at most `max_entries` remain: first entries whose
  // actor `retired` returns true for, then the oldest by timestamp (ties by
  // actor). `retired` may be empty.
  void Truncate(size_t max_entries, const std::function<bool(ActorId)>& retired = {});

  const std::vector<ClockEntry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  friend bool operator==(const VersionVector&, const VersionVector&) = default;

 private:
  std::vector<ClockEntry> entries_;
};

struct Version {
  Dot dot;
  // What the writer had seen; empty for LWW versions.
  VersionVector context;
  // Causal: the coordinator's wall clock in ms, informational (tombstone
  // grace). LWW: unused; the stamp is dot.counter.
  uint64_t timestamp_ms = 0;
  bool tombstone = false;
  bool lww = false;
  std::string value;  // empty for tombstones
  friend bool operator==(const Version&, const Version&) = default;
};

// A key's versions. Canonical form (what every function here returns): sorted
// by dot, no duplicate dots, no version superseded by another.
using SiblingSet = std::vector<Version>;

// True when `w` supersedes `v` (w's context covers v's dot; for LWW versions,
// w's stamp is greater).
bool Supersedes(const Version& w, const Version& v);

// LWW order: by stamp (dot.counter), then client id (dot.actor), then content.
bool LwwLess(const Version& a, const Version& b);

// The merge of two sibling sets: their union without superseded versions. A
// replica applies it to every incoming set. Commutative, associative and
// idempotent (the inputs need not be canonical; the output is). Versions
// that cover each other, directly or through others (a cycle, which only a
// reused dot or a bad peer makes), are all kept.
SiblingSet MergeSiblings(const SiblingSet& a, const SiblingSet& b);
// The canonical form of `set`: MergeSiblings(set, {}).
SiblingSet Canonicalize(const SiblingSet& set);

// The context to hand a reader of `set`: the join of every version's context
// and dot. Writing with it supersedes every version in `set`.
VersionVector ContextOf(const SiblingSet& set);

// True when `set` holds at least one version that is not a tombstone.
bool HasLiveValue(const SiblingSet& set);

// True when a version of `set` has a dot of `actor` or a context entry for it:
// the set records events of `actor` on its key.
bool MentionsActor(const SiblingSet& set, ActorId actor);

// A stable 64-bit digest of a sibling set's contents (dots, contexts, flags,
// values), equal on every replica holding the same set. For Merkle trees.
uint64_t SiblingDigest(const SiblingSet& set);

// What a client asks the coordinator to write.
struct WriteIntent {
  VersionVector context;  // from the client's last read; empty for a blind write
  std::string value;
  bool tombstone = false;
  // The coordinator's wall clock. The written version takes the greatest of
  // it and the timestamps of what the context covers.
  uint64_t timestamp_ms = 0;
};

struct CoordinatorOptions {
  size_t clock_entries_max = kDefaultClockEntriesMax;
  size_t siblings_max = kDefaultSiblingsMax;
  // Whether an actor's clock entries may be dropped first (it left the ring).
  std::function<bool(ActorId)> retired;
};

struct CoordinatorResult {
  SiblingSet siblings;  // the key's new set on the coordinator; replicate all of it
  Version written;      // the new version
};

// The coordinator's write: a new dot (actor, c) with c above every counter the
// actor has issued for the key (as far as `local` and the context show) and
// at least `counter_floor`; siblings the context covers are dropped, others
// are kept. The caller persists the set and raises its floor above c.
// Busy if the result would hold more than options.siblings_max versions;
// InvalidArgument if `local` holds LWW versions (the key is in LWW mode).
Result<CoordinatorResult> CoordinatorUpdate(const SiblingSet& local, ActorId actor,
                                            uint64_t counter_floor, const WriteIntent& intent,
                                            const CoordinatorOptions& options = {});

}  // namespace dynamo
