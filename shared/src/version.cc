#include "dynamo/version.h"

#include <algorithm>
#include <numeric>
#include <tuple>

#include "dynamo/placement.h"

namespace dynamo {
namespace {

// Total order on a version's content, used only to pick deterministically
// between two versions that claim the same dot (which only corruption or a
// buggy peer can produce).
bool ContentLess(const Version& a, const Version& b) {
  auto key = [](const Version& v) {
    return std::tie(v.tombstone, v.lww, v.timestamp_ms, v.value);
  };
  if (key(a) != key(b)) return key(a) < key(b);
  const auto& ea = a.context.entries();
  const auto& eb = b.context.entries();
  return std::lexicographical_compare(
      ea.begin(), ea.end(), eb.begin(), eb.end(), [](const ClockEntry& x, const ClockEntry& y) {
        return std::tie(x.actor, x.counter, x.timestamp_ms) <
               std::tie(y.actor, y.counter, y.timestamp_ms);
      });
}

bool DotThenContentLess(const Version& a, const Version& b) {
  if (a.dot != b.dot) return a.dot < b.dot;
  return ContentLess(a, b);
}

}  // namespace

Result<VersionVector> VersionVector::FromEntries(std::vector<ClockEntry> entries) {
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].counter == 0) return Status::InvalidArgument("version vector entry with counter 0");
    if (i > 0 && entries[i - 1].actor >= entries[i].actor) {
      return Status::InvalidArgument("version vector entries not sorted by actor");
    }
  }
  VersionVector vv;
  vv.entries_ = std::move(entries);
  return vv;
}

uint64_t VersionVector::Get(ActorId actor) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), actor,
                             [](const ClockEntry& e, ActorId a) { return e.actor < a; });
  return it != entries_.end() && it->actor == actor ? it->counter : 0;
}

bool VersionVector::Descends(const VersionVector& other) const {
  for (const ClockEntry& e : other.entries_) {
    if (Get(e.actor) < e.counter) return false;
  }
  return true;
}

void VersionVector::Add(const Dot& dot, uint64_t timestamp_ms) {
  if (dot.counter == 0) return;
  auto it = std::lower_bound(entries_.begin(), entries_.end(), dot.actor,
                             [](const ClockEntry& e, ActorId a) { return e.actor < a; });
  if (it != entries_.end() && it->actor == dot.actor) {
    if (dot.counter > it->counter) {
      it->counter = dot.counter;
      it->timestamp_ms = timestamp_ms;
    } else if (dot.counter == it->counter) {
      it->timestamp_ms = std::max(it->timestamp_ms, timestamp_ms);
    }
  } else {
    entries_.insert(it, ClockEntry{dot.actor, dot.counter, timestamp_ms});
  }
}

void VersionVector::Merge(const VersionVector& other) {
  std::vector<ClockEntry> out;
  out.reserve(entries_.size() + other.entries_.size());
  auto a = entries_.begin();
  auto b = other.entries_.begin();
  while (a != entries_.end() || b != other.entries_.end()) {
    if (b == other.entries_.end() || (a != entries_.end() && a->actor < b->actor)) {
      out.push_back(*a++);
    } else if (a == entries_.end() || b->actor < a->actor) {
      out.push_back(*b++);
    } else {
      ClockEntry e = *a;
      if (b->counter > e.counter) {
        e = *b;
      } else if (b->counter == e.counter) {
        e.timestamp_ms = std::max(e.timestamp_ms, b->timestamp_ms);
      }
      out.push_back(e);
      ++a;
      ++b;
    }
  }
  entries_ = std::move(out);
}

void VersionVector::Truncate(size_t max_entries, const std::function<bool(ActorId)>& retired) {
  if (entries_.size() <= max_entries) return;
  std::vector<size_t> order(entries_.size());
  std::iota(order.begin(), order.end(), 0);
  auto rank = [&](size_t i) {
    const ClockEntry& e = entries_[i];
    bool gone = retired && retired(e.actor);
    return std::make_tuple(!gone, e.timestamp_ms, e.actor);
  };
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return rank(x) < rank(y); });
  std::vector<bool> drop(entries_.size(), false);
  for (size_t k = 0; k < entries_.size() - max_entries; ++k) drop[order[k]] = true;
  std::vector<ClockEntry> kept;
  kept.reserve(max_entries);
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!drop[i]) kept.push_back(entries_[i]);
  }
  entries_ = std::move(kept);
}

bool LwwLess(const Version& a, const Version& b) {
  if (a.dot.counter != b.dot.counter) return a.dot.counter < b.dot.counter;
  if (a.dot.actor != b.dot.actor) return a.dot.actor < b.dot.actor;
  return ContentLess(a, b);
}

bool Supersedes(const Version& w, const Version& v) {
  if (w.lww) return !v.lww || LwwLess(v, w);
  if (v.lww) return false;
  return w.context.Covers(v.dot);
}

namespace {

// Whether versions[from] covers versions[to] (never itself).
bool CoversOther(const std::vector<const Version*>& versions, size_t from, size_t to) {
  return from != to && versions[from]->context.Covers(versions[to]->dot);
}

bool CoveredByAnother(const std::vector<const Version*>& versions, size_t i) {
  for (size_t j = 0; j < versions.size(); ++j) {
    if (CoversOther(versions, j, i)) return true;
  }
  return false;
}

// The merge of `versions` (distinct dots) when some may cover each other in a
// cycle (only a reused dot or a bad peer makes one): the versions of a cycle
// supersede none of each other, so a merge keeps them all rather than
// dropping every one. The strongly connected components of the cover graph
// (Tarjan's, without recursion) settle it: a version goes when a version of
// another component covers it. At most 2 n^2 cover tests.
SiblingSet KeepAcrossCycles(const std::vector<const Version*>& versions) {
  const size_t n = versions.size();
  auto covers = [&](size_t from, size_t to) { return CoversOther(versions, from, to); };
  constexpr size_t kUnseen = SIZE_MAX;
  std::vector<size_t> index(n, kUnseen), low(n, 0), component(n, kUnseen), next(n, 0);
  std::vector<size_t> stack, path;
  std::vector<bool> on_stack(n, false);
  size_t counter = 0, components = 0;
  auto visit = [&](size_t v) {
    index[v] = low[v] = counter++;
    stack.push_back(v);
    on_stack[v] = true;
    path.push_back(v);
  };
  for (size_t root = 0; root < n; ++root) {
    if (index[root] != kUnseen) continue;
    visit(root);
    while (!path.empty()) {
      const size_t v = path.back();
      if (next[v] < n) {
        const size_t w = next[v]++;
        if (!covers(v, w)) continue;
        if (index[w] == kUnseen) {
          visit(w);
        } else if (on_stack[w]) {
          low[v] = std::min(low[v], index[w]);
        }
        continue;
      }
      path.pop_back();
      if (!path.empty()) low[path.back()] = std::min(low[path.back()], low[v]);
      if (low[v] == index[v]) {
        size_t w;
        do {
          w = stack.back();
          stack.pop_back();
          on_stack[w] = false;
          component[w] = components;
        } while (w != v);
        ++components;
      }
    }
  }
  SiblingSet out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    bool dropped = false;
    for (size_t j = 0; j < n && !dropped; ++j) {
      dropped = component[j] != component[i] && covers(j, i);
    }
    if (!dropped) out.push_back(*versions[i]);
  }
  return out;
}

}  // namespace

SiblingSet MergeSiblings(const SiblingSet& a, const SiblingSet& b) {
  const Version* best_lww = nullptr;
  for (const SiblingSet* set : {&a, &b}) {
    for (const Version& v : *set) {
      if (v.lww && (best_lww == nullptr || LwwLess(*best_lww, v))) best_lww = &v;
    }
  }
  if (best_lww != nullptr) {
    SiblingSet out;
    out.reserve(1);
    out.push_back(*best_lww);
    return out;
  }
  std::vector<const Version*> all;
  all.reserve(a.size() + b.size());
  for (const SiblingSet* set : {&a, &b}) {
    for (const Version& v : *set) all.push_back(&v);
  }
  std::sort(all.begin(), all.end(),
            [](const Version* x, const Version* y) { return DotThenContentLess(*x, *y); });
  // Keep the greatest content per dot.
  std::vector<const Version*> unique;
  unique.reserve(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    if (i + 1 < all.size() && all[i + 1]->dot == all[i]->dot) continue;
    unique.push_back(all[i]);
  }
  // A covered version goes, unless it covers one too: then it may be on a
  // cycle, which the slower merge keeps (n^2 cover tests here, 2 n^2 there).
  SiblingSet out;
  out.reserve(unique.size());
  for (size_t i = 0; i < unique.size(); ++i) {
    if (!CoveredByAnother(unique, i)) {
      out.push_back(*unique[i]);
      continue;
    }
    for (size_t j = 0; j < unique.size(); ++j) {
      if (CoversOther(unique, i, j)) return KeepAcrossCycles(unique);
    }
  }
  return out;
}

SiblingSet Canonicalize(const SiblingSet& set) { return MergeSiblings(set, {}); }

VersionVector ContextOf(const SiblingSet& set) {
  VersionVector vv;
  for (const Version& v : set) {
    if (v.lww) continue;
    vv.Merge(v.context);
    vv.Add(v.dot, v.timestamp_ms);
  }
  return vv;
}

bool HasLiveValue(const SiblingSet& set) {
  return std::any_of(set.begin(), set.end(), [](const Version& v) { return !v.tombstone; });
}

bool MentionsActor(const SiblingSet& set, ActorId actor) {
  return std::any_of(set.begin(), set.end(), [actor](const Version& v) {
    return v.dot.actor == actor || v.context.Get(actor) != 0;
  });
}

uint64_t SiblingDigest(const SiblingSet& set) {
  uint64_t h = Mix64(set.size() + 0x5bd1e995);
  for (const Version& v : set) {
    uint64_t flags = (v.tombstone ? 1u : 0u) | (v.lww ? 2u : 0u);
    uint64_t vh = Hash64(v.value, Mix64(v.dot.actor) ^ Mix64(v.dot.counter + 1) ^
                                      Mix64(v.timestamp_ms + 2) ^ flags);
    for (const ClockEntry& e : v.context.entries()) {
      vh = Mix64(vh ^ Mix64(e.actor + 3)) + Mix64(e.counter ^ Mix64(e.timestamp_ms + 4));
    }
    h = Mix64(h ^ vh) * 0x9e3779b97f4a7c15ULL;
  }
  return Mix64(h);
}

Result<CoordinatorResult> CoordinatorUpdate(const SiblingSet& local, ActorId actor,
                                            uint64_t counter_floor, const WriteIntent& intent,
                                            const CoordinatorOptions& options) {
  uint64_t seen = intent.context.Get(actor);
  for (const Version& v : local) {
    if (v.lww) {
      return Status::InvalidArgument(
          "the key holds last-write-wins versions; write it in lww mode");
    }
    if (v.dot.actor == actor) seen = std::max(seen, v.dot.counter);
    seen = std::max(seen, v.context.Get(actor));
  }
  if (seen == UINT64_MAX) return Status::InvalidArgument("actor counter exhausted");

  CoordinatorResult result;
  Version& w = result.written;
  w.dot = Dot{actor, std::max(counter_floor, seen + 1)};
  w.context = intent.context;
  w.context.Truncate(options.clock_entries_max, options.retired);
  // Never stamped before what it supersedes, whatever the clocks of the
  // nodes that stamped those: a tombstone then outlives, by the same grace
  // period, every version it deletes (a hint of one of them included).
  w.timestamp_ms = intent.timestamp_ms;
  for (const ClockEntry& e : intent.context.entries())
    w.timestamp_ms = std::max(w.timestamp_ms, e.timestamp_ms);
  for (const Version& v : local) {
    if (intent.context.Covers(v.dot)) w.timestamp_ms = std::max(w.timestamp_ms, v.timestamp_ms);
  }
  w.tombstone = intent.tombstone;
  if (!intent.tombstone) w.value = intent.value;

  result.siblings.reserve(local.size() + 1);
  for (const Version& v : local) {
    if (!intent.context.Covers(v.dot)) result.siblings.push_back(v);
  }
  result.siblings.push_back(w);
  std::sort(result.siblings.begin(), result.siblings.end(), DotThenContentLess);
  if (result.siblings.size() > options.siblings_max) {
    return Status::Busy("write would leave " + std::to_string(result.siblings.size()) +
                        " siblings, over the limit of " + std::to_string(options.siblings_max) +
                        "; read the key and write back a resolved value");
  }
  return result;
}

}  // namespace dynamo
