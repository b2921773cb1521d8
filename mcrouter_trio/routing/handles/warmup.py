"""WarmUpRoute: fill a cold (new or restarted) pool from a warm one on read misses."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import attrs

from mcrouter_trio.messages import GET_LIKE, Op, Pending, Reply, Request, Result
from mcrouter_trio.protocol import values
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing._registry import route_type

_NAME = "WarmUpRoute"


@route_type("WarmUpRoute")
@attrs.frozen
class WarmUpRoute:
    """Reads try `cold`, then `warm`; a warm hit is copied into `cold` with `add`.

    As mcrouter's WarmUpRoute: `get` answers warm's reply whenever cold does not
    hit (a warm miss or error included); on a warm hit the `add` runs in the
    background (its reply is dropped). `gets`/`gat`/`gats` ask warm with a plain
    `get` (warm's items are neither touched nor asked for a CAS); on a warm hit
    the `add` is waited for and the request is sent to `cold` again, whose reply
    the client gets (cold's CAS and touch semantics); otherwise the client gets
    cold's first reply. Meta `mg`: cold on a hit, else warm's reply, without a
    refill (the reply may not carry the value). Every other command goes to
    `cold` only.
    """

    cold: Route
    warm: Route
    exptime: int = 0

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        op = request.op
        if op not in GET_LIKE and op is not Op.MG:
            return self.cold.route(request, ctx)

        def after_cold(cold_reply: Reply) -> Reply | Pending:
            if cold_reply.result is Result.FOUND:
                return cold_reply
            asked = request if op is Op.GET or op is Op.MG else Request(Op.GET, request.key)
            return sequence(
                self.warm.route(asked, ctx),
                lambda warm_reply: self._after_warm(request, ctx, cold_reply, warm_reply),
                name=_NAME,
            )

        return sequence(self.cold.route(request, ctx), after_cold, name=_NAME)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # misses are refilled key by key

    def _after_warm(
        self, request: Request, ctx: RouteContext, cold_reply: Reply, warm_reply: Reply
    ) -> Reply | Pending:
        op = request.op
        if warm_reply.result is not Result.FOUND:
            return warm_reply if op is Op.GET or op is Op.MG else cold_reply
        if op is Op.MG:
            return warm_reply
        adds = [
            self._add_for(request, header, block) for _key, header, block in values(warm_reply.raw)
        ]
        if not adds:
            return warm_reply
        cold = self.cold
        if op is Op.GET:
            for add in adds:  # the client does not wait for the refill
                ctx.background.start(_NAME, partial(cold.route, add, ctx))
            return warm_reply
        return sequence(
            cold.route(adds[0], ctx),
            lambda _added: cold.route(request, ctx),
            name=_NAME,
        )

    def _add_for(self, request: Request, header: bytes, block: bytes) -> Request:
        flags = header.split(b" ")[2]
        data = block[len(header) + 2 : -2]
        exptime = request.args[0] if request.op in (Op.GAT, Op.GATS) else b"%d" % self.exptime
        return Request(Op.ADD, request.key, None, (flags, exptime, b"%d" % len(data)), data)

    def targets(self) -> Sequence[Route]:
        return (self.cold, self.warm)
