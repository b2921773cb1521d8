"""Per-pool selector factory: hash function name + pool size -> ``key -> child index``.

Route handles build one selector per pool at config time, so all validation and
pre-computation (size limits, weight thresholds) happens here once, and the
returned callable does nothing but hash.  Names are mcrouter's, case-sensitive.

The selector memoises results in a plain dict keyed by the (routing) key, because
the pure-Python hashes cost microseconds while a dict hit costs well under 0.1 us
and memcached traffic is dominated by hot keys.  The dict is simply emptied when it
reaches :data:`CACHE_LIMIT` entries, which bounds memory without LRU bookkeeping
on the hot path.  (mcrouter caches per request for the same reason.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Final

from ._const_shard import const_shard_unchecked
from ._crc32 import crc32
from ._furc import CH3_MAX_N, furc_hash
from ._weighted import weight_thresholds, weighted_ch3_thresholds

__all__ = ["CACHE_LIMIT", "HashFunc", "avoiding", "make_selector", "memoize"]

#: Signature shared by the plain hash functions: ``(key, n) -> index``.
HashFunc = Callable[[bytes, int], int]

#: Entries a selector memoises before its cache is emptied (0 disables caching).
CACHE_LIMIT: Final = 65536

_NAMES: Final = frozenset({"Ch3", "Crc32", "WeightedCh3", "ConstShard"})


def _always_zero(key: bytes) -> int:
    return 0


def memoize(fn: Callable[[bytes], int], limit: int) -> Callable[[bytes], int]:
    """`fn` with its results remembered, forgetting all of them every `limit` keys."""
    cache: dict[bytes, int] = {}
    get = cache.get

    def select(key: bytes) -> int:
        index = get(key)
        if index is None:
            if len(cache) >= limit:
                cache.clear()
            index = cache[key] = fn(key)
        return index

    return select


def make_selector(
    name: str,
    n: int,
    *,
    salt: bytes = b"",
    weights: Sequence[float] | None = None,
) -> Callable[[bytes], int]:
    """Return ``select(routing_key) -> index in range(n)`` for hash function ``name``.

    ``salt`` is appended to the key before hashing.  ``weights`` only matters for
    WeightedCh3 (missing ones count 0.5, extra ones are ignored).  A pool of one
    always selects 0 without hashing.  Raises :class:`ValueError` for an unknown
    name, a pool size the function cannot handle or an invalid weight.
    """
    if name not in _NAMES:
        raise ValueError(f"unknown hash function {name!r}")
    limit_n = CH3_MAX_N if name != "Crc32" else None
    if n < 1 or (limit_n is not None and n > limit_n):
        raise ValueError(f"{name} cannot hash over {n} children")
    fn: Callable[[bytes], int]
    if name == "WeightedCh3":
        thresholds = weight_thresholds(weights or (), n)

        def fn(key: bytes) -> int:
            return weighted_ch3_thresholds(key + salt, thresholds)

    else:
        base: HashFunc = {
            "Ch3": furc_hash,
            "Crc32": crc32,
            "ConstShard": const_shard_unchecked,
        }[name]

        def fn(key: bytes) -> int:
            return base(key + salt, n)

    if n == 1:
        return _always_zero
    return memoize(fn, CACHE_LIMIT) if CACHE_LIMIT > 0 else fn


def avoiding(
    select: Callable[[bytes], int], n: int, ejected: Collection[int]
) -> Callable[[bytes], int]:
    """`select` over `n` servers with the `ejected` ones taken out of it.

    A key `select` sends to an ejected server is hashed again with Ch3 over the
    servers left, in order; every other key stays where it was. With none left (or
    none ejected), `select` itself.
    """
    live = [index for index in range(n) if index not in ejected]
    if not live or len(live) == n:
        return select
    gone = frozenset(ejected)
    count = len(live)

    def fn(key: bytes) -> int:
        index = select(key)
        if index in gone:
            return live[furc_hash(key, count)] if count > 1 else live[0]
        return index

    return memoize(fn, CACHE_LIMIT) if CACHE_LIMIT > 0 else fn
