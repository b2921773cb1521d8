"""mcrouter's stats in memory: the four-minute window, and where each count is taken.

The window (`ops/_window.py`) turns the cumulative counters into mcrouter's rates,
highs and means; the framer counts the error lines it frames; FailoverRoute counts
its failovers on the failover path only (`routing/_combinators.py`).
"""

from __future__ import annotations

import pytest
from handle_helpers import (
    CLIENT_ERROR,
    CONNECT_ERROR,
    HIT,
    REMOTE_ERROR,
    STORED,
    TIMEOUT,
    TKO,
    destinations,
    request,
)

from mcrouter_trio.counters import PROXY_STATS, Group, ProxyCounters, count_result
from mcrouter_trio.messages import ERRORS, FIRST_ERROR, Op, Reply, Result
from mcrouter_trio.ops import ProxyStats
from mcrouter_trio.ops._window import WINDOW_SECONDS, StatWindow
from mcrouter_trio.protocol import GetBatchFramer, GetProgress, frame_reply
from mcrouter_trio.routing.handles._failover_settings import (
    parse_failover_limit,
    parse_failover_policy,
)
from mcrouter_trio.routing.handles.failover import FailoverRoute
from mcrouter_trio.routing.testing import FakeContext

# -- the window ----------------------------------------------------------------------


def test_a_rate_is_the_change_over_the_window_per_second() -> None:
    window = StatWindow(0.0)  # the process started: every counter was zero
    window.look(10.0, {"x": 50})
    assert window.rate("x") == 5.0
    window.look(20.0, {"x": 50})
    assert window.rate("x") == 2.5  # nothing more in the last 10 s: averaged over 20
    # Four minutes later, the start has left the window: only what happened within.
    for second in range(21, 21 + int(WINDOW_SECONDS) + 1):
        window.look(float(second), {"x": 50 + second - 20})
    assert window.rate("x") == pytest.approx(1.0, rel=0.01)


def test_looks_within_a_second_replace_the_newest_sample() -> None:
    window = StatWindow(0.0)
    window.look(1.0, {"x": 1})
    for step in range(1, 100):
        window.look(1.0 + step / 1000, {"x": 1 + step})
    # The base, the sample of 1.0 and the newest, which each later look replaced.
    assert len(window._samples) == 3
    assert window.change("x") == 100


def test_highs_means_and_a_reset() -> None:
    window = StatWindow(0.0)
    window.look(1.0, {"pending": 7, "sum": 30, "count": 10})
    window.look(2.0, {"pending": 2, "sum": 50, "count": 20})
    assert window.highest("pending") == 7
    assert window.ratio("sum", "count") == 2.5
    assert window.ratio("sum", "nothing") == 0.0
    window.look(3.0, {"pending": 0, "sum": 0, "count": 0})  # `stats reset` elsewhere
    assert window.change("sum") == 0.0  # never negative
    window.restart(3.0)
    assert window.rate("sum") == 0.0 and window.highest("pending") == 0


def test_stats_shows_a_rate_stat_per_second_and_its_count_as_it_is() -> None:
    stats = ProxyStats()
    stats.window = StatWindow(0.0)
    stats.result_client_error_count = 3
    stats.failover_all = 12
    stats.window.look(6.0, {})  # a look six seconds after the start
    lines = dict(
        line.split(" ", 2)[1:] for line in stats.reply([b"all"], {}).raw.decode().split("\r\n")[:-2]
    )
    assert lines["result_client_error_count"] == "3"
    assert float(lines["result_client_error"]) > 0  # 3 over the seconds since the start
    assert float(lines["failover_all"]) > 0
    rates = [stat.name for stat in PROXY_STATS if Group.RATE in stat.groups]
    assert all(lines[name] == format(float(lines[name]), "g") for name in rates)


def test_first_error_splits_the_results_as_errors_does() -> None:
    assert {result for result in Result if result >= FIRST_ERROR} == ERRORS


# -- the framer counts the error lines -----------------------------------------------

FRAMED = [
    (b"CLIENT_ERROR bad data chunk\r\n", Op.SET, ["result_client_error_count"]),
    (b"SERVER_ERROR out of memory\r\n", Op.SET, ["result_remote_error_count"]),
    (b"SERVER_ERROR busy\r\n", Op.GET, ["result_remote_error_count"]),
    (b"ERROR\r\n", Op.DELETE, []),
    (b"VALUE k 0 1\r\nv\r\nSERVER_ERROR out of memory\r\n", Op.GET, ["result_remote_error_count"]),
    (b"STORED\r\n", Op.SET, None),
    (b"VALUE k 0 1\r\nv\r\nEND\r\n", Op.GET, None),
]


@pytest.mark.parametrize(("wire", "op", "families"), FRAMED)
def test_the_framer_counts_each_error_line_once(
    wire: bytes, op: Op, families: list[str] | None
) -> None:
    counters = ProxyCounters()
    progress = GetProgress(counters)
    # In two reads, as a server may send it: the first part frames nothing yet.
    assert frame_reply(wire[:-3], 0, op, progress) is None
    framed = frame_reply(wire, 0, op, progress)
    assert framed is not None and framed[1] == len(wire)
    if families is None:
        assert counters.result_error_count == 0
        return
    assert counters.result_error_count == counters.result_error_all_count == 1
    for name in families:
        assert getattr(counters, name) == 1


def test_a_batched_get_counts_every_key_an_error_line_answers() -> None:
    counters = ProxyCounters()
    framer = GetBatchFramer([b"a", b"b", b"c"], counters)
    wire = b"VALUE a 0 1\r\nv\r\nSERVER_ERROR out of memory\r\n"
    assert framer.frame(wire, 0) == len(wire)
    assert counters.result_remote_error_count == 2  # b and c; a was a hit


def test_count_result_puts_a_result_in_every_family_it_belongs_to() -> None:
    counters = ProxyCounters()
    count_result(counters, Result.CONNECT_TIMEOUT, 3)
    assert counters.result_connect_timeout_count == counters.result_error_count == 3
    assert counters.result_connect_timeout_all_count == counters.result_error_all_count == 3
    assert counters.result_connect_error_count == 0


# -- FailoverRoute counts its failovers ------------------------------------------------

GET = request(b"get k\r\n")
SET = request(b"set k 0 0 1\r\nv\r\n")

#: (children's replies in order, what the failover_* counters are then).
FAILOVER_ROWS = [
    ([HIT], {}),
    ([CLIENT_ERROR], {}),  # not a failover error: the answer, nothing counted
    ([TKO, HIT], {"failover_all": 1, "failover_inorder_policy": 1, "tko": 1}),
    ([CONNECT_ERROR, HIT], {"failover_all": 1, "failover_inorder_policy": 1, "tko": 1}),
    ([TIMEOUT, HIT], {"failover_all": 1, "failover_inorder_policy": 1, "result": 1}),
    ([REMOTE_ERROR, TIMEOUT, HIT], {"failover_all": 1, "failover_inorder_policy": 1, "result": 2}),
    (
        [TKO, TKO, TIMEOUT],
        {
            "failover_all": 1,
            "failover_inorder_policy": 1,
            "tko": 2,
            "failover_all_failed_count": 1,
            "failover_inorder_policy_failed": 1,
        },
    ),
]

_NAMES = {"tko": "failover_policy_tko_error", "result": "failover_policy_result_error"}


@pytest.mark.parametrize(("replies", "expected"), FAILOVER_ROWS)
def test_failover_route_counts_as_mcrouter(replies: list[Reply], expected: dict[str, int]) -> None:
    route = FailoverRoute(destinations(3))
    ctx = FakeContext()
    pending = route.route(GET, ctx)
    for index, reply in enumerate(replies):
        ctx.sent[index].answer(reply)
    assert pending.reply == replies[-1]
    wanted = {_NAMES.get(name, name): value for name, value in expected.items()}
    for name in (
        "failover_all",
        "failover_inorder_policy",
        "failover_inorder_policy_failed",
        "failover_all_failed_count",
        "failover_policy_tko_error",
        "failover_policy_result_error",
        "failover_rate_limited",
    ):
        assert getattr(ctx.counters, name) == wanted.get(name, 0), name


def test_a_policy_counts_under_its_own_name() -> None:
    policy = parse_failover_policy({"type": "LeastFailuresPolicy", "max_tries": 2})
    route = FailoverRoute(destinations(3), failover_policy=policy)
    ctx = FakeContext()
    route.route(GET, ctx)
    ctx.sent[0].answer(TIMEOUT)
    ctx.sent[1].answer(TIMEOUT)
    assert ctx.counters.failover_least_failures_policy == 1
    assert ctx.counters.failover_least_failures_policy_failed == 1
    assert ctx.counters.failover_inorder_policy == 0


def test_a_failover_limit_that_refuses_counts_rate_limited() -> None:
    limit = parse_failover_limit({"rate": 0.5, "burst": 1})
    route = FailoverRoute(destinations(2), failover_limit=limit)
    ctx = FakeContext()
    refused = 0
    for _ in range(5):
        pending = route.route(SET, ctx)
        ctx.waiting[0].answer(TIMEOUT)
        if ctx.waiting:
            ctx.waiting[0].answer(STORED)
        refused += pending.reply == TIMEOUT
    assert refused > 0
    assert ctx.counters.failover_rate_limited == refused
    assert ctx.counters.failover_policy_result_error == 5


def test_a_failover_child_s_error_leaves_the_request_class_counts() -> None:
    """mcrouter counts a failover's result in the `_all` stats only."""
    route = FailoverRoute(destinations(2))
    ctx = FakeContext()
    count_result(ctx.counters, Result.TKO)  # as the first destination would
    count_result(ctx.counters, Result.REMOTE_ERROR)  # and the second
    pending = route.route(SET, ctx)
    ctx.sent[0].answer(TKO)
    ctx.sent[1].answer(REMOTE_ERROR)
    assert pending.reply == REMOTE_ERROR
    assert ctx.counters.result_remote_error_all_count == 1
    assert ctx.counters.result_remote_error_count == 0
    assert ctx.counters.result_tko_count == 1
    assert ctx.counters.result_error_count == 1
    assert ctx.counters.result_error_all_count == 2
