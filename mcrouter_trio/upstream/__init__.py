"""The servers side: pipelined destinations and the routing context that reaches them."""

from mcrouter_trio.upstream._context import ProxyContext
from mcrouter_trio.upstream._destination import DEFAULT_MAX_PENDING, Destination
from mcrouter_trio.upstream._health import HealthSettings

__all__ = ["DEFAULT_MAX_PENDING", "Destination", "HealthSettings", "ProxyContext"]
