"""MurmurHash64A and the one-word ``rehash`` used by mcrouter's Ch3 bit stream.

MurmurHash64A is Austin Appleby's public-domain 64-bit Murmur2 variant.  mcrouter
(``lib/fbi/hash.c``) uses it as the source of pseudo-random bits for ``furc_hash``:
the key is hashed once, and every further 64-bit word is MurmurHash64A applied to the
previous word.  Results must be bit-identical to the C code on little-endian hosts,
so all arithmetic is unsigned 64-bit (masked after every multiply) and blocks are read
as little-endian u64 regardless of the machine's byte order.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["MASK64", "MUL", "SEED", "R", "murmur64a", "rehash"]

MASK64: Final = 0xFFFF_FFFF_FFFF_FFFF
#: MurmurHash64A multiplier and shift.
MUL: Final = 0xC6A4A7935BD1E995
R: Final = 47
#: Seed mcrouter's furc_hash uses both for the key and for every rehash.
SEED: Final = 4193360111

# Memcached keys are at most 250 bytes (31 blocks); pre-compiled unpackers for those
# sizes avoid building a format string per call.  Longer inputs (salted keys, other
# callers) fall back to a freshly built format.
_UNPACKERS: Final = tuple(struct.Struct(f"<{i}Q").unpack_from for i in range(33))

# Initial state of a rehash: seed XOR (len * MUL) with len == 8, folded at import time.
_REHASH_H0: Final = (SEED ^ (8 * MUL)) & MASK64


def murmur64a(data: bytes, seed: int) -> int:
    """Return MurmurHash64A of ``data`` with ``seed`` as an unsigned 64-bit integer."""
    # Masking to 64 bits is only needed before a right shift: the low 64 bits of a
    # product or XOR depend only on the low 64 bits of the operands, so a value that
    # is about to be multiplied and masked can carry junk high bits (one op less).
    length = len(data)
    h = (seed & MASK64) ^ (length * MUL)
    nblocks = length >> 3
    if nblocks:
        if nblocks < len(_UNPACKERS):
            blocks = _UNPACKERS[nblocks](data)
        else:
            blocks = struct.unpack_from(f"<{nblocks}Q", data)
        for k in blocks:
            k = (k * MUL) & MASK64
            k ^= k >> R
            h = ((h ^ (k * MUL)) * MUL) & MASK64
    if length & 7:
        # The C code XORs tail byte j in at bit 8*j: that is exactly the tail read as
        # a little-endian integer.
        h = ((h ^ int.from_bytes(data[nblocks << 3 :], "little")) * MUL) & MASK64
    else:
        h &= MASK64
    h ^= h >> R
    h = (h * MUL) & MASK64
    return h ^ (h >> R)


def rehash(x: int) -> int:
    """Return MurmurHash64A(SEED) of the 8 little-endian bytes of the u64 ``x``.

    Equivalent to ``murmur64a(x.to_bytes(8, "little"), SEED)`` but without building
    bytes: one block, no tail.
    """
    k = (x * MUL) & MASK64
    k ^= k >> R
    h = ((_REHASH_H0 ^ (k * MUL)) * MUL) & MASK64
    h ^= h >> R
    h = (h * MUL) & MASK64
    return h ^ (h >> R)
