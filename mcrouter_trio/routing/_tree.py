"""The route tree: everything the router routes with, as one immutable value.

The router holds the current tree by one reference and serves each request from
whatever that reference is when the request arrives; swapping it is one
assignment, so requests in flight finish on the tree they started on. Nothing
outside the router binds a part of it. Destinations are not part of the tree:
they live in the routing context's registry, so a new tree reuses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


@attrs.frozen
class RouteTree:
    #: Root routes by routing prefix (`/region/cluster/`).
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

    @classmethod
    def build(
        cls,
        roots: Mapping[bytes, Route],
        default_prefix: bytes,
        pools: Mapping[str, PoolSpec],
        md5: str,
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
        return cls(
            dict(roots), default_prefix, roots[default_prefix], broadcast, servers, pools, md5
        )

    def root_for(self, prefix: bytes) -> Route | None:
        """The root for a key's routing prefix (`*` globs one part), or None."""
        root = self.roots.get(prefix)
        if root is not None:
            return root
        wanted = prefix.strip(b"/").split(b"/")
        for alias, candidate in self.roots.items():
            have = alias.strip(b"/").split(b"/")
            if len(wanted) == len(have) and all(
                w == b"*" or w == h for w, h in zip(wanted, have, strict=True)
            ):
                return candidate
        return None
