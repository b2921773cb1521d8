"""The router: what the proxy does with one parsed request.

Commands about the proxy itself (`version`, `verbosity`, `stats`) are answered
here; `flush_all` is refused unless enabled and then sent to every server; a
multi-key retrieval is split into one request per key (mcrouter routes each key
independently) and merged back in key order, unless every key goes to one server
as it is, in which case the client's get goes there whole; everything else goes
down the route tree from the config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from mcrouter_trio import SERVER_VERSION
from mcrouter_trio.config import ProxyConfig
from mcrouter_trio.messages import (
    GET_LIKE,
    Op,
    Pending,
    Reply,
    Request,
    Result,
    error_reply,
)
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.protocol import strtol
from mcrouter_trio.routing._multiget import merge
from mcrouter_trio.routing.handles import (
    AllSyncRoute,
    DestinationRoute,
    PoolRoute,
    Route,
    split_routing_prefix,
)
from mcrouter_trio.upstream._context import ProxyContext

VERSION_LINE: Final = f"VERSION {SERVER_VERSION}\r\n".encode()
_NO_ROUTE: Final = error_reply(Result.LOCAL_ERROR, "RootRoute: No rh found")
_FLUSH_DISABLED: Final = error_reply(Result.LOCAL_ERROR, "Command disabled")


@attrs.frozen
class RouterSettings:
    default_route: bytes = b"/././"
    enable_flush_cmd: bool = False


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
                        out.resolve(merge(done))
                    else:
                        by_key = dict(zip(lookups, done, strict=True))
                        out.resolve(merge([by_key[key] for key in keys]))

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
