"""Shared pieces of the in-memory route handle tests: requests, replies, servers."""

from __future__ import annotations

from typing import Final

from mcrouter_trio.messages import Reply, Request, Result
from mcrouter_trio.protocol import RequestParser
from mcrouter_trio.routing import ServerSpec
from mcrouter_trio.routing.handles.destination import DestinationRoute


def request(wire: bytes) -> Request:
    """The request a client sending `wire` makes (parsed as the proxy parses it)."""
    parser = RequestParser()
    parser.feed(wire)
    event = parser.next_event()
    assert isinstance(event, Request), event
    return event


def server(port: int) -> ServerSpec:
    return ServerSpec("127.0.0.1", port)


def destinations(count: int) -> tuple[DestinationRoute, ...]:
    """Children 0..count-1, each one server: ports 1, 2, ... tell them apart."""
    return tuple(DestinationRoute(server(port)) for port in range(1, count + 1))


def port_of(sent: object) -> int:
    return sent.server.port  # type: ignore[attr-defined, no-any-return]


HIT: Final = Reply(Result.FOUND, b"VALUE k 0 1\r\nv\r\nEND\r\n")
MISS: Final = Reply(Result.NOTFOUND, b"END\r\n")
STORED: Final = Reply(Result.STORED, b"STORED\r\n")
NOT_STORED: Final = Reply(Result.NOTSTORED, b"NOT_STORED\r\n")
DELETED: Final = Reply(Result.DELETED, b"DELETED\r\n")
NOT_FOUND: Final = Reply(Result.NOTFOUND, b"NOT_FOUND\r\n")
TIMEOUT: Final = Reply(Result.TIMEOUT, b"SERVER_ERROR Reply timeout\r\n")
CONNECT_ERROR: Final = Reply(Result.CONNECT_ERROR, b"SERVER_ERROR connection error\r\n")
CONNECT_TIMEOUT: Final = Reply(Result.CONNECT_TIMEOUT, b"SERVER_ERROR connection timeout\r\n")
REMOTE_ERROR: Final = Reply(Result.REMOTE_ERROR, b"SERVER_ERROR remote error\r\n")
TKO: Final = Reply(Result.TKO, b"SERVER_ERROR unavailable\r\n")
CLIENT_ERROR: Final = Reply(Result.CLIENT_ERROR, b"CLIENT_ERROR bad data chunk\r\n")
