"""Per-host choices of children, made once from the host id as mcrouter makes them.

* HostIdRoute (``mcrouter/routes/HostIdRouteFactory.h``): child
  ``hash % len(children)`` where the hash is the host id, or with a `salt`
  ``folly::Hash()(host_id, salt)``.
* LatestRoute (``mcrouter/routes/LatestRoute.h``, ``detail::getTargets``): the
  seed is ``hash_combine(0, host_id)``, then ``hash_combine(seed, thread_id)``
  for a non-zero thread id, then ``folly::Hash()(seed, salt)`` with a salt. Each of
  up to `failover_count` steps picks, with WeightedCh3 of the seed in decimal, one
  of the children left, moves the last child (and weight) into its place, and
  re-seeds with ``hash_combine(seed, step)``. A list of one child or none is
  kept as it is.

The folly pieces are in ``_folly.py``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._folly import folly_hash_pair, hash_128_to_64
from ._weighted import weighted_ch3

__all__ = ["host_id_index", "latest_order"]


def host_id_index(host_id: int, salt: str, count: int) -> int:
    """The child (of `count` >= 1) HostIdRoute picks on the host with `host_id`."""
    hashed = folly_hash_pair(host_id, salt) if salt else host_id
    return hashed % count


def latest_order(
    host_id: int,
    weights: Sequence[float],
    failover_count: int,
    salt: str = "",
    thread_id: int = 0,
) -> tuple[int, ...]:
    """The children (indexes into `weights`, one per child) LatestRoute tries, in order."""
    count = len(weights)
    if count <= 1:
        return tuple(range(count))
    remaining = list(range(count))
    remaining_weights = list(weights)
    seed = hash_128_to_64(0, host_id)
    if thread_id:
        seed = hash_128_to_64(seed, thread_id)
    if salt:
        seed = folly_hash_pair(seed, salt)
    order: list[int] = []
    for step in range(min(failover_count, count)):
        picked = weighted_ch3(b"%d" % seed, remaining_weights)
        order.append(remaining[picked])
        # Swap-remove, as mcrouter does: the last child takes the picked one's place.
        remaining[picked] = remaining[-1]
        remaining.pop()
        remaining_weights[picked] = remaining_weights[-1]
        remaining_weights.pop()
        seed = hash_128_to_64(seed, step)
    return tuple(order)
