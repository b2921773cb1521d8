"""mcrouter's failover tag (`failover_tag: true`): failed-over keys get `:failover=1`.

In mcrouter a FailoverRoute with `failover_tag` counts its failovers, and every
server request made under a failover carries the key with `:failover=1` appended
(`carbon::detail::setRequestFailover`): only for a key with a hash stop (`|#|`,
whose routing key, and so every hash choice, the tag leaves alone), and only when
the tagged key stays within memcached's 250 bytes. The client never sees the tag.

Here the tag is added as the request enters a failover child rather than at each
server; the two differ only when a route below rewrites the key (ModifyKeyRoute).
A key that already ends with the tag is not tagged twice (nested tagged failovers
tag once, as in mcrouter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

from mcrouter_trio.messages import META, Pending, Request
from mcrouter_trio.protocol._requests import KEY_MAX_LENGTH
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing.handles.destination import split_routing_prefix
from mcrouter_trio.routing.handles.modify import route_under_key

FAILOVER_TAG: Final = b":failover=1"
_HASH_STOP: Final = b"|#|"


def tagged_key(key: bytes) -> bytes | None:
    """`key` with the failover tag, or None when mcrouter would send it unchanged."""
    if _HASH_STOP not in key or key.endswith(FAILOVER_TAG):
        return None
    _prefix, rest = split_routing_prefix(key)  # the server gets the key without it
    if len(rest) + len(FAILOVER_TAG) > KEY_MAX_LENGTH:
        return None
    return key + FAILOVER_TAG


@attrs.frozen
class FailoverTagRoute:
    """A failover child of a tagging FailoverRoute (not a config type)."""

    target: Route

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        new_key = tagged_key(request.key)
        if new_key is None or (request.op in META and b"b" in request.args):
            return self.target.route(request, ctx)  # base64 keys are passed on as they are
        return route_under_key(self.target, request, new_key, ctx, "FailoverRoute")

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # keys are tagged one by one

    def targets(self) -> Sequence[Route]:
        return (self.target,)


def tag_failovers(routes: Sequence[Route]) -> tuple[Route, ...]:
    """`routes` in failover order, every one after the first tagging its keys."""
    return (*routes[:1], *(FailoverTagRoute(route) for route in routes[1:]))


class TaggedOrder(Sequence[Route]):
    """A failover policy's order (chosen lazily, one index at a time), tagging after the first."""

    __slots__ = ("_order",)

    def __init__(self, order: Sequence[Route]) -> None:
        self._order = order

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, index: int) -> Route:  # type: ignore[override]
        route = self._order[index]
        return route if index == 0 else FailoverTagRoute(route)
