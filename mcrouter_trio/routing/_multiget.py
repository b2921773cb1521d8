"""Multi-key gets taken apart and put together again (pure).

mcrouter routes each key of a multi-get on its own; the proxy merges the per-key
replies in the client's key order (`merge`), and when it sends the keys bound for
one server as one multi-key get, `split_multiget` gives each key the reply it
would have had on its own. A giant multi-get goes a slice of keys at a time
(`SlicedGet`), and its slices' replies are merged the same way (`merge_slices`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

from mcrouter_trio.messages import Pending, Reply, Request, Result
from mcrouter_trio.protocol import values
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._combinators import gather, guarded

#: A multi-get with more keys than this is routed slice by slice (`SlicedGet`).
SLICE_KEYS: Final = 4096
#: Slices of one multi-get sent and not yet answered, at most.
SLICES_IN_FLIGHT: Final = 2


def merge(replies: list[Reply]) -> Reply:
    """One multi-get reply from per-key replies, in the client's key order.

    Hits come first in key order (duplicates repeated, as memcached does); if any
    key failed, the first error (in key order) takes the place of END, which is
    mcrouter's rule for multi-get errors.
    """
    blocks = []
    error: Reply | None = None
    for reply in replies:
        if reply.result is Result.FOUND:
            blocks.append(reply.raw[:-5])  # drop the per-key "END\r\n"
        elif reply.is_error and error is None:
            error = reply
    if error is not None:
        return Reply(error.result, b"".join(blocks) + error.raw)
    result = Result.FOUND if blocks else Result.NOTFOUND
    return Reply(result, b"".join(blocks) + b"END\r\n")


def split_multiget(fragments: list[tuple[bytes, Pending]], reply: Reply) -> None:
    """Give each key of a batched get its own reply, as if it had been sent alone."""
    if reply.result is not Result.FOUND and not reply.raw.startswith(b"VALUE "):
        for _key, pending in fragments:  # a miss for every key, or one error for all
            pending.resolve(reply if reply.is_error else Reply(Result.NOTFOUND, b"END\r\n"))
        return
    blocks: dict[bytes, bytes] = {}
    end = 0
    for key, _header, block in values(reply.raw):
        blocks.setdefault(key, block)
        end += len(block)
    # After the blocks: END, or the error that cut the reply short.
    rest = reply.raw[end:]
    miss = Reply(Result.NOTFOUND, rest) if rest == b"END\r\n" else Reply(reply.result, rest)
    for key, pending in fragments:
        hit = blocks.get(key)
        pending.resolve(miss if hit is None else Reply(Result.FOUND, hit + b"END\r\n"))


def merge_slices(replies: list[Reply]) -> Reply:
    """One multi-get reply from the replies to its slices, in slice order.

    Each slice's reply is hits then END, or hits then an error line; as in `merge`,
    every hit is kept in key order and the first error takes the place of END.
    """
    blocks = []
    error: bytes | None = None
    error_result = result = Result.NOTFOUND
    for reply in replies:
        raw = reply.raw
        # The last line ends the slice's reply; no VALUE block follows it, and an
        # END or error line holds no CRLF of its own.
        end = raw.rfind(b"\r\n", 0, len(raw) - 2)
        cut = end + 2 if end >= 0 else 0
        blocks.append(raw[:cut])
        if cut:
            result = Result.FOUND
        if error is None and raw[cut:] != b"END\r\n":
            error, error_result = raw[cut:], reply.result
    if error is not None:
        return Reply(error_result, b"".join(blocks) + error)
    return Reply(result, b"".join(blocks) + b"END\r\n")


class SlicedGet:
    """A multi-get of more than `SLICE_KEYS` keys, routed a slice at a time.

    Routing a 100 000-key get in one go keeps the proxy busy for a long time,
    serving no other client, and puts the whole get ahead of every other client's
    request on the shared server connections. Instead at most `SLICES_IN_FLIGHT`
    slices are out at once and each slice's reply routes the next, so other
    clients' requests wait behind a slice or two, and the work is done in pieces
    between other tasks' turns. The client still gets one reply (`merge_slices`).
    """

    __slots__ = (
        "_answered",
        "_next",
        "_replies",
        "_request",
        "_route",
        "_routing",
        "_slices",
        "out",
    )

    def __init__(self, request: Request, route: Callable[[Request], Pending]) -> None:
        keys = request.keys or (request.key,)
        self._request = request
        self._route = route
        self._slices = [keys[i : i + SLICE_KEYS] for i in range(0, len(keys), SLICE_KEYS)]
        self._replies: list[Reply | None] = [None] * len(self._slices)
        self._next = 0  # the next slice to route
        self._answered = 0
        self._routing = False
        #: The merged reply, once every slice is answered.
        self.out = Pending()
        self._route_more()

    def _route_more(self) -> None:
        # A loop rather than recursion: slices answered at once (an error, a local
        # reply) would otherwise nest one call per slice.
        if self._routing:
            return
        self._routing = True
        try:
            while (
                self._next < len(self._slices)
                and self._next - self._answered < SLICES_IN_FLIGHT
                and self.out.reply is None
            ):
                index = self._next
                self._next += 1
                keys, self._slices[index] = self._slices[index], ()
                pending = self._route(self._request.with_keys(keys))
                pending.then(guarded("multi-get", self.out, partial(self._arrived, index)))
        finally:
            self._routing = False

    def _arrived(self, index: int, reply: Reply) -> None:
        self._replies[index] = reply
        self._answered += 1
        if self._answered < len(self._replies):
            self._route_more()
        elif self.out.reply is None:
            self.out.resolve(merge_slices([r for r in self._replies if r is not None]))


def route_partitioned(
    children: Sequence[Route],
    choose: Callable[[bytes], int],
    request: Request,
    ctx: RouteContext,
    split: SplitRouting,
) -> Pending | None:
    """A multi-get whose keys hash to several children: one multi-get per child.

    Each child gets its keys in the client's order (repeats included, as the client
    sent them) through its own `route_whole`, or key by key (`split`) if it cannot
    take them whole; the replies are merged back in the client's key order. This is
    what routing every key on its own and batching per server would send, for the
    cost of one hash per key. Keys that all hash to one child go to its
    `route_whole` as the client sent them (None if it cannot take them whole).
    """
    keys = request.keys or (request.key,)
    chosen = [choose(key) for key in keys]
    groups: dict[int, list[bytes]] = {}
    for key, child in zip(keys, chosen, strict=True):
        group = groups.get(child)
        if group is None:
            groups[child] = [key]
        else:
            group.append(key)
    if len(groups) == 1:
        return children[chosen[0]].route_whole(request, ctx, split)
    order = list(groups)
    routed = []
    for child in order:
        part = request.with_keys(groups[child])
        whole = children[child].route_whole(part, ctx, split)
        routed.append(whole if whole is not None else split(children[child], part))

    def combine(replies: list[Reply], _arrival: list[int]) -> Reply:
        return _merge_partitioned(keys, chosen, dict(zip(order, replies, strict=True)))

    return gather(routed, combine, name="multi-get")


def _merge_partitioned(
    keys: Sequence[bytes], chosen: list[int], replies: dict[int, Reply]
) -> Reply:
    """The client's reply from its children's: hits in key order, then END or an error.

    Each child answered its keys in order and left misses out, so a cursor per
    child over its VALUE blocks tells each key's hit; a key with no hit from a
    child that answered with an error has that error, and the first such error (in
    key order) takes the place of END, as in `merge`.
    """
    blocks: dict[int, list[tuple[bytes, bytes]]] = {}
    errors: dict[int, Reply] = {}
    for child, reply in replies.items():
        raw = reply.raw
        found = (
            [(key, block) for key, _header, block in values(raw)] if raw[:6] == b"VALUE " else []
        )
        blocks[child] = found
        rest = raw[sum(len(block) for _key, block in found) :]
        if rest != b"END\r\n":
            errors[child] = Reply(reply.result, rest)
    cursors = dict.fromkeys(replies, 0)
    out = []
    error: Reply | None = None
    for key, child in zip(keys, chosen, strict=True):
        found = blocks[child]
        cursor = cursors[child]
        if cursor < len(found) and found[cursor][0] == key:
            out.append(found[cursor][1])
            cursors[child] = cursor + 1
        elif error is None:
            error = errors.get(child)
    if error is not None:
        return Reply(error.result, b"".join(out) + error.raw)
    return Reply(Result.FOUND if out else Result.NOTFOUND, b"".join(out) + b"END\r\n")
