"""`stats [group]`, `stats reset` and worker snapshots, all rendered from `counters`.

Groups, as mcrouter's `stats.cpp` names them: the basic group (no word), `detailed` and
`all` (the basic lines: the proxy tracks nothing more detailed), `ods` (the numeric
basic lines and the `count` lines: what the stats file holds), `count` (requests per
command, `cmd_<op>_count`), `servers`, `suspect_servers`, `version`, and `cmd-error`
and `external`, which the proxy does not track and so answers with no lines.

memcached's own groups (`items`, `slabs`, `sizes`, `conns`, `settings`, `cachedump`,
`detail dump`, `extstore`) describe one memcached's memory and connections; the proxy
has neither, and a sum of slab classes over servers means nothing, so each is answered
as an empty group (`END`), which every client parses. Ask the servers for those.
"""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from mcrouter_trio import SERVER_VERSION
from mcrouter_trio.counters import (
    PROXY_STATS,
    SERVER_STATS,
    Kind,
    Latencies,
    ProxyCounters,
    Source,
)
from mcrouter_trio.messages import Op, Reply, Result
from mcrouter_trio.ops._board import SharedStats, Snapshot
from mcrouter_trio.ops._reload import ConfigStatus
from mcrouter_trio.routing._combinators import FAILURES, Background
from mcrouter_trio.routing._ejection import EjectionStore

if TYPE_CHECKING:
    from mcrouter_trio.routing._specs import ServerSpec
    from mcrouter_trio.upstream._destination import Destination

_BAD_GROUP = Reply(Result.CLIENT_ERROR, b"CLIENT_ERROR bad stats command\r\n")
_DETAIL_SET: Final = Reply(Result.OK, b"OK\r\n")
_EMPTY = Reply(Result.OK, b"END\r\n")
#: mcrouter's groups whose stats the proxy does not track: no lines.
_UNTRACKED_GROUPS: Final = frozenset({b"cmd-error", b"external"})
#: memcached's groups about one server's memory and connections: no lines (see above).
_MEMCACHED_GROUPS: Final = frozenset(
    {b"items", b"slabs", b"sizes", b"conns", b"settings", b"extstore"}
)
#: The OP stats (requests per command), as the `count` group shows them.
_COUNT_STATS: Final = tuple(stat for stat in PROXY_STATS if stat.op is not None)

#: What `stats` adds up over workers, and so what each worker's snapshot carries.
_SUMMED_PROXY_STATS: Final = tuple(stat for stat in PROXY_STATS if stat.summed)
_SUMMED_SERVER_STATS: Final = tuple(stat for stat in SERVER_STATS if stat.summed)


class ProxyStats(ProxyCounters):
    """Process-wide counters (`PROXY_STATS`); cheap enough to bump once per request.

    The stored counters are slots named as in `stats`; `ops` counts requests per command
    (the router bumps it). With `--num-proxies N`, `shared` is this worker's place on the
    stats board and `stats` adds the other workers' published counters to this worker's own.
    """

    __slots__ = ("background", "commandargs", "config", "ejections", "ops", "shared", "started")

    def __init__(self, commandargs: str = "") -> None:
        super().__init__()
        self.started = time.time()
        self.commandargs = commandargs
        self.ops: dict[Op, int] = dict.fromkeys(Op, 0)
        self.shared: SharedStats | None = None
        #: The routing context's fire-and-forget work (set when serving starts).
        self.background = Background()
        #: The routing context's ejection state (set when serving starts).
        self.ejections = EjectionStore()
        #: When the config serving now was loaded, and how reloads went.
        self.config = ConfigStatus()

    def reset(self) -> None:
        """`stats reset`: every resettable stat back to zero (or to its `reset_to`)."""
        for stat in PROXY_STATS:
            if not stat.resets:
                continue
            value = getattr(self, stat.reset_to) if stat.reset_to is not None else 0
            if stat.op is not None:
                self.ops[stat.op] = value  # in place: the router holds on to this dict
            else:
                setattr(self, stat.name, value)

    def reply(self, args: Sequence[bytes], destinations: Mapping[ServerSpec, Destination]) -> Reply:
        group = args[0] if args else b""
        if group == b"cachedump" and len(args) == 3:
            return _EMPTY
        if group == b"detail" and tuple(args[1:]) == (b"dump",):
            return _EMPTY
        if group == b"detail" and tuple(args[1:]) in ((b"on",), (b"off",)):
            return _DETAIL_SET  # memcached's answer; per-prefix stats are the servers' own
        if len(args) > 1:
            return _BAD_GROUP
        if group == b"" or group == b"detailed" or group == b"all":
            lines = self.basic(destinations)
        elif group == b"servers":
            lines = self.servers(destinations)
        elif group == b"suspect_servers":
            lines = suspect_servers(destinations)
        elif group == b"count":
            lines = self.counts()
        elif group == b"ods":
            lines = self.ods(destinations)
        elif group == b"version":
            lines = [("mcrouter-version", SERVER_VERSION)]
        elif group == b"reset":
            if self.shared is not None:
                self.shared.request_reset()
            self.reset()
            return Reply(Result.OK, b"RESET\r\n")
        elif group in _UNTRACKED_GROUPS or group in _MEMCACHED_GROUPS:
            return _EMPTY
        else:
            return _BAD_GROUP
        body = "".join(f"STAT {name} {value}\r\n" for name, value in lines)
        return Reply(Result.OK, body.encode() + b"END\r\n")

    def basic(self, destinations: Mapping[ServerSpec, Destination]) -> list[tuple[str, str]]:
        """The `stats` lines: this process's values, plus the other workers' summed ones."""
        values = self.totals(destinations)
        return [(stat.name, format(values[stat.name], stat.format)) for stat in PROXY_STATS]

    def totals(self, destinations: Mapping[ServerSpec, Destination]) -> dict[str, Any]:
        """Every stat of `PROXY_STATS` by name, the summed ones added up over workers."""
        values = self.values(destinations)
        for other in self.shared.others() if self.shared is not None else []:
            for stat in _SUMMED_PROXY_STATS:
                values[stat.name] += other["basic"].get(stat.name, 0)
        return values

    def counts(self) -> list[tuple[str, str]]:
        """The `count` group: requests per command, summed over workers (`cmd_get_count`)."""
        totals = {stat.name: self.ops[stat.op] for stat in _COUNT_STATS if stat.op is not None}
        for other in self.shared.others() if self.shared is not None else []:
            for name in totals:
                totals[name] += other["basic"].get(name, 0)
        return [(f"{name}_count", str(value)) for name, value in totals.items()]

    def ods(self, destinations: Mapping[ServerSpec, Destination]) -> list[tuple[str, str]]:
        """The `ods` group: the numeric basic lines, then the `count` lines."""
        numeric = [
            (name, value)
            for name, value in self.basic(destinations)
            if name not in _TEXT_STATS and not name.startswith("cmd_")
        ]
        return numeric + self.counts()

    def numbers(self, destinations: Mapping[ServerSpec, Destination]) -> dict[str, int | float]:
        """The `ods` group as numbers, by name (what a stats file holds)."""
        return {name: _number(value) for name, value in self.ods(destinations)}

    def values(self, destinations: Mapping[ServerSpec, Destination]) -> dict[str, Any]:
        """This process's value of every stat in `PROXY_STATS`, by name."""
        computed = self._computed(destinations)
        values: dict[str, Any] = {}
        for stat in PROXY_STATS:
            if stat.source is Source.STORED:
                values[stat.name] = getattr(self, stat.name)
            elif stat.op is not None:
                values[stat.name] = self.ops[stat.op]
            else:
                values[stat.name] = computed[stat.name]
        return values

    def _computed(self, destinations: Mapping[ServerSpec, Destination]) -> dict[str, object]:
        """The `COMPUTED` stats of `PROXY_STATS`: the process, the clock, the destinations."""
        now = time.time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        states = [d.state for d in destinations.values()]
        background = self.background
        return {
            "version": SERVER_VERSION,
            "commandargs": self.commandargs,
            "pid": os.getpid(),
            "parent_pid": os.getppid(),
            "time": int(now),
            "uptime": int(now - self.started),
            "rusage_user": usage.ru_utime,
            "rusage_system": usage.ru_stime,
            "num_servers": len(destinations),
            "num_servers_up": states.count("up"),
            "num_servers_down": states.count("down"),
            "num_servers_closed": states.count("closed"),
            "num_servers_new": states.count("new"),
            "num_suspect_servers": len(suspect_servers(destinations)),
            "server_ejects": self.ejections.ejects,
            "num_proxies": self.shared.workers if self.shared is not None else 1,
            "proxy_reqs_processing": sum(d.pending_count for d in destinations.values()),
            "config_age": int(now - self.config.loaded_at),
            "config_last_attempt": int(self.config.last_attempt),
            "config_last_success": int(self.config.last_success),
            "config_failures": self.config.failures,
            "route_handle_failures": FAILURES.count,
            "background_requests_in_flight": background.in_flight,
            "background_requests_dropped": background.dropped,
            "background_requests_failed": background.failed,
        }

    def servers(self, destinations: Mapping[ServerSpec, Destination]) -> list[tuple[str, str]]:
        """The `stats servers` lines: one per server, summed over workers."""
        values = self.server_totals(destinations)
        states = self.server_states(destinations)
        lines = []
        for server, dest in sorted(destinations.items(), key=lambda item: item[0].address):
            tko = dest.tracker.state if dest.tracker is not None else ""
            line = _server_line(values[server], states[server], tko, tls=server.mech == "ssl")
            lines.append((_server_key(server), line))
        return lines

    def server_states(
        self, destinations: Mapping[ServerSpec, Destination]
    ) -> dict[ServerSpec, Counter[str]]:
        """Per server, how many workers' connections are in each state (`new`, `up`,
        `down`, `closed`) and how many are `probing`: mcrouter counts its proxies'."""
        states = {server: Counter(_state_words(dest)) for server, dest in destinations.items()}
        by_key = {_server_key(server): server for server in destinations}
        for other in self.shared.others() if self.shared is not None else []:
            for key, words in other.get("states", {}).items():
                server = by_key.get(key)
                if server is not None:
                    states[server].update(words)
        return states

    def server_totals(
        self, destinations: Mapping[ServerSpec, Destination]
    ) -> dict[ServerSpec, dict[str, float]]:
        """Every stat of `SERVER_STATS` per server this worker knows, summed over workers."""
        return self.server_sums(destinations)[0]

    def server_sums(
        self, destinations: Mapping[ServerSpec, Destination]
    ) -> tuple[dict[ServerSpec, dict[str, float]], dict[ServerSpec, Latencies]]:
        """`server_totals` and each server's latency histogram, summed over workers."""
        values = {server: _server_values(dest) for server, dest in destinations.items()}
        latencies = {server: dest.latencies.copy() for server, dest in destinations.items()}
        by_key = {_server_key(server): server for server in destinations}
        for other in self.shared.others() if self.shared is not None else []:
            for key, theirs in other["servers"].items():
                server = by_key.get(key)
                if server is None:  # lines are for the servers this worker knows
                    continue
                mine = values[server]
                for stat, value in zip(_SUMMED_SERVER_STATS, theirs, strict=True):
                    mine[stat.name] += value
            for key, histogram in other.get("latency", {}).items():
                server = by_key.get(key)
                if server is not None:
                    latencies[server].add(Latencies.from_list(histogram))
        for server, histogram in latencies.items():
            values[server]["avg_latency_us"] = histogram.mean * 1e6
        return values, latencies

    def publish(self, destinations: Mapping[ServerSpec, Destination]) -> None:
        """Put this worker's counters on the board (resetting them first if asked to)."""
        shared = self.shared
        if shared is None:
            return
        if shared.reset_due():
            self.reset()
            shared.mark_reset()
        shared.publish(self.snapshot(destinations))

    def snapshot(self, destinations: Mapping[ServerSpec, Destination]) -> Snapshot:
        """This worker's summed stats, as the other workers' `stats` add them up."""
        values = self.values(destinations)
        servers = {}
        latency = {}
        for server, dest in destinations.items():
            counts = _server_values(dest)
            key = _server_key(server)
            servers[key] = [counts[stat.name] for stat in _SUMMED_SERVER_STATS]
            latency[key] = dest.latencies.to_list()
        return {
            "basic": {stat.name: values[stat.name] for stat in _SUMMED_PROXY_STATS},
            "servers": servers,
            "latency": latency,
            "states": {_server_key(s): _state_words(d) for s, d in destinations.items()},
        }


def suspect_servers(destinations: Mapping[ServerSpec, Destination]) -> list[tuple[str, str]]:
    """`stats suspect_servers`: each `host:port` with failures in a row, as mcrouter shows it.

    `status:tko` while the server is TKO, else `status:down`; `num_failures` counts
    reply timeouts and connect failures (probes included) since the last reply.
    """
    trackers = {id(d.tracker): d.tracker for d in destinations.values() if d.tracker is not None}
    lines = [
        (
            t.address,
            f"status:{'tko' if t.refusal is not None else 'down'} num_failures:{t.failures}",
        )
        for t in trackers.values()
        if t.failures > 0
    ]
    return sorted(lines)


#: Basic stats whose value is text, left out of `ods` and the stats file (as mcrouter's
#: string stats are).
_TEXT_STATS: Final = frozenset(stat.name for stat in PROXY_STATS if stat.text)


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _server_values(dest: Destination) -> dict[str, float]:
    """This process's value of every stat in `SERVER_STATS` for one destination, by name."""
    pending, inflight = dest.outstanding()
    computed = {
        "pending_reqs": pending,
        "inflight_reqs": inflight,
        "avg_latency_us": dest.latencies.mean * 1e6,
    }
    return {
        stat.name: getattr(dest.stats, stat.name)
        if stat.source is Source.STORED
        else computed[stat.name]
        for stat in SERVER_STATS
    }


def _state_words(dest: Destination) -> list[str]:
    """The destination's connection state, then `connecting` while a connect is under
    way and `probing` while a probe is out."""
    words = [dest.state]
    if dest.connecting:
        words.append("connecting")
    if dest.probing:
        words.append("probing")
    return words


#: mcrouter's connection states, in the order its lines show them.
_CONNECTION_STATES: Final = ("new", "up", "down", "closed")
#: The proxy's own, shown after mcrouter's part of the line.
_OWN_STATES: Final = ("connecting", "probing")


def _server_line(
    values: Mapping[str, float], states: Mapping[str, int], tko: str, *, tls: bool
) -> str:
    """mcrouter's line, `avg_latency_us:0.000 pending_reqs:0 inflight_reqs:0 up:1`, then
    the proxy's own fields after `; ` (where mcrouter lists reply results).

    mcrouter's part: the leading gauges, ` hard_tko; ` or ` soft_tko; ` while the server
    is TKO, and `state:count` per connection state in use (one connection per worker).
    The proxy's part: `connecting:N` while connects and `probing:N` while probes are
    out, then the counters (and gauges of the proxy's own). The TLS counters only show
    for servers reached over TLS, where a low resumed share means every reconnect pays a
    full handshake.
    """
    fields = [
        f"{s.name}:{values[s.name]:{s.format}}" for s in SERVER_STATS if tls or not s.tls_only
    ]
    line = " ".join(fields[:_BEFORE_STATE])
    if tko:
        line += f" {tko}; "
    line += "".join(f" {state}:{states[state]}" for state in _CONNECTION_STATES if states[state])
    # The proxy's own states: mcrouter's parsers read only the part before the `; `.
    extras = [f"{word}:{states[word]}" for word in _OWN_STATES if states[word]]
    extras += fields[_BEFORE_STATE:]
    return f"{line}; {' '.join(extras)}"


#: How many `SERVER_STATS` fields come before the state: the leading gauges (the
#: tls_only fields all come later).
_BEFORE_STATE: Final = next(
    index for index, stat in enumerate(SERVER_STATS) if stat.kind is not Kind.GAUGE
)


def _server_key(server: ServerSpec) -> str:
    return f"{server.address}:{server.protocol}:{server.mech}:notcompressed-{server.timeout_ms}"
