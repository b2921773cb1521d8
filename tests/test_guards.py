"""A bug in a route handle costs its request only: planted under every composite handle.

In memory, a test-only handle fails for the key `boom`, either in `route` itself or
in a step after its server's reply. Reached from a parent's callback, the parent's
combinator answers `SERVER_ERROR Error routing request`; raised while the parent
is still in its own `route`, the exception goes up to the router, whose guard is
tested end to end below with a real proxy and real memcached servers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from _routing import MISS, SERVERS, STORED, TIMEOUT, answer_all, dest, hit, parse
from conftest import Memcached, connect, direct_get, free_port

from mcrouter_trio.config import load_config
from mcrouter_trio.downstream._server import ServerSettings, serve
from mcrouter_trio.messages import GET_LIKE, Pending, Reply, Request
from mcrouter_trio.routing import FAILURES, ROUTING_FAILED, Route, RouteContext, sequence
from mcrouter_trio.routing._base import SplitRouting
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.routing.handles.broadcast import AllSyncRoute
from mcrouter_trio.routing.handles.failover import FailoverRoute, LatestRoute
from mcrouter_trio.routing.handles.hash import HashRoute, PoolRoute
from mcrouter_trio.routing.handles.selector import OperationSelectorRoute, PrefixSelectorRoute
from mcrouter_trio.routing.handles.simple import RandomRoute
from mcrouter_trio.routing.handles.warmup import WarmUpRoute
from mcrouter_trio.routing.testing import FakeContext


class PlantedBug(RuntimeError):
    pass


def for_boom(request: Request) -> bool:
    return request.key == b"boom"


@attrs.frozen
class Buggy:
    """Sends to `server`, but fails for the requests `fails` picks: in `route`, or after."""

    server: ServerSpec
    #: "route": raise from `route`; "step": raise in a `sequence` step on the reply.
    where: str
    fails: Callable[[Request], bool] = for_boom

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if self.where == "route" and self.fails(request):
            raise PlantedBug(f"route of {request.key!r}")
        pending = ctx.send(self.server, request)
        if self.where != "step":
            return pending

        def step(reply: Reply) -> Reply:
            if self.fails(request):
                raise PlantedBug(f"reply to {request.key!r}")
            return reply

        return sequence(pending, step, name="Buggy")

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None

    def targets(self) -> Sequence[Route]:
        return ()


def buggy(index: int, where: str, fails: Callable[[Request], bool] = for_boom) -> Buggy:
    return Buggy(SERVERS[index], where, fails)


def is_add(request: Request) -> bool:
    return request.op.name == "ADD"


def server_reply(request: Request) -> Reply:
    """What every healthy server says: a hit for reads, STORED otherwise."""
    return hit(request.key) if request.op in GET_LIKE else STORED


def timeouts_on(*indexes: int) -> Callable[[Request, ServerSpec], Reply]:
    def reply(request: Request, server: ServerSpec) -> Reply:
        return TIMEOUT if SERVERS.index(server) in indexes else server_reply(request)

    return reply


def misses_on(*indexes: int) -> Callable[[Request, ServerSpec], Reply]:
    def reply(request: Request, server: ServerSpec) -> Reply:
        return MISS if SERVERS.index(server) in indexes else server_reply(request)

    return reply


def healthy(request: Request, server: ServerSpec) -> Reply:
    return server_reply(request)


FAILED = ROUTING_FAILED.raw
HIT_BOOM = hit(b"boom").raw
STEP_EVERYWHERE = tuple(buggy(i, "step") for i in range(6))


@pytest.mark.parametrize(
    ("tree", "client", "replies", "expected", "failures"),
    [
        pytest.param(
            AllSyncRoute((dest(0), buggy(1, "step"))), b"set boom 0 0 1\r\nv\r\n", healthy,
            FAILED, 1, id="AllSync-child",
        ),
        pytest.param(
            FailoverRoute((dest(0), buggy(1, "route"))), b"get boom\r\n", timeouts_on(0),
            FAILED, 1, id="Failover-later-child-route",
        ),
        pytest.param(
            FailoverRoute((dest(0), buggy(1, "step"))), b"get boom\r\n", timeouts_on(0),
            FAILED, 1, id="Failover-later-child-step",
        ),
        # A failure is a local error, so FailoverRoute tries the next child (as mcrouter).
        pytest.param(
            FailoverRoute((buggy(0, "step"), dest(1))), b"get boom\r\n", healthy,
            HIT_BOOM, 1, id="Failover-first-child-step",
        ),
        pytest.param(
            WarmUpRoute(cold=dest(0), warm=buggy(1, "route")), b"get boom\r\n", misses_on(0),
            FAILED, 1, id="WarmUp-warm-route",
        ),
        # A get answers warm's reply when cold does not hit, its error too (mcrouter's rule).
        pytest.param(
            WarmUpRoute(cold=dest(0), warm=buggy(1, "step")), b"get boom\r\n", misses_on(0),
            FAILED, 1, id="WarmUp-warm-step",
        ),
        pytest.param(
            WarmUpRoute(cold=buggy(0, "route", is_add), warm=dest(1)), b"gets boom\r\n",
            misses_on(0), FAILED, 1, id="WarmUp-cold-refill-route",
        ),
        pytest.param(
            # The failed add is one request's error; gets answers cold's second reply.
            WarmUpRoute(cold=buggy(0, "step", is_add), warm=dest(1)), b"gets boom\r\n",
            misses_on(0), MISS.raw, 1, id="WarmUp-cold-refill-step",
        ),
        pytest.param(
            WarmUpRoute(cold=buggy(0, "step"), warm=dest(1)), b"set boom 0 0 1\r\nv\r\n",
            healthy, FAILED, 1, id="WarmUp-cold-step",
        ),
        pytest.param(
            OperationSelectorRoute({"get": buggy(0, "step")}, dest(1)), b"get boom\r\n", healthy,
            FAILED, 1, id="OperationSelector",
        ),
        pytest.param(
            PrefixSelectorRoute({"bo": buggy(0, "step")}, dest(1)), b"get boom\r\n", healthy,
            FAILED, 1, id="PrefixSelector",
        ),
        pytest.param(
            HashRoute(STEP_EVERYWHERE), b"get boom\r\n", healthy, FAILED, 1, id="HashRoute",
        ),
        pytest.param(
            LatestRoute(STEP_EVERYWHERE, failover_count=3), b"get boom\r\n", healthy,
            FAILED, 3, id="LatestRoute",
        ),
        pytest.param(
            RandomRoute(STEP_EVERYWHERE), b"get boom\r\n", healthy, FAILED, 1, id="RandomRoute",
        ),
    ],
)  # fmt: skip
def test_a_failing_child_fails_its_request_only(
    tree: Route,
    client: bytes,
    replies: Callable[[Request, ServerSpec], Reply],
    expected: bytes,
    failures: int,
) -> None:
    ctx = FakeContext()
    before = FAILURES.count

    def answer(request: Request) -> Reply:
        return replies(request, ctx.waiting[0].server)

    reply = answer_all(ctx, tree.route(parse(client), ctx), answer)
    assert reply.raw == expected
    assert FAILURES.count == before + failures
    # The next request through the same tree is routed as usual.
    fine = parse(client.replace(b"boom", b"fine"))
    reply = answer_all(ctx, tree.route(fine, ctx), lambda request: server_reply(request))
    assert reply.raw == server_reply(fine).raw
    assert FAILURES.count == before + failures


RAISING_EVERYWHERE = tuple(buggy(i, "route") for i in range(3))
GET_BOOM = b"get boom\r\n"


@pytest.mark.parametrize(
    ("tree", "client"),
    [
        pytest.param(
            AllSyncRoute((dest(0), buggy(1, "route"))), b"set boom 0 0 1\r\nv\r\n", id="AllSync"
        ),
        pytest.param(FailoverRoute((buggy(0, "route"), dest(1))), GET_BOOM, id="Failover-first"),
        pytest.param(WarmUpRoute(buggy(0, "route"), dest(1)), GET_BOOM, id="WarmUp-cold"),
        pytest.param(OperationSelectorRoute({"get": buggy(0, "route")}), GET_BOOM, id="OpSelector"),
        pytest.param(PrefixSelectorRoute({}, buggy(0, "route")), GET_BOOM, id="PrefixSelector"),
        pytest.param(HashRoute(RAISING_EVERYWHERE), GET_BOOM, id="HashRoute"),
        pytest.param(LatestRoute(RAISING_EVERYWHERE), GET_BOOM, id="LatestRoute"),
        pytest.param(RandomRoute(RAISING_EVERYWHERE), GET_BOOM, id="RandomRoute"),
    ],
)
def test_a_failure_while_a_parent_routes_goes_up_to_the_router(tree: Route, client: bytes) -> None:
    """Raised before any callback: no handle swallows it, the router answers (tested below)."""
    with pytest.raises(PlantedBug):
        tree.route(parse(client), FakeContext())


# ---------------------------------------------------------------------------
# The router's guard, end to end


class Connection:
    """One client connection to the proxy, read up to a terminator at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def call(self, data: bytes, *, until: bytes) -> bytes:
        """Send `data` (in one write); read through the next `until`."""
        await self.stream.send_all(data)
        with trio.fail_after(5):
            while until not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise ConnectionError(f"closed by the proxy after {self.buffer!r}")
                self.buffer += chunk
        end = self.buffer.index(until) + len(until)
        received, self.buffer = self.buffer[:end], self.buffer[end:]
        return received


@asynccontextmanager
async def connected(port: int) -> AsyncIterator[Connection]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        yield Connection(stream)


@asynccontextmanager
async def serving(config: dict[str, Any]) -> AsyncIterator[int]:
    """The proxy, in this process (so a test can plant bugs in it), on a free port."""
    port = free_port()
    settings = ServerSettings(ports=(port,), listen_addresses=("127.0.0.1",))
    loaded = load_config(json.dumps(config))
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve(loaded, settings, task_status=task_status))
        yield port
        nursery.cancel_scope.cancel()


@pytest.fixture
async def pool_proxy(memcached: Memcached) -> AsyncIterator[int]:
    config = {"pools": {"A": {"servers": [memcached.address]}}, "route": "PoolRoute|A"}
    async with serving(config) as port:
        yield port


def raise_for_boom(original: Callable[..., Any]) -> Callable[..., Any]:
    def broken(self: Any, request: Request, *args: Any) -> Any:
        if b"boom" in (request.keys or (request.key,)):
            raise PlantedBug("planted bug")
        return original(self, request, *args)

    return broken


@pytest.mark.parametrize(
    "failing",
    [
        pytest.param(b"get boom\r\n", id="get"),
        pytest.param(b"set boom 0 0 1\r\nv\r\n", id="set"),
        pytest.param(b"get a boom b\r\n", id="multi-get"),
        pytest.param(b"gets boom a\r\n", id="multi-gets"),
        pytest.param(b"mg boom v\r\n", id="mg"),
    ],
)
async def test_a_handle_raising_while_routing_fails_only_that_request(
    pool_proxy: int, monkeypatch: pytest.MonkeyPatch, failing: bytes
) -> None:
    # Every request to the pool goes through its PoolRoute: whole, or key by key.
    monkeypatch.setattr(PoolRoute, "route", raise_for_boom(PoolRoute.route))
    monkeypatch.setattr(PoolRoute, "route_whole", raise_for_boom(PoolRoute.route_whole))
    before = FAILURES.count
    async with connected(pool_proxy) as connection:
        # Alone in its read, a plain get takes the parser's shortcut (`Router.route_get`).
        error = await connection.call(failing, until=b"\r\n")
        assert error == b"SERVER_ERROR Error routing request\r\n"
        assert FAILURES.count == before + 1
        # The same connection serves on, pipelined requests too.
        pipelined = b"set k 0 0 1\r\nv\r\n" + failing + b"get k\r\n"
        received = await connection.call(pipelined, until=b"END\r\n")
        assert received == (
            b"STORED\r\nSERVER_ERROR Error routing request\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
        )
        assert FAILURES.count == before + 2


async def test_a_handle_raising_in_a_reply_callback_fails_only_that_request(
    memcached_factory: Callable[[], Memcached], monkeypatch: pytest.MonkeyPatch
) -> None:
    cold, warm = memcached_factory(), memcached_factory()
    config = {
        "pools": {"cold": {"servers": [cold.address]}, "warm": {"servers": [warm.address]}},
        "route": {"type": "WarmUpRoute", "cold": "PoolRoute|cold", "warm": "PoolRoute|warm"},
    }
    after_warm = WarmUpRoute._after_warm

    def broken(self: WarmUpRoute, request: Request, *args: Any) -> Reply | Pending:
        if request.key == b"boom":
            raise PlantedBug("planted bug")
        return after_warm(self, request, *args)

    monkeypatch.setattr(WarmUpRoute, "_after_warm", broken)
    for key in (b"boom", b"fine"):
        with connect(warm.port) as client:
            assert client.call(b"set %s 3 0 2\r\nhi\r\n" % key) == b"STORED\r\n"
    before = FAILURES.count
    async with serving(config) as port, connected(port) as connection:
        # Cold misses, warm hits: the callback that would answer and refill fails.
        error = await connection.call(b"get boom\r\n", until=b"\r\n")
        assert error == b"SERVER_ERROR Error routing request\r\n"
        assert FAILURES.count == before + 1
        received = await connection.call(b"get fine\r\n", until=b"END\r\n")
        assert received == b"VALUE fine 3 2\r\nhi\r\nEND\r\n"
    assert direct_get(cold, b"boom") == b"END\r\n"  # no refill for the failed request
