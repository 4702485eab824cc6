// dynamoctl's data commands (get, put, delete, where, inspect) over the SDK.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "dynamo/client.h"

namespace dynamo::cli {

struct DataCommand {
  std::string name;  // get, put, delete, where, inspect
  std::string key;
  std::optional<std::string> value;  // put; nullopt: read stdin
  std::string context_b64;           // put, delete
  int r = 0;
  int w = 0;
  bool unsynced = false;  // put, delete: acknowledged without a synced copy
  bool json = false;
};

// Runs the command against the cluster behind `seeds`; prints to stdout.
// Returns the process exit status (0 ok, 1 error, 2 not found for get).
int RunDataCommand(const std::vector<std::string>& seeds, uint64_t timeout_ms, const DataCommand& cmd);

// Reports a failed command: on stderr, and with `json` also as one JSON
// object on stdout ({"error": code, "message", "in_doubt"}). Returns 1.
int Fail(const Status& s, bool json);

std::string Base64Encode(std::string_view bytes);
Result<std::string> Base64Decode(std::string_view text);

}  // namespace dynamo::cli
