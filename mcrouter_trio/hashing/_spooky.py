"""SpookyHash V2 (Bob Jenkins, public domain), as shipped in folly as ``SpookyHashV2``.

mcrouter uses ``SpookyHashV2::Hash32`` in WeightedCh3 (the per-key acceptance draw),
in shadow key-fraction selection and in MigrateRoute, so this port must match folly
bit for bit; the test-suite checks it against folly's ``SpookyHashV2Test`` table.

Structure (V2, i.e. after Jenkins' 2012-08-05 revision): messages shorter than
192 bytes take the "short" path (4 x u64 state, 32-byte rounds of ``ShortMix``, the
total length folded into the top byte of the last state word, ``ShortEnd``).  Longer
messages take the 12 x u64, 96-byte-block path (``Mix`` per block; the zero-padded
final block, whose last byte holds the remainder length, is *added* to the state in
``End`` followed by three ``EndPartial`` rounds).  Everything is unsigned 64-bit
little-endian arithmetic; ``Hash32`` is the low 32 bits of the first 128-bit half.

The rounds are written out long-hand (no helper calls, no tuples) because CPython
function calls would dominate; ``(x << r | x >> (64 - r)) & M`` is a 64-bit rotate.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["spooky_hash32", "spooky_hash64", "spooky_hash128"]

_M: Final = 0xFFFF_FFFF_FFFF_FFFF
#: Jenkins' arbitrary odd constant that initialises the unseeded state words.
_CONST: Final = 0xDEADBEEFDEADBEEF
_BLOCK: Final = 96  # bytes per block of the long path (12 u64 state words)
_SHORT_LIMIT: Final = 192  # messages below this size use the short path

_U64: Final = struct.Struct("<Q").unpack_from
_BLOCK12: Final = struct.Struct("<12Q").unpack_from
# Short messages have at most 23 whole u64 words; pre-compile their unpackers.
_SHORT_WORDS: Final = tuple(struct.Struct(f"<{i}Q").unpack_from for i in range(24))


def _short(data: bytes, seed1: int, seed2: int) -> tuple[int, int]:
    """Short path (length < 192)."""
    length = len(data)
    a = seed1
    b = seed2
    c = _CONST
    d = _CONST
    # Whole 32-byte rounds, then one optional 16-byte half round; the words are
    # unpacked in one call.
    nwords = (length >> 5) * 4 + (2 if length & 16 else 0)
    words = _SHORT_WORDS[nwords](data)
    for i in range(0, nwords, 4):
        c = (c + words[i]) & _M
        d = (d + words[i + 1]) & _M
        # ShortMix
        c = ((c << 50 | c >> 14) + d) & _M
        a ^= c
        d = ((d << 52 | d >> 12) + a) & _M
        b ^= d
        a = ((a << 30 | a >> 34) + b) & _M
        c ^= a
        b = ((b << 41 | b >> 23) + c) & _M
        d ^= b
        c = ((c << 54 | c >> 10) + d) & _M
        a ^= c
        d = ((d << 48 | d >> 16) + a) & _M
        b ^= d
        a = ((a << 38 | a >> 26) + b) & _M
        c ^= a
        b = ((b << 37 | b >> 27) + c) & _M
        d ^= b
        c = ((c << 62 | c >> 2) + d) & _M
        a ^= c
        d = ((d << 34 | d >> 30) + a) & _M
        b ^= d
        a = ((a << 5 | a >> 59) + b) & _M
        c ^= a
        b = ((b << 36 | b >> 28) + c) & _M
        d ^= b
        if i + 2 == nwords:
            # The 16-byte half round: only c and d take input, a and b take none.
            break
        a = (a + words[i + 2]) & _M
        b = (b + words[i + 3]) & _M
    # Final 0..15 bytes: bytes 0-7 go into c and bytes 8-14 into d, both read as
    # little-endian integers (that is what the C fall-through switch computes); an
    # empty tail adds the constant to both instead.  V2 *adds* the length (V1 set it).
    d = (d + (length << 56)) & _M
    tail = length & 15
    if tail:
        pos = nwords << 3
        if tail >= 8:
            c = (c + _U64(data, pos)[0]) & _M
            if tail > 8:
                d = (d + int.from_bytes(data[pos + 8 :], "little")) & _M
        else:
            c = (c + int.from_bytes(data[pos:], "little")) & _M
    else:
        c = (c + _CONST) & _M
        d = (d + _CONST) & _M
    # ShortEnd
    d ^= c
    c = c << 15 & _M | c >> 49
    d = (d + c) & _M
    a ^= d
    d = d << 52 & _M | d >> 12
    a = (a + d) & _M
    b ^= a
    a = a << 26 & _M | a >> 38
    b = (b + a) & _M
    c ^= b
    b = b << 51 & _M | b >> 13
    c = (c + b) & _M
    d ^= c
    c = c << 28 & _M | c >> 36
    d = (d + c) & _M
    a ^= d
    d = d << 9 & _M | d >> 55
    a = (a + d) & _M
    b ^= a
    a = a << 47 & _M | a >> 17
    b = (b + a) & _M
    c ^= b
    b = b << 54 & _M | b >> 10
    c = (c + b) & _M
    d ^= c
    c = c << 32 & _M | c >> 32
    d = (d + c) & _M
    a ^= d
    d = d << 25 & _M | d >> 39
    a = (a + d) & _M
    b ^= a
    a = a << 63 & _M | a >> 1
    b = (b + a) & _M
    return a, b


def _long(data: bytes, seed1: int, seed2: int) -> tuple[int, int]:
    """Long path (length >= 192): 96-byte blocks of 12 u64 words."""
    length = len(data)
    h0 = h3 = h6 = h9 = seed1
    h1 = h4 = h7 = h10 = seed2
    h2 = h5 = h8 = h11 = _CONST
    nblocks = length // _BLOCK
    for off in range(0, nblocks * _BLOCK, _BLOCK):
        d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11 = _BLOCK12(data, off)
        # Mix: each line adds one input word, then cross-XORs and rotates.
        h0 = (h0 + d0) & _M
        h2 ^= h10
        h11 ^= h0
        h0 = h0 << 11 & _M | h0 >> 53
        h11 = (h11 + h1) & _M
        h1 = (h1 + d1) & _M
        h3 ^= h11
        h0 ^= h1
        h1 = h1 << 32 & _M | h1 >> 32
        h0 = (h0 + h2) & _M
        h2 = (h2 + d2) & _M
        h4 ^= h0
        h1 ^= h2
        h2 = h2 << 43 & _M | h2 >> 21
        h1 = (h1 + h3) & _M
        h3 = (h3 + d3) & _M
        h5 ^= h1
        h2 ^= h3
        h3 = h3 << 31 & _M | h3 >> 33
        h2 = (h2 + h4) & _M
        h4 = (h4 + d4) & _M
        h6 ^= h2
        h3 ^= h4
        h4 = h4 << 17 & _M | h4 >> 47
        h3 = (h3 + h5) & _M
        h5 = (h5 + d5) & _M
        h7 ^= h3
        h4 ^= h5
        h5 = h5 << 28 & _M | h5 >> 36
        h4 = (h4 + h6) & _M
        h6 = (h6 + d6) & _M
        h8 ^= h4
        h5 ^= h6
        h6 = h6 << 39 & _M | h6 >> 25
        h5 = (h5 + h7) & _M
        h7 = (h7 + d7) & _M
        h9 ^= h5
        h6 ^= h7
        h7 = h7 << 57 & _M | h7 >> 7
        h6 = (h6 + h8) & _M
        h8 = (h8 + d8) & _M
        h10 ^= h6
        h7 ^= h8
        h8 = h8 << 55 & _M | h8 >> 9
        h7 = (h7 + h9) & _M
        h9 = (h9 + d9) & _M
        h11 ^= h7
        h8 ^= h9
        h9 = h9 << 54 & _M | h9 >> 10
        h8 = (h8 + h10) & _M
        h10 = (h10 + d10) & _M
        h0 ^= h8
        h9 ^= h10
        h10 = h10 << 22 & _M | h10 >> 42
        h9 = (h9 + h11) & _M
        h11 = (h11 + d11) & _M
        h1 ^= h9
        h10 ^= h11
        h11 = h11 << 46 & _M | h11 >> 18
        h10 = (h10 + h0) & _M
    # End: the remaining bytes, zero-padded to a full block whose last byte is the
    # remainder length, are added word by word ...
    rest = length - nblocks * _BLOCK
    last = bytearray(data[nblocks * _BLOCK :])
    last.extend(bytes(_BLOCK - rest))
    last[_BLOCK - 1] = rest
    d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11 = _BLOCK12(last)
    h0 = (h0 + d0) & _M
    h1 = (h1 + d1) & _M
    h2 = (h2 + d2) & _M
    h3 = (h3 + d3) & _M
    h4 = (h4 + d4) & _M
    h5 = (h5 + d5) & _M
    h6 = (h6 + d6) & _M
    h7 = (h7 + d7) & _M
    h8 = (h8 + d8) & _M
    h9 = (h9 + d9) & _M
    h10 = (h10 + d10) & _M
    h11 = (h11 + d11) & _M
    # ... followed by three identical EndPartial rounds.
    for _ in range(3):
        h11 = (h11 + h1) & _M
        h2 ^= h11
        h1 = h1 << 44 & _M | h1 >> 20
        h0 = (h0 + h2) & _M
        h3 ^= h0
        h2 = h2 << 15 & _M | h2 >> 49
        h1 = (h1 + h3) & _M
        h4 ^= h1
        h3 = h3 << 34 & _M | h3 >> 30
        h2 = (h2 + h4) & _M
        h5 ^= h2
        h4 = h4 << 21 & _M | h4 >> 43
        h3 = (h3 + h5) & _M
        h6 ^= h3
        h5 = h5 << 38 & _M | h5 >> 26
        h4 = (h4 + h6) & _M
        h7 ^= h4
        h6 = h6 << 33 & _M | h6 >> 31
        h5 = (h5 + h7) & _M
        h8 ^= h5
        h7 = h7 << 10 & _M | h7 >> 54
        h6 = (h6 + h8) & _M
        h9 ^= h6
        h8 = h8 << 13 & _M | h8 >> 51
        h7 = (h7 + h9) & _M
        h10 ^= h7
        h9 = h9 << 38 & _M | h9 >> 26
        h8 = (h8 + h10) & _M
        h11 ^= h8
        h10 = h10 << 53 & _M | h10 >> 11
        h9 = (h9 + h11) & _M
        h0 ^= h9
        h11 = h11 << 42 & _M | h11 >> 22
        h10 = (h10 + h0) & _M
        h1 ^= h10
        h0 = h0 << 54 & _M | h0 >> 10
    return h0, h1


def spooky_hash128(data: bytes, seed1: int, seed2: int) -> tuple[int, int]:
    """Return SpookyHash V2 ``Hash128(data, seed1, seed2)`` as two u64 halves."""
    seed1 &= _M
    seed2 &= _M
    if len(data) < _SHORT_LIMIT:
        return _short(data, seed1, seed2)
    return _long(data, seed1, seed2)


def spooky_hash64(data: bytes, seed: int = 0) -> int:
    """Return SpookyHash V2 ``Hash64(data, seed)`` (first half of Hash128)."""
    return spooky_hash128(data, seed, seed)[0]


def spooky_hash32(data: bytes, seed: int = 0) -> int:
    """Return SpookyHash V2 ``Hash32(data, seed)``: low 32 bits of Hash64."""
    seed &= _M
    if len(data) < _SHORT_LIMIT:
        return _short(data, seed, seed)[0] & 0xFFFF_FFFF
    return _long(data, seed, seed)[0] & 0xFFFF_FFFF
