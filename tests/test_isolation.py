"""A bug while serving one client costs that request or client only: the proxy serves on.

Client I/O and routing run in shared tasks (the client reactor, the destination
readers), so an exception there must be caught per session. These tests run the
proxy in-process and plant a failure with monkeypatch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import trio
from conftest import Memcached, free_port

import mcrouter_trio.downstream._session
import mcrouter_trio.upstream._context
from mcrouter_trio import SERVER_VERSION
from mcrouter_trio.config import load_config
from mcrouter_trio.downstream._server import ServerSettings, serve
from mcrouter_trio.messages import Op, Pending, Reply, Request
from mcrouter_trio.routing import FAILURES
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.upstream import Destination
from mcrouter_trio.upstream._context import ProxyContext


async def exchange(port: int, data: bytes, *, until: bytes) -> bytes:
    """Send `data`; read until `until` is seen or the proxy closes the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(5):
            while until not in received:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return received + b"<CLOSED>"
                received += chunk
        return received


async def route_handle_failures(port: int) -> int:
    stats = await exchange(port, b"stats\r\n", until=b"END\r\n")
    for line in stats.decode().splitlines():
        if line.startswith("STAT route_handle_failures "):
            return int(line.split()[2])
    raise AssertionError(f"no route_handle_failures in {stats!r}")


@pytest.fixture
async def proxy_port(memcached: Memcached) -> AsyncIterator[int]:
    config = load_config(
        json.dumps({"pools": {"A": {"servers": [memcached.address]}}, "route": "PoolRoute|A"})
    )
    port = free_port()
    settings = ServerSettings(ports=(port,), listen_addresses=("127.0.0.1",))
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve(config, settings, task_status=task_status))
        yield port
        nursery.cancel_scope.cancel()


async def test_a_failure_while_routing_fails_only_that_request(
    proxy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    send = ProxyContext.send

    def broken_send(self: ProxyContext, server: ServerSpec, request: Request) -> Pending:
        if request.key == b"boom":
            raise RuntimeError("planted bug")
        return send(self, server, request)

    before = await route_handle_failures(proxy_port)
    # Every route to a backend passes here, the single-key get shortcut included.
    monkeypatch.setattr(ProxyContext, "send", broken_send)
    for failing in (b"get boom\r\n", b"set boom 0 0 1\r\nv\r\n", b"get boom a\r\n"):
        # The failing request gets its error and the same connection serves on.
        received = await exchange(
            proxy_port, failing + b"set k 0 0 1\r\nv\r\nget k\r\n", until=b"END\r\n"
        )
        assert received == (
            b"SERVER_ERROR Error routing request\r\nSTORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
        )
    # Each failure is counted in `stats`.
    assert await route_handle_failures(proxy_port) == before + 3


async def test_a_failure_while_answering_closes_only_that_client(
    proxy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    hides = mcrouter_trio.downstream._session._quiet_hides

    def broken_hides(op: Op, raw: bytes) -> bool:
        if op is Op.MG:
            raise RuntimeError("planted bug")
        return hides(op, raw)

    monkeypatch.setattr(mcrouter_trio.downstream._session, "_quiet_hides", broken_hides)
    # The reply to a quiet mg is judged when the backend's answer arrives, in the
    # destination's reader task.
    assert await exchange(proxy_port, b"mg nokey q v\r\nmn\r\n", until=b"MN\r\n") == b"<CLOSED>"
    assert await exchange(proxy_port, b"version\r\n", until=b"\r\n") == (
        f"VERSION {SERVER_VERSION}\r\n".encode()
    )
    assert await exchange(proxy_port, b"get k\r\n", until=b"END\r\n") == b"END\r\n"


async def test_a_failure_splitting_a_batched_get_fails_only_that_get(
    proxy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_split(fragments: object, reply: object) -> None:
        raise RuntimeError("planted bug")

    monkeypatch.setattr(mcrouter_trio.upstream._context, "split_multiget", broken_split)
    # Keys with a routing prefix are stripped one by one, so the batched get that
    # carries them must be split back per key.
    received = await exchange(
        proxy_port, b"get /././a /././b\r\nset k 0 0 1\r\nv\r\nget k\r\n", until=b"END\r\n"
    )
    assert received == (
        b"SERVER_ERROR Error routing request\r\nSTORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
    )


async def test_a_failing_reply_callback_does_not_stop_the_reader(memcached: Memcached) -> None:
    failures = FAILURES.count
    server = ServerSpec("127.0.0.1", memcached.port)
    destination = Destination(server)
    got: list[bytes] = []

    def broken_callback(reply: Reply) -> None:
        raise RuntimeError("planted bug")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(destination.run)
        destination.send(Request(Op.GET, b"a"), 1.0).then(broken_callback)
        destination.send(Request(Op.VERSION), 1.0).then(lambda reply: got.append(reply.raw))
        with trio.fail_after(5):
            while not got:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert got[0].startswith(b"VERSION ")
    assert FAILURES.count == failures + 1
