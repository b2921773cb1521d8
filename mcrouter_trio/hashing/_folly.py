"""folly's hash building blocks, as mcrouter's per-host and config-time choices use them.

From ``folly/hash/Hash.h`` and ``folly/hash/FnvHash.h`` on 64-bit Linux:

* ``hash_128_to_64(upper, lower)``: CityHash's Hash128to64;
* ``twang_mix64``: what ``folly::Hash`` does to a 64-bit integer;
* ``folly::Hash`` of a string: SpookyHash V2 ``Hash64`` with seed 0;
* ``folly::Hash()(a, b)``: ``hash_128_to_64(Hash(a), Hash(b))``;
* ``folly::hash::hash_combine(a, b)``: the same with ``std::hash``, which on
  libstdc++ leaves integers as they are, so ``hash_128_to_64(a, b)``;
* ``fnv64_buf_BROKEN``: FNV-1 (64-bit) xoring *sign-extended* bytes.

All values are unsigned 64-bit integers. Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

from ._spooky import spooky_hash64

__all__ = [
    "fnv64_broken",
    "folly_hash_pair",
    "folly_hash_str",
    "hash_128_to_64",
    "twang_mix64",
]

MASK64: Final = 0xFFFF_FFFF_FFFF_FFFF
_HASH128_MUL: Final = 0x9DDFEA08EB382D69
_FNV64_START: Final = 14695981039346656037
_FNV64_PRIME: Final = 0x100000001B3  # the shifts in folly's loop add up to this


def hash_128_to_64(upper: int, lower: int) -> int:
    """folly's ``hash_128_to_64`` (CityHash's Hash128to64)."""
    a = ((lower ^ upper) * _HASH128_MUL) & MASK64
    a ^= a >> 47
    b = ((upper ^ a) * _HASH128_MUL) & MASK64
    b ^= b >> 47
    return (b * _HASH128_MUL) & MASK64


def twang_mix64(key: int) -> int:
    """folly's ``twang_mix64`` (Thomas Wang's 64-bit mix); `key` is taken modulo 2**64."""
    key &= MASK64
    key = (~key + (key << 21)) & MASK64
    key ^= key >> 24
    key = (key + (key << 3) + (key << 8)) & MASK64
    key ^= key >> 14
    key = (key + (key << 2) + (key << 4)) & MASK64
    key ^= key >> 28
    return (key + (key << 31)) & MASK64


def folly_hash_str(text: str) -> int:
    """``folly::Hash`` of a string (its UTF-8 bytes)."""
    return spooky_hash64(text.encode("utf-8"), 0)


def folly_hash_pair(number: int, text: str) -> int:
    """``folly::Hash()(number, text)`` for a 64-bit unsigned `number` and a string."""
    return hash_128_to_64(twang_mix64(number), folly_hash_str(text))


def fnv64_broken(data: bytes) -> int:
    """folly's ``fnv64_buf_BROKEN``: bytes of 0x80 and above are sign-extended before the xor."""
    value = _FNV64_START
    for byte in data:
        value = (value * _FNV64_PRIME) & MASK64
        value ^= (byte | 0xFFFF_FFFF_FFFF_FF00) if byte & 0x80 else byte
    return value
