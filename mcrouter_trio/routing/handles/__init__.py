"""Route handles: frozen attrs values built from the config, one family per module.

`ROUTE_TYPES` maps every route type name a config may use to its class; adding a
handle is one module plus one line here (and its config signature in
`mcrouter_trio.config`).
"""

from mcrouter_trio.routing._base import Route, RouteContext, chain, default_reply
from mcrouter_trio.routing.handles._all import AllSyncRoute
from mcrouter_trio.routing.handles._destination import DestinationRoute, split_routing_prefix
from mcrouter_trio.routing.handles._failover import FailoverRoute, LatestRoute
from mcrouter_trio.routing.handles._hash import HashRoute, HashSpec, PoolRoute, pool_destinations
from mcrouter_trio.routing.handles._selector import OPERATION_NAMES, OperationSelectorRoute
from mcrouter_trio.routing.handles._simple import ErrorRoute, NullRoute, RandomRoute
from mcrouter_trio.routing.handles._warmup import WarmUpRoute

__all__ = [
    "OPERATION_NAMES",
    "AllSyncRoute",
    "DestinationRoute",
    "ErrorRoute",
    "FailoverRoute",
    "HashRoute",
    "HashSpec",
    "LatestRoute",
    "NullRoute",
    "OperationSelectorRoute",
    "PoolRoute",
    "RandomRoute",
    "Route",
    "RouteContext",
    "WarmUpRoute",
    "chain",
    "default_reply",
    "pool_destinations",
    "split_routing_prefix",
]
