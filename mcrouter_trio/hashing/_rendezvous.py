"""mcrouter's config-time RendezvousHash (``mcrouter/lib/config/RendezvousHash.cpp``).

The JSONM built-in ``weightedHash`` picks one of several named choices with it.
Each choice's name is hashed once with folly's ``fnv64_buf_BROKEN``; for a 64-bit
key, choice ``i`` scores ``(twang_mix64(name_hash + key) / UINT64_MAX) ** (1 / w_i)``
where ``w_i`` is its weight divided by the sum of the weights (a weight below
double epsilon scores 0). The first highest score wins. Pure: no I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Final

from ._folly import MASK64, fnv64_broken, twang_mix64

__all__ = ["rendezvous_pick"]

_EPSILON: Final = sys.float_info.epsilon
_UINT64_MAX: Final = float(MASK64)


def rendezvous_pick(names: Sequence[str], weights: Sequence[float], key: int) -> int:
    """The index of the choice `key` (taken modulo 2**64) goes to.

    Raises :class:`ValueError` as mcrouter does: a negative weight, or weights
    that sum to less than double epsilon.
    """
    if any(weight < 0.0 for weight in weights):
        raise ValueError("Weight should be greater than 0")
    total = 0.0
    for weight in weights:
        total += weight
    if total < _EPSILON:
        raise ValueError("Sum of weights is 0")
    best, best_score = 0, -1.0
    for index, (name, weight) in enumerate(zip(names, weights, strict=True)):
        share = weight / total
        node = fnv64_broken(name.encode("utf-8"))
        scaled = float(twang_mix64((node + key) & MASK64)) / _UINT64_MAX
        score = scaled ** (1.0 / share) if share > _EPSILON else 0.0
        if score > best_score:
            best, best_score = index, score
    return best
