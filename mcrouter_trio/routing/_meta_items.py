"""Meta commands for handles that read and write whole items (BigValue, L1L2SizeSplit).

Such a handle takes an `mg` or `ms` the way it takes their classic twins, `get` and
`set`: it needs the item's client flags and value whatever return flags the client
asked for, and must answer with exactly the ones asked for. So an `mg` goes out with
`v` and `f` added when missing (`with_value_and_flags`), and `render_mg` writes the
client's reply from the backend's: memcached writes return flags in the order they
were asked, one token each, so the added `f` token is dropped, `f` and `s` take the
item's flags and size as the handle sees them, and without the client's `v` a hit
is `HD` without a value. An `ms` carries its flags and exptime in `F` and `T`
tokens (`ms_flags_and_exptime`); `ms_with_value` writes another value (a big value's
index, a sentinel) under the client's own command, so the reply keeps its return
flags (`O`, `k`, `b`, `c`).

A key sent with `b` is base64: keys derived from it (chunks, L2 keys) are derived
from the decoded key and sent base64-encoded with `b`, through meta commands, since
the classic ones cannot carry every byte.
"""

from __future__ import annotations

import base64
from typing import Final, NamedTuple

from mcrouter_trio.messages import Op, Reply, Request, Result
from mcrouter_trio.protocol import meta_routing_key, values

_VALUE: Final = b"v"
_FLAGS: Final = b"f"


class MetaHit(NamedTuple):
    """An `mg` hit as the backend wrote it: return-flag tokens, client flags, value."""

    tokens: tuple[bytes, ...]
    flags: int
    data: bytes


def has_flag(request: Request, letter: bytes) -> bool:
    """Whether a meta request carries the flag `letter` (a token starting with it)."""
    return any(token[:1] == letter for token in _flag_tokens(request))


def _flag_tokens(request: Request) -> tuple[bytes, ...]:
    # An ms's first argument is its data length, not a flag.
    return request.args[1:] if request.op is Op.MS else request.args


def is_base64(request: Request) -> bool:
    return b"b" in _flag_tokens(request)


def with_value_and_flags(request: Request) -> Request:
    """The `mg` with `v` and `f` added where the client left them out."""
    added = tuple(letter for letter in (_VALUE, _FLAGS) if not has_flag(request, letter))
    if not added:
        return request
    return request.replace(args=(*request.args, *added))


def parse_mg_hit(reply: Reply) -> MetaHit | None:
    """The hit in the reply to an `mg` sent with `v` and `f`; None for anything else."""
    raw = reply.raw
    if reply.result is not Result.FOUND or not raw.startswith(b"VA "):
        return None
    end = raw.index(b"\r\n")
    words = raw[3:end].split(b" ")
    size = int(words[0])
    tokens = tuple(words[1:])
    flags = next((token[1:] for token in tokens if token[:1] == _FLAGS), b"0")
    return MetaHit(tokens, int(flags), raw[end + 2 : end + 2 + size])


def render_mg(request: Request, hit: MetaHit, data: bytes, flags: int) -> Reply:
    """The client's reply to `request` for an item with `data` and `flags`.

    `hit` is the backend's answer to `with_value_and_flags(request)`: its other
    tokens (`t`, `c`, `k`, `O`, `W` ...) are the client's, as written.
    """
    keep_flags = has_flag(request, _FLAGS)
    tokens: list[bytes] = []
    for token in hit.tokens:
        letter = token[:1]
        if letter == _FLAGS:
            if keep_flags:
                tokens.append(b"f%d" % flags)
        elif letter == b"s":
            tokens.append(b"s%d" % len(data))
        else:
            tokens.append(token)
    tail = b"".join(b" " + token for token in tokens)
    if has_flag(request, _VALUE):
        return Reply(Result.FOUND, b"VA %d%s\r\n%s\r\n" % (len(data), tail, data))
    return Reply(Result.FOUND, b"HD%s\r\n" % tail)


def ms_flags_and_exptime(request: Request) -> tuple[bytes, bytes] | None:
    """An `ms`'s client flags (`F`) and exptime (`T`), 0 when absent, as decimal tokens.

    None when either is not a plain number: memcached refuses such an `ms`, and a
    handle passes it on whole so that the backend answers its own error.
    """
    flags, exptime = b"0", b"0"
    for token in request.args[1:]:
        letter, rest = token[:1], token[1:]
        if letter == b"F":
            if not rest.isdigit() or int(rest) >= 1 << 32:
                return None
            flags = rest
        elif letter == b"T":
            if not rest.lstrip(b"-").isdigit() or rest.count(b"-") > 1:
                return None
            exptime = rest
    return flags, exptime


def ms_with_value(request: Request, data: bytes, flags: int) -> Request:
    """The client's `ms` with another value and client flags (`F` replaced or added)."""
    tokens = [token for token in request.args[1:] if token[:1] != b"F"]
    return request.replace(args=(b"%d" % len(data), *tokens, b"F%d" % flags), data=data)


class ItemKey(NamedTuple):
    """A key as the server stores it, and whether the client sent it base64-encoded."""

    key: bytes
    base64: bool

    @classmethod
    def of(cls, request: Request) -> ItemKey:
        if request.op in (Op.MG, Op.MS, Op.MD) and is_base64(request):
            return cls(meta_routing_key(request), True)
        return cls(request.key, False)

    def derived(self, suffix: bytes) -> ItemKey:
        return ItemKey(self.key + suffix, self.base64)

    def _wire(self) -> bytes:
        return base64.b64encode(self.key) if self.base64 else self.key

    def get(self) -> Request:
        """A read of the whole item: `get`, or `mg ... b v f` for a base64 key."""
        if self.base64:
            return Request(Op.MG, self._wire(), None, (b"b", b"v", b"f"))
        return Request(Op.GET, self.key, (self.key,))

    def gets(self) -> Request:
        """A read of the item with its CAS unique: `gets`, or `mg ... b v f c`."""
        if self.base64:
            return Request(Op.MG, self._wire(), None, (b"b", b"v", b"f", b"c"))
        return Request(Op.GETS, self.key, (self.key,))

    def expire_if_unchanged(self, cas: bytes) -> Request:
        """Expire the item (exptime -1) if its CAS unique is still `cas`."""
        if self.base64:
            return Request(Op.MS, self._wire(), None, (b"0", b"b", b"C" + cas, b"T-1"), b"")
        return Request(Op.CAS, self.key, None, (b"0", b"-1", b"0", cas), b"")

    def set(self, flags: bytes, exptime: bytes, data: bytes) -> Request:
        """A `set` of the item, or `ms ... b F T` for a base64 key."""
        if self.base64:
            args = (b"%d" % len(data), b"b", b"F" + flags, b"T" + exptime)
            return Request(Op.MS, self._wire(), None, args, data)
        return Request(Op.SET, self.key, None, (flags, exptime, b"%d" % len(data)), data)


def item_of(reply: Reply) -> tuple[int, bytes, bytes | None] | None:
    """Client flags, value and CAS unique (if asked for) of a hit to an `ItemKey` read."""
    if reply.result is not Result.FOUND:
        return None
    hit = parse_mg_hit(reply)
    if hit is not None:
        cas = next((token[1:] for token in hit.tokens if token[:1] == b"c"), None)
        return hit.flags, hit.data, cas
    for _key, header, block in values(reply.raw):
        fields = header.split(b" ")
        return int(fields[2]), block[len(header) + 2 : -2], fields[4] if len(fields) > 4 else None
    return None
