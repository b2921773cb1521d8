"""Ch3: mcrouter's default consistent hash, ``furc_hash`` from ``lib/fbi/hash.c``.

furc_hash maps a key to one of ``n`` buckets (``n`` up to 2**23) such that growing
``n`` moves only about 1/n of the keys.  It draws bits from a pseudo-random stream
seeded by the key -- word 0 is MurmurHash64A(key, SEED), word i is ``rehash`` of
word i-1 -- and reads a candidate bucket number of ``d`` bits (``d`` = bits needed
for n-1) at positions 23 apart.  The leading bit of each candidate is probed first:
while it is 0 the candidate width shrinks, which is what makes the mapping
consistent.  A candidate that is >= n is rejected and the walk simply continues
along the stream (``a`` and ``d`` are *not* reset), for at most 32 tries, then 0.

Compatibility: every vector of mcrouter's ``Ch3HashTest.cpp`` and the Ch3 checksums
of ``WeightedCh3HashFuncTest.cpp`` are reproduced by the test-suite.
"""

from __future__ import annotations

from typing import Final

from ._murmur import MASK64, MUL, SEED, R, murmur64a

__all__ = ["CH3_MAX_N", "ch3", "furc_hash"]

#: Largest pool size Ch3 accepts (mcrouter rejects bigger pools at config time).
CH3_MAX_N: Final = 1 << 23
_SHIFT: Final = 23  # distance between consecutive bits of one candidate
_MAX_TRIES: Final = 32
_REHASH_H0: Final = (SEED ^ (8 * MUL)) & MASK64


def furc_hash(key: bytes, n: int) -> int:
    """Return the Ch3 bucket of ``key`` among ``n`` without validating ``n``.

    ``n <= 1`` gives 0.  Callers on the hot path validate ``n`` once up front and
    call this directly; everybody else should use :func:`ch3`.
    """
    if n <= 1:
        return 0
    d = (n - 1).bit_length()
    # The bit stream is kept as one Python int (word i occupies bits 64*i..64*i+63),
    # so ``bit(i)`` is ``stream >> i & 1``.  Words are generated only when a read
    # would go past ``nbits``; most keys need 1-3 words.
    word = murmur64a(key, SEED)
    stream = word
    nbits = 64
    a = d
    for _ in range(_MAX_TRIES):
        while True:
            # On a retry ``a`` continues from where the last candidate ended, so it
            # may point past the generated words.  (Inside this loop ``a`` only ever
            # shrinks to ``d`` < 24, which is always inside word 0.)
            while a >= nbits:
                # Inlined ``rehash(word)``: this loop is the hot spot for large n.
                k = (word * MUL) & MASK64
                k ^= k >> R
                h = ((_REHASH_H0 ^ (k * MUL)) * MUL) & MASK64
                h ^= h >> R
                h = (h * MUL) & MASK64
                word = h ^ (h >> R)
                stream |= word << nbits
                nbits += 64
            if (stream >> a) & 1:
                break
            # Leading bit is 0: try a candidate one bit narrower.
            d -= 1
            if d == 0:
                return 0
            a = d
        a += _SHIFT
        # The candidate's remaining d-1 bits sit at a, a+23, ..., a+23*(d-2); make
        # sure the stream covers the last one before reading them all.
        top = a + _SHIFT * (d - 2)
        while top >= nbits:
            k = (word * MUL) & MASK64
            k ^= k >> R
            h = ((_REHASH_H0 ^ (k * MUL)) * MUL) & MASK64
            h ^= h >> R
            h = (h * MUL) & MASK64
            word = h ^ (h >> R)
            stream |= word << nbits
            nbits += 64
        num = 1
        for _ in range(d - 1):
            num = (num << 1) | ((stream >> a) & 1)
            a += _SHIFT
        if num < n:
            return num
    return 0


def ch3(key: bytes, n: int) -> int:
    """Return mcrouter's Ch3 (furc_hash) bucket of ``key`` among ``n`` buckets.

    Raises :class:`ValueError` unless ``1 <= n <= 2**23``.
    """
    if not 1 <= n <= CH3_MAX_N:
        raise ValueError(f"Ch3 needs 1 <= n <= {CH3_MAX_N}, got {n}")
    return furc_hash(key, n)
