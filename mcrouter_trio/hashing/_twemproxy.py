"""twemproxy's key distribution (``src/hashkit``, ``server_pool_idx``): key -> server index.

A selector is built once per pool, from the servers' *names* and *weights*:

* ``ketama``: a ring of points.  A server gets ``4 * floor(w / total * 40 * n)``
  points (computed in 32-bit floats, as nutcracker does, so that rounding agrees),
  four per MD5 digest of ``"<name>-<i>"``, each digest cut into four little-endian
  uint32 values.  A key goes to the first point at or above its hash, wrapping
  to the first point.  Ties (two equal points) go to the lower server index, as
  in libmemcached; nutcracker's ``qsort`` leaves them unspecified.
* ``modula``: each server appears ``weight`` times, ``hash % total`` picks one.  The
  servers are in *name* order, not config order: nutcracker sorts a pool's servers by
  name (shorter names first, then bytewise) when it checks them for duplicates, and
  keeps that order (:func:`nutcracker_order`).
* ``random``: a server drawn per request, weights ignored.

A server's name is what its config gives after the weight (``host:port:1 name``),
else ``host`` when the port is 11211 (libmemcached compatibility) and
``host:port`` otherwise; :func:`server_name` builds the latter.

``hash_tag`` (two bytes, e.g. ``b"{}"``): when the key holds the first byte, then
the second one after it, with something in between, only the bytes in between
are hashed.  A pool of one server never hashes.  Like mcrouter's selectors, these
remember the index of recently seen keys (except `random`'s).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import struct
from collections.abc import Callable, Collection, Sequence
from typing import Final

from ._key_hashes import KEY_HASHES
from ._selector import CACHE_LIMIT, memoize

__all__ = [
    "DISTRIBUTIONS",
    "KETAMA_DEFAULT_PORT",
    "hash_tagged",
    "ketama_point_counts",
    "ketama_ring",
    "nutcracker_order",
    "server_name",
    "twemproxy_selector",
]

DISTRIBUTIONS: Final = frozenset({"ketama", "modula", "random"})
#: A server on this port is named by its host alone (libmemcached's ketama does so).
KETAMA_DEFAULT_PORT: Final = 11211
_POINTS_PER_SERVER: Final = 160
_POINTS_PER_HASH: Final = 4
#: nutcracker formats `name-i` into a buffer of this size (terminator included).
_MAX_POINT_NAME: Final = 273
_FLOAT32: Final = struct.Struct("f")


def server_name(host: str, port: int) -> str:
    """nutcracker's name of an unnamed server: `host` on port 11211, else `host:port`."""
    return host if port == KETAMA_DEFAULT_PORT else f"{host}:{port}"


def _f32(value: float) -> float:
    """Round to the nearest 32-bit float (C `float` arithmetic, one operation at a time)."""
    result: float = _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    return result


def ketama_point_counts(weights: Sequence[int]) -> list[int]:
    """Points per server: `4 * floorf(pct * 160 / 4 * n + 1e-10)` in C float arithmetic."""
    total = _f32(sum(weights))
    n = _f32(len(weights))
    counts = []
    for weight in weights:
        pct = _f32(_f32(weight) / total)
        scaled = _f32(_f32(_f32(pct * _POINTS_PER_SERVER) / 4) * n)
        # `+ 0.0000000001` is a double; floorf() takes the sum back to float.
        counts.append(math.floor(_f32(scaled + 1e-10)) * _POINTS_PER_HASH)
    return counts


def ketama_ring(names: Sequence[str], weights: Sequence[int]) -> tuple[list[int], list[int]]:
    """The ring: point values ascending, and the server index owning each point."""
    points: list[tuple[int, int]] = []
    for index, (name, count) in enumerate(zip(names, ketama_point_counts(weights), strict=True)):
        for i in range(count // _POINTS_PER_HASH):
            label = f"{name}-{i}".encode()[: _MAX_POINT_NAME - 1]
            digest = hashlib.md5(label).digest()
            points.extend((value, index) for value in struct.unpack("<4I", digest))
    points.sort()
    return [value for value, _ in points], [index for _, index in points]


def nutcracker_order(names: Sequence[str]) -> list[int]:
    """Server indexes in the order nutcracker keeps them: by name, shorter first, then
    bytewise (`conf_validate_server` sorts with `string_compare`; names are unique)."""
    encoded = [name.encode() for name in names]
    return sorted(range(len(names)), key=lambda index: (len(encoded[index]), encoded[index]))


def hash_tagged(key: bytes, tag: bytes) -> bytes:
    """The part of `key` inside `tag`'s two bytes, or the whole key."""
    start = key.find(tag[:1])
    if start >= 0:
        end = key.find(tag[1:2], start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def twemproxy_selector(
    distribution: str,
    key_hash: str,
    names: Sequence[str],
    weights: Sequence[int],
    hash_tag: bytes = b"",
    ejected: Collection[int] = (),
) -> Callable[[bytes], int]:
    """`select(key) -> server index` placing keys exactly where nutcracker does.

    `names` and `weights` give one entry per server, in config order; weights are
    positive integers.  `ejected` servers (indexes) are left out as nutcracker's
    `auto_eject_hosts` leaves them out (`ketama_update`, `modula_update`): the
    distribution is built over the others, with their weights alone; indexes still
    count in the full list.  Raises ValueError for an unknown distribution or key
    hash, or when every server is ejected.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}")
    hash_key = KEY_HASHES.get(key_hash)
    if hash_key is None:
        raise ValueError(f"unknown key hash {key_hash!r}")
    if len(names) != len(weights) or not names:
        raise ValueError("need one name and one weight per server, and a server")
    live = [index for index in range(len(names)) if index not in ejected]
    if not live:
        raise ValueError("every server is ejected")
    if len(names) == 1:
        return _always_first  # nutcracker never hashes for a pool of one server
    if len(live) == 1:
        only = live[0]
        return lambda key: only
    if distribution == "random":
        randrange = random.randrange
        count = len(live)
        return lambda key: live[randrange(count)]
    live_names = [names[index] for index in live]
    if distribution == "ketama":
        values, owners = ketama_ring(live_names, [weights[index] for index in live])
        owners = [live[owner] for owner in owners]
        last = len(values)
        find = bisect.bisect_left

        def pick(hashed: int) -> int:
            at = find(values, hashed)
            return owners[at] if at < last else owners[0]

    else:
        slots = [
            live[position]
            for position in nutcracker_order(live_names)
            for _ in range(weights[live[position]])
        ]
        total = len(slots)

        def pick(hashed: int) -> int:
            return slots[hashed % total]

    if hash_tag:
        tag = hash_tag

        def select(key: bytes) -> int:
            key = hash_tagged(key, tag)
            return pick(hash_key(key) if key else 0)

    else:

        def select(key: bytes) -> int:
            return pick(hash_key(key) if key else 0)

    return memoize(select, CACHE_LIMIT) if CACHE_LIMIT > 0 else select


def _always_first(key: bytes) -> int:
    return 0
