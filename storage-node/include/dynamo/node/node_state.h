// Loading a node's identity and cluster state from its engine at start.
#pragma once

#include <string>

#include "dynamo/node/engine.h"
#include "dynamo/node/node_core.h"

namespace dynamo::node {

// Reads identity and cluster state from `engine`, creating what a new data
// directory lacks (incarnation 1). Raises the incarnation and the counter
// lease (so no counter of an earlier run is issued again), and takes
// `new_actor` (random, non-zero, from the caller) as this run's actor id,
// because the last run may have answered for coordinated writes that it had
// not synced and so lost (see dynamo/version.h); a new directory also takes
// it as its life (proto::Member::life). Syncs the incarnation, the life and
// the lease before returning. Also finds the partitions holding data and the
// nodes hints are held for. InvalidArgument when the engine belongs to
// another node id; `where` names the data directory in that message.
// Corruption only as the engine reports it (a failed checksum); a record read
// back whole that does not parse (another version's) is Internal.
Result<NodeState> LoadNodeState(Engine& engine, const NodeOptions& options, const std::string& where,
                                ActorId new_actor);

}  // namespace dynamo::node
