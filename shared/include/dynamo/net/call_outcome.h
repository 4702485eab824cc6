// The outcome of one call to a peer, as connections and the client's request
// logic see it. Plain data: no I/O.
#pragma once

#include "dynamo/proto/message.h"
#include "dynamo/status.h"

namespace dynamo::net {

struct CallOutcome {
  // The peer's reply (an ErrorReply is a reply too), or why there is none:
  // Timeout when the deadline passed, Unavailable when the connection closed
  // or could not be opened, Busy when the write queue was full,
  // InvalidArgument when the request was too large or the reply broke a limit.
  Result<proto::Message> message;
  // False when the request certainly never left (no connection, or refused
  // before it was queued); a failure with this true may still have been
  // applied by the peer.
  bool maybe_delivered = true;
};

}  // namespace dynamo::net
