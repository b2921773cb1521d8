"""The router: what the proxy does with one parsed request.

Commands about the proxy itself (`version`, `verbosity`, `stats`, and `get` of
mcrouter's admin keys, `__mcrouter__.*`, see `_admin`) are answered here;
`flush_all` is refused unless enabled and then sent to every server; a multi-key
retrieval goes whole when the route tree sends every key the same way
(`Route.route_whole`), and is otherwise split into one request per key (mcrouter
routes each key independently) and merged back in key order; everything else goes
down the route tree.

The router holds the current `RouteTree` by one reference (`tree`); `swap` replaces
it in one assignment and each request is routed by the tree it found. Routing is
guarded: a bug in a route handle answers its request with an error and is logged
once, and the proxy keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

import attrs

from mcrouter_trio import SERVER_VERSION
from mcrouter_trio.downstream._admin import ADMIN_PREFIX, AdminCommands, AdminInfo
from mcrouter_trio.messages import (
    ARITHMETIC,
    GET_LIKE,
    STORAGE,
    Op,
    Pending,
    Reply,
    Request,
    Result,
    error_reply,
)
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.protocol import strtol
from mcrouter_trio.routing._base import NO_ROUTE, Route, default_reply
from mcrouter_trio.routing._combinators import FAILURES, ROUTING_FAILED, failing_handle, gather
from mcrouter_trio.routing._multiget import SLICE_KEYS, SlicedGet, merge
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.routing._tree import RouteTree, reachable_servers
from mcrouter_trio.routing.handles.destination import split_routing_prefix
from mcrouter_trio.upstream._context import ProxyContext

VERSION_LINE: Final = f"VERSION {SERVER_VERSION}\r\n".encode()
_FLUSH_DISABLED: Final = error_reply(Result.LOCAL_ERROR, "Command disabled")
_BAD_EXPTIME: Final = Reply(Result.CLIENT_ERROR, b"CLIENT_ERROR invalid exptime argument\r\n")
#: First bytes of keys that need more than the default root: a routing prefix (`/`),
#: maybe an admin key (`__mcrouter__.`). One set lookup on the common path.
_NOT_PLAIN: Final = frozenset((b"/", b"_"))


@attrs.frozen
class RouterSettings:
    default_route: bytes = b"/././"
    enable_flush_cmd: bool = False
    #: A routing prefix that reaches no root goes to the default root instead of
    #: failing (`--send-invalid-route-to-default`).
    send_invalid_route_to_default: bool = False
    #: Answer every routed request but reads with its default reply (`--allow-only-gets`).
    allow_only_gets: bool = False


class Router:
    """Routes requests through the current route tree."""

    def __init__(
        self,
        tree: RouteTree,
        ctx: ProxyContext,
        stats: ProxyStats,
        settings: RouterSettings | None = None,
        admin: AdminCommands | None = None,
    ) -> None:
        self.ctx = ctx
        self.admin = admin or AdminCommands(AdminInfo(None, str, {}, ctx.host_id, stats.config))
        self.stats = stats
        self.settings = settings or RouterSettings()
        self._op_counts = stats.ops
        ctx.prepare(tree)
        self.tree = tree

    def swap(self, tree: RouteTree) -> None:
        """Route with `tree` from now on; requests already routed finish on the old one.

        Destinations the new tree shares with the old one (same connection identity)
        are kept with their connections and counters; the others close once idle.
        Ejecting pools that did not change keep their ejected servers and probes.
        """
        self.ctx.prepare(tree)
        self.tree = tree
        self.ctx.retire_unused(reachable_servers([tree.broadcast, *tree.roots.values()]))

    def route(self, request: Request) -> Pending:
        op = request.op
        self._op_counts[op] += 1
        try:
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
            if request.key[:1] not in _NOT_PLAIN:
                return self.tree.default_root.route(request, self.ctx)
            return self._route_key(request)
        except Exception as exc:
            return _failed(exc)

    def route_get(self, request: Request) -> Pending:
        """`route` for a single-key `get` (the parser's shortcut), minus the checks it skips."""
        self._op_counts[Op.GET] += 1
        try:
            if request.key[:1] not in _NOT_PLAIN:
                return self.tree.default_root.route(request, self.ctx)
            return self._route_key(request)
        except Exception as exc:
            return _failed(exc)

    def _route_key(self, request: Request) -> Pending:
        """One key's request, whose key may carry a routing prefix.

        A prefix reaching several roots (`/*/*/`, `/region/*/`, globs) sends to
        all of them and answers with the first one's reply; the others finish in
        the background (mcrouter's RootRoute).
        """
        tree = self.tree
        key = request.key
        if key[:1] == b"/":
            prefix, _rest = split_routing_prefix(key)
            if prefix:
                targets = tree.targets_for(prefix)
                if len(targets) == 1:
                    return targets[0].route(request, self.ctx)
                if not targets:
                    if not self.settings.send_invalid_route_to_default:
                        return Pending(NO_ROUTE)
                    return tree.default_root.route(request, self.ctx)
                return self._fan_out(request, targets)
        elif request.op is Op.GET and key.startswith(ADMIN_PREFIX):
            return Pending(self.admin.answer(key, tree, self._is_down, self.ctx.worker_index))
        return tree.default_root.route(request, self.ctx)

    def _is_down(self, server: ServerSpec) -> bool:
        destination = self.ctx.find(server)
        return destination is not None and (destination.refusing or destination.state == "down")

    def _fan_out(self, request: Request, targets: Sequence[Route]) -> Pending:
        ctx = self.ctx
        first = targets[0].route(request, ctx)
        for target in targets[1:]:
            ctx.background.start("RootRoute", partial(target.route, request, ctx))
        return first

    def _multiget(self, request: Request, keys: Sequence[bytes]) -> Pending:
        if len(keys) > SLICE_KEYS:
            return SlicedGet(request, self._route_slice).out
        # A plain get may answer a repeated key once; gat/gats must look each copy up
        # again (memcached does: a gat that expires the item makes later copies miss).
        touching = request.op is Op.GAT or request.op is Op.GATS
        if not touching and not any(key[:1] in _NOT_PLAIN for key in keys):
            whole = self.tree.default_root.route_whole(request, self.ctx, self._split)
            if whole is not None:
                return whole
        return self._by_key(request, keys, self._route_key)

    def _route_slice(self, request: Request) -> Pending:
        """One slice of a giant multi-get (`SlicedGet`), routed as a multi-get of its own."""
        try:
            return self._multiget(request, request.keys or (request.key,))
        except Exception as exc:
            return _failed(exc)

    def _split(self, route: Route, request: Request) -> Pending:
        """A multi-get routed key by key through `route` (a failover's fallback)."""
        keys = request.keys or (request.key,)
        return self._by_key(request, keys, lambda one: route.route(one, self.ctx))

    def _by_key(
        self, request: Request, keys: Sequence[bytes], route_one: Callable[[Request], Pending]
    ) -> Pending:
        """Route each key on its own and merge the replies in the client's key order.

        Single-key gets bound for one server are gathered into one multi-key get
        (`ProxyContext.gather_gets`); if that turns out to be the client's get as it
        is, it goes whole.
        """
        touching = request.op is Op.GAT or request.op is Op.GATS
        lookups = list(keys) if touching else list(dict.fromkeys(keys))
        if touching:
            routed = [route_one(request.with_keys([key])) for key in lookups]
        else:
            self.ctx.gather_gets()
            routed = []
            try:
                for key in lookups:
                    routed.append(route_one(request.with_keys([key])))
            finally:
                whole = self.ctx.send_gathered(request.op, request, routed)
            if whole is not None:
                return whole

        def combine(replies: list[Reply], _arrival: list[int]) -> Reply:
            if touching:
                return merge(replies)
            by_key = dict(zip(lookups, replies, strict=True))
            return merge([by_key[key] for key in keys])

        return gather(routed, combine, name="multi-get")

    def _flush_all(self, request: Request) -> Pending:
        if not self.settings.enable_flush_cmd:
            return Pending(_FLUSH_DISABLED)
        if request.args and strtol(request.args[0]) is None:
            return Pending(_BAD_EXPTIME)
        return self.tree.broadcast.route(request, self.ctx)


#: What `--allow-only-gets` answers with the default reply: every routed command but
#: the reads (get, gets, gat, gats, mg, me); the proxy's own commands still answer.
_NOT_READS: Final = STORAGE | ARITHMETIC | {Op.DELETE, Op.TOUCH, Op.MS, Op.MD, Op.MA}


class GetsOnlyRouter(Router):
    """`--allow-only-gets` (mcrouter's testing flag): reads are routed, other commands
    are answered with their default reply, "nothing happened" (`NOT_STORED`,
    `NOT_FOUND`, `NS`, `NF`), and reach no server, as mcrouter's RootRoute answers them.

    A class of its own so that the usual router pays nothing for the flag.
    """

    def route(self, request: Request) -> Pending:
        if request.op in _NOT_READS:
            self._op_counts[request.op] += 1
            return Pending(default_reply(request))
        return super().route(request)


def _failed(exc: Exception) -> Pending:
    """A route handle raised while routing: this request gets an error, nothing else."""
    FAILURES.record(failing_handle(exc), exc)
    return Pending(ROUTING_FAILED)
