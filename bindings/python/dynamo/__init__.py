"""dynamo: a Dynamo-style key-value store; this module is its smart client.

    import dynamo
    client = dynamo.Client(["127.0.0.1:7000"])
    client.put("cart:alice", b"apples")
    result = client.get("cart:alice")
    client.put("cart:alice", b"apples,pears", context=result.context)

Keys and values are bytes (str is encoded as UTF-8). Reads return every
concurrent version (sibling) unless a resolver is set with set_resolver.
"""

from ._errors import BusyError, ClosedError, Error, InvalidArgument, QuorumError, TimeoutError
from ._dynamo import Client, GetResult, Receipt

__all__ = ["Client", "GetResult", "Receipt", "Error", "QuorumError", "TimeoutError", "BusyError",
           "InvalidArgument", "ClosedError"]
