// Status and Result<T>: errors as values, for every layer of dynamo.
//
// An OK Status costs one null pointer; an error carries a code, a message and
// an `in_doubt` flag that write paths set when the operation may have been
// applied even though it is reported as failed (a timeout after the request
// left, for example). Result<T> holds either a value or a non-OK Status.
//
// Thread-safety: values; distinct objects may be used from distinct threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "dynamo/check.h"

namespace dynamo {

enum class StatusCode : uint8_t {
  kOk = 0,
  kNotFound = 1,
  kInvalidArgument = 2,  // bad input from the caller, including limits exceeded
  kTimeout = 3,          // a deadline passed
  kUnavailable = 4,      // not enough replicas or no connection
  kCorruption = 5,       // stored or received data fails its checks
  kIOError = 6,          // the operating system or storage engine failed
  kBusy = 7,             // overloaded or queue full; retry later
  kProtocolError = 8,    // a peer sent a malformed or unexpected message
  kAborted = 9,          // cancelled, e.g. by shutdown
  kInternal = 10,        // a bug or an impossible state
};
inline constexpr uint8_t kMaxStatusCode = 10;

// The code's name, e.g. "Timeout".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  Status(StatusCode code, std::string_view message, bool in_doubt = false);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;
  ~Status() = default;

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view msg) { return {StatusCode::kNotFound, msg}; }
  static Status InvalidArgument(std::string_view msg) {
    return {StatusCode::kInvalidArgument, msg};
  }
  static Status Timeout(std::string_view msg) { return {StatusCode::kTimeout, msg}; }
  static Status Unavailable(std::string_view msg) { return {StatusCode::kUnavailable, msg}; }
  static Status Corruption(std::string_view msg) { return {StatusCode::kCorruption, msg}; }
  static Status IOError(std::string_view msg) { return {StatusCode::kIOError, msg}; }
  static Status Busy(std::string_view msg) { return {StatusCode::kBusy, msg}; }
  static Status ProtocolError(std::string_view msg) { return {StatusCode::kProtocolError, msg}; }
  static Status Aborted(std::string_view msg) { return {StatusCode::kAborted, msg}; }
  static Status Internal(std::string_view msg) { return {StatusCode::kInternal, msg}; }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  // Empty for OK.
  std::string_view message() const;
  // True when a failed write may nevertheless have been applied.
  bool in_doubt() const { return rep_ && rep_->in_doubt; }

  bool IsNotFound() const { return code() == StatusCode::kNotFound; }
  bool IsTimeout() const { return code() == StatusCode::kTimeout; }
  bool IsInvalidArgument() const { return code() == StatusCode::kInvalidArgument; }

  // A copy with the in-doubt flag set as given. Precondition: !ok().
  Status WithInDoubt(bool in_doubt) const;
  // A copy whose message is "<context>: <message>". OK stays OK.
  Status Annotate(std::string_view context) const;

  // "OK" or "<Code>: <message>" (with " (in doubt)" when set).
  std::string ToString() const;

 private:
  struct Rep {
    StatusCode code;
    bool in_doubt;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

bool operator==(const Status& a, const Status& b);

// Either a T or a non-OK Status. Accessing the value of an error aborts.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    DYNAMO_CHECK(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  // OK when holding a value.
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  T& value() & { return checked(); }
  const T& value() const& { return const_cast<Result*>(this)->checked(); }
  T&& value() && { return std::move(checked()); }
  T* operator->() { return &checked(); }
  const T* operator->() const { return &const_cast<Result*>(this)->checked(); }
  T& operator*() & { return checked(); }
  const T& operator*() const& { return const_cast<Result*>(this)->checked(); }
  T&& operator*() && { return std::move(checked()); }

 private:
  T& checked() {
    if (!ok()) {
      internal::CheckFailed(__FILE__, __LINE__, "Result::value() on error",
                            std::get<Status>(v_).ToString());
    }
    return std::get<T>(v_);
  }
  std::variant<T, Status> v_;
};

}  // namespace dynamo

// Returns the Status of `expr` from the enclosing function when it is an error.
#define DYNAMO_RETURN_IF_ERROR(expr)          \
  do {                                        \
    ::dynamo::Status _dynamo_st = (expr);     \
    if (!_dynamo_st.ok()) return _dynamo_st;  \
  } while (0)
