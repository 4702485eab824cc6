// The errors of the stores dynamo-bench compares dynamo with, as dynamo's
// status codes, so that a report's errors by kind read alike across stores:
// shed load is Busy, a store that cannot serve now is Unavailable, a
// deadline passed is Timeout; anything else is Internal.
#pragma once

#include <string_view>

#include "dynamo/status.h"

namespace dynamo::bench {

// etcd's HTTP gateway answered `http_status` (not 200); `body` may name why.
Status EtcdHttpError(int http_status, std::string_view body);
// A Redis error reply (`-PREFIX message`, without the dash).
Status RedisReplyError(std::string_view message);

}  // namespace dynamo::bench
