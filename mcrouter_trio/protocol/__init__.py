"""The memcached wire protocol, pure: bytes in, events out; no I/O and no Trio.

`RequestParser` frames and validates what clients send; `frame_reply` frames what
backends send back, and `GetBatchFramer` splits the reply to a batched get into each
key's own; `strtol`/`strtoull` parse numbers as memcached does.
"""

from mcrouter_trio.protocol._numbers import strtol, strtoull
from mcrouter_trio.protocol._replies import (
    GetBatchFramer,
    GetProgress,
    ReplyStreamError,
    frame_reply,
    values,
)
from mcrouter_trio.protocol._requests import (
    INCOMPLETE_LINE_LIMIT,
    KEY_MAX_LENGTH,
    NEED_DATA,
    CloseConnection,
    Event,
    ImmediateReply,
    RequestParser,
    TooLargeSet,
    meta_routing_key,
)

__all__ = [
    "INCOMPLETE_LINE_LIMIT",
    "KEY_MAX_LENGTH",
    "NEED_DATA",
    "CloseConnection",
    "Event",
    "GetBatchFramer",
    "GetProgress",
    "ImmediateReply",
    "ReplyStreamError",
    "RequestParser",
    "TooLargeSet",
    "frame_reply",
    "meta_routing_key",
    "strtol",
    "strtoull",
    "values",
]
