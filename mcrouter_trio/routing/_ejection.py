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

Mutable state lives in one `Ejector` per PoolRoute; the ring is an immutable
selector swapped in by one assignment, built in a timer callback, never while a
request is routed. A new config starts with every server in the ring. mcrouter's
hash functions (Ch3 and the others) are rebuilt with `hashing.avoiding`: keys of an
ejected server are hashed again over the servers left, the rest stay in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Final

import attrs

from mcrouter_trio.messages import Op, Pending, Reply, Request, Result
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._specs import EjectionSpec

log = logging.getLogger("mcrouter_trio.routing")

#: Builds the ring without the ejected servers: `key -> server index`.
RingBuilder = Callable[[Collection[int]], Callable[[bytes], int]]

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


class Ejector:
    """One pool's ejection state: failures in a row per server, the ejected, the ring."""

    def __init__(
        self,
        pool: str,
        servers: Sequence[Route],
        addresses: Sequence[str],
        spec: EjectionSpec,
        build: RingBuilder,
        ring: Callable[[bytes], int],
    ) -> None:
        """`ring` is the full ring, `build(())` (given, as the pool built it already)."""
        self.pool = pool
        self.spec = spec
        #: What probes go through: each server's own route, unobserved.
        self._servers = tuple(servers)
        self._addresses = tuple(addresses)
        self._build = build
        self._failures = [0] * len(servers)
        #: Servers out of the ring (or about to be, once the rebuild runs).
        self.ejected: frozenset[int] = frozenset()
        self._rebuild_due = False
        #: The current ring: replaced whole, in one assignment.
        self.ring = ring

    def select(self, key: bytes) -> int:
        """The server for `key` on the current ring."""
        return self.ring(key)

    def observe(self, index: int, reply: Reply, ctx: RouteContext) -> None:
        """Server `index` gave `reply`: count a failure, or start the count again."""
        if not is_failure(reply):
            self._failures[index] = 0
            return
        if index in self.ejected:
            return  # requests routed before the rebuild
        self._failures[index] += 1
        if self._failures[index] >= self.spec.failure_limit:
            self._eject(index, ctx)

    def _eject(self, index: int, ctx: RouteContext) -> None:
        failures = self._failures[index]
        self._failures[index] = 0
        self.ejected |= {index}
        log.warning(
            "pool %s: server %s ejected after %d failures in a row (%d of %d servers out);"
            " probed again in %d ms",
            self.pool,
            self._addresses[index],
            failures,
            len(self.ejected),
            len(self._servers),
            self.spec.retry_timeout_ms,
        )
        self._rebuild_soon(ctx)
        self._retry_later(index, ctx)

    def _retry_later(self, index: int, ctx: RouteContext) -> None:
        ctx.call_later(self.spec.retry_timeout_ms / 1000, lambda: self._probe(index, ctx))

    def _probe(self, index: int, ctx: RouteContext) -> None:
        self._servers[index].route(_PROBE, ctx).then(lambda reply: self._probed(index, reply, ctx))

    def _probed(self, index: int, reply: Reply, ctx: RouteContext) -> None:
        if reply.is_error:
            self._retry_later(index, ctx)
            return
        self.ejected -= {index}
        self._failures[index] = 0
        log.warning(
            "pool %s: server %s answered its probe and is back in the ring (%d of %d servers out)",
            self.pool,
            self._addresses[index],
            len(self.ejected),
            len(self._servers),
        )
        self._rebuild_soon(ctx)

    def _rebuild_soon(self, ctx: RouteContext) -> None:
        """Rebuild in a timer callback (one rebuild for every change made meanwhile)."""
        if not self._rebuild_due:
            self._rebuild_due = True
            ctx.call_later(0.0, self._rebuild)

    def _rebuild(self) -> None:
        self._rebuild_due = False
        ejected = self.ejected if len(self.ejected) < len(self._servers) else ()
        self.ring = self._build(ejected)


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
            ejector.observe(index, reply, ctx)
            out.resolve(reply)

        pending.then(seen)
        return out
