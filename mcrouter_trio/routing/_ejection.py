"""Ejection from a pool's hash ring: twemproxy's `auto_eject_hosts`, per pool.

nutcracker's rules (`nc_server.c` `server_failure`, `server_ok`; `nc_ketama.c`
`ketama_update`), which a PoolRoute with `ejection` follows:

- Each server of the pool counts its failures in a row: a connect error or connect
  timeout, a reply timeout, a broken connection, and here also a TKO answer (the
  server's health already said no). Any other reply, memcached's own
  `SERVER_ERROR ...` included, is an answer and starts the count again.
- At `failure_limit` failures the server is ejected: the ring is rebuilt without it
  (with ketama its weight no longer counts and every other server keeps its points,
  exactly as nutcracker rebuilds its continuum), so its keys go to the others. Its
  count starts again from zero.
- Where nutcracker puts the server back blindly once `server_retry_timeout` has
  passed, this waits out the same time and then probes it with `version`: only an
  answer puts it back (a failed probe waits another retry time). So clients never see
  the errors of a server that is still down.
- If every server is ejected, the ring is the full one again: requests go to their
  servers and get those servers' own errors (nutcracker answers `Connection refused`).

Mutable state lives in one `PoolEjection` per pool identity (name, servers, settings
and hash); the ring is an immutable selector swapped in by one assignment, rebuilt
at once when a server leaves or rejoins (in the callback of the reply or probe that
decided it, so the next request already takes the new ring). Each PoolRoute holds it through its
`Ejector`. The routing context's `EjectionStore` keeps the states across config
reloads: a pool that did not change keeps its ejected servers and its one prober per
server; a pool that changed starts with every server in, and its old state stops
probing. mcrouter's hash functions (Ch3 and the others) are rebuilt with
`hashing.avoiding`: keys of an ejected server are hashed again over the servers
left, the rest stay in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from typing import Final

import attrs

from mcrouter_trio.messages import Op, Pending, Reply, Request, Result
from mcrouter_trio.routing._base import Cancellable, Route, RouteContext, SplitRouting
from mcrouter_trio.routing._specs import EjectionSpec, ServerSpec
from mcrouter_trio.routing.handles.destination import DestinationRoute

log = logging.getLogger("mcrouter_trio.routing")

#: Builds the ring without the ejected servers: `key -> server index`.
RingBuilder = Callable[[Collection[int]], Callable[[bytes], int]]
#: Told that a pool ejected a server (True) or took it back (False).
EjectionReport = Callable[[ServerSpec, bool], None]

#: Results that count as a failure of the server.
_FAILED: Final = frozenset(
    {Result.CONNECT_ERROR, Result.CONNECT_TIMEOUT, Result.TIMEOUT, Result.TKO}
)
#: A connection that broke (reset, EOF, garbage) fails its requests with this reply;
#: a server's own `SERVER_ERROR ...` (result REMOTE_ERROR too) is an answer instead.
_BROKEN_CONNECTION: Final = b"SERVER_ERROR remote error\r\n"
_PROBE: Final = Request(Op.VERSION, b"")


def is_failure(reply: Reply) -> bool:
    """Whether `reply` counts towards ejecting the server that gave it."""
    return reply.result in _FAILED or (
        reply.result is Result.REMOTE_ERROR and reply.raw == _BROKEN_CONNECTION
    )


class PoolEjection:
    """One pool's ejection state: failures in a row per server, the ejected, the ring.

    Shared by every `Ejector` whose pool has the same identity (`Ejector.key`), in
    this tree and, through the `EjectionStore`, in the trees that replace it.
    """

    def __init__(
        self,
        pool: str,
        servers: Mapping[int, DestinationRoute],
        spec: EjectionSpec,
        build: RingBuilder,
        ring: Callable[[bytes], int],
    ) -> None:
        """`servers` are the pool's server slots by position (a route slot is never
        ejected); `ring` is the full ring, `build(())` (given, as the pool built it
        already)."""
        self.pool = pool
        self.spec = spec
        #: What probes go through: each server's own route, unobserved.
        self._servers = dict(servers)
        self._build = build
        self._failures = dict.fromkeys(servers, 0)
        #: Servers out of the ring.
        self.ejected: frozenset[int] = frozenset()
        #: The current ring: replaced whole, in one assignment.
        self.ring = ring
        #: Each ejected server's timer: its next probe.
        self._retries: dict[int, Cancellable] = {}
        #: Told of each ejection and return (set by the store that keeps this state).
        self.report: EjectionReport | None = None
        #: Dropped by its store (the pool changed): no more ejections, probes or reports.
        self.closed = False

    def observe(self, index: int, reply: Reply, ctx: RouteContext) -> None:
        """Server `index` gave `reply`: count a failure, or start the count again."""
        if not is_failure(reply):
            self._failures[index] = 0
            return
        if index in self.ejected or self.closed:
            return  # requests routed before the ejection, or by a replaced config
        self._failures[index] += 1
        if self._failures[index] >= self.spec.failure_limit:
            self._eject(index, ctx)

    def close(self) -> None:
        """Forget this state: cancel its probes; its ejected servers count as back."""
        self.closed = True
        for timer in self._retries.values():
            timer.cancel()
        self._retries.clear()
        if self.report is not None:
            for index in sorted(self.ejected):
                self.report(self._servers[index].server, False)

    def _eject(self, index: int, ctx: RouteContext) -> None:
        failures = self._failures[index]
        self._failures[index] = 0
        self.ejected |= {index}
        if self.report is not None:
            self.report(self._servers[index].server, True)
        log.warning(
            "pool %s: server %s ejected after %d failures in a row (%d of %d servers out);"
            " probed again in %d ms",
            self.pool,
            self._servers[index].server.address,
            failures,
            len(self.ejected),
            len(self._servers),
            self.spec.retry_timeout_ms,
        )
        self._rebuild()
        self._retry_later(index, ctx)

    def _retry_later(self, index: int, ctx: RouteContext) -> None:
        delay = self.spec.retry_timeout_ms / 1000
        self._retries[index] = ctx.call_later(delay, lambda: self._probe(index, ctx))

    def _probe(self, index: int, ctx: RouteContext) -> None:
        del self._retries[index]
        self._servers[index].route(_PROBE, ctx).then(lambda reply: self._probed(index, reply, ctx))

    def _probed(self, index: int, reply: Reply, ctx: RouteContext) -> None:
        if self.closed:
            return
        if reply.is_error:
            self._retry_later(index, ctx)
            return
        self.ejected -= {index}
        self._failures[index] = 0
        if self.report is not None:
            self.report(self._servers[index].server, False)
        log.warning(
            "pool %s: server %s answered its probe and is back in the ring (%d of %d servers out)",
            self.pool,
            self._servers[index].server.address,
            len(self.ejected),
            len(self._servers),
        )
        self._rebuild()

    def _rebuild(self) -> None:
        ejected = self.ejected if len(self.ejected) < len(self._servers) else ()
        self.ring = self._build(ejected)


class Ejector:
    """A PoolRoute's hold on its pool's ejection state.

    Made with a state of its own, all servers in (a config is built away from the
    event loop, where no state may be shared); `EjectionStore.adopt` then binds it to
    the state its pool's identity already has, if any, before the tree routes.
    """

    __slots__ = ("key", "state")

    def __init__(self, key: Hashable, state: PoolEjection) -> None:
        #: The pool's identity: its name, servers and settings, and the hash.
        self.key = key
        self.state = state

    @property
    def ejected(self) -> frozenset[int]:
        return self.state.ejected

    def select(self, key: bytes) -> int:
        """The server for `key` on the current ring."""
        return self.state.ring(key)


class EjectionStore:
    """Every pool's ejection state, by pool identity: kept across config reloads.

    Owned by the routing context, which outlives route trees. A new tree's pools that
    are the same as before (same name, servers, settings and hash) keep their ejected
    servers, failure counts and probes; any other pool starts with every server in, and
    the state of a pool that is gone or changed is closed (its probes stop). So there
    is one prober per pool and server, however many reloads there were.
    """

    def __init__(self, report: EjectionReport | None = None) -> None:
        """`report(server, ejected)` is told of each ejection and return (for stats)."""
        self._report = report
        self._states: dict[Hashable, PoolEjection] = {}
        #: Ejections so far, every pool's (twemproxy's `server_ejects`, proxy-wide).
        self.ejects = 0

    def adopt(self, ejectors: Iterable[Ejector]) -> None:
        """Bind a new tree's ejectors to their pools' states; close the states left over."""
        states: dict[Hashable, PoolEjection] = {}
        for ejector in ejectors:
            state = states.get(ejector.key) or self._states.get(ejector.key)
            if state is None:
                state = ejector.state
                state.report = self._reported
            ejector.state = state
            states[ejector.key] = state
        for key, state in self._states.items():
            if states.get(key) is not state:
                state.close()
        self._states = states

    def _reported(self, server: ServerSpec, ejected: bool) -> None:
        if ejected:
            self.ejects += 1
        if self._report is not None:
            self._report(server, ejected)


def ejectors_in(roots: Iterable[Route]) -> list[Ejector]:
    """Every ejector a request routed from `roots` can meet (each once)."""
    found: dict[int, Ejector] = {}
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, EjectionWatch):
            found.setdefault(id(node.ejector), node.ejector)
        stack.extend(node.targets())
    return list(found.values())


@attrs.frozen
class EjectionWatch:
    """One server slot of an ejecting pool: routes to it and reports each reply.

    Not a config type: PoolRoute puts one around each slot when ejection is on.
    Its own Pending, so a failover above that recovers the reply does not hide the
    server's answer from the count.
    """

    child: Route
    index: int
    ejector: Ejector

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if ctx.dry_run:
            return self.child.route(request, ctx)
        return self._watched(self.child.route(request, ctx), ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        pending = self.child.route_whole(request, ctx, split)
        if pending is None or ctx.dry_run:
            return pending
        return self._watched(pending, ctx)

    def targets(self) -> Sequence[Route]:
        return (self.child,)

    def _watched(self, pending: Pending, ctx: RouteContext) -> Pending:
        out = Pending()
        ejector, index = self.ejector, self.index

        def seen(reply: Reply) -> None:
            ejector.state.observe(index, reply, ctx)
            out.resolve(reply)

        pending.then(seen)
        return out
