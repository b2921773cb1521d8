"""Counters and the `stats` reply (mcrouter's basic group, in memcached's format)."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from mcrouter_trio import SERVER_VERSION
from mcrouter_trio.messages import Op, Reply, Result
from mcrouter_trio.ops._board import SharedStats, Snapshot

if TYPE_CHECKING:
    from mcrouter_trio.routing._specs import ServerSpec
    from mcrouter_trio.upstream._destination import Destination

_BAD_GROUP = Reply(Result.CLIENT_ERROR, b"CLIENT_ERROR bad stats command\r\n")

# Stat names per command, as memcached and mcrouter name them.
_OP_STATS = {
    Op.GET: "cmd_get",
    Op.GETS: "cmd_gets",
    Op.GAT: "cmd_gat",
    Op.GATS: "cmd_gats",
    Op.SET: "cmd_set",
    Op.ADD: "cmd_add",
    Op.REPLACE: "cmd_replace",
    Op.APPEND: "cmd_append",
    Op.PREPEND: "cmd_prepend",
    Op.CAS: "cmd_cas",
    Op.DELETE: "cmd_delete",
    Op.INCR: "cmd_incr",
    Op.DECR: "cmd_decr",
    Op.TOUCH: "cmd_touch",
    Op.FLUSH_ALL: "cmd_flush",
    Op.MG: "cmd_meta_get",
    Op.MS: "cmd_meta_set",
    Op.MD: "cmd_meta_delete",
    Op.MA: "cmd_meta_arithmetic",
}
#: Per-server counters in `stats servers`, in the order snapshots carry them.
_SERVER_COUNTERS: Final = (
    "pending_reqs",
    "requests",
    "replies",
    "errors",
    "connects",
    "connect_failures",
    "batches",
    "get_batches",
    "tls_handshakes",
    "tls_resumed",
)


class ProxyStats:
    """Process-wide counters; cheap enough to bump once per request.

    With `--num-proxies N`, `shared` is this worker's place on the stats board and
    `stats` adds the other workers' published counters to this worker's own.
    """

    def __init__(self, commandargs: str = "") -> None:
        self.started = time.time()
        self.commandargs = commandargs
        self.ops = dict.fromkeys(Op, 0)
        self.curr_connections = 0
        self.total_connections = 0
        self.rejected_connections = 0
        #: Client TLS handshakes (--ssl-port): completed, of those resumed, and refused.
        self.ssl_handshakes = 0
        self.ssl_handshakes_resumed = 0
        self.ssl_handshakes_refused = 0
        self.shared: SharedStats | None = None

    def count(self, op: Op) -> None:
        self.ops[op] += 1

    def reset(self) -> None:
        ops = self.ops
        for op in ops:  # in place: the router holds on to this dict
            ops[op] = 0
        self.total_connections = self.curr_connections
        self.rejected_connections = 0
        self.ssl_handshakes = 0
        self.ssl_handshakes_resumed = 0
        self.ssl_handshakes_refused = 0

    def reply(self, args: Sequence[bytes], destinations: Mapping[ServerSpec, Destination]) -> Reply:
        group = args[0] if args else b""
        if len(args) > 1:
            return _BAD_GROUP
        if group == b"":
            lines = self.basic(destinations)
        elif group == b"servers":
            lines = self.servers(destinations)
        elif group == b"reset":
            if self.shared is not None:
                self.shared.request_reset()
            self.reset()
            return Reply(Result.OK, b"RESET\r\n")
        else:
            return _BAD_GROUP
        body = "".join(f"STAT {name} {value}\r\n" for name, value in lines)
        return Reply(Result.OK, body.encode() + b"END\r\n")

    def basic(self, destinations: Mapping[ServerSpec, Destination]) -> list[tuple[str, object]]:
        now = time.time()
        states = [d.state for d in destinations.values()]
        counters = self._basic_counters(destinations)
        others = self.shared.others() if self.shared is not None else []
        for other in others:
            for name, value in other["basic"].items():
                counters[name] += value
        lines: list[tuple[str, object]] = [
            ("version", SERVER_VERSION),
            ("commandargs", self.commandargs),
            ("pid", os.getpid()),
            ("parent_pid", os.getppid()),
            ("time", int(now)),
            ("uptime", int(now - self.started)),
            ("rusage_user", f"{counters['rusage_user']:.6f}"),
            ("rusage_system", f"{counters['rusage_system']:.6f}"),
            ("curr_connections", counters["curr_connections"]),
            ("total_connections", counters["total_connections"]),
            ("rejected_connections", counters["rejected_connections"]),
            ("ssl_handshakes", counters["ssl_handshakes"]),
            ("ssl_handshakes_resumed", counters["ssl_handshakes_resumed"]),
            ("ssl_handshakes_refused", counters["ssl_handshakes_refused"]),
            ("num_servers", len(destinations)),
            ("num_servers_up", states.count("up")),
            ("num_servers_down", states.count("down")),
            ("num_servers_closed", states.count("closed")),
            ("num_servers_new", states.count("new")),
            ("num_proxies", self.shared.workers if self.shared is not None else 1),
            ("proxy_reqs_processing", counters["proxy_reqs_processing"]),
        ]
        lines.extend((name, counters[name]) for name in _OP_STATS.values())
        return lines

    def _basic_counters(self, destinations: Mapping[ServerSpec, Destination]) -> dict[str, Any]:
        """This process's share of the basic stats that add up over workers."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        counters: dict[str, Any] = {
            "rusage_user": usage.ru_utime,
            "rusage_system": usage.ru_stime,
            "curr_connections": self.curr_connections,
            "total_connections": self.total_connections,
            "rejected_connections": self.rejected_connections,
            "ssl_handshakes": self.ssl_handshakes,
            "ssl_handshakes_resumed": self.ssl_handshakes_resumed,
            "ssl_handshakes_refused": self.ssl_handshakes_refused,
            "proxy_reqs_processing": sum(d.pending_count for d in destinations.values()),
        }
        counters.update((name, self.ops[op]) for op, name in _OP_STATS.items())
        return counters

    def servers(self, destinations: Mapping[ServerSpec, Destination]) -> list[tuple[str, object]]:
        counts = self._server_counters(destinations)
        for other in self.shared.others() if self.shared is not None else []:
            for key, theirs in other["servers"].items():
                mine = counts.get(key)
                if mine is not None:  # lines are for the servers this worker knows
                    counts[key] = [a + b for a, b in zip(mine, theirs, strict=True)]
        lines: list[tuple[str, object]] = []
        for server, dest in sorted(destinations.items(), key=lambda item: item[0].address):
            key = _server_key(server)
            c = dict(zip(_SERVER_COUNTERS, counts[key], strict=True))
            value = (
                f"pending_reqs:{c['pending_reqs']} {dest.state}; requests:{c['requests']} "
                f"replies:{c['replies']} errors:{c['errors']} connects:{c['connects']} "
                f"connect_failures:{c['connect_failures']} batches:{c['batches']} "
                f"get_batches:{c['get_batches']}"
            )
            if server.mech == "ssl":
                # A low resumed share means every reconnect pays a full handshake.
                value += f" tls_handshakes:{c['tls_handshakes']} tls_resumed:{c['tls_resumed']}"
            lines.append((key, value))
        return lines

    def _server_counters(
        self, destinations: Mapping[ServerSpec, Destination]
    ) -> dict[str, list[int]]:
        """This process's per-server counters, in `_SERVER_COUNTERS` order."""
        counts = {}
        for server, dest in destinations.items():
            s = dest.stats
            counts[_server_key(server)] = [
                dest.pending_count,
                s.requests,
                s.replies,
                s.errors,
                s.connects,
                s.connect_failures,
                s.batches,
                s.get_batches,
                s.tls_handshakes,
                s.tls_resumed,
            ]
        return counts

    def publish(self, destinations: Mapping[ServerSpec, Destination]) -> None:
        """Put this worker's counters on the board (resetting them first if asked to)."""
        shared = self.shared
        if shared is None:
            return
        if shared.reset_due():
            self.reset()
            shared.mark_reset()
        snapshot: Snapshot = {
            "basic": self._basic_counters(destinations),
            "servers": self._server_counters(destinations),
        }
        shared.publish(snapshot)


def _server_key(server: ServerSpec) -> str:
    return f"{server.address}:{server.protocol}:{server.mech}:notcompressed-{server.timeout_ms}"
