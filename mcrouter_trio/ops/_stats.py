"""`stats [group]`, `stats reset` and worker snapshots, all rendered from `counters`.

Groups, as mcrouter's `stats.cpp` names them: the basic group (no word), `detailed`,
`all` (every line), `ods` (the numeric lines of the `ods` group, then the requests per
command: what the stats file holds), `count` (the `count` group's counters, then the
requests per command, `cmd_<op>_count`), `servers`, `suspect_servers`, `version`, and
`cmd-error` and `external`, which the proxy does not track and so answers with no
lines. Which group shows a stat is its `groups` in the table; a stat of mcrouter's
`rate` group shows events per second and a `max` or `avg` one a high or a mean, all
over mcrouter's four-minute window (`StatWindow`), worked out from the counters
summed over workers.

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
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import trio

from mcrouter_trio import SERVER_VERSION
from mcrouter_trio.counters import (
    ALL_GROUPS,
    PROXY_STATS,
    SERVER_STATS,
    Group,
    Kind,
    Latencies,
    ProxyCounters,
    Source,
)
from mcrouter_trio.messages import Op, Reply, Result
from mcrouter_trio.ops._board import SharedStats, Snapshot
from mcrouter_trio.ops._reload import ConfigStatus
from mcrouter_trio.ops._window import StatWindow
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
#: The groups `stats <word>` shows from the table.
_TABLE_GROUPS: Final = {
    b"": Group.BASIC,
    b"detailed": Group.DETAILED,
    b"all": ALL_GROUPS,
    b"ods": Group.ODS,
    b"count": Group.COUNT,
}
#: The stats worked out over the window from sampled values, and how.
_FROM_WINDOW: Final[dict[str, Callable[[StatWindow], float]]] = {
    "max_num_tko": lambda window: window.highest("num_tko"),
    "destination_max_pending_reqs": lambda window: window.highest("destination_pending_reqs"),
    "destination_max_inflight_reqs": lambda window: window.highest("destination_inflight_reqs"),
    "destination_batch_size": lambda window: window.ratio(
        "destination_requests_sum", "destination_batches_sum"
    ),
    "duration_us": lambda window: window.ratio("latency_us", "latency_count"),
}
#: What each look samples: every rate's count, and the values `_FROM_WINDOW` reads
#: (the latency ones are not stats: they are added up from the histograms).
_SAMPLED: Final = (
    *dict.fromkeys(stat.rate_of or stat.name for stat in PROXY_STATS if Group.RATE in stat.groups),
    "destination_pending_reqs",
    "destination_inflight_reqs",
)

#: What `stats` adds up over workers, and so what each worker's snapshot carries.
_SUMMED_PROXY_STATS: Final = tuple(stat for stat in PROXY_STATS if stat.summed)
_SUMMED_SERVER_STATS: Final = tuple(stat for stat in SERVER_STATS if stat.summed)


class ProxyStats(ProxyCounters):
    """Process-wide counters (`PROXY_STATS`); cheap enough to bump once per request.

    The stored counters are slots named as in `stats`; `ops` counts requests per command
    (the router bumps it). With `--num-proxies N`, `shared` is this worker's place on the
    stats board and `stats` adds the other workers' published counters to this worker's own.
    """

    __slots__ = (
        "background",
        "commandargs",
        "config",
        "ejections",
        "ops",
        "shared",
        "started",
        "unanswered",
        "window",
    )

    def __init__(self, commandargs: str = "") -> None:
        super().__init__()
        self.started = time.time()
        #: Samples for the rates, highs and means (`stats` groups RATE, MAX, AVG).
        self.window = StatWindow(time.monotonic())
        #: How many requests clients sent that are not answered yet (set when
        #: serving starts: the sessions know).
        self.unanswered: Callable[[], int] = lambda: 0
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
        self.window.restart(time.monotonic())

    async def keep_window(self, destinations: Mapping[ServerSpec, Destination]) -> None:
        """Look at the counters once a second, as mcrouter fills a bin a second."""
        while True:
            await trio.sleep(1.0)
            self.totals(destinations)

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
        groups = _TABLE_GROUPS.get(group)
        if groups is not None:
            lines = self.group(groups, destinations)
        elif group == b"servers":
            lines = self.servers(destinations)
        elif group == b"suspect_servers":
            lines = suspect_servers(destinations)
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

    def group(
        self, groups: Group, destinations: Mapping[ServerSpec, Destination]
    ) -> list[tuple[str, str]]:
        """The lines of the stats in `groups`, in table order; then, for `ods`, `count` and
        `all`, the requests per command as `cmd_<op>_count` (mcrouter puts its
        per-command counts last)."""
        values = self.totals(destinations)
        window = self.window
        lines = []
        for stat in PROXY_STATS:
            if not stat.groups & groups:
                continue
            if groups is Group.ODS and (stat.text or stat.op is not None):
                continue  # numbers only; the per-command counts come last
            if Group.RATE in stat.groups:
                lines.append((stat.name, format(window.rate(stat.rate_of or stat.name), "g")))
            else:
                lines.append((stat.name, format(values[stat.name], stat.format)))
        if groups & (Group.ODS | Group.COUNT):
            lines += self.counts(values)
        return lines

    def totals(self, destinations: Mapping[ServerSpec, Destination]) -> dict[str, Any]:
        """Every stat of `PROXY_STATS` by name, the summed ones added up over workers.

        A RATE stat's value is its count (its twin's, for a `rate_of` one); the
        windowed highs and means are worked out here, after a look at the counters.
        """
        values = self.values(destinations)
        latency_seconds, latency_count = _latencies(destinations)
        for other in self.shared.others() if self.shared is not None else []:
            for stat in _SUMMED_PROXY_STATS:
                values[stat.name] += other["basic"].get(stat.name, 0)
            for histogram in other.get("latency", {}).values():
                latency_seconds += histogram[-1]
                latency_count += sum(histogram[:-1])
        for stat in PROXY_STATS:
            if stat.rate_of is not None:
                values[stat.name] = values[stat.rate_of]
        sample = {name: values[name] for name in _SAMPLED}
        sample["num_tko"] = values["num_soft_tko_count"] + values["num_hard_tko_count"]
        sample["latency_us"] = latency_seconds * 1e6
        sample["latency_count"] = latency_count
        self.window.look(time.monotonic(), sample)
        for name, work_out in _FROM_WINDOW.items():
            values[name] = work_out(self.window)
        return values

    def counts(self, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Requests per command, summed over workers (`cmd_get_count`)."""
        return [(f"{stat.name}_count", str(values[stat.name])) for stat in _COUNT_STATS]

    def ods(self, destinations: Mapping[ServerSpec, Destination]) -> list[tuple[str, str]]:
        """The `ods` group: its numeric lines, then the requests per command."""
        return self.group(Group.ODS, destinations)

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
            elif stat.name in computed:
                values[stat.name] = computed[stat.name]
            else:
                values[stat.name] = 0  # over the window or a twin's rate: see `totals`
        return values

    def _computed(self, destinations: Mapping[ServerSpec, Destination]) -> dict[str, object]:
        """The `COMPUTED` stats of `PROXY_STATS`: the process, the clock, the destinations."""
        now = time.time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        states = [d.state for d in destinations.values()]
        ssl_states = [d.state for s, d in destinations.items() if s.mech == "ssl"]
        trackers = {id(d.tracker): d.tracker for d in destinations.values() if d.tracker}
        tko = [t.hard for t in trackers.values() if t.refusal is not None]
        pending = inflight = batches = requests = 0
        for dest in destinations.values():
            queued, written = dest.outstanding()
            pending += queued
            inflight += written
            batches += dest.stats.batches
            requests += dest.stats.requests
        sent = sum(self.ops.values())
        unanswered = self.unanswered()
        replied = max(0, sent - unanswered)
        background = self.background
        return {
            **_proc_stat(),
            "num_client_connections": self.curr_connections,
            "num_ssl_servers": len(ssl_states),
            "num_ssl_servers_new": ssl_states.count("new"),
            "num_ssl_servers_up": ssl_states.count("up"),
            "num_ssl_servers_down": ssl_states.count("down"),
            "num_ssl_servers_closed": ssl_states.count("closed"),
            "num_soft_tko_count": tko.count(False),
            "num_hard_tko_count": tko.count(True),
            "proxy_request_num_outstanding": unanswered,
            "request_sent_count": sent,
            "request_replied_count": replied,
            "request_success_count": max(0, replied - self.request_error_count),
            "destination_batches_sum": batches,
            "destination_requests_sum": requests,
            "destination_pending_reqs": pending,
            "destination_inflight_reqs": inflight,
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
        states = {server: Counter(dest.state_words()) for server, dest in destinations.items()}
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
            "states": {_server_key(s): d.state_words() for s, d in destinations.items()},
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


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)  # `%g` may write 1e-05


def _latencies(destinations: Mapping[ServerSpec, Destination]) -> tuple[float, int]:
    """Seconds and replies timed, every destination's histogram together."""
    seconds = 0.0
    count = 0
    for dest in destinations.values():
        seconds += dest.latencies.sum
        count += dest.latencies.count
    return seconds, count


_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE: Final = os.sysconf("SC_PAGESIZE")


def _proc_stat() -> dict[str, float]:
    """mcrouter's `ps_*` stats, read from /proc/self/stat as its `get_proc_stat` does."""
    try:
        with open("/proc/self/stat", "rb") as file:
            text = file.read()
        # The fields after the command name, which is in parentheses and may hold spaces:
        # fields[0] is field 3 of proc(5), the state.
        fields = text[text.rindex(b")") + 2 :].split()
        return {
            "ps_num_minor_faults": int(fields[7]),
            "ps_num_major_faults": int(fields[9]),
            "ps_user_time_sec": int(fields[11]) / _CLOCK_TICKS,
            "ps_system_time_sec": int(fields[12]) / _CLOCK_TICKS,
            "ps_vsize": int(fields[20]),
            "ps_rss": max(0, int(fields[21])) * _PAGE_SIZE,
        }
    except (OSError, ValueError, IndexError):
        return dict.fromkeys(_PROC_STATS, 0)


_PROC_STATS: Final = (
    "ps_num_minor_faults",
    "ps_num_major_faults",
    "ps_user_time_sec",
    "ps_system_time_sec",
    "ps_vsize",
    "ps_rss",
)


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
