"""The routing context at run time: what route handles reach I/O and time through.

`ProxyContext` owns the destination registry: one `Destination` per connection
identity (address, protocol, TLS settings, timeout; see `ServerSpec.identity`), shared by
every client and by every route tree, so a new tree keeps the connections. Each
destination's task starts in the destination nursery the first time it is needed.
It also owns the proxy's one timer task (`call_later`), the cap on
fire-and-forget requests (`background`), the servers' TKO state (`tko`, one
tracker per `host:port`, shared by the destinations that reach it) and the pools'
ejection state (`ejections`, kept across reloads while a pool is unchanged).
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable, Iterable
from functools import partial

import trio

from mcrouter_trio.counters import ProxyCounters
from mcrouter_trio.messages import Op, Pending, Reply, Request
from mcrouter_trio.routing._base import DeleteSpool
from mcrouter_trio.routing._combinators import FAILURES, ROUTING_FAILED, Background
from mcrouter_trio.routing._ejection import EjectionStore, ejectors_in
from mcrouter_trio.routing._multiget import split_multiget
from mcrouter_trio.routing._specs import ConnectionKey, ServerSpec
from mcrouter_trio.routing._timers import Timer, TimerQueue
from mcrouter_trio.routing._tree import RouteTree
from mcrouter_trio.routing.handles.shadow import DEFAULT_MAX_SHADOW_REQUESTS, SHADOW_NAME
from mcrouter_trio.transport._socket import Parker, WriteBatch
from mcrouter_trio.upstream._destination import DEFAULT_MAX_PENDING, Destination
from mcrouter_trio.upstream._health import HealthSettings, TkoRegistry

SSLContextFor = Callable[[ServerSpec], Callable[[], ssl.SSLContext] | None]


class ProxyContext:
    """Implements `RouteContext`: the destinations, the clock and timers, background work."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        ssl_context_for: SSLContextFor | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        batch_gets: bool | None = None,
        host_id: int = 0,
        worker_index: int = 0,
        health: HealthSettings | None = None,
        max_shadow_requests: int = DEFAULT_MAX_SHADOW_REQUESTS,
        counters: ProxyCounters | None = None,
    ) -> None:
        self.rng = random.Random()
        #: The proxy's counters: routing events and every destination's results.
        self.counters = counters if counters is not None else ProxyCounters()
        self.health = health or HealthSettings()
        self.tko = TkoRegistry(self.health, self.counters)
        #: Every ejecting pool's state (`auto_eject_hosts`); `Router` binds trees to it.
        self.ejections = EjectionStore(self._ejection_changed)
        self.host_id = host_id
        self.worker_index = worker_index
        #: The delete spool (`--async-dir`), set when serving starts unless disabled.
        self.asynclog: DeleteSpool | None = None
        self.dry_run = False
        #: Fire-and-forget work; shadow copies in flight are capped apart
        #: (`--target-max-shadow-requests`, 0: only by the overall cap).
        self.background = Background(limits={SHADOW_NAME: max_shadow_requests})
        self._by_identity: dict[ConnectionKey, Destination] = {}
        #: Every destination, by the spec it was opened for (live, for stats).
        self.destinations: dict[ServerSpec, Destination] = {}
        #: Every spec seen so far -> its destination (the per-request look-up).
        self._by_spec: dict[ServerSpec, Destination] = {}
        self._nursery = nursery
        self._ssl_context_for = ssl_context_for
        self._max_pending = max_pending
        self._batch_gets = batch_gets
        self._gathering: dict[Destination, list[tuple[bytes, Pending]]] | None = None
        #: The longest timeout among each destination's gathered gets.
        self._gathered_timeout: dict[Destination, float] = {}
        self._timers = TimerQueue()
        self._timers_changed = Parker()
        #: Batches the client writes of replies resolved by destination readers.
        self.client_writes = WriteBatch()
        #: Batches the server writes of requests routed by one reactor pass.
        self.backend_writes = WriteBatch()

    def prepare(self, tree: RouteTree) -> None:
        """Get ready for `tree` to route: a destination for each of its servers, its
        pools' TKO limits, and the ejection state of its pools that did not change."""
        for server in tree.servers:
            self.destination(server).reinstate()
        self.tko.limit_pools(tree.pools.values())
        self.ejections.adopt(ejectors_in(tree.roots.values()))

    def destination(self, server: ServerSpec) -> Destination:
        destination = self._by_spec.get(server)
        if destination is not None:
            return destination
        destination = self._by_identity.get(server.identity)
        if destination is None:
            tls = self._ssl_context_for(server) if self._ssl_context_for else None
            destination = Destination(
                server,
                ssl_context=tls,
                max_pending=self._max_pending,
                batch_gets=self._batch_gets,
                client_writes=self.client_writes,
                backend_writes=self.backend_writes,
                tracker=self.tko.tracker(server.address) if self.health.tko_tracking else None,
                health=self.health,
                rng=self.rng,
                census=self._census,
                counters=self.counters,
            )
            self._by_identity[server.identity] = destination
            self.destinations[server] = destination
            self._nursery.start_soon(self._run, destination, name=f"destination {server.address}")
        self._by_spec[server] = destination
        return destination

    def find(self, server: ServerSpec) -> Destination | None:
        """The destination `server` connects through, if it has one (no new one is made)."""
        return self._by_identity.get(server.identity)

    def retire_unused(self, servers: Iterable[ServerSpec]) -> None:
        """Close, once idle, every destination none of `servers` connects to."""
        kept = {server.identity for server in servers}
        for identity, destination in list(self._by_identity.items()):
            if identity not in kept:
                destination.retire()

    async def _run(self, destination: Destination) -> None:
        try:
            await destination.run()
        finally:
            # Gone (retired, or the proxy is stopping): a later send opens a new one.
            if self._by_identity.get(destination.server.identity) is destination:
                del self._by_identity[destination.server.identity]
                del self.destinations[destination.server]
            for spec in [spec for spec, known in self._by_spec.items() if known is destination]:
                del self._by_spec[spec]

    def _ejection_changed(self, server: ServerSpec, ejected: bool) -> None:
        """A pool ejected `server` or took it back: its `stats servers` counts."""
        destination = self.find(server)
        if destination is None:
            return
        if ejected:
            destination.stats.ejections += 1
            destination.stats.ejected += 1
        else:
            destination.stats.ejected -= 1

    def _census(self) -> str:
        """ "N of M servers up", for destinations' log lines."""
        up = sum(1 for d in self.destinations.values() if d.state == "up")
        return f"{up} of {len(self.destinations)} servers up"

    def send(self, server: ServerSpec, request: Request) -> Pending:
        destination = self._by_spec.get(server)
        if destination is None:
            destination = self.destination(server)
        gathering = self._gathering
        if gathering is not None and (request.op is Op.GET or request.op is Op.GETS):
            pending = Pending()
            gathering.setdefault(destination, []).append((request.key, pending))
            timeouts = self._gathered_timeout
            if server.timeout > timeouts.get(destination, 0.0):
                timeouts[destination] = server.timeout
            return pending
        return destination.send(request, server.timeout)

    # -- time ----------------------------------------------------------------------

    def now(self) -> float:
        return trio.current_time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        earliest = self._timers.next_deadline()
        timer = self._timers.add(trio.current_time() + delay, callback)
        if earliest is None or timer.deadline < earliest:
            self._timers_changed.wake()
        return timer

    async def run_timers(self) -> None:
        """The proxy's one timer task: fires due timers; runs until cancelled."""
        timers = self._timers
        while True:
            deadline = timers.next_deadline()
            if deadline is None:
                await self._timers_changed.park()
                continue
            with trio.move_on_at(deadline):
                await self._timers_changed.park()  # an earlier timer came in
            # Requests and replies from the callbacks go out once, at the end.
            self.backend_writes.hold()
            self.client_writes.hold()
            try:
                timers.fire_due(trio.current_time())
            finally:
                self.client_writes.release()
                self.backend_writes.release()

    # -- batched multi-gets ---------------------------------------------------------

    def gather_gets(self) -> None:
        """Hold back single-key gets sent from now on, to batch them per server."""
        self._gathering = {}

    def send_gathered(
        self, op: Op, whole: Request | None = None, routed: list[Pending] | None = None
    ) -> Pending | None:
        """Send what `gather_gets` held back: one multi-key get per server.

        mcrouter sends one request per key; batching a multi-get per server (as
        twemproxy does) costs the backend one command and the proxy one reply to
        frame instead of one per key.

        `whole` is the client's multi-get and `routed` the Pending its route gave each
        distinct key, in order. If every key went to one server, as it is and untouched
        by route handles (each Pending is the one `send` returned), `whole` goes to that
        server as the client sent it and its Pending is returned: the server's reply is
        then exactly the merged reply, so splitting it per key and merging it again is
        skipped. Otherwise the result is None.
        """
        gathering, self._gathering = self._gathering, None
        timeouts, self._gathered_timeout = self._gathered_timeout, {}
        if not gathering:
            return None
        if whole is not None and routed is not None and len(gathering) == 1:
            ((destination, fragments),) = gathering.items()
            lookups = list(dict.fromkeys(whole.keys or ()))
            if len(fragments) == len(routed) == len(lookups) and all(
                fragment is pending and key == lookup
                for (key, fragment), pending, lookup in zip(fragments, routed, lookups, strict=True)
            ):
                return destination.send(whole, timeouts[destination])
        for destination, fragments in gathering.items():
            keys = tuple(key for key, _ in fragments)
            request = Request(op, keys[0], keys)
            sent = destination.send(request, timeouts[destination])
            if len(fragments) == 1:
                sent.then(fragments[0][1].resolve)
            else:
                sent.then(partial(_split, fragments))
        return None


def _split(fragments: list[tuple[bytes, Pending]], reply: Reply) -> None:
    """`split_multiget`, guarded: if it fails, every key still gets an answer."""
    try:
        split_multiget(fragments, reply)
    except Exception as exc:
        FAILURES.record("multi-get", exc)
        for _key, pending in fragments:
            pending.resolve(ROUTING_FAILED)
