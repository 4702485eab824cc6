// One load of the cluster map, with no I/O: which of the candidate nodes
// (the view's live members, then the seeds) to ask, and when to give up.
// It asks one candidate, and the next as soon as one fails or after
// stagger_ms without an answer, so a node that accepts the connection but
// never answers (stopped, overloaded, cut off one way) delays the load by
// stagger_ms, not by a whole timeout per request. The first candidate that
// answers ends it; it fails once every candidate failed or at the deadline,
// timeout_ms after Start, so Client::Open takes at most timeout_ms however
// many seeds are silent. The SDK's runtime (client.cc) makes the calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "dynamo/status.h"

namespace dynamo::client {

// The wait for one candidate before the next is asked too, at most half the
// timeout.
inline constexpr uint64_t kMapFetchStaggerMs = 100;

class MapFetch {
 public:
  // `candidates` nodes, asked in index order.
  MapFetch(size_t candidates, uint64_t timeout_ms);

  // The candidates to ask now (indices). Call once, first.
  std::vector<size_t> Start(uint64_t now_ms);
  // Candidate `i` could not give the map (its error). Returns the
  // candidates to ask now. The load fails once every candidate failed, with
  // the last error, or as at the deadline if that has passed.
  std::vector<size_t> OnFailure(size_t i, Status error, uint64_t now_ms);
  // Candidate `i` gave the map: the load is done, OK.
  void OnAnswer(size_t i);
  // Time passed (call at timer_ms()). Returns the candidates to ask now; at
  // the deadline the load fails instead, Unavailable (naming the last
  // error).
  std::vector<size_t> OnTimer(uint64_t now_ms);

  bool done() const { return outcome_.has_value(); }
  // Precondition: done().
  const Status& status() const { return *outcome_; }
  // When OnTimer is due next (the next stagger or the deadline); meaningless
  // once done.
  uint64_t timer_ms() const;
  // What is left of the timeout, for a request sent now (at least 1).
  uint64_t remaining_ms(uint64_t now_ms) const;

 private:
  std::vector<size_t> AskNext(uint64_t now_ms);
  void FailAtDeadline();

  size_t candidates_;
  uint64_t timeout_ms_;
  uint64_t stagger_ms_;
  uint64_t deadline_ms_ = 0;
  uint64_t next_ask_ms_ = 0;
  size_t asked_ = 0;
  size_t failed_ = 0;
  Status last_error_;
  std::optional<Status> outcome_;
};

}  // namespace dynamo::client
