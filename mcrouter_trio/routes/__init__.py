"""Route handles: frozen attrs values built from the config, one family per module.

`ROUTE_TYPES` maps every route type name a config may use to its class; adding a
handle is one module plus one line here (and its config signature in
`mcrouter_trio.config`).
"""

from mcrouter_trio.routes._all import AllSyncRoute
from mcrouter_trio.routes._base import Route, RouteContext, chain, default_reply
from mcrouter_trio.routes._destination import DestinationRoute, split_routing_prefix
from mcrouter_trio.routes._failover import FailoverRoute, LatestRoute
from mcrouter_trio.routes._hash import HashRoute, HashSpec, PoolRoute, pool_destinations
from mcrouter_trio.routes._selector import OPERATION_NAMES, OperationSelectorRoute
from mcrouter_trio.routes._simple import ErrorRoute, NullRoute, RandomRoute
from mcrouter_trio.routes._warmup import WarmUpRoute

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
