"""Crc32 hash function (``lib/Crc32HashFunc.h``): plain CRC-32 modulo the pool size.

The CRC is the standard reflected IEEE 802.3 one (what :func:`zlib.crc32` computes);
mcrouter keeps its low 31 bits and takes the remainder modulo ``n``.  This is *not*
consistent hashing, and it is not the PHP-memcache ``(crc32 >> 16) & 0x7fff``
variant either, so it does not reproduce PHP client placement.
"""

from __future__ import annotations

import zlib

__all__ = ["crc32"]


def crc32(key: bytes, n: int) -> int:
    """Return ``(zlib.crc32(key) & 0x7fffffff) % n``; raises :class:`ValueError` if n < 1."""
    if n < 1:
        raise ValueError(f"Crc32 needs n >= 1, got {n}")
    return (zlib.crc32(key) & 0x7FFF_FFFF) % n
