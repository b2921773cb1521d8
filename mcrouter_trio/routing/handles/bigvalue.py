"""BigValueRoute: values over a threshold are stored as chunks, as mcrouter stores them.

The chunks of `key` are `key:<i>:<suffix>` (i from 0), each set with the item's flags
and exptime; then `key` itself is written with the original command, flag 0x8000
(mcrouter's MC_MSG_FLAG_BIG_VALUE) and the index `1-<chunks>-<suffix>` as its value.
`<suffix>` is the low 32 bits of SpookyHashV2-64 of the whole value (folly's
IOBufHash, as mcrouter computes it). A read that finds an index fetches the chunks
and answers the whole value, so this proxy and mcrouter read each other's big values.
`ms` and `mg` are split and joined the same way, so either reads what the other wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

import attrs

from mcrouter_trio.hashing._spooky import spooky_hash64
from mcrouter_trio.messages import GET_LIKE, Op, Pending, Reply, Request, Result, severity
from mcrouter_trio.protocol import values
from mcrouter_trio.routing._base import (
    Route,
    RouteContext,
    SplitRouting,
    default_reply,
    policy_name,
)
from mcrouter_trio.routing._checks import check_int
from mcrouter_trio.routing._combinators import gather, guarded, sequence
from mcrouter_trio.routing._meta_items import (
    ItemKey,
    item_of,
    ms_flags_and_exptime,
    ms_with_value,
    parse_mg_hit,
    render_mg,
    with_value_and_flags,
)
from mcrouter_trio.routing._registry import config_field, route_type

_NAME: Final = "BigValueRoute"
#: mcrouter's MC_MSG_FLAG_BIG_VALUE: this item is the index of a chunked value.
BIG_VALUE_FLAG: Final = 0x8000
#: Commands whose value is chunked (append and prepend are passed on as they are:
#: chunking them would replace the value).
_SPLIT_OPS: Final = frozenset({Op.SET, Op.ADD, Op.REPLACE, Op.CAS})
#: The same for `ms`, by the classic command its mode and `C` make it.
_SPLIT_POLICIES: Final = frozenset({"set", "add", "replace", "cas"})
_INDEX: Final = re.compile(rb"(\d+)-(\d+)-(\d+)")
_INDEX_VERSION: Final = 1


def _check_threshold(value: object) -> int:
    return check_int(value, 1)


def _check_batch_size(value: object) -> int:
    return check_int(value, 0)


def chunk_suffix(index: int, suffix: int) -> bytes:
    return b":%d:%d" % (index, suffix)


def value_suffix(data: bytes) -> int:
    """mcrouter's suffix: the low 32 bits of folly's IOBufHash (SpookyHashV2-64, seed 0)."""
    return spooky_hash64(data) & 0xFFFF_FFFF


def parse_index(data: bytes) -> tuple[int, int] | None:
    """`1-<chunks>-<suffix>` -> (chunks, suffix); None if it is not a valid index."""
    match = _INDEX.fullmatch(data)
    if match is None:
        return None
    version, chunks, suffix = (int(part) for part in match.groups())
    if version != _INDEX_VERSION or chunks >= 1 << 32 or suffix >= 1 << 64:
        return None
    return chunks, suffix


def _worst(replies: list[Reply]) -> Reply:
    worst = replies[0]
    for reply in replies[1:]:
        if severity(reply.result) > severity(worst.result):
            worst = reply
    return worst


def _value_reply(key: bytes, cas: bytes, data: bytes, flags: int) -> Reply:
    """A get reply with one hit; `cas` is the CAS unique with its space, or empty."""
    head = b"VALUE %s %d %d%s\r\n" % (key, flags, len(data), cas)
    return Reply(Result.FOUND, head + data + b"\r\nEND\r\n")


@route_type(_NAME)
@attrs.frozen
class BigValueRoute:
    """Splits values over `split_threshold` bytes into chunks stored through `target`.

    set/add/replace/cas of a bigger value: the chunks are set `batch_size` at a time
    (0: all at once), then the index item with the original command; a chunk that
    fails answers its (worst) reply and no index is written. get/gets/gat/gats: an
    index item's chunks are fetched with `get` and the whole value answered with the
    index's flags (0x8000 still set unless `hide_reply_flag`) and, for gets, its CAS
    unique; a missing chunk is a miss, an invalid index the default reply.

    Meta commands take the same paths as their twins: an `ms` in set, add or replace
    mode or with `C` is split like set/add/replace/cas (`F` and `T` are the chunks'
    flags and exptime; a chunk not stored answers `NS`), and an `mg` is read like
    `get`, answering the return flags the client asked for from the whole value
    (`_meta_items`). Keys sent with `b` get base64 chunk keys, stored and read with
    `ms`/`mg`. Other commands (append, prepend, delete, md ...) pass through.
    """

    target: Route
    split_threshold: int = config_field(check=_check_threshold)
    batch_size: int = config_field(check=_check_batch_size)
    hide_reply_flag: bool = False

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        op = request.op
        too_big = len(request.data or b"") > self.split_threshold
        if op in _SPLIT_OPS and too_big:
            flags, exptime = request.args[0], request.args[1]

            def classic_index(value: bytes, index_flags: int) -> Request:
                # The client's command, cas unique included, with the index as its value.
                args = (b"%d" % index_flags, exptime, b"%d" % len(value), *request.args[3:])
                return Request(request.op, request.key, None, args, value)

            return self._split(request, ctx, flags, exptime, classic_index)
        if op is Op.MS and too_big and policy_name(request) in _SPLIT_POLICIES:
            item = ms_flags_and_exptime(request)
            if item is not None:
                return self._split(request, ctx, *item, partial(ms_with_value, request))
        if op in GET_LIKE or op is Op.MG:
            sent = with_value_and_flags(request) if op is Op.MG else request
            return sequence(
                self.target.route(sent, ctx), partial(self._after_read, request, ctx), name=_NAME
            )
        return self.target.route(request, ctx)

    def _batches(self, requests: list[Request], ctx: RouteContext, replies: list[Reply]) -> Pending:
        """Every request through the target, `batch_size` at a time (mcrouter's
        collectAllByBatches); `replies` gets their replies in request order. Resolves
        with the worst reply.

        A loop, not a chain of Pendings: a value of thousands of chunks is thousands
        of batches, which must nest neither when their replies come at once (an
        error, a TKO server) nor when the last one comes."""
        size = self.batch_size or len(requests)
        target = self.target
        out = Pending()
        next_start = 0

        def collect(batch_replies: list[Reply], _arrival: list[int]) -> Reply:
            replies.extend(batch_replies)
            return batch_replies[0]

        def send_batches(_previous: Reply | None = None) -> None:
            nonlocal next_start
            while next_start < len(requests):
                chunk = requests[next_start : next_start + size]
                next_start += size
                answered = gather([target.route(one, ctx) for one in chunk], collect, name=_NAME)
                if answered.reply is None:
                    answered.then(guarded(_NAME, out, send_batches))
                    return
            out.resolve(_worst(replies))

        send_batches()
        return out

    def _split(
        self,
        request: Request,
        ctx: RouteContext,
        flags: bytes,
        exptime: bytes,
        index_item: Callable[[bytes, int], Request],
    ) -> Pending:
        """Chunks first, then the index written by `index_item(value, flags)`."""
        data = request.data or b""
        threshold = self.split_threshold
        count = -(-len(data) // threshold)
        suffix = value_suffix(data)
        item = ItemKey.of(request)
        chunks = [
            item.derived(chunk_suffix(index, suffix)).set(
                flags, exptime, data[index * threshold : (index + 1) * threshold]
            )
            for index in range(count)
        ]
        index_value = b"%d-%d-%d" % (_INDEX_VERSION, count, suffix)
        index = index_item(index_value, int(flags) | BIG_VALUE_FLAG)

        def write_index(worst: Reply) -> Reply | Pending:
            if worst.result is not Result.STORED:
                # A chunk not stored is the command's own "not stored" (NS for ms).
                return worst if worst.is_error else default_reply(request)
            return self.target.route(index, ctx)

        return sequence(self._batches(chunks, ctx, []), write_index, name=_NAME)

    def _after_read(self, request: Request, ctx: RouteContext, reply: Reply) -> Reply | Pending:
        if request.op is Op.MG:
            return self._after_meta_read(request, ctx, reply)
        if reply.result is not Result.FOUND:
            return reply
        for _key, header, block in values(reply.raw):
            fields = header.split(b" ")
            flags = int(fields[2])
            if not flags & BIG_VALUE_FLAG:
                return reply
            index = parse_index(block[len(header) + 2 : -2])
            if index is None:
                return default_reply(request)
            cas = b" " + fields[4] if len(fields) > 4 else b""
            return self._fetch(request, ctx, index, flags, partial(_value_reply, request.key, cas))
        return reply

    def _after_meta_read(
        self, request: Request, ctx: RouteContext, reply: Reply
    ) -> Reply | Pending:
        hit = parse_mg_hit(reply)
        if hit is None:
            return reply
        if not hit.flags & BIG_VALUE_FLAG:
            return render_mg(request, hit, hit.data, hit.flags)
        index = parse_index(hit.data)
        if index is None:
            return default_reply(request)
        return self._fetch(request, ctx, index, hit.flags, partial(render_mg, request, hit))

    def _fetch(
        self,
        request: Request,
        ctx: RouteContext,
        index: tuple[int, int],
        flags: int,
        whole: Callable[[bytes, int], Reply],
    ) -> Pending:
        """The chunks an index names, joined and answered by `whole(value, flags)`."""
        count, suffix = index
        item = ItemKey.of(request)
        gets = [item.derived(chunk_suffix(i, suffix)).get() for i in range(count)]
        if self.hide_reply_flag:
            flags &= ~BIG_VALUE_FLAG
        pieces: list[Reply] = []

        def merged(worst: Reply) -> Reply:
            if worst.result is not Result.FOUND:
                return worst if worst.is_error else default_reply(request)
            items = [item_of(piece) for piece in pieces]
            return whole(b"".join(piece[1] for piece in items if piece is not None), flags)

        return sequence(self._batches(gets, ctx, pieces), merged, name=_NAME)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # each key may be an index

    def targets(self) -> Sequence[Route]:
        return (self.target,)
