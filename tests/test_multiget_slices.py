"""Giant multi-gets: routed a slice at a time, merged into the client's one reply.

In memory: `SlicedGet` paces its slices and merges their replies (`merge_slices`).
End to end: a giant get through the proxy is byte for byte what memcached answers,
over one server and over a pool, and another client's request is served between
its slices rather than after all of it.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from conftest import Client, connect, poll, pool_config, stats_on

from mcrouter_trio.messages import Op, Pending, Reply, Request, Result
from mcrouter_trio.routing._multiget import SLICE_KEYS, SLICES_IN_FLIGHT, SlicedGet, merge_slices

END = b"END\r\n"


def block(key: bytes, value: bytes = b"x") -> bytes:
    return b"VALUE %s 0 %d\r\n%s\r\n" % (key, len(value), value)


def giant(count: int, op: Op = Op.GET) -> Request:
    keys = tuple(b"k%d" % i for i in range(count))
    return Request(op, keys[0], keys, (b"0",) if op is Op.GAT else ())


# -- merge_slices: one row per rule ------------------------------------------------------

MERGE_ROWS: dict[str, tuple[list[Reply], Reply]] = {
    "hits in slice order, one END": (
        [Reply(Result.FOUND, block(b"a") + END), Reply(Result.FOUND, block(b"b") + END)],
        Reply(Result.FOUND, block(b"a") + block(b"b") + END),
    ),
    "every slice missed": (
        [Reply(Result.NOTFOUND, END), Reply(Result.NOTFOUND, END)],
        Reply(Result.NOTFOUND, END),
    ),
    "the first error replaces END, later hits kept": (
        [
            Reply(Result.FOUND, block(b"a") + END),
            Reply(Result.TIMEOUT, block(b"b") + b"SERVER_ERROR timeout\r\n"),
            Reply(Result.FOUND, block(b"c") + END),
            Reply(Result.REMOTE_ERROR, b"SERVER_ERROR oom\r\n"),
        ],
        Reply(
            Result.TIMEOUT, block(b"a") + block(b"b") + block(b"c") + b"SERVER_ERROR timeout\r\n"
        ),
    ),
    "an error with no hits before it": (
        [Reply(Result.REMOTE_ERROR, b"SERVER_ERROR oom\r\n"), Reply(Result.NOTFOUND, END)],
        Reply(Result.REMOTE_ERROR, b"SERVER_ERROR oom\r\n"),
    ),
    "a value holding CRLF and END": (
        [Reply(Result.FOUND, block(b"a", b"1\r\nEND\r\n") + END), Reply(Result.NOTFOUND, END)],
        Reply(Result.FOUND, block(b"a", b"1\r\nEND\r\n") + END),
    ),
}


@pytest.mark.parametrize(("replies", "merged"), MERGE_ROWS.values(), ids=list(MERGE_ROWS))
def test_merge_slices(replies: list[Reply], merged: Reply) -> None:
    reply = merge_slices(replies)
    assert (reply.result, reply.raw) == (merged.result, merged.raw)


# -- SlicedGet: pacing and order ---------------------------------------------------------


class Recorder:
    """A route that records each slice and lets the test answer it."""

    def __init__(self) -> None:
        self.routed: list[tuple[Request, Pending]] = []

    def __call__(self, request: Request) -> Pending:
        pending = Pending()
        self.routed.append((request, pending))
        return pending

    def outstanding(self) -> int:
        return sum(1 for _request, pending in self.routed if pending.reply is None)


def test_a_giant_get_goes_a_few_slices_at_a_time_in_key_order() -> None:
    request = giant(SLICE_KEYS * 5 + 1)
    route = Recorder()
    sliced = SlicedGet(request, route)
    assert len(route.routed) == SLICES_IN_FLIGHT
    for index in range(6):
        assert route.outstanding() <= SLICES_IN_FLIGHT
        sent, pending = route.routed[index]
        assert sent.op is Op.GET
        keys = sent.keys or ()
        assert keys == (request.keys or ())[index * SLICE_KEYS : (index + 1) * SLICE_KEYS]
        assert sliced.out.reply is None
        pending.resolve(Reply(Result.FOUND, block(keys[-1]) + END))
    assert len(route.routed) == 6
    reply = sliced.out.reply
    assert reply is not None
    last_keys = [(sent.keys or ())[-1] for sent, _ in route.routed]
    assert reply.raw == b"".join(block(key) for key in last_keys) + END


def test_slices_answered_out_of_order_merge_in_key_order() -> None:
    route = Recorder()
    sliced = SlicedGet(giant(SLICE_KEYS * 2), route)
    (_, first), (_, second) = route.routed
    second.resolve(Reply(Result.FOUND, block(b"second") + END))
    first.resolve(Reply(Result.TIMEOUT, b"SERVER_ERROR timeout\r\n"))
    assert sliced.out.reply is not None
    assert sliced.out.reply.raw == block(b"second") + b"SERVER_ERROR timeout\r\n"


def test_a_gat_is_sliced_with_its_exptime() -> None:
    route = Recorder()
    SlicedGet(giant(SLICE_KEYS + 1, Op.GAT), route)
    assert [(r.op, r.args) for r, _ in route.routed] == [(Op.GAT, (b"0",))] * 2


def test_slices_answered_at_once_do_not_nest() -> None:
    """A route answering at once (an error, a local reply) must not recurse per slice."""
    answered = Reply(Result.NOTFOUND, END)
    count = SLICE_KEYS * 3000  # 3000 slices: recursion would overflow the stack
    keys = (b"k",) * count
    sliced = SlicedGet(Request(Op.GET, b"k", keys), lambda _slice: Pending(answered))
    assert sliced.out.reply is not None
    assert sliced.out.reply.raw == END


def test_a_route_failing_between_slices_answers_the_client_with_an_error() -> None:
    route = Recorder()

    def failing_on_the_third(request: Request) -> Pending:
        if len(route.routed) == 2:
            raise RuntimeError("a bug in a route")
        return route(request)

    sliced = SlicedGet(giant(SLICE_KEYS * 4), failing_on_the_third)
    route.routed[0][1].resolve(Reply(Result.NOTFOUND, END))
    assert sliced.out.reply is not None
    assert sliced.out.reply.is_error
    route.routed[1][1].resolve(Reply(Result.NOTFOUND, END))  # late: nothing more routed
    assert len(route.routed) == 2


# -- end to end ---------------------------------------------------------------------------


def store(port: int, count: int) -> None:
    """Every other key k0..k<count> set to a value naming it."""
    with connect(port) as client:
        client.send(
            b"".join(
                b"set k%d 0 0 %d\r\nv%d\r\n" % (i, len(b"v%d" % i), i) for i in range(0, count, 2)
            )
        )
        for _ in range(0, count, 2):
            assert client.read_until(b"\r\n") == b"STORED\r\n"


def get_line(count: int) -> bytes:
    return b"get " + b" ".join(b"k%d" % i for i in range(count)) + b"\r\n"


def expected_reply(count: int) -> bytes:
    return b"".join(block(b"k%d" % i, b"v%d" % i) for i in range(0, count, 2)) + END


def read_reply(client: Client) -> bytes:
    return client.read_until(b"END\r\n")


@pytest.mark.parametrize("servers", [1, 3])
def test_a_giant_get_is_answered_as_memcached_answers_it(
    memcached_factory: Any, proxy_factory: Any, servers: int
) -> None:
    count = SLICE_KEYS * 5 + 7
    backends = [memcached_factory() for _ in range(servers)]
    proxy = proxy_factory(pool_config(*(server.address for server in backends)))
    store(proxy.port, count)
    with connect(proxy.port, timeout=30) as client:
        client.send(get_line(count) + b"get k0 k1\r\n")
        assert read_reply(client) == expected_reply(count)
        assert read_reply(client) == block(b"k0", b"v0") + END  # the next request after it
    if servers == 1:
        with connect(backends[0].port, timeout=30) as direct:
            direct.send(get_line(count))
            assert read_reply(direct) == expected_reply(count)


def test_another_clients_request_is_served_between_the_slices_of_a_giant_get(
    memcached: Any, proxy_factory: Any
) -> None:
    """The server sees another client's set before the giant get's last slice.

    memcached is stopped while the giant get is routed, so the proxy can send no
    more than its first slices; a set of the giant get's last key sent meanwhile
    must reach memcached before that key is read. Routed whole, the get would be
    ahead of the set and show the old value.
    """
    count = SLICE_KEYS * 8
    last = b"k%d" % (count - 2)
    proxy = proxy_factory(pool_config(memcached.address), "--server-timeout", "10000")
    store(proxy.port, count)
    with connect(proxy.port, timeout=30) as giant_client, connect(proxy.port) as other:
        before = int(stats_on(other).get("cmd_get", "0"))
        os.kill(memcached.process.pid, signal.SIGSTOP)
        try:
            giant_client.send(get_line(count))
            # Routed (at least its first slices) once the proxy counts it.
            assert poll(lambda: int(stats_on(other).get("cmd_get", "0")) > before)
            other.send(b"set %s 0 0 3\r\nnew\r\n" % last)
        finally:
            os.kill(memcached.process.pid, signal.SIGCONT)
        assert other.read_until(b"\r\n") == b"STORED\r\n"
        reply = read_reply(giant_client)
    assert block(last, b"new") in reply
    assert reply.count(b"VALUE ") == count // 2
