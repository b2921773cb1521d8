"""The router: what the proxy does with one parsed request.

Commands about the proxy itself (`version`, `verbosity`, `stats`) are answered
here; `flush_all` is refused unless enabled and then sent to every server; a
multi-key retrieval is split into one request per key (mcrouter routes each key
independently) and merged back in key order, unless every key goes to one server
as it is, in which case the client's get goes there whole; everything else goes
down the route tree from the config.

`ProxyContext` is the run-time side of routing: it owns the destinations (one per
distinct server spec, shared by every client and kept across config reloads) and
starts each destination's task in the destination nursery the first time it is
needed.
"""

from __future__ import annotations

import random
import ssl
import zlib
from collections.abc import Callable
from functools import partial
from typing import Final

import attrs
import trio

from mcrouter_trio import __version__
from mcrouter_trio._fastio import WriteBatch
from mcrouter_trio.config import ProxyConfig
from mcrouter_trio.config._specs import ServerSpec
from mcrouter_trio.destination import DEFAULT_MAX_PENDING, Destination
from mcrouter_trio.messages import (
    GET_LIKE,
    Op,
    Pending,
    Reply,
    Request,
    Result,
    error_reply,
)
from mcrouter_trio.protocol import strtol, values
from mcrouter_trio.routes import (
    AllSyncRoute,
    DestinationRoute,
    PoolRoute,
    Route,
    split_routing_prefix,
)
from mcrouter_trio.stats import ProxyStats

VERSION_LINE: Final = f"VERSION {__version__} mcrouter-trio\r\n".encode()
_NO_ROUTE: Final = error_reply(Result.LOCAL_ERROR, "RootRoute: No rh found")
_FLUSH_DISABLED: Final = error_reply(Result.LOCAL_ERROR, "Command disabled")


@attrs.frozen
class RouterSettings:
    default_route: bytes = b"/././"
    enable_flush_cmd: bool = False


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
        seed: int | None = None,
    ) -> None:
        self.rng = random.Random(seed)
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
                destination.send(request).then(partial(_split_multiget, fragments))
        return None


class Router:
    """Routes requests through the current config's tree."""

    def __init__(
        self,
        config: ProxyConfig,
        ctx: ProxyContext,
        stats: ProxyStats,
        settings: RouterSettings | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.stats = stats
        self.settings = settings or RouterSettings()
        self._root: Route = config.route
        #: The root when it is a plain PoolRoute: multi-gets can then often go whole.
        self._root_pool = config.route if type(config.route) is PoolRoute else None
        self._op_counts = stats.ops
        for server in config.servers:
            ctx.destination(server)
        # flush_all reaches every server of every pool, not only those this host's
        # route tree would pick (LatestRoute, for one, uses a per-host subset).
        every_server = set(config.servers)
        for pool in config.pools.values():
            every_server.update(pool.servers)
        self._flush_route = AllSyncRoute(
            tuple(DestinationRoute(server) for server in sorted(every_server, key=repr))
        )

    def route(self, request: Request) -> Pending:
        op = request.op
        self._op_counts[op] += 1
        if op in GET_LIKE:
            keys = request.keys
            if keys is not None and len(keys) > 1:
                return self._multiget(request, keys)
        elif op is Op.VERSION:
            return Pending(Reply(Result.OK, VERSION_LINE))
        elif op is Op.VERBOSITY:
            return Pending(Reply(Result.OK, b"OK\r\n"))
        elif op is Op.STATS:
            return Pending(self.stats.reply(request.args, self.ctx.destinations))
        elif op is Op.FLUSH_ALL:
            return self._flush_all(request)
        if request.key[:1] != b"/":
            return self._root.route(request, self.ctx)
        return self._route_key(request)

    def route_get(self, request: Request) -> Pending:
        """`route` for a single-key `get` (the parser's shortcut), minus the checks it skips."""
        self._op_counts[Op.GET] += 1
        if request.key[:1] != b"/":
            return self._root.route(request, self.ctx)
        return self._route_key(request)

    def _route_key(self, request: Request) -> Pending:
        key = request.key
        if key[:1] == b"/":
            prefix, _rest = split_routing_prefix(key)
            if prefix and not _prefix_matches(prefix, self.settings.default_route):
                return Pending(_NO_ROUTE)
        return self._root.route(request, self.ctx)

    def _multiget(self, request: Request, keys: list[bytes]) -> Pending:
        # A plain get may answer a repeated key once; gat/gats must look each copy up
        # again (memcached does: a gat that expires the item makes later copies miss).
        touching = request.op is Op.GAT or request.op is Op.GATS
        if not touching and self._root_pool is not None:
            whole = self._root_pool.route_whole(request, self.ctx)
            if whole is not None:
                return whole
        lookups = keys if touching else list(dict.fromkeys(keys))
        replies: list[Reply | None] = [None] * len(lookups)
        remaining = [len(lookups)]
        out = Pending()

        def collect(index: int) -> Callable[[Reply], None]:
            def on_reply(reply: Reply) -> None:
                replies[index] = reply
                remaining[0] -= 1
                if remaining[0] == 0:
                    done = [r for r in replies if r is not None]
                    if touching:
                        out.resolve(_merge(done))
                    else:
                        by_key = dict(zip(lookups, done, strict=True))
                        out.resolve(_merge([by_key[key] for key in keys]))

            return on_reply

        if touching:
            routed = [self._route_key(request.with_keys([key])) for key in lookups]
        else:
            self.ctx.gather_gets()
            routed = []
            try:
                for key in lookups:
                    routed.append(self._route_key(request.with_keys([key])))
            finally:
                whole = self.ctx.send_gathered(request.op, request, routed)
            if whole is not None:
                return whole
        for index, pending in enumerate(routed):
            pending.then(collect(index))
        return out

    def _flush_all(self, request: Request) -> Pending:
        if not self.settings.enable_flush_cmd:
            return Pending(_FLUSH_DISABLED)
        if request.args and strtol(request.args[0]) is None:
            return Pending(Reply(Result.CLIENT_ERROR, b"CLIENT_ERROR invalid exptime argument\r\n"))
        return self._flush_route.route(request, self.ctx)


def _prefix_matches(prefix: bytes, default_route: bytes) -> bool:
    """Whether a key's routing prefix selects the default route (`*` globs a part)."""
    if prefix == default_route:
        return True
    wanted = prefix.strip(b"/").split(b"/")
    have = default_route.strip(b"/").split(b"/")
    return len(wanted) == len(have) and all(
        w == b"*" or w == h for w, h in zip(wanted, have, strict=True)
    )


def _merge(replies: list[Reply]) -> Reply:
    """One multi-get reply from per-key replies, in the client's key order.

    Hits come first in key order (duplicates repeated, as memcached does); if any
    key failed, the first error (in key order) takes the place of END, which is
    mcrouter's rule for multi-get errors.
    """
    blocks = []
    error: Reply | None = None
    for reply in replies:
        if reply.result is Result.FOUND:
            blocks.append(reply.raw[:-5])  # drop the per-key "END\r\n"
        elif reply.is_error and error is None:
            error = reply
    if error is not None:
        return Reply(error.result, b"".join(blocks) + error.raw)
    result = Result.FOUND if blocks else Result.NOTFOUND
    return Reply(result, b"".join(blocks) + b"END\r\n")


def _split_multiget(fragments: list[tuple[bytes, Pending]], reply: Reply) -> None:
    """Give each key of a batched get its own reply, as if it had been sent alone."""
    if reply.result is not Result.FOUND and not reply.raw.startswith(b"VALUE "):
        for _key, pending in fragments:  # a miss for every key, or one error for all
            pending.resolve(reply if reply.is_error else Reply(Result.NOTFOUND, b"END\r\n"))
        return
    blocks: dict[bytes, bytes] = {}
    end = 0
    for key, _header, block in values(reply.raw):
        blocks.setdefault(key, block)
        end += len(block)
    # After the blocks: END, or the error that cut the reply short.
    rest = reply.raw[end:]
    miss = Reply(Result.NOTFOUND, rest) if rest == b"END\r\n" else Reply(reply.result, rest)
    for key, pending in fragments:
        hit = blocks.get(key)
        pending.resolve(miss if hit is None else Reply(Result.FOUND, hit + b"END\r\n"))


def host_id_for(name: str) -> int:
    """A stable 32-bit id for this host (LatestRoute's per-host choice)."""
    return zlib.crc32(name.encode())
