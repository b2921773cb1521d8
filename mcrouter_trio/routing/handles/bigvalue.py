"""BigValueRoute: values over a threshold are stored as chunks, as mcrouter stores them.

The chunks of `key` are `key:<i>:<suffix>` (i from 0), each set with the item's flags
and exptime; then `key` itself is written with the original command, flag 0x8000
(mcrouter's MC_MSG_FLAG_BIG_VALUE) and the index `1-<chunks>-<suffix>` as its value.
`<suffix>` is the low 32 bits of SpookyHashV2-64 of the whole value (folly's
IOBufHash, as mcrouter computes it). A read that finds an index fetches the chunks
and answers the whole value, so this proxy and mcrouter read each other's big values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Final

import attrs

from mcrouter_trio.hashing._spooky import spooky_hash64
from mcrouter_trio.messages import GET_LIKE, Op, Pending, Reply, Request, Result, severity
from mcrouter_trio.protocol import values
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting, default_reply
from mcrouter_trio.routing._checks import check_int
from mcrouter_trio.routing._combinators import gather, sequence
from mcrouter_trio.routing._registry import config_field, route_type

_NAME: Final = "BigValueRoute"
#: mcrouter's MC_MSG_FLAG_BIG_VALUE: this item is the index of a chunked value.
BIG_VALUE_FLAG: Final = 0x8000
#: Commands whose value is chunked (append and prepend are passed on as they are:
#: chunking them would replace the value).
_SPLIT_OPS: Final = frozenset({Op.SET, Op.ADD, Op.REPLACE, Op.CAS})
_INDEX: Final = re.compile(rb"(\d+)-(\d+)-(\d+)")
_INDEX_VERSION: Final = 1


def _check_threshold(value: object) -> int:
    return check_int(value, 1)


def _check_batch_size(value: object) -> int:
    return check_int(value, 0)


def chunk_key(key: bytes, index: int, suffix: int) -> bytes:
    return b"%s:%d:%d" % (key, index, suffix)


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


@route_type(_NAME)
@attrs.frozen
class BigValueRoute:
    """Splits values over `split_threshold` bytes into chunks stored through `target`.

    set/add/replace/cas of a bigger value: the chunks are set `batch_size` at a time
    (0: all at once), then the index item with the original command; a chunk that
    fails answers its (worst) reply and no index is written. get/gets/gat/gats: an
    index item's chunks are fetched with `get` and the whole value answered with the
    index's flags (0x8000 still set unless `hide_reply_flag`) and, for gets, its CAS
    unique; a missing chunk is a miss, an invalid index the default reply. Other
    commands, meta commands among them, pass through.
    """

    target: Route
    split_threshold: int = config_field(check=_check_threshold)
    batch_size: int = config_field(check=_check_batch_size)
    hide_reply_flag: bool = False

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        op = request.op
        if op in _SPLIT_OPS and len(request.data or b"") > self.split_threshold:
            return self._split(request, ctx)
        if op in GET_LIKE:
            return sequence(
                self.target.route(request, ctx), partial(self._after_read, request, ctx), name=_NAME
            )
        return self.target.route(request, ctx)

    def _batches(self, requests: list[Request], ctx: RouteContext, replies: list[Reply]) -> Pending:
        """Every request through the target, `batch_size` at a time (mcrouter's
        collectAllByBatches); `replies` gets their replies in request order. Resolves
        with the worst reply."""
        size = self.batch_size or len(requests)
        target = self.target

        def batch(start: int) -> Pending:
            sent = [target.route(chunk, ctx) for chunk in requests[start : start + size]]
            return gather(sent, partial(done, start + size), name=_NAME)

        def done(
            next_start: int, batch_replies: list[Reply], _arrival: list[int]
        ) -> Reply | Pending:
            replies.extend(batch_replies)
            if next_start < len(requests):
                return batch(next_start)
            return _worst(replies)

        return batch(0)

    def _split(self, request: Request, ctx: RouteContext) -> Pending:
        data = request.data or b""
        threshold = self.split_threshold
        count = -(-len(data) // threshold)
        suffix = value_suffix(data)
        flags, exptime = request.args[0], request.args[1]
        chunks = [
            Request(
                Op.SET,
                chunk_key(request.key, index, suffix),
                None,
                (flags, exptime, b"%d" % len(piece)),
                piece,
            )
            for index in range(count)
            for piece in (data[index * threshold : (index + 1) * threshold],)
        ]
        index_value = b"%d-%d-%d" % (_INDEX_VERSION, count, suffix)
        args = (
            b"%d" % (int(flags) | BIG_VALUE_FLAG),
            exptime,
            b"%d" % len(index_value),
            *request.args[3:],  # cas unique
        )
        index_item = Request(request.op, request.key, None, args, index_value)

        def write_index(worst: Reply) -> Reply | Pending:
            if worst.result is not Result.STORED:
                return worst
            return self.target.route(index_item, ctx)

        return sequence(self._batches(chunks, ctx, []), write_index, name=_NAME)

    def _after_read(self, request: Request, ctx: RouteContext, reply: Reply) -> Reply | Pending:
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
            if self.hide_reply_flag:
                flags &= ~BIG_VALUE_FLAG
            cas = fields[4] if len(fields) > 4 else None
            return self._fetch(request, ctx, index, flags, cas)
        return reply

    def _fetch(
        self,
        request: Request,
        ctx: RouteContext,
        index: tuple[int, int],
        flags: int,
        cas: bytes | None,
    ) -> Pending:
        count, suffix = index
        key = request.key
        gets = [
            Request(Op.GET, chunk_key(key, i, suffix), (chunk_key(key, i, suffix),))
            for i in range(count)
        ]
        pieces: list[Reply] = []
        return sequence(
            self._batches(gets, ctx, pieces),
            lambda worst: self._merged(request, worst, pieces, flags, cas),
            name=_NAME,
        )

    def _merged(
        self, request: Request, worst: Reply, pieces: list[Reply], flags: int, cas: bytes | None
    ) -> Reply:
        if worst.result is not Result.FOUND:
            return worst if worst.is_error else default_reply(request)
        data = b"".join(
            block[len(header) + 2 : -2]
            for piece in pieces
            for _k, header, block in values(piece.raw)
        )
        cas_part = b"" if cas is None else b" " + cas
        head = b"VALUE %s %d %d%s\r\n" % (request.key, flags, len(data), cas_part)
        return Reply(Result.FOUND, head + data + b"\r\nEND\r\n")

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # each key may be an index

    def targets(self) -> Sequence[Route]:
        return (self.target,)
