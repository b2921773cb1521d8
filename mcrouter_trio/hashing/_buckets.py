"""McBucketRoute's buckets: which of `total` buckets a routing key falls in.

mcrouter (``mcrouter/routes/McBucketRoute.h`` ``getBucket``): a key's bucket is
``Ch3(key, total)``. With ``total_buckets_by_prefix``, a key under one of those
prefixes (the longest that matches, as ``LowerBoundPrefixMap`` finds it) is first
placed in one of that prefix's own few buckets, ``Ch3(key, prefix_buckets)``, and
the bucket is ``Ch3(prefix + that number in decimal, total)``: the keys under a
prefix share at most that many buckets, so they batch together. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._furc import furc_hash

__all__ = ["Bucketizer"]


class Bucketizer:
    """The bucket of a routing key out of `total`, with per-prefix bucket counts."""

    __slots__ = ("_by_prefix", "_lengths", "total")

    def __init__(self, total: int, by_prefix: Mapping[str, int] | None = None) -> None:
        self.total = total
        self._by_prefix = {p.encode("utf-8"): count for p, count in (by_prefix or {}).items()}
        # Longest first: the first length whose prefix is in the map wins.
        self._lengths = sorted({len(prefix) for prefix in self._by_prefix}, reverse=True)

    def bucket(self, key: bytes) -> int:
        by_prefix = self._by_prefix
        for length in self._lengths:
            if length > len(key):
                continue
            prefix = key[:length]
            count = by_prefix.get(prefix)
            if count is not None:
                return furc_hash(b"%s%d" % (prefix, furc_hash(key, count)), self.total)
        return furc_hash(key, self.total)
