// Always-on invariant checks. A failed check is a programmer error: it prints
// the condition and location to stderr and aborts (the simulator reports the
// seed that reached it). Never use it for bad input; return a Status instead.
#pragma once

#include <string_view>

namespace dynamo::internal {
[[noreturn]] void CheckFailed(const char* file, int line, std::string_view condition,
                              std::string_view detail = {});
}  // namespace dynamo::internal

#define DYNAMO_CHECK(cond)                                                         \
  do {                                                                             \
    if (!(cond)) [[unlikely]] ::dynamo::internal::CheckFailed(__FILE__, __LINE__, #cond); \
  } while (0)
