"""Broadcast handles in memory: which reply the client gets, and when (one row per rule)."""

from __future__ import annotations

import pytest
from handle_helpers import (
    CONNECT_ERROR,
    DELETED,
    HIT,
    MISS,
    NOT_FOUND,
    NOT_STORED,
    STORED,
    TIMEOUT,
    destinations,
    port_of,
    request,
)

from mcrouter_trio.messages import Reply
from mcrouter_trio.routing.handles.broadcast import (
    AllAsyncRoute,
    AllFastestRoute,
    AllInitialRoute,
    AllMajorityRoute,
)
from mcrouter_trio.routing.testing import FakeContext

GET = request(b"get k\r\n")
SET = request(b"set k 0 0 1\r\nv\r\n")
DELETE = request(b"delete k\r\n")


@pytest.mark.parametrize(
    ("wire", "default"),
    [
        pytest.param(b"get k\r\n", b"END\r\n", id="get-miss"),
        pytest.param(b"set k 0 0 1\r\nv\r\n", b"NOT_STORED\r\n", id="set-not-stored"),
        pytest.param(b"delete k\r\n", b"NOT_FOUND\r\n", id="delete-not-found"),
        pytest.param(b"mg k v\r\n", b"EN\r\n", id="meta-get-miss"),
    ],
)
def test_all_async_answers_the_default_reply_at_once_and_sends_to_every_child(
    wire: bytes, default: bytes
) -> None:
    ctx = FakeContext()
    pending = AllAsyncRoute(destinations(3)).route(request(wire), ctx)
    assert pending.reply is not None and pending.reply.raw == default
    assert [port_of(sent) for sent in ctx.sent] == [1, 2, 3]
    assert ctx.background.in_flight == 3
    for sent in ctx.sent:
        sent.answer(STORED)
    assert ctx.background.in_flight == 0


def test_all_async_drops_sends_over_the_background_cap() -> None:
    ctx = FakeContext(background_cap=2)
    AllAsyncRoute(destinations(3)).route(SET, ctx)
    assert len(ctx.sent) == 2
    assert ctx.background.dropped == 1


def test_all_initial_answers_with_the_first_child_and_sends_to_the_others_in_the_background() -> (
    None
):
    ctx = FakeContext()
    pending = AllInitialRoute(destinations(3)).route(SET, ctx)
    assert sorted(port_of(sent) for sent in ctx.sent) == [1, 2, 3]
    assert ctx.background.in_flight == 2
    by_port = {port_of(sent): sent for sent in ctx.sent}
    by_port[2].answer(NOT_STORED)
    by_port[3].answer(TIMEOUT)
    assert pending.reply is None  # the others' replies do not answer the client
    by_port[1].answer(STORED)
    assert pending.reply is STORED


FASTEST_ROWS = [
    # (replies in arrival order as (child, reply), expected reply, answered after n replies)
    pytest.param([(2, MISS), (1, HIT)], MISS, 1, id="a-fast-miss-wins"),
    pytest.param([(1, TIMEOUT), (3, HIT), (2, MISS)], HIT, 2, id="errors-are-skipped"),
    pytest.param(
        [(3, TIMEOUT), (1, CONNECT_ERROR), (2, TIMEOUT)], TIMEOUT, 3, id="all-errors-the-last"
    ),
]


@pytest.mark.parametrize(("arrivals", "expected", "after"), FASTEST_ROWS)
def test_all_fastest(arrivals: list[tuple[int, Reply]], expected: Reply, after: int) -> None:
    ctx = FakeContext()
    pending = AllFastestRoute(destinations(3)).route(GET, ctx)
    by_port = {port_of(sent): sent for sent in ctx.sent}
    assert sorted(by_port) == [1, 2, 3]
    for count, (port, reply) in enumerate(arrivals, 1):
        by_port[port].answer(reply)
        assert (pending.reply is not None) == (count >= after)
    assert pending.reply is expected


MAJORITY_ROWS = [
    pytest.param(3, [DELETED, NOT_FOUND, DELETED], DELETED, 3, id="majority-of-three"),
    pytest.param(3, [DELETED, DELETED, NOT_FOUND], DELETED, 2, id="stops-at-the-majority"),
    pytest.param(
        4, [DELETED, NOT_FOUND, DELETED, NOT_FOUND], NOT_FOUND, 4, id="tie-goes-to-the-worse"
    ),
    pytest.param(
        4, [NOT_FOUND, DELETED, DELETED, NOT_FOUND], NOT_FOUND, 4, id="tie-worse-arriving-last"
    ),
    pytest.param(3, [DELETED, NOT_FOUND, TIMEOUT], TIMEOUT, 3, id="no-majority-one-each-the-worst"),
    pytest.param(
        5, [TIMEOUT, DELETED, DELETED, NOT_FOUND, TIMEOUT], TIMEOUT, 5, id="most-votes-then-worse"
    ),
]


@pytest.mark.parametrize(("children", "replies", "expected", "after"), MAJORITY_ROWS)
def test_all_majority(children: int, replies: list[Reply], expected: Reply, after: int) -> None:
    ctx = FakeContext()
    pending = AllMajorityRoute(destinations(children)).route(DELETE, ctx)
    assert len(ctx.sent) == children
    for count, (sent, reply) in enumerate(zip(ctx.sent, replies, strict=True), 1):
        sent.answer(reply)
        assert (pending.reply is not None) == (count >= after), count
    assert pending.reply is not None
    assert pending.reply.result is expected.result


def test_all_majority_answers_with_the_latest_reply_of_the_majority_result() -> None:
    ctx = FakeContext()
    pending = AllMajorityRoute(destinations(3)).route(GET, ctx)
    first = Reply(HIT.result, b"VALUE k 0 1\r\na\r\nEND\r\n")
    second = Reply(HIT.result, b"VALUE k 0 1\r\nb\r\nEND\r\n")
    ctx.sent[0].answer(first)
    ctx.sent[1].answer(second)
    assert pending.reply is second


@pytest.mark.parametrize(
    "route_class", [AllAsyncRoute, AllInitialRoute, AllFastestRoute, AllMajorityRoute]
)
def test_no_children_answers_the_default_reply(route_class: type) -> None:
    ctx = FakeContext()
    pending = route_class(()).route(SET, ctx)
    assert pending.reply is not None and pending.reply.raw == b"NOT_STORED\r\n"
    assert ctx.sent == []


@pytest.mark.parametrize("route_class", [AllInitialRoute, AllFastestRoute, AllMajorityRoute])
def test_one_child_is_that_child(route_class: type) -> None:
    ctx = FakeContext()
    pending = route_class(destinations(1)).route(SET, ctx)
    ctx.sent[0].answer(TIMEOUT)
    assert pending.reply is TIMEOUT
    assert ctx.background.started == 0
