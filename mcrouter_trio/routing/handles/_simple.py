"""Leaf-like routes that need no backend or pick a child at random."""

from __future__ import annotations

import attrs

from mcrouter_trio.messages import Pending, Request, Result, error_reply
from mcrouter_trio.routing._base import Route, RouteContext, default_reply


@attrs.frozen
class NullRoute:
    """Answers "nothing happened" at once: a miss, NOT_STORED or NOT_FOUND."""

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return Pending(default_reply(request))

    def children(self) -> list[Route]:
        return []


@attrs.frozen
class ErrorRoute:
    """Answers every request with an error (`SERVER_ERROR <response>`)."""

    response: str = "local error"

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return Pending(error_reply(Result.LOCAL_ERROR, self.response))

    def children(self) -> list[Route]:
        return []


@attrs.frozen
class RandomRoute:
    """Sends each request to a child chosen uniformly at random."""

    children_: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if not self.children_:
            return Pending(default_reply(request))
        return self.children_[ctx.rng.randrange(len(self.children_))].route(request, ctx)

    def children(self) -> list[Route]:
        return list(self.children_)
