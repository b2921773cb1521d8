"""Broadcast routes."""

from __future__ import annotations

import attrs

from mcrouter_trio.messages import Pending, Reply, Request, severity
from mcrouter_trio.routing._base import Route, RouteContext, default_reply


@attrs.frozen
class AllSyncRoute:
    """Sends to every child at once and answers with the worst reply.

    "Worst" follows mcrouter's severity order; among equally bad replies the one
    that arrived first wins. Used for replicated writes.
    """

    children_: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        children = self.children_
        if not children:
            return Pending(default_reply(request))
        if len(children) == 1:
            return children[0].route(request, ctx)
        out = Pending()
        worst: list[Reply] = []
        remaining = [len(children)]

        def on_reply(reply: Reply) -> None:
            if not worst:
                worst.append(reply)
            elif severity(reply.result) > severity(worst[0].result):
                worst[0] = reply
            remaining[0] -= 1
            if remaining[0] == 0:
                out.resolve(worst[0])

        for child in children:
            child.route(request, ctx).then(on_reply)
        return out

    def children(self) -> list[Route]:
        return list(self.children_)
