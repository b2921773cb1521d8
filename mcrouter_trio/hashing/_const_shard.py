"""ConstShard hash function (``routes/ShardHashFunc.cpp``): keys that name their shard.

A key of the form ``<anything>:<digits>:<rest>`` -- the text between the first and
the second colon is a decimal number -- goes to that child index when the number is
below the pool size.  Every other key (no second colon, an empty or non-numeric
field, a number that is too large) falls back to Ch3 over the whole key.

Compatibility note: the field must consist of ASCII digits only; keys cannot contain
whitespace or signs in the memcached text protocol, so the only inputs where this
could differ from folly's number parser are not valid keys anyway.
"""

from __future__ import annotations

from ._furc import CH3_MAX_N, furc_hash

__all__ = ["const_shard", "const_shard_unchecked"]


def const_shard_unchecked(key: bytes, n: int) -> int:
    """ConstShard without validating ``n`` (hot-path entry point for selectors)."""
    start = key.find(b":") + 1
    if start:
        end = key.find(b":", start)
        field = key[start:end]
        if end > start and field.isdigit():
            # Any valid index is below 2**23 (7 digits).  Longer numbers are out of
            # range anyway and must not reach int(), which refuses huge digit strings.
            digits = field.lstrip(b"0") or b"0"
            if len(digits) <= 8:
                shard = int(digits)
                if shard < n:
                    return shard
    return furc_hash(key, n)


def const_shard(key: bytes, n: int) -> int:
    """Return the ConstShard child of ``key`` among ``n``; ``n`` must be 1..2**23."""
    if not 1 <= n <= CH3_MAX_N:
        raise ValueError(f"ConstShard needs 1 <= n <= {CH3_MAX_N}, got {n}")
    return const_shard_unchecked(key, n)
