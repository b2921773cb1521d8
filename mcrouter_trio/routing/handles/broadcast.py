"""Broadcast routes: every child gets the request."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from mcrouter_trio.messages import Pending, Reply, Request, severity
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting, default_reply
from mcrouter_trio.routing._combinators import gather
from mcrouter_trio.routing._registry import route_type


def worst_reply(replies: list[Reply], arrival: list[int]) -> Reply:
    """The most severe reply; among equally bad ones, the one that arrived first."""
    worst = replies[arrival[0]]
    for index in arrival[1:]:
        if severity(replies[index].result) > severity(worst.result):
            worst = replies[index]
    return worst


@route_type("AllSyncRoute", shorthand="children")
@attrs.frozen
class AllSyncRoute:
    """Sends to every child at once and answers with the worst reply.

    "Worst" follows mcrouter's severity order; among equally bad replies the one
    that arrived first wins. Used for replicated writes.
    """

    children: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        children = self.children
        if not children:
            return Pending(default_reply(request))
        if len(children) == 1:
            return children[0].route(request, ctx)
        pendings = [child.route(request, ctx) for child in children]
        return gather(pendings, worst_reply, name="AllSyncRoute")

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None

    def targets(self) -> Sequence[Route]:
        return self.children
