"""Broadcast routes: every child gets the request; they differ in which reply the client gets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import attrs

from mcrouter_trio.messages import FAILOVER_ERRORS, Pending, Reply, Request, Result, severity
from mcrouter_trio.routing._base import (
    KeyByKey,
    OverChildren,
    Route,
    RouteContext,
    default_reply,
)
from mcrouter_trio.routing._combinators import gather, quorum
from mcrouter_trio.routing._registry import route_type


def _to_every_child(
    children: Sequence[Route],
    request: Request,
    ctx: RouteContext,
    combine: Callable[[list[Pending]], Pending],
) -> Pending:
    """`combine` of every child's reply; no child: the default reply; one: its own."""
    if not children:
        return Pending(default_reply(request))
    if len(children) == 1:
        return children[0].route(request, ctx)
    return combine([child.route(request, ctx) for child in children])


def worst_reply(replies: list[Reply], arrival: list[int]) -> Reply:
    """The most severe reply; among equally bad ones, the one that arrived first."""
    worst = replies[arrival[0]]
    for index in arrival[1:]:
        if severity(replies[index].result) > severity(worst.result):
            worst = replies[index]
    return worst


@route_type("AllSyncRoute", shorthand="children")
@attrs.frozen
class AllSyncRoute(KeyByKey, OverChildren):
    """Sends to every child at once and answers with the worst reply.

    "Worst" follows mcrouter's severity order; among equally bad replies the one
    that arrived first wins. Used for replicated writes.
    """

    children: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return _to_every_child(self.children, request, ctx, _worst_of)


@route_type("AllAsyncRoute", shorthand="children")
@attrs.frozen
class AllAsyncRoute(KeyByKey, OverChildren):
    """Sends to every child in the background and answers "nothing happened" at once.

    The client gets the default reply (a miss, NOT_STORED, NOT_FOUND) without
    waiting; each child's request is fire-and-forget, capped like every
    background request (`ctx.background`).
    """

    children: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        background = ctx.background
        for child in self.children:
            background.start("AllAsyncRoute", partial(child.route, request, ctx))
        return Pending(default_reply(request))


@route_type("AllInitialRoute", shorthand="children")
@attrs.frozen
class AllInitialRoute(KeyByKey, OverChildren):
    """Answers with the first child's reply, the others run in the background."""

    children: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        children = self.children
        if not children:
            return Pending(default_reply(request))
        background = ctx.background
        for child in children[1:]:
            background.start("AllInitialRoute", partial(child.route, request, ctx))
        return children[0].route(request, ctx)


def _worst_of(pendings: Sequence[Pending]) -> Pending:
    return gather(pendings, worst_reply, name="AllSyncRoute")


def _fastest(pendings: Sequence[Pending]) -> Pending:
    """The first reply that is not a failover-type error; if all are, the last one."""
    return quorum(
        pendings,
        1,
        lambda reply: reply.result not in FAILOVER_ERRORS,
        lambda seen: seen[-1],
        name="AllFastestRoute",
    )


@route_type("AllFastestRoute", shorthand="children")
@attrs.frozen
class AllFastestRoute(KeyByKey, OverChildren):
    """Sends to every child; answers with the first reply that is not a failover-type error.

    A miss is an answer, not an error, so a fast miss wins. If every child fails,
    the client gets the error that arrived last.
    """

    children: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return _to_every_child(self.children, request, ctx, _fastest)


class _Ballot:
    """mcrouter's AllMajorityRoute count: one vote per reply, by result.

    The leading reply starts as the default reply with no votes; a reply takes
    the lead when its result has more votes than the leader's, or as many and
    is worse (so a tie goes to the worse result).
    """

    __slots__ = ("counts", "lead", "lead_votes")

    def __init__(self, request: Request) -> None:
        self.counts: dict[Result, int] = {}
        self.lead = default_reply(request)
        self.lead_votes = 0

    def cast(self, reply: Reply) -> int:
        """Count `reply`; the leader's votes afterwards."""
        votes = self.counts.get(reply.result, 0) + 1
        self.counts[reply.result] = votes
        if votes > self.lead_votes or (
            votes == self.lead_votes and severity(reply.result) > severity(self.lead.result)
        ):
            self.lead = reply
            self.lead_votes = votes
        return self.lead_votes


@route_type("AllMajorityRoute", shorthand="children")
@attrs.frozen
class AllMajorityRoute(KeyByKey, OverChildren):
    """Sends to every child; answers as soon as one result has a majority of the votes.

    A majority is ⌊n/2⌋+1 replies with the same result; without one, once every
    reply is in, the result with the most votes wins and a tie goes to the worse
    result (2 DELETED and 2 NOT_FOUND answer NOT_FOUND), as in mcrouter.
    """

    children: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return _to_every_child(self.children, request, ctx, partial(_majority, request))


def _majority(request: Request, pendings: Sequence[Pending]) -> Pending:
    """The first result with a majority of the votes; without one, `_Ballot.lead`."""
    majority = len(pendings) // 2 + 1
    ballot = _Ballot(request)
    return quorum(
        pendings,
        1,
        lambda reply: ballot.cast(reply) >= majority,
        lambda _seen: ballot.lead,
        name="AllMajorityRoute",
    )
