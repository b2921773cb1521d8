"""Operating the proxy: counters and `stats`, the workers' stats board, worker processes."""

from mcrouter_trio.ops._board import SharedStats, StatsBoard
from mcrouter_trio.ops._stats import ProxyStats

__all__ = ["ProxyStats", "SharedStats", "StatsBoard"]
