"""WeightedCh3: Ch3 with per-child acceptance probabilities (``lib/WeightedCh3HashFunc.cpp``).

Each child ``i`` has a weight in [0, 1].  A key first picks a child with Ch3; the
pick is *accepted* when a second, independent 32-bit draw -- SpookyHash V2
``Hash32`` of the same bytes with seed 0xface2014 -- is below ``weight * 0xFFFFFFFF``
(truncated to an integer, as the C++ cast does).  A rejected key is re-hashed as the
original key plus a decimal salt 0, 1, 2, ... written with its digits *reversed*
(``10`` is appended as ``b"01"``), for 32 attempts in all; if none is accepted the
last pick wins.  With every weight 1.0 only a draw of exactly 0xFFFFFFFF can reject,
so the result is Ch3's (the suite checks this).

Compatibility: missing weights count 0.5 and surplus weights are ignored, matching
mcrouter's ``WeightedChHashFuncBase``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from ._furc import CH3_MAX_N, furc_hash
from ._spooky import spooky_hash32

__all__ = ["DEFAULT_WEIGHT", "weight_thresholds", "weighted_ch3", "weighted_ch3_thresholds"]

#: Weight assumed for a child that has none in the config.
DEFAULT_WEIGHT: Final = 0.5
_SPOOKY_SEED: Final = 0xFACE2014
_SCALE: Final = 0xFFFF_FFFF
_MAX_TRIES: Final = 32
# Suffixes for the 31 retries: the salt's decimal digits, least significant first.
_SALTS: Final = tuple(str(i)[::-1].encode() for i in range(_MAX_TRIES - 1))


def weight_thresholds(weights: Sequence[float], n: int) -> tuple[int, ...]:
    """Turn per-child weights into the integer acceptance thresholds for ``n`` children.

    Pads with :data:`DEFAULT_WEIGHT`, drops weights beyond ``n`` and raises
    :class:`ValueError` for a weight outside [0, 1] (or NaN).
    """
    out: list[int] = []
    for i in range(n):
        w = float(weights[i]) if i < len(weights) else DEFAULT_WEIGHT
        if math.isnan(w) or not 0.0 <= w <= 1.0:
            raise ValueError(f"WeightedCh3 weight #{i} must be in [0, 1], got {weights[i]!r}")
        out.append(int(w * _SCALE))
    return tuple(out)


def weighted_ch3_thresholds(key: bytes, thresholds: Sequence[int]) -> int:
    """WeightedCh3 with pre-computed thresholds (see :func:`weight_thresholds`).

    ``len(thresholds)`` is the number of children and must already be validated
    (1..2**23); this is the hot-path entry point used by selectors.
    """
    n = len(thresholds)
    idx = furc_hash(key, n)
    t = thresholds[idx]
    # A zero threshold can never accept (the draw is unsigned), so skip the draw.
    if t and spooky_hash32(key, _SPOOKY_SEED) < t:
        return idx
    for suffix in _SALTS:
        salted = key + suffix
        idx = furc_hash(salted, n)
        t = thresholds[idx]
        if t and spooky_hash32(salted, _SPOOKY_SEED) < t:
            return idx
    return idx


def weighted_ch3(key: bytes, weights: Sequence[float]) -> int:
    """Return the WeightedCh3 child of ``key``; ``len(weights)`` is the child count.

    Converts the weights on every call; code that hashes many keys against the same
    weights should use :func:`make_selector` (which converts once).
    """
    n = len(weights)
    if not 1 <= n <= CH3_MAX_N:
        raise ValueError(f"WeightedCh3 needs 1 <= len(weights) <= {CH3_MAX_N}, got {n}")
    return weighted_ch3_thresholds(key, weight_thresholds(weights, n))
