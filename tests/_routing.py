"""Route handles in memory: requests as clients send them, replies as servers do."""

from __future__ import annotations

from collections.abc import Callable

from mcrouter_trio.messages import Pending, Reply, Request, Result
from mcrouter_trio.protocol import RequestParser
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.testing import FakeContext

#: Distinct servers; nothing listens on them (the fake context answers).
SERVERS = tuple(ServerSpec("127.0.0.1", 20000 + index) for index in range(16))

MISS = Reply(Result.NOTFOUND, b"END\r\n")
STORED = Reply(Result.STORED, b"STORED\r\n")
NOT_STORED = Reply(Result.NOTSTORED, b"NOT_STORED\r\n")
TIMEOUT = Reply(Result.TIMEOUT, b"SERVER_ERROR Reply timeout\r\n")


def parse(wire: bytes) -> Request:
    """The request a client sending `wire` makes (through the proxy's own parser)."""
    parser = RequestParser()
    parser.feed(wire)
    event = parser.next_event()
    assert isinstance(event, Request), f"{wire!r} parsed as {event!r}"
    return event


def dest(index: int) -> DestinationRoute:
    return DestinationRoute(SERVERS[index])


def hit(key: bytes, value: bytes = b"v", flags: int = 0, cas: int | None = None) -> Reply:
    """A one-value retrieval reply, as memcached renders it."""
    header = b"VALUE %s %d %d" % (key, flags, len(value))
    if cas is not None:
        header += b" %d" % cas
    return Reply(Result.FOUND, header + b"\r\n" + value + b"\r\nEND\r\n")


def error(result: Result, line: bytes = b"SERVER_ERROR oops") -> Reply:
    return Reply(result, line + b"\r\n")


def server_index(ctx: FakeContext, position: int = 0) -> int:
    """Which of `SERVERS` the `position`-th send went to."""
    return SERVERS.index(ctx.sent[position].server)


def resolved(pending: Pending) -> bool:
    return pending.reply is not None


def answer_all(ctx: FakeContext, pending: Pending, reply_for: Callable[[Request], Reply]) -> Reply:
    """Answer every send (new ones too) with `reply_for(request)` until `pending` resolves."""
    while pending.reply is None:
        waiting = ctx.waiting
        assert waiting, "the request waits for nothing"
        waiting[0].answer(reply_for(waiting[0].request))
    return pending.reply
