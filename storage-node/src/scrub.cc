#include "dynamo/node/scrub.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <system_error>

#include "dynamo/cluster_map.h"
#include "dynamo/node/keys.h"
#include "dynamo/proto/codec.h"

namespace dynamo::node {
namespace {

namespace fs = std::filesystem;

// Reports only the first few lost units by name in the summary line.
constexpr size_t kSummaryNamesMax = 8;
// The damaged database is kept as `dir` + this + a UTC time.
constexpr std::string_view kCorruptInfix = ".corrupt-";
// The mark holds at most a path.
constexpr uintmax_t kScrubMarkBytesMax = 4096;

bool IsCorruption(const Status& s) { return s.code() == StatusCode::kCorruption; }

struct Copied {
  uint64_t entries = 0;
  uint64_t bytes = 0;
};

// Reads every entry of `space` under `prefix` (all of it for an empty prefix)
// and writes each page into `to`, when given. On an error part-way, what was
// written of the prefix is deleted from `to` again.
Result<Copied> CopyPrefix(Engine& from, Engine* to, Space space, const std::string& prefix) {
  Copied copied;
  ScanOptions scan;
  scan.prefix = prefix;
  while (true) {
    Result<ScanResult> page = from.Scan(space, scan);
    if (!page.ok()) {
      if (to != nullptr && copied.entries > 0) {
        Status undo = to->DeletePrefix(space, prefix, false);
        if (!undo.ok()) return undo;
      }
      return page.status();
    }
    WriteBatch batch;
    for (auto& [key, value] : page->entries) {
      ++copied.entries;
      copied.bytes += key.size() + value.size();
      if (to != nullptr) batch.Put(space, key, std::move(value));
    }
    if (to != nullptr && !batch.empty()) {
      Status s = to->Write(batch, false);
      if (!s.ok()) return s;
    }
    if (page->done || page->entries.empty()) return copied;
    scan.after = page->entries.back().first;
  }
}

void NoteLost(ScrubReport& report, const Status& s) {
  if (report.first_error.empty()) report.first_error = s.ToString();
}

void AddCopied(ScrubReport& report, const Copied& c) {
  report.entries += c.entries;
  report.bytes += c.bytes;
}

// The first key of `space` after `after`: nullopt when none, Corruption when
// the block holding it fails its checksum.
Result<std::optional<std::string>> NextKey(Engine& from, Space space, const std::string& after) {
  ScanOptions probe;
  probe.after = after;
  probe.max_entries = 1;
  Result<ScanResult> r = from.Scan(space, probe);
  if (!r.ok()) return r.status();
  if (r->entries.empty()) return std::optional<std::string>();
  return std::optional<std::string>(std::move(r->entries.front().first));
}

Status ScrubData(Engine& from, Engine* to, ScrubReport& report) {
  // Partition p's keys are all greater than its bare prefix (keys are never
  // empty), so a probe after it finds p's first key or a later partition's.
  for (uint64_t p = 0; p < kMaxPartitions; ++p) {
    Result<std::optional<std::string>> next =
        NextKey(from, Space::kData, PartitionPrefix(static_cast<PartitionId>(p)));
    if (next.ok()) {
      if (!*next) break;
      Result<DataKeyParts> parts = ParseDataKey(**next);
      if (!parts.ok()) return parts.status().Annotate("scrub");
      p = parts->partition;
    } else if (!IsCorruption(next.status())) {
      return next.status();
    }
    // After a failed probe the bad block holds p's first key or a later
    // partition's: scanning p alone tells which.
    const auto partition = static_cast<PartitionId>(p);
    Result<Copied> copied = CopyPrefix(from, to, Space::kData, PartitionPrefix(partition));
    if (copied.ok()) {
      AddCopied(report, *copied);
      report.partitions += copied->entries > 0;
    } else if (IsCorruption(copied.status())) {
      report.lost_partitions.push_back(partition);
      NoteLost(report, copied.status());
    } else {
      return copied.status();
    }
  }
  return Status::OK();
}

// Hint-owner prefix to node id, of every node HintOwnersNamedIn names.
using NamedOwners = std::map<std::string, NodeId>;

NamedOwners NamedHintOwners(Engine& from) {
  NamedOwners named;
  for (NodeId& id : HintOwnersNamedIn(from)) {
    std::string prefix = HintOwnerPrefix(id);
    named.emplace(std::move(prefix), std::move(id));
  }
  return named;
}

// Hints are copied one owner at a time. A probe for the next owner that meets
// an unreadable block cannot read whose hint is there, so the scrub goes on
// with the next owner `named` holds: that owner's hints are kept if they read
// back whole, and a later probe that succeeds shows that the unreadable hint
// was held for a node named nowhere.
Status ScrubHints(Engine& from, Engine* to, const NamedOwners& named, ScrubReport& report) {
  std::string after;
  bool unread_before = false;  // the last probe failed, and no owner's copy did
  while (true) {
    Result<std::optional<std::string>> next = NextKey(from, Space::kHints, after);
    std::string prefix;
    NodeId owner;
    if (next.ok()) {
      if (unread_before) report.unnamed_hints_lost = true;
      unread_before = false;
      if (!*next) return Status::OK();
      Result<HintKeyParts> parts = ParseHintKey(**next);
      if (!parts.ok()) return parts.status().Annotate("scrub");
      owner = NodeId(parts->owner);
      prefix = HintOwnerPrefix(owner);
    } else if (IsCorruption(next.status())) {
      NoteLost(report, next.status());
      auto it = named.lower_bound(after);
      if (it == named.end()) {
        report.unnamed_hints_lost = true;
        return Status::OK();
      }
      prefix = it->first;
      owner = it->second;
      unread_before = true;
    } else {
      return next.status();
    }
    Result<Copied> copied = CopyPrefix(from, to, Space::kHints, prefix);
    if (copied.ok()) {
      AddCopied(report, *copied);
    } else if (IsCorruption(copied.status())) {
      report.lost_hint_owners.push_back(owner);
      NoteLost(report, copied.status());
      unread_before = false;
    } else {
      return copied.status();
    }
    // Owner ids never end in 0xff, so PrefixEnd is the next owner's prefix
    // or less, and no hint key equals it.
    after = PrefixEnd(prefix);
  }
}

Status ErrnoStatus(std::string_view what, const std::string& path) {
  return Status::IOError(std::string(what) + " " + path + ": " + std::strerror(errno));
}

Status SyncDirectory(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path);
  Status s = ::fsync(fd) == 0 ? Status::OK() : ErrnoStatus("fsync", path);
  ::close(fd);
  return s;
}

Status Rename(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) return Status::IOError("rename " + from + " to " + to + ": " + ec.message());
  return Status::OK();
}

std::string ParentOf(const std::string& dir) {
  fs::path parent = fs::path(dir).lexically_normal().parent_path();
  if (parent.empty()) parent = ".";
  return parent.string();
}

std::string CorruptName(const std::string& dir) {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  const std::string base = dir + std::string(kCorruptInfix) + stamp;
  std::string name = base;
  for (int n = 2; fs::exists(name); ++n) name = base + "-" + std::to_string(n);
  return name;
}

std::string ScrubDir(const std::string& dir) { return dir + ".scrub"; }
std::string NeededMark(const std::string& dir) { return dir + ".scrub-needed"; }

Status ClearNeededMark(const std::string& dir) {
  std::error_code ec;
  const bool removed = fs::remove(NeededMark(dir), ec);
  if (ec) return Status::IOError("remove " + NeededMark(dir) + ": " + ec.message());
  return removed ? SyncDirectory(ParentOf(dir)) : Status::OK();
}

}  // namespace

std::string ScrubReport::Summary() const {
  std::string out = std::to_string(entries) + " entries (" + std::to_string(bytes) +
                    " bytes) read back intact, " + std::to_string(partitions) +
                    " partitions with data whole";
  if (clean()) return out + "; nothing unreadable";
  out += "; left out: " + std::to_string(lost_partitions.size()) + " partitions";
  for (size_t i = 0; i < lost_partitions.size() && i < kSummaryNamesMax; ++i) {
    out += (i == 0 ? " (" : ", ") + std::to_string(lost_partitions[i]);
  }
  if (lost_partitions.size() > kSummaryNamesMax) out += ", ...";
  if (!lost_partitions.empty()) out += ")";
  out += ", the hints held for " + std::to_string(lost_hint_owners.size()) + " nodes";
  if (unnamed_hints_lost) out += " and hints of a node no stored map or member list names";
  return out + "; first error: " + first_error;
}

std::vector<NodeId> HintOwnersNamedIn(Engine& engine) {
  std::set<NodeId> named;
  auto add = [&](const NodeId& id) {
    if (!id.empty() && id.size() <= kMaxNodeIdBytes) named.insert(id);
  };
  Result<std::optional<std::string>> map = engine.Get(Space::kMeta, kMetaClusterMap);
  if (map.ok() && *map) {
    Result<ClusterMap> parsed = ClusterMap::Deserialize(**map);
    if (parsed.ok()) {
      for (const NodeId& id : parsed->ring().nodes()) add(id);
      if (parsed->next()) {
        for (const NodeId& id : parsed->next()->nodes()) add(id);
      }
    }
  }
  Result<std::optional<std::string>> members = engine.Get(Space::kMeta, kMetaMembers);
  if (members.ok() && *members) {
    Result<std::vector<proto::Member>> parsed = proto::DecodeMembers(**members, proto::Limits{});
    if (parsed.ok()) {
      for (const proto::Member& m : *parsed) add(m.id);
    }
  }
  return {named.begin(), named.end()};
}

Result<ScrubReport> Scrub(Engine& from, Engine* to) {
  ScrubReport report;
  Result<Copied> meta = CopyPrefix(from, to, Space::kMeta, "");
  if (!meta.ok()) {
    if (!IsCorruption(meta.status())) return meta.status();
    return Status::Corruption("the node's metadata (its identity) cannot be read: " +
                              meta.status().ToString());
  }
  AddCopied(report, *meta);
  Status s = ScrubHints(from, to, NamedHintOwners(from), report);
  if (s.ok()) s = ScrubData(from, to, report);
  if (s.ok() && to != nullptr && !report.lost_partitions.empty()) {
    // The node must not answer reads of what it left out as if it had none.
    WriteBatch mark;
    mark.Put(Space::kMeta, std::string(kMetaCatchingUp), "1");
    s = to->Write(mark, false);
  }
  if (!s.ok()) return s;
  return report;
}

namespace {

// Writes the scrub mark, holding `kept_aside` (may be empty), synced.
Status WriteNeededMark(const std::string& dir, const std::string& kept_aside) {
  const std::string mark = NeededMark(dir);
  int fd = ::open(mark.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("create", mark);
  Status s;
  if (!kept_aside.empty() && ::write(fd, kept_aside.data(), kept_aside.size()) !=
                                 static_cast<ssize_t>(kept_aside.size())) {
    s = ErrnoStatus("write", mark);
  }
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("fsync", mark);
  ::close(fd);
  if (!s.ok()) return s;
  return SyncDirectory(ParentOf(dir));
}

}  // namespace

Status MarkScrubNeeded(const std::string& dir) { return WriteNeededMark(dir, ""); }

std::optional<std::string> InterruptedScrubSwap(const std::string& dir) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(NeededMark(dir), ec);
  if (ec || size == 0 || size > kScrubMarkBytesMax) return std::nullopt;
  std::ifstream in(NeededMark(dir), std::ios::binary);
  std::string name((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (name.empty() || name.size() > kScrubMarkBytesMax) return std::nullopt;
  return name;
}

bool ScrubNeeded(const std::string& dir) {
  std::error_code ec;
  return fs::exists(NeededMark(dir), ec);
}

std::vector<std::string> KeptAside(const std::string& dir) {
  std::vector<std::string> out;
  const fs::path path = fs::path(dir).lexically_normal();
  const std::string prefix = path.filename().string() + std::string(kCorruptInfix);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(ParentOf(dir), ec)) {
    if (entry.path().filename().string().starts_with(prefix)) out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<bool> FinishInterruptedScrub(const std::string& dir) {
  const std::string copy = ScrubDir(dir);
  std::error_code ec;
  if (!fs::exists(copy, ec)) return false;
  if (fs::exists(dir, ec)) {
    fs::remove_all(copy, ec);
    if (ec) return Status::IOError("remove " + copy + ": " + ec.message());
  } else {
    Status s = Rename(copy, dir);
    if (!s.ok()) return s;
  }
  Status s = SyncDirectory(ParentOf(dir));
  if (!s.ok()) return s;
  return true;
}

Result<ScrubOutcome> ScrubRocksDb(const std::string& dir, const RocksDbOptions& options) {
  ScrubOutcome out;
  {
    Result<std::unique_ptr<Engine>> from = OpenRocksDb(dir, options);
    if (!from.ok()) return from.status();
    Result<ScrubReport> checked = Scrub(**from, nullptr);
    if (!checked.ok()) return checked.status();
    out.report = std::move(*checked);
    if (out.report.clean()) {
      Status cleared = ClearNeededMark(dir);
      if (!cleared.ok()) return cleared;
      return out;
    }

    Result<std::unique_ptr<Engine>> to = OpenRocksDb(ScrubDir(dir), options);
    if (!to.ok()) return to.status();
    Result<ScrubReport> copied = Scrub(**from, to->get());
    if (!copied.ok()) return copied.status();
    out.report = std::move(*copied);
    Status synced = (*to)->Sync();
    if (!synced.ok()) return synced;
  }
  // The copy is whole and durable: from here on a crash leaves it to
  // FinishInterruptedScrub, and the mark names the copy kept aside, so the
  // next start finishes this scrub rather than taking it for an earlier one.
  out.kept_aside = CorruptName(dir);
  Status s = WriteNeededMark(dir, out.kept_aside);
  if (s.ok()) s = Rename(dir, out.kept_aside);
  if (s.ok()) s = Rename(ScrubDir(dir), dir);
  if (s.ok()) s = SyncDirectory(ParentOf(dir));
  if (s.ok()) s = ClearNeededMark(dir);
  if (!s.ok()) return s;
  return out;
}

}  // namespace dynamo::node
