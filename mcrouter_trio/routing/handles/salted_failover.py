"""SaltedFailoverRoute: a FailoverRoute over a pool's PoolRoute and then its servers.

Apart from `failover.py` because it is built from PoolRoute (`hash.py`), which
itself builds LatestRoute (`failover.py`) for the hash function `Latest`.
"""

from __future__ import annotations

import attrs

from mcrouter_trio.routing._base import Route
from mcrouter_trio.routing._registry import config_field, route_type
from mcrouter_trio.routing._specs import PoolSpec
from mcrouter_trio.routing.handles._failover_settings import (
    DeterministicOrderPolicy,
    FailoverErrors,
    FailoverLimit,
    FailoverOrder,
    parse_failover_errors,
    parse_failover_limit,
    parse_failover_policy,
)
from mcrouter_trio.routing.handles.destination import pool_destinations
from mcrouter_trio.routing.handles.failover import FailoverRoute, ThroughInner
from mcrouter_trio.routing.handles.hash import HashSpec, PoolRoute
from mcrouter_trio.routing.handles.shadow import ShadowSpec, check_shadow_policy


@route_type("SaltedFailoverRoute")
@attrs.frozen
class SaltedFailoverRoute(ThroughInner):
    """FailoverRoute over `PoolRoute(pool, hash)` and then each server of the pool.

    mcrouter's shortcut, usually with a DeterministicOrderPolicy: a failed request
    goes on to servers picked by the key, skipping the one the pool picked.
    """

    pool: PoolSpec
    hash: HashSpec = HashSpec()
    failover_errors: FailoverErrors | None = config_field(default=None, check=parse_failover_errors)
    failover_limit: FailoverLimit | None = config_field(default=None, check=parse_failover_limit)
    failover_policy: FailoverOrder | None = config_field(default=None, check=parse_failover_policy)
    #: The PoolRoute's shadows (mcrouter passes them on to it).
    shadows: tuple[ShadowSpec, ...] = ()
    shadow_policy: str = config_field(default="default", check=check_shadow_policy)
    _inner: FailoverRoute = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        children: tuple[Route, ...] = (
            PoolRoute(self.pool, self.hash, shadows=self.shadows, shadow_policy=self.shadow_policy),
            *pool_destinations(self.pool),
        )
        inner = FailoverRoute(children, self.failover_errors, self.failover_limit, self._policy())
        object.__setattr__(self, "_inner", inner)

    def _policy(self) -> FailoverOrder | None:
        """mcrouter gives a DeterministicOrderPolicy the route's `hash`, when it has one,
        in place of the policy's own (a hash it cannot draw with is left to the policy)."""
        policy = self.failover_policy
        spec = self.hash
        if not isinstance(policy, DeterministicOrderPolicy) or spec == HashSpec():
            return policy
        if spec.hash_func == "Ch3":
            return policy.hashed_as(None)
        if spec.hash_func == "WeightedCh3":
            return policy.hashed_as(spec.weights or ())
        return policy
