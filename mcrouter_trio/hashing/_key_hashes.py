"""twemproxy's key hashes (``src/hashkit``): ``key bytes -> uint32``, as nutcracker computes them.

These are written from the algorithms' definitions, but reproduce nutcracker's
quirks, which decide where keys land:

* nutcracker reads keys as C ``char``, signed on x86-64: in the FNV variants,
  one_at_a_time and hsieh's three-byte tail a byte >= 0x80 enters as
  ``0xFFFFFFxx`` (sign-extended), so these differ from textbook versions on
  non-ASCII keys.  (On a platform whose ``char`` is unsigned, nutcracker itself
  would place such keys elsewhere; these follow x86-64.)
* ``fnv1a_64`` is really 32-bit FNV-1a with the low halves of the 64-bit
  constants; ``fnv1_64`` does use 64-bit arithmetic and keeps the low 32 bits.
* ``crc32`` is libmemcached's ``(crc >> 16) & 0x7fff``; ``crc32a`` is the plain CRC-32.
* ``crc16`` (XMODEM) never masks its register to 16 bits, so bits shifted past
  bit 15 stay in the result.
* ``md5`` is the first four digest bytes, little-endian.
* ``jenkins`` is Bob Jenkins' lookup3 ``hashlittle`` with initval 13.
* ``murmur`` is MurmurHash2 (32-bit) seeded with ``0xdeadbeef * len``.

nutcracker does not hash an empty key but takes 0 as its hash; the selector does the same.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["KEY_HASHES", "KeyHash"]

KeyHash = Callable[[bytes], int]

_M32: Final = 0xFFFF_FFFF
_M64: Final = 0xFFFF_FFFF_FFFF_FFFF


def _signed_char(byte: int) -> int:
    """A byte read as a signed C char and converted to uint32."""
    return byte | 0xFFFF_FF00 if byte & 0x80 else byte


# Per byte value, what `(uint32_t)key[x]` / `(uint64_t)key[x]` gives on x86-64.
_AS_U32: Final = tuple(_signed_char(b) for b in range(256))
_AS_U64: Final = tuple(b | 0xFFFF_FFFF_FFFF_FF00 if b & 0x80 else b for b in range(256))


def md5(key: bytes) -> int:
    return int.from_bytes(hashlib.md5(key).digest()[:4], "little")


def crc32(key: bytes) -> int:
    return (zlib.crc32(key) >> 16) & 0x7FFF


def crc32a(key: bytes) -> int:
    return zlib.crc32(key)


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16_TABLE: Final = _crc16_table()


def crc16(key: bytes) -> int:
    crc = 0
    table = _CRC16_TABLE
    for byte in key:
        crc = ((crc << 8) ^ table[((crc >> 8) ^ byte) & 0xFF]) & _M32
    return crc


def fnv1_64(key: bytes) -> int:
    h = 0xCBF29CE484222325
    as_u64 = _AS_U64
    for byte in key:
        h = ((h * 0x100000001B3) & _M64) ^ as_u64[byte]
    return h & _M32


def fnv1a_64(key: bytes) -> int:
    h = 0x84222325
    as_u32 = _AS_U32
    for byte in key:
        h = ((h ^ as_u32[byte]) * 0x1B3) & _M32
    return h


def fnv1_32(key: bytes) -> int:
    h = 2166136261
    as_u32 = _AS_U32
    for byte in key:
        h = ((h * 16777619) & _M32) ^ as_u32[byte]
    return h


def fnv1a_32(key: bytes) -> int:
    h = 2166136261
    as_u32 = _AS_U32
    for byte in key:
        h = ((h ^ as_u32[byte]) * 16777619) & _M32
    return h


def one_at_a_time(key: bytes) -> int:
    h = 0
    as_u32 = _AS_U32
    for byte in key:
        h = (h + as_u32[byte]) & _M32
        h = (h + (h << 10)) & _M32
        h ^= h >> 6
    h = (h + (h << 3)) & _M32
    h ^= h >> 11
    return (h + (h << 15)) & _M32


def murmur(key: bytes) -> int:
    m = 0x5BD1E995
    length = len(key)
    h = ((0xDEADBEEF * length) & _M32) ^ length
    whole = length & ~3
    for offset in range(0, whole, 4):
        k = (int.from_bytes(key[offset : offset + 4], "little") * m) & _M32
        k ^= k >> 24
        h = ((h * m) & _M32) ^ ((k * m) & _M32)
    if length & 3:
        h = ((h ^ int.from_bytes(key[whole:], "little")) * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    return h ^ (h >> 15)


def hsieh(key: bytes) -> int:
    length = len(key)
    if not length:
        return 0
    h = 0
    whole = length & ~3
    for offset in range(0, whole, 4):
        h = (h + key[offset] + (key[offset + 1] << 8)) & _M32
        tmp = (((key[offset + 2] + (key[offset + 3] << 8)) << 11) ^ h) & _M32
        h = ((h << 16) & _M32) ^ tmp
        h = (h + (h >> 11)) & _M32
    rest = length & 3
    if rest == 3:
        h = (h + key[whole] + (key[whole + 1] << 8)) & _M32
        h ^= (h << 16) & _M32
        h ^= (_AS_U32[key[whole + 2]] << 18) & _M32
        h = (h + (h >> 11)) & _M32
    elif rest == 2:
        h = (h + key[whole] + (key[whole + 1] << 8)) & _M32
        h ^= (h << 11) & _M32
        h = (h + (h >> 17)) & _M32
    elif rest == 1:
        h = (h + key[whole]) & _M32
        h ^= (h << 10) & _M32
        h = (h + (h >> 1)) & _M32
    h ^= (h << 3) & _M32
    h = (h + (h >> 5)) & _M32
    h ^= (h << 4) & _M32
    h = (h + (h >> 17)) & _M32
    h ^= (h << 25) & _M32
    return (h + (h >> 6)) & _M32


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def jenkins(key: bytes) -> int:
    length = len(key)
    a = b = c = (0xDEADBEEF + length + 13) & _M32
    if not length:
        return c
    offset = 0
    while length - offset > 12:
        a = (a + int.from_bytes(key[offset : offset + 4], "little")) & _M32
        b = (b + int.from_bytes(key[offset + 4 : offset + 8], "little")) & _M32
        c = (c + int.from_bytes(key[offset + 8 : offset + 12], "little")) & _M32
        # mix(a, b, c)
        a = ((a - c) & _M32) ^ _rot(c, 4)
        c = (c + b) & _M32
        b = ((b - a) & _M32) ^ _rot(a, 6)
        a = (a + c) & _M32
        c = ((c - b) & _M32) ^ _rot(b, 8)
        b = (b + a) & _M32
        a = ((a - c) & _M32) ^ _rot(c, 16)
        c = (c + b) & _M32
        b = ((b - a) & _M32) ^ _rot(a, 19)
        a = (a + c) & _M32
        c = ((c - b) & _M32) ^ _rot(b, 4)
        b = (b + a) & _M32
        offset += 12
    # The last block, 1..12 bytes, zero-padded: little-endian words into a, b, c.
    tail = key[offset:].ljust(12, b"\0")
    a = (a + int.from_bytes(tail[0:4], "little")) & _M32
    b = (b + int.from_bytes(tail[4:8], "little")) & _M32
    c = (c + int.from_bytes(tail[8:12], "little")) & _M32
    # final(a, b, c)
    c = (c ^ b) - _rot(b, 14) & _M32
    a = (a ^ c) - _rot(c, 11) & _M32
    b = (b ^ a) - _rot(a, 25) & _M32
    c = (c ^ b) - _rot(b, 16) & _M32
    a = (a ^ c) - _rot(c, 4) & _M32
    b = (b ^ a) - _rot(a, 14) & _M32
    return (c ^ b) - _rot(b, 24) & _M32


#: nutcracker's `hash:` names -> the function.
KEY_HASHES: Final[Mapping[str, KeyHash]] = MappingProxyType(
    {
        "one_at_a_time": one_at_a_time,
        "md5": md5,
        "crc16": crc16,
        "crc32": crc32,
        "crc32a": crc32a,
        "fnv1_64": fnv1_64,
        "fnv1a_64": fnv1a_64,
        "fnv1_32": fnv1_32,
        "fnv1a_32": fnv1a_32,
        "hsieh": hsieh,
        "murmur": murmur,
        "jenkins": jenkins,
    }
)
