#include "dynamo/status.h"

#include <cstdio>
#include <cstdlib>

namespace dynamo {

namespace internal {
void CheckFailed(const char* file, int line, std::string_view condition,
                 std::string_view detail) {
  std::fprintf(stderr, "%s:%d: check failed: %.*s%s%.*s\n", file, line,
               static_cast<int>(condition.size()), condition.data(), detail.empty() ? "" : ": ",
               static_cast<int>(detail.size()), detail.data());
  std::fflush(stderr);
  std::abort();
}
}  // namespace internal

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kNotFound: return "NotFound";
    case StatusCode::kInvalidArgument: return "InvalidArgument";
    case StatusCode::kTimeout: return "Timeout";
    case StatusCode::kUnavailable: return "Unavailable";
    case StatusCode::kCorruption: return "Corruption";
    case StatusCode::kIOError: return "IOError";
    case StatusCode::kBusy: return "Busy";
    case StatusCode::kProtocolError: return "ProtocolError";
    case StatusCode::kAborted: return "Aborted";
    case StatusCode::kInternal: return "Internal";
  }
  return "Unknown";
}

Status::Status(StatusCode code, std::string_view message, bool in_doubt) {
  DYNAMO_CHECK(code != StatusCode::kOk);
  rep_ = std::make_unique<Rep>(Rep{code, in_doubt, std::string(message)});
}

Status::Status(const Status& other)
    : rep_(other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr) {}

Status& Status::operator=(const Status& other) {
  if (this != &other) rep_ = other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr;
  return *this;
}

std::string_view Status::message() const { return rep_ ? std::string_view(rep_->message) : ""; }

Status Status::WithInDoubt(bool in_doubt) const {
  DYNAMO_CHECK(!ok());
  Status s(*this);
  s.rep_->in_doubt = in_doubt;
  return s;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += rep_->message;
  return Status(rep_->code, msg, rep_->in_doubt);
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(StatusCodeName(rep_->code));
  if (!rep_->message.empty()) {
    s += ": ";
    s += rep_->message;
  }
  if (rep_->in_doubt) s += " (in doubt)";
  return s;
}

bool operator==(const Status& a, const Status& b) {
  return a.code() == b.code() && a.message() == b.message() && a.in_doubt() == b.in_doubt();
}

}  // namespace dynamo
