"""The exceptions dynamo raises. The extension module raises these; every
translation from a C++ status happens in one place (src/errors.cc)."""

import builtins


class Error(Exception):
    """Base of every dynamo error.

    `code` names the failure ("Unavailable", "Timeout", ...). `in_doubt` is
    True when a failed write may have been applied anyway.
    """

    code: str = "Internal"
    in_doubt: bool = False

    def __init__(self, message: str, code: str = "Internal", in_doubt: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.in_doubt = in_doubt


class QuorumError(Error):
    """Too little of the cluster answered: fewer replicas answered (reads) or
    acknowledged (writes) than R or W, or, opening a client, no seed answered
    within the timeout (code "Unavailable" for all three).

    `acks` is how many replicas did (0 when opening).
    """

    acks: int = 0

    def __init__(self, message: str, code: str = "Unavailable", in_doubt: bool = False,
                 acks: int = 0) -> None:
        super().__init__(message, code, in_doubt)
        self.acks = acks


class TimeoutError(Error, builtins.TimeoutError):
    """The deadline passed before any replica answered."""


class BusyError(Error):
    """Refused to shed load, at a limit the message names: a node's requests in
    progress or writes waiting for one key, the key's sibling limit, the
    client's own queue to a node, or the client's calls in progress (65,536).
    Retry after a back-off; unless `in_doubt`,
    the write was not applied."""


class InvalidArgument(Error, ValueError):
    """Bad input: an empty or over-size key or value, a context that is not one
    from a read or write, or is from one of another key; r, w, a timeout or
    a size limit out of range; a replica's answer the client cannot decode.
    (A key, value, context, seed or number of
    the wrong type raises TypeError.)"""


class ClosedError(Error):
    """The client is closed (close() was called before this call began, or
    the interpreter is exiting: open clients are closed then), or it was
    opened before this process forked: a child must open its own. A call
    already running when close() is called goes on to its end, up to the
    timeout; cut short by the close, it raises QuorumError or TimeoutError."""
