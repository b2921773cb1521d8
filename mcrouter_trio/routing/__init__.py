"""Routing values (pure, no Trio): route handles, their registry, combinators, the route tree.

Handle classes live in `routing.handles`, one module per family, and register
themselves (`_registry`). Composite handles combine replies only through the
guarded combinators (`_combinators`). `RouteTree` is what the router routes with.
`routing.testing.FakeContext` runs handles in memory with a fake clock.
"""

from mcrouter_trio.routing._base import (
    NO_ROUTE,
    Route,
    RouteContext,
    default_reply,
    policy_name,
)
from mcrouter_trio.routing._checks import Invalid
from mcrouter_trio.routing._combinators import (
    FAILURES,
    ROUTING_FAILED,
    Background,
    first_acceptable,
    gather,
    quorum,
    sequence,
)
from mcrouter_trio.routing._registry import REGISTRY, BuildEnv, load_handles, route_type
from mcrouter_trio.routing._specs import PoolSpec, ServerSpec
from mcrouter_trio.routing._timers import TimerQueue
from mcrouter_trio.routing._tree import RouteTree

__all__ = [
    "FAILURES",
    "NO_ROUTE",
    "REGISTRY",
    "ROUTING_FAILED",
    "Background",
    "BuildEnv",
    "Invalid",
    "PoolSpec",
    "Route",
    "RouteContext",
    "RouteTree",
    "ServerSpec",
    "TimerQueue",
    "default_reply",
    "first_acceptable",
    "gather",
    "load_handles",
    "policy_name",
    "quorum",
    "route_type",
    "sequence",
]
