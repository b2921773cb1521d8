"""The routing context at run time: the destinations behind the route handles.

`ProxyContext` is what route handles reach I/O through. It owns the destination
registry (one `Destination` per distinct server spec, shared by every client and
kept across config reloads) and starts each destination's task in the destination
nursery the first time it is needed.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable
from functools import partial

import trio

from mcrouter_trio.messages import Op, Pending, Request
from mcrouter_trio.routing._multiget import split_multiget
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.transport._socket import WriteBatch
from mcrouter_trio.upstream._destination import DEFAULT_MAX_PENDING, Destination


class ProxyContext:
    """Implements `RouteContext`: the destinations behind the route handles."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        ssl_context_for: Callable[[ServerSpec], Callable[[], ssl.SSLContext] | None] | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        batch_gets: bool | None = None,
        host_id: int = 0,
    ) -> None:
        self.rng = random.Random()
        self.host_id = host_id
        self.destinations: dict[ServerSpec, Destination] = {}
        self._nursery = nursery
        self._ssl_context_for = ssl_context_for
        self._max_pending = max_pending
        self._batch_gets = batch_gets
        self._gathering: dict[Destination, list[tuple[bytes, Pending]]] | None = None
        #: Batches the client writes of replies resolved by destination readers.
        self.client_writes = WriteBatch()
        #: Batches the server writes of requests routed by one reactor pass.
        self.backend_writes = WriteBatch()

    def destination(self, server: ServerSpec) -> Destination:
        destination = self.destinations.get(server)
        if destination is None:
            tls = self._ssl_context_for(server) if self._ssl_context_for else None
            destination = Destination(
                server,
                ssl_context=tls,
                max_pending=self._max_pending,
                batch_gets=self._batch_gets,
                client_writes=self.client_writes,
                backend_writes=self.backend_writes,
            )
            self.destinations[server] = destination
            self._nursery.start_soon(destination.run, name=f"destination {server.address}")
        return destination

    def send(self, server: ServerSpec, request: Request) -> Pending:
        destination = self.destinations.get(server)
        if destination is None:
            destination = self.destination(server)
        gathering = self._gathering
        if gathering is not None and (request.op is Op.GET or request.op is Op.GETS):
            pending = Pending()
            gathering.setdefault(destination, []).append((request.key, pending))
            return pending
        return destination.send(request)

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
        if not gathering:
            return None
        if whole is not None and routed is not None and len(gathering) == 1:
            ((destination, fragments),) = gathering.items()
            lookups = list(dict.fromkeys(whole.keys or ()))
            if len(fragments) == len(routed) == len(lookups) and all(
                fragment is pending and key == lookup
                for (key, fragment), pending, lookup in zip(fragments, routed, lookups, strict=True)
            ):
                return destination.send(whole)
        for destination, fragments in gathering.items():
            keys = [key for key, _ in fragments]
            request = Request(op, keys[0], keys)
            if len(fragments) == 1:
                destination.send(request).then(fragments[0][1].resolve)
            else:
                destination.send(request).then(partial(split_multiget, fragments))
        return None
