"""What a config file describes, as frozen attrs values (no I/O, no Trio)."""

from __future__ import annotations

import attrs

DEFAULT_SERVER_TIMEOUT_MS = 1000


@attrs.frozen(cache_hash=True)  # hashed per request to find its destination
class ServerSpec:
    """One memcached server and how to talk to it.

    Two pools that list the same server with the same settings share one
    destination (one pipelined connection), as in mcrouter.
    """

    host: str
    port: int
    protocol: str = "ascii"
    #: "plain" or "ssl" (TLS to the server).
    mech: str = "plain"
    timeout_ms: int = DEFAULT_SERVER_TIMEOUT_MS
    connect_timeout_ms: int = DEFAULT_SERVER_TIMEOUT_MS
    #: Name checked against the server's certificate (mcrouter pools' SNI/hostname).
    server_name: str | None = None

    @property
    def address(self) -> str:
        """`host:port`, with IPv6 hosts in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@attrs.frozen
class PoolSpec:
    name: str
    servers: tuple[ServerSpec, ...]
    keep_routing_prefix: bool = False
    weights: tuple[float, ...] | None = None
