"""Small handles in memory: DevNull, Error, HostId, Logging, LatencyInjection, RoutingGroup."""

from __future__ import annotations

import logging

import pytest
from handle_helpers import HIT, STORED, destinations, port_of, request

from mcrouter_trio.messages import Result
from mcrouter_trio.routing import REGISTRY, load_handles
from mcrouter_trio.routing.handles.selector import RoutingGroupRoute
from mcrouter_trio.routing.handles.simple import (
    ErrorRoute,
    HostIdRoute,
    LatencyInjectionRoute,
    LoggingRoute,
)
from mcrouter_trio.routing.testing import FakeContext

load_handles()

GET = request(b"get k\r\n")


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (b"get k\r\n", b"END\r\n"),
        (b"set k 0 0 1\r\nv\r\n", b"NOT_STORED\r\n"),
        (b"delete k\r\n", b"NOT_FOUND\r\n"),
        (b"ms k 1\r\nv\r\n", b"NS\r\n"),
    ],
)
def test_dev_null_answers_the_default_reply(wire: bytes, reply: bytes) -> None:
    dev_null = REGISTRY["DevNullRoute"].cls()
    pending = dev_null.route(request(wire), FakeContext())
    assert pending.reply is not None and pending.reply.raw == reply


ERROR_ROWS = [
    # (response, result, line, reply class)
    pytest.param("", "mc_res_local_error", b"SERVER_ERROR local error", Result.LOCAL_ERROR,
                 id="default"),
    pytest.param("reject", "mc_res_local_error", b"SERVER_ERROR reject", Result.LOCAL_ERROR,
                 id="response"),
    pytest.param("", "mc_res_timeout", b"SERVER_ERROR timeout", Result.TIMEOUT, id="timeout"),
    pytest.param("slow", "mc_res_timeout", b"SERVER_ERROR slow", Result.TIMEOUT,
                 id="timeout-response"),
    pytest.param("", "mc_res_busy", b"SERVER_ERROR 307 busy", Result.BUSY, id="busy"),
    pytest.param("", "mc_res_tko", b"SERVER_ERROR unavailable", Result.TKO, id="tko"),
    pytest.param("", "mc_res_client_error", b"CLIENT_ERROR", Result.CLIENT_ERROR,
                 id="client-error"),
    pytest.param("no", "mc_res_client_error", b"CLIENT_ERROR no", Result.CLIENT_ERROR,
                 id="client-error-response"),
    pytest.param("", "mc_res_bad_key", b"CLIENT_ERROR bad key", Result.CLIENT_ERROR,
                 id="bad-key"),
]  # fmt: skip


@pytest.mark.parametrize(("response", "result", "line", "kind"), ERROR_ROWS)
def test_error_route(response: str, result: str, line: bytes, kind: Result) -> None:
    pending = ErrorRoute(response, result).route(GET, FakeContext())
    assert pending.reply is not None
    assert (pending.reply.raw, pending.reply.result) == (line + b"\r\n", kind)


def test_error_route_logs_each_request_unless_told_not_to(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="mcrouter_trio.routing"):
        ErrorRoute("no").route(GET, FakeContext())
        ErrorRoute("quiet", enable_logging=False).route(GET, FakeContext())
    assert [record.getMessage() for record in caplog.records] == [
        "ErrorRoute answered get k: b'SERVER_ERROR no\\r\\n'"
    ]


@pytest.mark.parametrize("host_id", [0, 1, 2, 5, 1234567])
def test_host_id_route_picks_host_id_modulo_children(host_id: int) -> None:
    ctx = FakeContext()
    route = HostIdRoute(destinations(3), host_id=host_id)
    route.route(GET, ctx)
    route.route(request(b"get other\r\n"), ctx)
    assert [port_of(sent) for sent in ctx.sent] == [host_id % 3 + 1] * 2
    assert route.targets() == (destinations(3)[host_id % 3],)


def test_host_id_route_without_children_answers_the_default_reply() -> None:
    pending = HostIdRoute((), host_id=3).route(GET, FakeContext())
    assert pending.reply is not None and pending.reply.raw == b"END\r\n"


def test_logging_route_passes_through_and_logs_request_and_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    (child,) = destinations(1)
    ctx = FakeContext()
    with caplog.at_level(logging.DEBUG, logger="mcrouter_trio.routing"):
        pending = LoggingRoute(child).route(GET, ctx)
        assert ctx.sent[0].request is GET
        ctx.sent[0].answer(HIT)
    assert pending.reply is HIT
    assert [record.getMessage() for record in caplog.records] == ["get k -> VALUE k 0 1"]
    no_target = LoggingRoute().route(GET, ctx)
    assert no_target.reply is not None and no_target.reply.raw == b"END\r\n"


LATENCY_ROWS = [
    # (before, after, total, the reply's wait after the child answers, when the child is sent)
    pytest.param(50, 0, 0, 0.0, 0.05, id="before"),
    pytest.param(0, 30, 0, 0.03, 0.0, id="after"),
    pytest.param(50, 30, 0, 0.03, 0.05, id="before-and-after"),
    pytest.param(0, 0, 100, 0.1, 0.0, id="total-pads"),
    pytest.param(20, 0, 100, 0.08, 0.02, id="total-counts-before"),
    pytest.param(20, 100, 50, 0.1, 0.02, id="total-shorter-than-after"),
    pytest.param(-5, 0, 30, 0.03, 0.0, id="negative-is-none"),
    pytest.param(0, 0, 0, 0.0, 0.0, id="all-zero-forwards"),
]


@pytest.mark.parametrize(("before", "after", "total", "wait", "sent_at"), LATENCY_ROWS)
def test_latency_injection(
    before: int, after: int, total: int, wait: float, sent_at: float
) -> None:
    (child,) = destinations(1)
    ctx = FakeContext()
    pending = LatencyInjectionRoute(child, before, after, total).route(GET, ctx)
    if sent_at:
        assert ctx.sent == []
        ctx.advance(sent_at - 0.001)
        assert ctx.sent == []
        ctx.advance(0.001)
    assert len(ctx.sent) == 1
    ctx.sent[0].answer(STORED)
    if wait:
        assert pending.reply is None
        ctx.advance(wait - 0.001)
        assert pending.reply is None
        ctx.advance(0.001)
    assert pending.reply is STORED
    assert ctx.timers == 0


def _reply_wait(route: LatencyInjectionRoute, seed: int) -> float:
    """How long after the child answers at once the route's reply comes (fake clock)."""
    ctx = FakeContext(seed=seed)
    pending = route.route(GET, ctx)
    ctx.sent[0].answer(STORED)
    waited = 0.0
    while pending.reply is None:
        ctx.advance(0.001)
        waited += 0.001
    return round(waited, 3)


PERCENTILE_ROWS = [
    # `[percentile, ms]` points; each seed's draw picks its step as mcrouter's does
    pytest.param([[50, 10], [100, 40]], id="two-steps"),
    pytest.param([[30, 5], [60, 15], [90, 25]], id="beyond-the-last-point"),
    pytest.param([[100, 20]], id="one-point"),
]


@pytest.mark.parametrize("points", PERCENTILE_ROWS)
def test_total_latency_percentile_draws_a_step_per_request(points: list[list[int]]) -> None:
    (child,) = destinations(1)
    steps = tuple((float(pct), ms) for pct, ms in points)
    route = LatencyInjectionRoute(child, total_latency_percentile_ms=steps)
    for seed in range(20):
        draw = FakeContext(seed=seed).rng.random() * 100
        expected = next((ms for pct, ms in points if draw < pct), points[-1][1])
        assert _reply_wait(route, seed) == expected / 1000
    observed = {_reply_wait(route, seed) for seed in range(40)}
    assert observed == {ms / 1000 for _pct, ms in points}


def test_fixed_total_latency_takes_precedence_over_percentiles() -> None:
    (child,) = destinations(1)
    route = LatencyInjectionRoute(
        child, total_latency_ms=7, total_latency_percentile_ms=((100.0, 50),)
    )
    assert _reply_wait(route, 0) == 0.007


def test_request_payload_latency_injects_nothing_for_memcached_requests() -> None:
    (child,) = destinations(1)
    route = LatencyInjectionRoute(child, request_payload_latency=True, max_request_latency_us=10)
    ctx = FakeContext()
    pending = route.route(GET, ctx)
    ctx.sent[0].answer(STORED)
    assert pending.reply is STORED and ctx.timers == 0


GROUP_ROWS = [
    pytest.param(b"get k\r\n", 1, id="get"),
    pytest.param(b"gats 0 k\r\n", 1, id="gats"),
    pytest.param(b"mg k v\r\n", 1, id="meta-get"),
    pytest.param(b"set k 0 0 1\r\nv\r\n", 2, id="set"),
    pytest.param(b"cas k 0 0 1 1\r\nv\r\n", 2, id="cas"),
    pytest.param(b"ms k 1\r\nv\r\n", 2, id="meta-set"),
    pytest.param(b"delete k\r\n", 3, id="delete"),
    pytest.param(b"md k\r\n", 3, id="meta-delete"),
    pytest.param(b"incr k 1\r\n", 4, id="incr"),
    pytest.param(b"ma k\r\n", 4, id="meta-arithmetic"),
    pytest.param(b"touch k 1\r\n", 5, id="touch-default"),
]


@pytest.mark.parametrize(("wire", "port"), GROUP_ROWS)
def test_routing_group_route(wire: bytes, port: int) -> None:
    get, update, delete, arithmetic, default = destinations(5)
    route = RoutingGroupRoute(
        {"get_like": get, "update_like": update, "delete_like": delete,
         "arithmetic_like": arithmetic},
        default,
    )  # fmt: skip
    ctx = FakeContext()
    route.route(request(wire), ctx)
    assert port_of(ctx.sent[0]) == port


def test_routing_group_route_without_a_policy_answers_mcrouters_empty_reply() -> None:
    (get,) = destinations(1)
    pending = RoutingGroupRoute({"get_like": get}).route(request(b"touch k 1\r\n"), FakeContext())
    assert pending.reply is not None
    assert pending.reply.raw == b"SERVER_ERROR unexpected result mc_res_unknown (0) for touch\r\n"
