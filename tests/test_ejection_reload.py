"""Ejection state across config reloads, in memory: the routing context's EjectionStore.

A reload builds new PoolRoutes; `EjectionStore.adopt` (what `Router.swap` does) binds
each to the state its pool already has, so an unchanged pool keeps its ejected
servers and its one prober per server, and a changed pool starts with every server
in while its old state stops probing. The stats the store reports are checked here
too; tests/test_ejection_e2e.py reloads a real proxy.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_ejection import (
    KEYS,
    SERVERS,
    VERSION,
    answering,
    ejecting_pool,
    get,
    placement,
    send_to,
)

from mcrouter_trio.messages import Op
from mcrouter_trio.routing._ejection import EjectionStore, ejectors_in
from mcrouter_trio.routing._specs import EjectionSpec, PoolSpec, ServerSpec
from mcrouter_trio.routing.handles.failover import FailoverRoute
from mcrouter_trio.routing.handles.hash import HashSpec, PoolRoute
from mcrouter_trio.routing.testing import FakeContext

RETRY_MS = 5000
DEAD = 1


class Reports:
    """What the store reports: (server, ejected) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[ServerSpec, bool]] = []

    def __call__(self, server: ServerSpec, ejected: bool) -> None:
        self.events.append((server, ejected))


def loaded(store: EjectionStore, **options: Any) -> PoolRoute:
    """A freshly built pool (as a reload builds it), bound to the store as Router.swap does."""
    route = ejecting_pool(limit=2, retry_ms=RETRY_MS, **options)
    store.adopt(ejectors_in([route]))
    return route


def eject_dead(route: PoolRoute, ctx: FakeContext) -> None:
    send_to(route, ctx, DEAD, 2)
    ctx.advance(0)
    assert route.ejector is not None and route.ejector.ejected == {DEAD}


def probes_to_dead(ctx: FakeContext, since: int) -> int:
    return sum(
        1
        for sent in ctx.sent[since:]
        if sent.server == SERVERS[DEAD] and sent.request.op is Op.VERSION
    )


def test_an_unchanged_pool_keeps_its_ejected_server_across_reloads() -> None:
    reports = Reports()
    store = EjectionStore(reports)
    ctx = FakeContext(answer=answering({DEAD}))
    first = loaded(store)
    full = placement(first)
    eject_dead(first, ctx)
    without = placement(first)
    second = loaded(store)
    assert second.ejector is not None and second.ejector.ejected == {DEAD}
    assert placement(second) == without != full
    # Requests on the new tree never reach the dead server: no error for clients.
    sent = len(ctx.sent)
    moved = [key for key, server in zip(KEYS, full, strict=True) if server == DEAD]
    for key in moved[:50]:
        assert not second.route(get(key), ctx).reply.is_error  # type: ignore[union-attr]
    assert all(each.server != SERVERS[DEAD] for each in ctx.sent[sent:])
    assert reports.events == [(SERVERS[DEAD], True)]
    assert store.ejects == 1


def test_many_reloads_leave_one_prober_and_one_return() -> None:
    reports = Reports()
    store = EjectionStore(reports)
    dead = {DEAD}
    ctx = FakeContext(answer=answering(dead))
    first = loaded(store)
    full = placement(first)
    eject_dead(first, ctx)
    routes = [loaded(store) for _ in range(20)]
    for _period in range(3):
        sent = len(ctx.sent)
        ctx.advance(RETRY_MS / 1000)
        assert probes_to_dead(ctx, sent) == 1
    assert ctx.timers == 1  # the next probe, one
    dead.clear()
    ctx.advance(RETRY_MS / 1000)
    ctx.advance(0)
    for route in [first, *routes]:
        assert placement(route) == full
    assert reports.events == [(SERVERS[DEAD], True), (SERVERS[DEAD], False)]
    assert ctx.timers == 0


CHANGES = [
    pytest.param({"hash_func": "Modula"}, id="hash"),
    pytest.param(
        {"pool": PoolSpec("A", (*SERVERS[:2], ServerSpec("127.0.0.1", 40007)))}, id="server"
    ),
    pytest.param({"pool": PoolSpec("A", SERVERS, ejection=EjectionSpec(3, RETRY_MS))}, id="limit"),
    pytest.param({"pool": PoolSpec("A", SERVERS, ejection=EjectionSpec(2, 9000))}, id="retry"),
    pytest.param({"pool": PoolSpec("B", SERVERS, ejection=EjectionSpec(2, RETRY_MS))}, id="name"),
    pytest.param({"pool": PoolSpec("A", SERVERS)}, id="ejection-off"),
]


@pytest.mark.parametrize("change", CHANGES)
def test_a_changed_pool_starts_with_every_server_and_the_old_state_stops(
    change: dict[str, Any],
) -> None:
    reports = Reports()
    store = EjectionStore(reports)
    ctx = FakeContext(answer=answering({DEAD}))
    eject_dead(loaded(store), ctx)
    pool = change.pop("pool", PoolSpec("A", SERVERS, ejection=EjectionSpec(2, RETRY_MS)))
    hash_func = change.pop("hash_func", "Ketama")
    changed = PoolRoute(pool, HashSpec(hash_func, key_hash="md5"))
    store.adopt(ejectors_in([changed]))
    if changed.ejector is not None:
        assert not changed.ejector.ejected
    assert reports.events == [(SERVERS[DEAD], True), (SERVERS[DEAD], False)]
    assert ctx.timers == 0  # the old state's probe is cancelled
    sent = len(ctx.sent)
    ctx.advance(10 * RETRY_MS / 1000)
    assert probes_to_dead(ctx, sent) == 0


def test_requests_in_flight_on_a_dropped_state_eject_nothing() -> None:
    store = EjectionStore()
    ctx = FakeContext()
    old = loaded(store)
    keys = [key for key in KEYS if old.selected_index(get(key)) == DEAD][:2]
    for key in keys:
        old.route(get(key), ctx)
    store.adopt([])  # the pool is gone from the new config
    for waiting in ctx.waiting:
        waiting.answer(answering({DEAD})(waiting.server, waiting.request))
    ctx.advance(0)
    assert old.ejector is not None and not old.ejector.ejected
    assert ctx.timers == 0 and store.ejects == 0


def test_a_probe_in_flight_when_the_state_is_dropped_changes_nothing() -> None:
    reports = Reports()
    store = EjectionStore(reports)
    failing = answering({DEAD})
    # The dead server's gets time out; its probe stays unanswered until told.
    ctx = FakeContext(
        answer=lambda server, request: (
            None if request.op is Op.VERSION else failing(server, request)
        )
    )
    old = loaded(store)
    eject_dead(old, ctx)
    ctx.advance(RETRY_MS / 1000)
    (probe,) = ctx.waiting
    store.adopt([])
    probe.answer(VERSION)
    ctx.advance(0)
    assert old.ejector is not None and old.ejector.ejected == {DEAD}  # dropped, not rebuilt
    assert reports.events == [(SERVERS[DEAD], True), (SERVERS[DEAD], False)]
    assert ctx.timers == 0


def test_two_routes_over_the_same_pool_share_one_state() -> None:
    store = EjectionStore()
    ctx = FakeContext(answer=answering({DEAD}))
    first, second = ejecting_pool(retry_ms=RETRY_MS), ejecting_pool(retry_ms=RETRY_MS)
    tree = FailoverRoute((first, second))
    assert len(ejectors_in([tree])) == 2
    store.adopt(ejectors_in([tree]))
    eject_dead(first, ctx)
    assert second.ejector is not None and second.ejector.ejected == {DEAD}
    sent = len(ctx.sent)
    ctx.advance(RETRY_MS / 1000)
    assert probes_to_dead(ctx, sent) == 1
