"""memcached's numeric token rules (`safe_strtoul`, `safe_strtol`, `safe_strtoull`).

The proxy must accept exactly the numbers memcached 1.6 accepts, or the two would
frame the following bytes differently (a rejected storage command does not consume
its data block). memcached uses C's `strtol` family: leading white space and a sign
are allowed, parsing stops at the first non-digit, and that character must be
white space (tokens are split on spaces only, so a tab can legally end a number).
Overflow past 64 bits is an error; narrowing to 32 bits is not checked, it simply
truncates, so the backend applies that truncation itself when we forward the token.
"""

from __future__ import annotations

import re
from typing import Final

_NUMBER: Final = re.compile(rb"[\t\n\v\f\r ]*([+-]?)([0-9]+)(?:[\t\n\v\f\r ].*)?\Z", re.S)
_U64: Final = 1 << 64
_I64_MAX: Final = (1 << 63) - 1


def _split(token: bytes) -> tuple[bool, int] | None:
    if token.isdigit():
        return False, int(token)
    match = _NUMBER.match(token)
    if match is None:
        return None
    return match.group(1) == b"-", int(match.group(2))


def strtoull(token: bytes) -> int | None:
    """`safe_strtoull`/`safe_strtoul` before narrowing: the unsigned 64-bit value or None."""
    parsed = _split(token)
    if parsed is None:
        return None
    negative, magnitude = parsed
    if magnitude >= _U64:
        return None
    value = (-magnitude) % _U64 if negative else magnitude
    # strtoul negates "-N" modulo 2**64; memcached rejects the result only when it
    # looks negative as a signed number and a '-' was present.
    if negative and value > _I64_MAX:
        return None
    return value


def strtol(token: bytes) -> int | None:
    """`safe_strtol`: the value narrowed to a signed 32-bit integer, or None."""
    parsed = _split(token)
    if parsed is None:
        return None
    negative, magnitude = parsed
    value = -magnitude if negative else magnitude
    if not -_I64_MAX - 1 <= value <= _I64_MAX:
        return None
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
