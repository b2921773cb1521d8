"""L1L2CacheRoute: a small fast cache (L1) in front of a big one (L2), with negative caching."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Final

import attrs

from mcrouter_trio.messages import GET_LIKE, Op, Pending, Reply, Request, Result
from mcrouter_trio.protocol import values
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting, default_reply
from mcrouter_trio.routing._checks import check_int
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing._registry import config_field, route_type

_NAME: Final = "L1L2CacheRoute"
#: mcrouter's MC_MSG_FLAG_NEGATIVE_CACHE: the L1 item stands for "L2 has no such key".
NEGATIVE_CACHE_FLAG: Final = 0x10000
#: The value of a negative-cache item, as mcrouter writes it.
NCACHE_VALUE: Final = b"ncache"


def _check_uint32(value: object) -> int:
    return check_int(value, 0, 2**32 - 1)


def _check_count(value: object) -> int:
    return check_int(value, 0)


class _Countdown:
    """Negative-cache hits left until the next refresh from L2 (shared by all requests)."""

    __slots__ = ("left",)

    def __init__(self, period: int) -> None:
        self.left = period


def _item(reply: Reply) -> tuple[int, bytes] | None:
    """The flags and value of a single-key hit."""
    for _key, header, block in values(reply.raw):
        return int(header.split(b" ")[2]), block[len(header) + 2 : -2]
    return None


def _store(op: Op, key: bytes, flags: int, exptime: int, data: bytes) -> Request:
    args = (b"%d" % flags, b"%d" % exptime, b"%d" % len(data))
    return Request(op, key, None, args, data)


@route_type(_NAME)
@attrs.frozen
class L1L2CacheRoute:
    """Reads try `l1`, then `l2`; an L2 hit is added to L1, every other command goes to L1.

    - A get-like request (get, gets, gat, gats) that hits L1 is answered by L1. An L1
      miss (or error) goes to L2, whose reply the client gets; an L2 hit is added to L1
      in the background with `upgradingL1Exptime`.
    - Negative caching (`ncacheUpdatePeriod` > 0): an L2 miss adds `ncache` to L1 with
      flag 0x10000 and `ncacheExptime`; such an L1 item is answered as a miss, and
      every `ncacheUpdatePeriod`-th time one is read, L1 is refreshed from L2 in the
      background (L2's value, or the ncache item again to renew its exptime).
    - `mg` reads L1, then L2 on a miss, without filling L1 (its reply may not carry
      the value or the flags).
    """

    l1: Route
    l2: Route
    upgradingL1Exptime: int = config_field(check=_check_uint32)  # mcrouter's key names
    ncacheExptime: int = config_field(default=0, check=_check_count)
    ncacheUpdatePeriod: int = config_field(default=0, check=_check_count)
    _countdown: _Countdown = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_countdown", _Countdown(self.ncacheUpdatePeriod))

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        op = request.op
        if op is Op.MG:
            return sequence(
                self.l1.route(request, ctx),
                lambda reply: (
                    reply if reply.result is Result.FOUND else self.l2.route(request, ctx)
                ),
                name=_NAME,
            )
        if op not in GET_LIKE:
            return self.l1.route(request, ctx)
        return sequence(
            self.l1.route(request, ctx), partial(self._after_l1, request, ctx), name=_NAME
        )

    def _after_l1(self, request: Request, ctx: RouteContext, reply: Reply) -> Reply | Pending:
        if reply.result is Result.FOUND:
            item = _item(reply)
            if item is None or not item[0] & NEGATIVE_CACHE_FLAG:
                return reply
            self._count_ncache_hit(request, ctx)
            return default_reply(request)
        return sequence(
            self.l2.route(request, ctx), partial(self._after_l2, request, ctx), name=_NAME
        )

    def _after_l2(self, request: Request, ctx: RouteContext, reply: Reply) -> Reply:
        if reply.result is Result.FOUND:
            item = _item(reply)
            if item is not None:
                flags, data = item
                add = _store(Op.ADD, request.key, flags, self.upgradingL1Exptime, data)
                ctx.background.start(_NAME, partial(self.l1.route, add, ctx))
        elif reply.result is Result.NOTFOUND and self.ncacheUpdatePeriod:
            add = self._ncache(Op.ADD, request.key)
            ctx.background.start(_NAME, partial(self.l1.route, add, ctx))
        return reply

    def _ncache(self, op: Op, key: bytes) -> Request:
        return _store(op, key, NEGATIVE_CACHE_FLAG, self.ncacheExptime, NCACHE_VALUE)

    def _count_ncache_hit(self, request: Request, ctx: RouteContext) -> None:
        if not self.ncacheUpdatePeriod:
            return
        countdown = self._countdown
        if countdown.left > 1:
            countdown.left -= 1
            return
        countdown.left = self.ncacheUpdatePeriod
        ctx.background.start(_NAME, partial(self._refresh, request, ctx))

    def _refresh(self, request: Request, ctx: RouteContext) -> Pending:
        """L2's value into L1 with `set`, or the ncache item again (a fresh exptime)."""

        def set_l1(reply: Reply) -> Pending:
            item = _item(reply) if reply.result is Result.FOUND else None
            if item is None:
                return self.l1.route(self._ncache(Op.SET, request.key), ctx)
            flags, data = item
            return self.l1.route(
                _store(Op.SET, request.key, flags, self.upgradingL1Exptime, data), ctx
            )

        return sequence(self.l2.route(request, ctx), set_l1, name=_NAME)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # L1's misses go to L2 key by key

    def targets(self) -> Sequence[Route]:
        return (self.l1, self.l2)
