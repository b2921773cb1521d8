"""What a config file describes, as frozen attrs values (no I/O, no Trio)."""

from __future__ import annotations

import attrs

from mcrouter_trio.routing._base import Route

DEFAULT_SERVER_TIMEOUT_MS = 1000

#: (host, port, protocol, mech, server name, timeout): one destination per distinct key.
ConnectionKey = tuple[str, int, str, str, str | None, int]


@attrs.frozen(cache_hash=True)  # hashed per request to find its destination
class ServerSpec:
    """One memcached server and how to talk to it.

    Pools that list the same server share one destination (one pipelined
    connection) when their `identity` is the same.
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
    #: The pool's `failure_domains` entry for this server (0: none), which
    #: DeterministicOrderPolicy's `enable_failure_domains` avoids after a TKO. Not
    #: part of equality: the same server in two pools is one server.
    failure_domain: int = attrs.field(default=0, eq=False)
    #: `timeout_ms` in seconds, as destinations take it with each request.
    timeout: float = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "timeout", self.timeout_ms / 1000)

    @property
    def identity(self) -> ConnectionKey:
        """What makes two specs one connection: the address, protocol, TLS settings and
        server timeout.

        As mcrouter's destinations, one connection per server timeout: pools that list
        a server with different timeouts get a connection (and a `stats servers` line)
        each, and a reload that changes a server's timeout replaces its connection. TKO
        state is the host:port's, whatever the timeout.
        """
        return (self.host, self.port, self.protocol, self.mech, self.server_name, self.timeout_ms)

    @property
    def address(self) -> str:
        """`host:port`, with IPv6 hosts in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@attrs.frozen
class EjectionSpec:
    """twemproxy's `auto_eject_hosts`: a failing server leaves the pool's hash ring.

    After `failure_limit` failures in a row (connect error or timeout, reply timeout,
    a broken connection, TKO) the server is ejected; `retry_timeout_ms` later it is
    probed, and it rejoins once a probe is answered.
    """

    #: twemproxy's `server_failure_limit` (default 2).
    failure_limit: int = 2
    #: twemproxy's `server_retry_timeout`, in ms (default 30000).
    retry_timeout_ms: int = 30_000


@attrs.frozen
class TkoLimitSpec:
    """mcrouter's pool `tko_tracker`: how many of the pool's servers may be TKO at once.

    Once `upper` servers are TKO, the next one that fails is not marked TKO and the
    pool *fails open*: no server is marked TKO until, at a recovery, only `lower`
    servers are TKO.
    """

    upper: int
    lower: int


@attrs.frozen
class PoolSpec:
    """A pool: its slots, in the order of its `servers` list, and its settings.

    A slot is a server or, where the list holds an object, the route mcrouter builds
    from it (an ErrorRoute holding a dead host's place, so no key moves). Hashes and
    `weights` count every slot; connections, stats, TKO and ejection only servers.
    """

    name: str
    #: The pool's servers, in list order, without its route slots.
    servers: tuple[ServerSpec, ...]
    keep_routing_prefix: bool = False
    weights: tuple[float, ...] | None = None
    #: `auto_eject_hosts` (None: servers are never ejected).
    ejection: EjectionSpec | None = None
    #: `tko_tracker` (None: no limit on the servers marked TKO).
    tko_limit: TkoLimitSpec | None = None
    #: The list's route objects as (position in the list, route), in list order.
    route_slots: tuple[tuple[int, Route], ...] = ()
    #: Every slot in list order: `servers` with `route_slots` at their positions.
    slots: tuple[ServerSpec | Route, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        routes = dict(self.route_slots)
        count = len(self.servers) + len(routes)
        if len(routes) != len(self.route_slots) or not all(0 <= at < count for at in routes):
            raise ValueError(f"route slot positions {sorted(routes)} do not fit {count} slots")
        servers = iter(self.servers)
        slots = tuple(routes[at] if at in routes else next(servers) for at in range(count))
        object.__setattr__(self, "slots", slots)
