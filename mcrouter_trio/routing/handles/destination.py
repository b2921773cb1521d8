"""The leaf of every route tree: one server of one pool."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from mcrouter_trio.messages import GET_LIKE, Pending, Reply, Request, Result
from mcrouter_trio.protocol import values
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing._specs import PoolSpec, ServerSpec


def split_routing_prefix(key: bytes) -> tuple[bytes, bytes]:
    """(`/region/cluster/`, rest) for a key with a routing prefix, else (b"", key)."""
    if key[:1] != b"/":
        return b"", key
    second = key.find(b"/", 1)
    third = key.find(b"/", second + 1) if second > 0 else -1
    if third < 0:
        return b"", key
    return key[: third + 1], key[third + 1 :]


@attrs.frozen
class DestinationRoute:
    """Sends to one server, stripping the routing prefix unless the pool keeps it.

    Not a config type: `Pool|A` and PoolRoute make one per server of a pool.
    """

    server: ServerSpec
    keep_routing_prefix: bool = False

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if self.keep_routing_prefix or request.key[:1] != b"/":
            return ctx.send(self.server, request)
        prefix, _ = split_routing_prefix(request.key)
        if not prefix:
            return ctx.send(self.server, request)
        if request.keys is not None:
            stripped = request.with_keys([key[len(prefix) :] for key in request.keys])
        else:
            stripped = request.with_key(request.key[len(prefix) :])
        pending = ctx.send(self.server, stripped)
        if request.op not in GET_LIKE:
            return pending
        # Clients must see their own keys in VALUE lines, not the stripped ones.
        return sequence(
            pending, lambda reply: _restore_prefix(reply, prefix), name="DestinationRoute"
        )

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        keys = request.keys or ()
        if not self.keep_routing_prefix and any(key[:1] == b"/" for key in keys):
            return None  # prefixes are stripped key by key
        return ctx.send(self.server, request)

    def targets(self) -> Sequence[Route]:
        return ()


def pool_destinations(pool: PoolSpec) -> tuple[Route, ...]:
    """`Pool|A`: one route per slot of the pool, in order: a destination route per
    server, a route slot's own route."""
    return tuple(
        DestinationRoute(slot, pool.keep_routing_prefix) if isinstance(slot, ServerSpec) else slot
        for slot in pool.slots
    )


def _restore_prefix(reply: Reply, prefix: bytes) -> Reply:
    if reply.result is not Result.FOUND:
        return reply
    blocks = []
    for _key, header, block in values(reply.raw):
        blocks.append(b"VALUE " + prefix + header[6:] + block[len(header) :])
    return Reply(reply.result, b"".join(blocks) + b"END\r\n")
