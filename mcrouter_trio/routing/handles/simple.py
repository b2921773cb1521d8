"""Leaf-like routes that need no backend, and one that picks a child at random."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from mcrouter_trio.messages import Pending, Request, Result, error_reply
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting, default_reply
from mcrouter_trio.routing._registry import IGNORED_ARGUMENT, route_type


@route_type("NullRoute", shorthand=IGNORED_ARGUMENT, shorthand_optional=True)
@attrs.frozen
class NullRoute:
    """Answers "nothing happened" at once: a miss, NOT_STORED or NOT_FOUND."""

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return Pending(default_reply(request))

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return Pending(default_reply(request))

    def targets(self) -> Sequence[Route]:
        return ()


@route_type("ErrorRoute", shorthand="response", shorthand_optional=True)
@attrs.frozen
class ErrorRoute:
    """Answers every request with an error (`SERVER_ERROR <response>`)."""

    response: str = "local error"

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return Pending(error_reply(Result.LOCAL_ERROR, self.response))

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return self.route(request, ctx)

    def targets(self) -> Sequence[Route]:
        return ()


@route_type("RandomRoute", shorthand="children")
@attrs.frozen
class RandomRoute:
    """Sends each request to a child chosen uniformly at random."""

    children: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if not self.children:
            return Pending(default_reply(request))
        return self.children[ctx.rng.randrange(len(self.children))].route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        # mcrouter draws per key: one draw for the whole get would move every key together.
        return None

    def targets(self) -> Sequence[Route]:
        return self.children
