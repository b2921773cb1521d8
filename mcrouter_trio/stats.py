"""Counters and the `stats` reply (mcrouter's basic group, in memcached's format)."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mcrouter_trio import __version__
from mcrouter_trio.messages import Op, Reply, Result

if TYPE_CHECKING:
    from mcrouter_trio.config._specs import ServerSpec
    from mcrouter_trio.destination import Destination

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


class ProxyStats:
    """Process-wide counters; cheap enough to bump once per request."""

    def __init__(self, commandargs: str = "") -> None:
        self.started = time.time()
        self.commandargs = commandargs
        self.ops = dict.fromkeys(Op, 0)
        self.curr_connections = 0
        self.total_connections = 0
        self.rejected_connections = 0

    def count(self, op: Op) -> None:
        self.ops[op] += 1

    def reset(self) -> None:
        ops = self.ops
        for op in ops:  # in place: the router holds on to this dict
            ops[op] = 0
        self.total_connections = self.curr_connections
        self.rejected_connections = 0

    def reply(self, args: Sequence[bytes], destinations: Mapping[ServerSpec, Destination]) -> Reply:
        group = args[0] if args else b""
        if len(args) > 1:
            return _BAD_GROUP
        if group == b"":
            lines = self.basic(destinations)
        elif group == b"servers":
            lines = self.servers(destinations)
        elif group == b"reset":
            self.reset()
            return Reply(Result.OK, b"RESET\r\n")
        else:
            return _BAD_GROUP
        body = "".join(f"STAT {name} {value}\r\n" for name, value in lines)
        return Reply(Result.OK, body.encode() + b"END\r\n")

    def basic(self, destinations: Mapping[ServerSpec, Destination]) -> list[tuple[str, object]]:
        now = time.time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        states = [d.state for d in destinations.values()]
        lines: list[tuple[str, object]] = [
            ("version", f"{__version__} mcrouter-trio"),
            ("commandargs", self.commandargs),
            ("pid", os.getpid()),
            ("parent_pid", os.getppid()),
            ("time", int(now)),
            ("uptime", int(now - self.started)),
            ("rusage_user", f"{usage.ru_utime:.6f}"),
            ("rusage_system", f"{usage.ru_stime:.6f}"),
            ("curr_connections", self.curr_connections),
            ("total_connections", self.total_connections),
            ("rejected_connections", self.rejected_connections),
            ("num_servers", len(destinations)),
            ("num_servers_up", states.count("up")),
            ("num_servers_down", states.count("down")),
            ("num_servers_closed", states.count("closed")),
            ("num_servers_new", states.count("new")),
            ("proxy_reqs_processing", sum(d.pending_count for d in destinations.values())),
        ]
        lines.extend((name, self.ops[op]) for op, name in _OP_STATS.items())
        return lines

    def servers(self, destinations: Mapping[ServerSpec, Destination]) -> list[tuple[str, object]]:
        lines: list[tuple[str, object]] = []
        for server, dest in sorted(destinations.items(), key=lambda item: item[0].address):
            key = (
                f"{server.address}:{server.protocol}:{server.mech}:notcompressed-"
                f"{server.timeout_ms}"
            )
            s = dest.stats
            value = (
                f"pending_reqs:{dest.pending_count} {dest.state}; requests:{s.requests} "
                f"replies:{s.replies} errors:{s.errors} connects:{s.connects} "
                f"connect_failures:{s.connect_failures} batches:{s.batches} "
                f"get_batches:{s.get_batches}"
            )
            if server.mech == "ssl":
                # A low resumed share means every reconnect pays a full handshake.
                value += f" tls_handshakes:{s.tls_handshakes} tls_resumed:{s.tls_resumed}"
            lines.append((key, value))
        return lines
