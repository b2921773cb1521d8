"""L1L2SizeSplitRoute: small values in L1, big ones in L2 behind a sentinel in L1."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

import attrs

from mcrouter_trio.messages import FAILOVER_ERRORS, Op, Pending, Reply, Request, Result
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting, policy_name
from mcrouter_trio.routing._checks import check_int
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing._meta_items import (
    ItemKey,
    has_flag,
    item_of,
    ms_flags_and_exptime,
    ms_with_value,
    parse_mg_hit,
    render_mg,
    with_value_and_flags,
)
from mcrouter_trio.routing._registry import config_field, route_type

_NAME: Final = "L1L2SizeSplitRoute"
#: mcrouter's MC_MSG_FLAG_SIZE_SPLIT: this L1 item is a sentinel, the value is in L2.
SIZE_SPLIT_FLAG: Final = 0x20
#: Between a key and the suffix of its L2 key, when the sentinel holds one (`key|==|123`).
HASH_ALIAS: Final = b"|==|"
#: A key this long has no room for `|==|<uint64>` and is never split (mcrouter's rule).
_MAX_SPLIT_KEY: Final = 255 - len(HASH_ALIAS) - 20
_LOCAL_ERROR: Final = Reply(Result.LOCAL_ERROR, b"SERVER_ERROR local error\r\n")


def _check_threshold(value: object) -> int:
    return check_int(value, 0)


def _check_failure_ttl(value: object) -> int:
    return check_int(value, 1, 2**31 - 1)


def _check_retries(value: object) -> int:
    return check_int(value, 1, 10)


def _value_reply(key: bytes, cas: bytes | None, data: bytes, flags: int) -> Reply:
    cas_part = b"" if cas is None else b" " + cas
    head = b"VALUE %s %d %d%s\r\n" % (key, flags, len(data), cas_part)
    return Reply(Result.FOUND, head + data + b"\r\nEND\r\n")


def _wants_cas(request: Request) -> bool:
    """gets, or an mg asking for the CAS unique: the reads mcrouter retries."""
    return request.op is Op.GETS or (request.op is Op.MG and has_flag(request, b"c"))


@route_type(_NAME)
@attrs.frozen
class L1L2SizeSplitRoute:
    """`set`s of values of `threshold` bytes or more go to `l2`, with a sentinel in `l1`.

    - set: a value under `threshold` (or `threshold` 0, or an exptime under a non-zero
      `ttl_threshold`) goes to L1. A bigger one is set in L2 first; once stored, L1 gets
      the sentinel: the key with an empty value and flag 0x20. With `both_full_set`,
      the whole value goes to L1 and, once stored, to L2 in the background.
    - get/gets: L1's reply, unless it is a sentinel: then L2's value (under the key, or
      `key|==|<sentinel value>` for a sentinel with a value, as mcrouter's lease-set
      writes them), with L1's CAS unique for gets. A sentinel whose L2 item is gone is
      deleted from L1 (a `cas` that expires it, if it is still the same); gets then
      tries again up to `retries` times (default 1), get answers `SERVER_ERROR local
      error`, or L2's miss for an empty sentinel.
    - Everything else (add, cas, delete, touch, gat, meta commands ...) goes to L1 as
      it is: meta commands are not split.
    """

    l1: Route
    l2: Route
    threshold: int = config_field(check=_check_threshold)
    ttl_threshold: int = config_field(default=0, check=_check_threshold)
    failure_ttl: int = config_field(default=60, check=_check_failure_ttl)
    both_full_set: bool = False
    retries: int = config_field(default=1, check=_check_retries)

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        op = request.op
        if op is Op.SET:
            return self._set(request, ctx, request.args[0], request.args[1])
        if op is Op.MS and policy_name(request) == "set":
            item = ms_flags_and_exptime(request)
            if item is not None:
                return self._set(request, ctx, *item)
        if op is Op.GET or op is Op.GETS or op is Op.MG:
            return self._read(request, ctx, self.retries)
        return self.l1.route(request, ctx)

    # -- writes ----------------------------------------------------------------

    def _goes_to_l1(self, request: Request, exptime: bytes) -> bool:
        data = request.data or b""
        return (
            self.threshold == 0
            or len(data) < self.threshold
            or (self.ttl_threshold != 0 and int(exptime) < self.ttl_threshold)
            or len(ItemKey.of(request).key) > _MAX_SPLIT_KEY
        )

    def _set(self, request: Request, ctx: RouteContext, flags: bytes, exptime: bytes) -> Pending:
        if self._goes_to_l1(request, exptime):
            return self.l1.route(request, ctx)
        if self.both_full_set:

            def copy_to_l2(reply: Reply) -> Reply:
                if reply.result is Result.STORED:
                    ctx.background.start(_NAME, partial(self.l2.route, request, ctx))
                return reply

            return sequence(self.l1.route(request, ctx), copy_to_l2, name=_NAME)
        sentinel_flags = int(flags) | SIZE_SPLIT_FLAG
        if request.op is Op.MS:
            # The client's own ms, so that its reply carries the flags asked for.
            sentinel = ms_with_value(request, b"", sentinel_flags)
        else:
            args = (b"%d" % sentinel_flags, exptime, b"0")
            sentinel = Request(Op.SET, request.key, None, args, b"")

        def sentinel_in_l1(reply: Reply) -> Reply | Pending:
            if reply.result is not Result.STORED:
                return reply
            return self.l1.route(sentinel, ctx)

        return sequence(self.l2.route(request, ctx), sentinel_in_l1, name=_NAME)

    # -- reads -----------------------------------------------------------------

    def _read(self, request: Request, ctx: RouteContext, retries: int) -> Pending:
        sent = with_value_and_flags(request) if request.op is Op.MG else request
        return sequence(
            self.l1.route(sent, ctx),
            partial(self._after_l1, request, ctx, retries),
            name=_NAME,
        )

    def _after_l1(
        self, request: Request, ctx: RouteContext, retries: int, reply: Reply
    ) -> Reply | Pending:
        item = item_of(reply)
        meta_hit = parse_mg_hit(reply) if request.op is Op.MG else None
        if item is None:
            return reply
        flags, sentinel, cas = item
        if not flags & SIZE_SPLIT_FLAG:
            return reply if meta_hit is None else render_mg(request, meta_hit, sentinel, flags)
        if not _wants_cas(request) and not sentinel:
            return self.l2.route(request, ctx)  # L2's reply, whatever it is
        key = ItemKey.of(request)
        l2_key = key.derived(HASH_ALIAS + sentinel) if sentinel else key
        # The value and flags are L2's; the CAS unique (and an mg's other flags) L1's.
        answer: Callable[[bytes, int], Reply] = (
            partial(_value_reply, request.key, cas if request.op is Op.GETS else None)
            if meta_hit is None
            else partial(render_mg, request, meta_hit)
        )
        return sequence(
            self.l2.route(l2_key.get(), ctx),
            partial(self._after_l2, request, ctx, retries, sentinel, answer),
            name=_NAME,
        )

    def _after_l2(
        self,
        request: Request,
        ctx: RouteContext,
        retries: int,
        sentinel: bytes,
        answer: Callable[[bytes, int], Reply],
        reply: Reply,
    ) -> Reply | Pending:
        item = item_of(reply)
        if item is not None:
            flags, data, _l2_cas = item
            return answer(data, flags)
        key = ItemKey.of(request)
        if reply.is_error:
            if reply.result in FAILOVER_ERRORS:
                ctx.background.start(_NAME, partial(self._delete_sentinel, key, sentinel, ctx))
            return reply
        if _wants_cas(request) and retries > 0:
            return sequence(
                self._delete_sentinel(key, sentinel, ctx),
                lambda _deleted: self._read(request, ctx, retries - 1),
                name=_NAME,
            )
        ctx.background.start(_NAME, partial(self._delete_sentinel, key, sentinel, ctx))
        return _LOCAL_ERROR

    def _delete_sentinel(self, key: ItemKey, sentinel: bytes, ctx: RouteContext) -> Pending:
        """Expire L1's sentinel (exptime -1, by CAS) if it is still the one that was read."""

        def expire(reply: Reply) -> Reply | Pending:
            item = item_of(reply)
            if item is None or item[1] != sentinel or item[2] is None:
                return reply
            return self.l1.route(key.expire_if_unchanged(item[2]), ctx)

        return sequence(self.l1.route(key.gets(), ctx), expire, name=_NAME)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # a sentinel is followed key by key

    def targets(self) -> Sequence[Route]:
        return (self.l1, self.l2)
