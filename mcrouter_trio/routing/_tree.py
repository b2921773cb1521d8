"""The route tree: everything the router routes with, as one immutable value.

The router holds the current tree by one reference and serves each request from
whatever that reference is when the request arrives; swapping it is one
assignment, so requests in flight finish on the tree they started on. Nothing
outside the router binds a part of it. Destinations are not part of the tree:
they live in the routing context's registry, so a new tree reuses them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from mcrouter_trio.routing._base import Route
from mcrouter_trio.routing._specs import PoolSpec, ServerSpec
from mcrouter_trio.routing.handles.broadcast import AllSyncRoute
from mcrouter_trio.routing.handles.destination import DestinationRoute


def reachable_servers(roots: Iterable[Route]) -> frozenset[ServerSpec]:
    """Every server a request routed from `roots` can reach."""
    servers = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, DestinationRoute):
            servers.add(node.server)
        stack.extend(node.targets())
    return frozenset(servers)


#: A key prefix that reaches every root (mcrouter's `kBroadcastPrefix`).
BROADCAST_PREFIX: Final = b"/*/*/"
#: The cluster tried for an unknown `/region/cluster/` (`/region/fallback/`).
FALLBACK_CLUSTER: Final = b"fallback"


@attrs.frozen
class RouteTree:
    #: Root routes by routing prefix (`/region/cluster/`), in config order.
    roots: Mapping[bytes, Route]
    #: The routing prefix of keys without one (`-R/--route-prefix`).
    default_prefix: bytes
    #: `roots[default_prefix]`, kept apart for the common case.
    default_root: Route
    #: Every server of every pool and root: what `flush_all` reaches.
    broadcast: Route
    #: Every server the roots can send to.
    servers: frozenset[ServerSpec]
    pools: Mapping[str, PoolSpec]
    #: Hex MD5 of the config text the tree was built from.
    md5: str
    #: The roots a prefix without a glob reaches, worked out once: every alias,
    #: `/*/*/` and each `/region/*/` (the default's root first, each root once).
    lookup: Mapping[bytes, tuple[Route, ...]] = attrs.field(factory=dict)
    #: The config after JSONM expansion (`__mcrouter__.preprocessed_config`).
    preprocessed: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    @classmethod
    def build(
        cls,
        roots: Mapping[bytes, Route],
        default_prefix: bytes,
        pools: Mapping[str, PoolSpec],
        md5: str,
        preprocessed: Mapping[str, Any] | None = None,
    ) -> RouteTree:
        servers = reachable_servers(roots.values())
        # flush_all reaches every server of every pool, not only those this host's
        # route tree would pick (LatestRoute, for one, uses a per-host subset).
        every_server = set(servers)
        for pool in pools.values():
            every_server.update(pool.servers)
        broadcast = AllSyncRoute(
            tuple(DestinationRoute(server) for server in sorted(every_server, key=repr))
        )
        default_root = roots[default_prefix]
        return cls(
            dict(roots),
            default_prefix,
            default_root,
            broadcast,
            servers,
            pools,
            md5,
            _lookup(roots, default_prefix),
            preprocessed or {},
        )

    def targets_for(self, prefix: bytes) -> tuple[Route, ...]:
        """Every root a key's routing prefix reaches, the one to answer first; () if none.

        mcrouter's `RouteHandleMap`: an alias; `/*/*/` (every root); `/region/*/`;
        a glob (`*` matches within one part); an unknown `/region/cluster/` falls
        back to `/region/fallback/`.
        """
        found = self.lookup.get(prefix)
        if found is not None:
            return found
        if b"*" not in prefix:
            region_end = prefix.find(b"/", 1) + 1
            return self.lookup.get(prefix[:region_end] + FALLBACK_CLUSTER + b"/", ())
        if prefix.endswith(b"/*/") and prefix.index(b"*") == len(prefix) - 2:
            return ()  # a /region/*/ whose region has no root
        return self._matching(prefix)

    def root_for(self, prefix: bytes) -> Route | None:
        """The root answering for a key's routing prefix, or None."""
        targets = self.targets_for(prefix)
        return targets[0] if targets else None

    def _matching(self, pattern: bytes) -> tuple[Route, ...]:
        glob = _glob(pattern)
        ordered = [self.default_prefix, *(a for a in self.roots if a != self.default_prefix)]
        return _unique(self.roots[alias] for alias in ordered if glob.fullmatch(alias))


def _glob(pattern: bytes) -> re.Pattern[bytes]:
    """mcrouter's `match_pattern_route`: `*` stands for any run of non-`/` bytes."""
    parts = [re.escape(part) for part in pattern.split(b"*")]
    return re.compile(b"[^/]*".join(parts))


def _unique(routes: Iterable[Route]) -> tuple[Route, ...]:
    """Each route once (the same object under two aliases is one target), in order."""
    seen: dict[int, Route] = {}
    for route in routes:
        seen.setdefault(id(route), route)
    return tuple(seen.values())


def _lookup(roots: Mapping[bytes, Route], default_prefix: bytes) -> dict[bytes, tuple[Route, ...]]:
    lookup: dict[bytes, tuple[Route, ...]] = {alias: (root,) for alias, root in roots.items()}
    ordered = [default_prefix, *(alias for alias in roots if alias != default_prefix)]
    by_region: dict[bytes, list[Route]] = {}
    for alias in ordered:
        region = alias[1 : alias.find(b"/", 1)]
        by_region.setdefault(region, []).append(roots[alias])
    for region, routes in by_region.items():
        lookup[b"/" + region + b"/*/"] = _unique(routes)
    lookup[BROADCAST_PREFIX] = _unique(roots[alias] for alias in ordered)
    return lookup
