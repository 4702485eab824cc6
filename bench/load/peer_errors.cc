#include "load/peer_errors.h"

#include <string>

namespace dynamo::bench {

namespace {

constexpr size_t kBodyQuotedMax = 200;

}  // namespace

Status EtcdHttpError(int http_status, std::string_view body) {
  std::string why = "etcd: HTTP " + std::to_string(http_status);
  if (!body.empty()) why += ": " + std::string(body.substr(0, kBodyQuotedMax));
  switch (http_status) {
    case 429: return Status::Busy(why);
    case 503: return Status::Unavailable(why);
    case 408:
    case 504: return Status::Timeout(why);
    default: return Status::Internal(why);
  }
}

Status RedisReplyError(std::string_view message) {
  const std::string why = "redis: " + std::string(message.substr(0, kBodyQuotedMax));
  const std::string_view prefix = message.substr(0, message.find(' '));
  // BUSY: a script runs; OOM: over maxmemory; TRYAGAIN: a slot migrates.
  if (prefix == "BUSY" || prefix == "OOM" || prefix == "TRYAGAIN") return Status::Busy(why);
  // LOADING: reading its dataset at start; MASTERDOWN, READONLY: a replica.
  if (prefix == "LOADING" || prefix == "MASTERDOWN" || prefix == "READONLY") {
    return Status::Unavailable(why);
  }
  return Status::Internal(why);
}

}  // namespace dynamo::bench
