"""Every stat the proxy reports, declared once.

`PROXY_STATS` is every line of `stats all`, in order, each in the groups (`stats`,
`stats detailed`, `ods`, `count`) that show it and with mcrouter's name where mcrouter
has the stat; `SERVER_STATS` is the fields of one `stats servers` line. Everything that
reports stats is rendered from these two tables: `stats`, `stats servers`, `stats reset`,
the snapshot each `--num-proxies` worker puts on the stats board, and the Prometheus
metrics (`ops/_metrics.py`, where each stat's kind picks counter or gauge).

A `STORED` stat is a counter kept in a slot of the same name on a holder made from its
table (`ProxyCounters`, `ServerCounters`), so adding one is one line here plus the
`holder.name += 1` where it happens; counting stays a plain attribute increment. The
other sources are read when stats are asked for: an `OP` stat is the router's count
of its command, a `COMPUTED` stat is worked out by the `stats` code (`ops/_stats.py`)
from the process, the clock and the destinations.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from typing import TYPE_CHECKING, Final

import attrs

from mcrouter_trio.messages import ERRORS, Op, Result


class Kind(enum.Enum):
    #: Counts events: only goes up, unless `stats reset` zeroes it.
    COUNTER = "counter"
    #: An amount right now: connections open, requests waiting for a reply.
    GAUGE = "gauge"
    #: A fact about the process: its version, pid, the time.
    INFO = "info"


class Group(enum.Flag):
    """mcrouter's stat groups (`stats.h`): which `stats <group>` shows a stat, and how.

    A stat in `RATE` shows events per second over the last four minutes, one in `MAX`
    or `MAX_MAX` the highest value seen in that window, one in `AVG` a mean over it
    (`StatWindow`); the others show their value.
    """

    BASIC = enum.auto()
    DETAILED = enum.auto()
    ODS = enum.auto()
    COUNT = enum.auto()
    RATE = enum.auto()
    MAX = enum.auto()
    MAX_MAX = enum.auto()
    AVG = enum.auto()


#: Where the proxy's own stats show: `stats`, `stats detailed`, `stats all` and, when
#: numeric, `stats ods` (mcrouter's names among them keep mcrouter's groups).
OWN_GROUPS: Final = Group.BASIC | Group.DETAILED | Group.ODS
#: Every group: what `stats all` shows.
ALL_GROUPS: Final = (
    Group.BASIC | Group.DETAILED | Group.ODS | Group.COUNT
    | Group.RATE | Group.MAX | Group.MAX_MAX | Group.AVG
)  # fmt: skip


class Source(enum.Enum):
    #: A slot of the stat's name on the table's holder, bumped where the event happens.
    STORED = "stored"
    #: The router's count of requests of the stat's `op`.
    OP = "op"
    #: Worked out when stats are read.
    COMPUTED = "computed"


@attrs.frozen
class Stat:
    name: str
    """As `stats` (or a `stats servers` field) names it."""
    kind: Kind
    source: Source
    help: str
    summed: bool = True
    """Adds up over `--num-proxies` workers (so it travels in their board snapshots)."""
    resets: bool = False
    """`stats reset` sets it to zero (or to `reset_to`'s value)."""
    reset_to: str | None = None
    """The stored stat whose value it restarts from on `stats reset`, rather than zero."""
    op: Op | None = None
    """For an `OP` stat: the command counted."""
    format: str = ""
    """Format spec of its value in `stats` (`format(value, spec)`)."""
    tls_only: bool = False
    """Shown in `stats servers` only for servers reached over TLS."""
    text: bool = False
    """Its value is text, not a number (left out of `ods`, the stats files and metrics'
    numbers; a label of the `info` metric)."""
    groups: Group = OWN_GROUPS
    """The `stats` groups that show it (mcrouter's `GROUP` in `stat_list.h`)."""
    rate_of: str | None = None
    """For a `RATE` stat with a `_count` twin: the twin, whose count it is the rate of
    (the stat then has no value of its own: it is neither summed nor a metric)."""

    def __attrs_post_init__(self) -> None:
        if (self.op is not None) != (self.source is Source.OP):
            raise ValueError(f"{self.name}: an OP stat, and only one, names its op")
        if self.resets and self.source is Source.COMPUTED:
            raise ValueError(f"{self.name}: a computed stat has nothing to reset")
        if self.text and (self.kind is not Kind.INFO or self.summed):
            raise ValueError(f"{self.name}: only an info stat, never summed, is text")
        if self.rate_of is not None and (
            Group.RATE not in self.groups or self.source is not Source.COMPUTED or self.summed
        ):
            raise ValueError(f"{self.name}: a rate of a twin is a computed, unsummed RATE stat")


def _info(name: str, help: str, *, text: bool = False) -> Stat:
    return Stat(name, Kind.INFO, Source.COMPUTED, help, summed=False, text=text)


def _cpu_seconds(name: str, help: str) -> Stat:
    return Stat(name, Kind.COUNTER, Source.COMPUTED, help, format=".6f")


def _connections(name: str, help: str) -> Stat:
    return Stat(name, Kind.COUNTER, Source.STORED, help, resets=True)


def _servers_in(state: str) -> Stat:
    help = f"server connections that are {state}, every worker's"
    return Stat(f"num_servers_{state}", Kind.GAUGE, Source.COMPUTED, help)


def _requests(name: str, op: Op) -> Stat:
    return Stat(name, Kind.COUNTER, Source.OP, f"{op.name} requests received", resets=True, op=op)


def _mcrouter_counter(name: str, help: str, *, groups: Group | None = None) -> Stat:
    groups = Group.ODS | Group.BASIC | Group.DETAILED if groups is None else groups
    return Stat(name, Kind.COUNTER, Source.STORED, help, resets=True, groups=groups)


def _ssl_servers() -> tuple[Stat, ...]:
    groups = Group.ODS | Group.BASIC | Group.DETAILED
    help = "servers reached over TLS, in the worker answering"
    return (
        Stat("num_ssl_servers", Kind.GAUGE, Source.COMPUTED, help, summed=False, groups=groups),
        *(
            Stat(
                f"num_ssl_servers_{state}",
                Kind.GAUGE,
                Source.COMPUTED,
                f"servers reached over TLS whose connection is {state}, in the worker answering",
                summed=False,
                groups=groups,
            )
            for state in ("new", "up", "down", "closed")
        ),
    )


def _tko_servers(kind: str) -> Stat:
    return Stat(
        f"num_{kind}_tko_count",
        Kind.GAUGE,
        Source.COMPUTED,
        f"servers {kind} TKO now (each worker's count, added up)",
        groups=Group.ODS | Group.BASIC | Group.DETAILED,
    )


def _process(name: str, kind: Kind, help: str, format: str = "") -> Stat:
    groups = Group.BASIC | Group.DETAILED
    return Stat(name, kind, Source.COMPUTED, help, format=format, groups=groups)


def _rate_of(name: str, twin: str, groups: Group = Group.ODS | Group.DETAILED) -> Stat:
    return Stat(
        name,
        Kind.GAUGE,
        Source.COMPUTED,
        f"{twin} per second, within the window",
        summed=False,
        format="g",
        groups=groups | Group.RATE,
        rate_of=twin,
    )


def _event(name: str, help: str, *, groups: Group | None = None) -> Stat:
    """A counter of a routing event; in the RATE group `stats` shows it per second."""
    groups = Group.ODS | Group.DETAILED | Group.RATE if groups is None else groups
    return Stat(name, Kind.COUNTER, Source.STORED, help, resets=True, groups=groups)


#: FailoverRoute's orders, by the names mcrouter gives their stats.
FAILOVER_POLICIES: Final = ("inorder", "least_failures", "deterministic_order")


def _failover_policies() -> tuple[Stat, ...]:
    return tuple(
        stat
        for policy in FAILOVER_POLICIES
        for stat in (
            _event(
                f"failover_{policy}_policy",
                f"requests a FailoverRoute ordered by its {policy} policy sent on",
            ),
            _event(
                f"failover_{policy}_policy_failed",
                f"requests every child of such a FailoverRoute ({policy} policy) failed",
            ),
        )
    )


#: The result families of mcrouter's `result_*` stats, and the results each counts.
RESULT_FAMILIES: Final = {
    "error": ERRORS,
    "connect_error": frozenset({Result.CONNECT_ERROR}),
    "connect_timeout": frozenset({Result.CONNECT_TIMEOUT}),
    "data_timeout": frozenset({Result.TIMEOUT}),
    "busy": frozenset({Result.BUSY}),
    "tko": frozenset({Result.TKO}),
    "client_error": frozenset({Result.CLIENT_ERROR}),
    "local_error": frozenset({Result.LOCAL_ERROR}),
    "remote_error": frozenset({Result.REMOTE_ERROR}),
}


#: How the help of each `result_*` family names its results.
_RESULT_WORDS: Final = {
    "error": "an error",
    "connect_error": "a connect error",
    "connect_timeout": "a connect timeout",
    "data_timeout": "no reply in time",
    "busy": "busy (too many requests pending)",
    "tko": "TKO (refused unsent)",
    "client_error": "CLIENT_ERROR",
    "local_error": "a local error (the proxy shutting down)",
    "remote_error": "SERVER_ERROR or a broken connection",
}


def _result_counts() -> tuple[Stat, ...]:
    groups = Group.ODS | Group.COUNT
    return tuple(
        Stat(
            f"result_{family}{every}_count",
            Kind.COUNTER,
            Source.STORED,
            f"requests to servers that got {_RESULT_WORDS[family]}"
            + (", failovers and shadow copies too" if every else ", not as a failover"),
            resets=True,
            groups=groups,
        )
        for family in RESULT_FAMILIES
        for every in ("", "_all")
    )


def _result_rates() -> tuple[Stat, ...]:
    return tuple(
        _rate_of(f"result_{family}{every}", f"result_{family}{every}_count")
        for family in RESULT_FAMILIES
        for every in ("", "_all")
    )


def _results_named(suffix: str) -> dict[Result, tuple[str, ...]]:
    return {
        result: tuple(
            f"result_{family}{suffix}"
            for family, results in RESULT_FAMILIES.items()
            if result in results
        )
        for result in Result
    }


#: Per result, the `result_*_count` stats (requests not sent as a failover) it counts in.
RESULT_COUNTS: Final = _results_named("_count")
#: Per result, every `result_*` stat a request to a server with that result counts in.
RESULT_ALL_COUNTS: Final = {
    result: names + _results_named("_all_count")[result] for result, names in RESULT_COUNTS.items()
}


def count_result(counters: _Counters, result: Result, requests: int = 1) -> None:
    """`requests` sent to servers (or refused before sending) got `result`.

    Called where an error reply is made (failure paths only): a success is counted
    in no `result_*` stat.
    """
    for name in RESULT_ALL_COUNTS[result]:
        setattr(counters, name, getattr(counters, name) + requests)


def count_failover_result(counters: _Counters, result: Result) -> None:
    """A failover child's request got `result`: mcrouter counts it in the `_all` stats
    only, so it is taken back out of the others (`count_result` put it in both)."""
    for name in RESULT_COUNTS[result]:
        # Never below zero: a reply some route made up (ErrorRoute) was not counted.
        setattr(counters, name, max(0, getattr(counters, name) - 1))


def _destination_sum(name: str, help: str) -> Stat:
    """A count over every server's counters, shown per second (`BASIC | RATE`)."""
    return Stat(name, Kind.COUNTER, Source.COMPUTED, help, groups=Group.BASIC | Group.RATE)


def _outstanding(name: str, help: str) -> Stat:
    return Stat(name, Kind.GAUGE, Source.COMPUTED, help, groups=Group.ODS | Group.BASIC)


def _window(name: str, help: str, groups: Group) -> Stat:
    """Worked out by the answering worker over the window, from summed values."""
    fmt = "g" if Group.MAX not in groups and Group.MAX_MAX not in groups else ""
    return Stat(name, Kind.GAUGE, Source.COMPUTED, help, summed=False, format=fmt, groups=groups)


#: Every proxy stat, in the order `stats all` shows them.
PROXY_STATS: Final = (
    _info("version", "mcrouter-trio's version", text=True),
    _info("commandargs", "the command line the proxy was started with", text=True),
    _info("pid", "the process answering"),
    _info("parent_pid", "its parent (the supervisor, with --num-proxies)"),
    _info("time", "the time now, in seconds since the epoch"),
    _info("uptime", "seconds since the process answering started"),
    _cpu_seconds("rusage_user", "CPU seconds spent in user mode"),
    _cpu_seconds("rusage_system", "CPU seconds spent in the kernel"),
    Stat("curr_connections", Kind.GAUGE, Source.STORED, "client connections open"),
    Stat(
        "total_connections",
        Kind.COUNTER,
        Source.STORED,
        "client connections accepted",
        resets=True,
        reset_to="curr_connections",
    ),
    _connections("rejected_connections", "client connections refused by --max-conns"),
    _connections(
        "client_buffer_disconnects",
        "clients disconnected for what the proxy held for them (--max-client-buffer)",
    ),
    _connections("ssl_handshakes", "client TLS handshakes completed"),
    _connections("ssl_handshakes_resumed", "client TLS handshakes that resumed a session"),
    _connections("ssl_handshakes_refused", "client TLS handshakes refused or failed"),
    # Each worker has its own connection to each server: mcrouter adds these up
    # over its proxies (one server and two proxies is `num_servers 2`).
    Stat(
        "num_servers", Kind.GAUGE, Source.COMPUTED, "server connections configured, every worker's"
    ),
    _servers_in("up"),
    _servers_in("down"),
    _servers_in("closed"),
    _servers_in("new"),
    Stat(
        "num_suspect_servers",
        Kind.GAUGE,
        Source.COMPUTED,
        "servers with failures in a row (TKO or not), counted in every worker",
    ),
    Stat(
        "server_ejects",
        Kind.COUNTER,
        Source.COMPUTED,
        "servers ejected from a pool's hash ring (auto_eject_hosts), every pool's",
    ),
    Stat(
        "num_proxies",
        Kind.INFO,
        Source.COMPUTED,
        "worker processes (--num-proxies)",
        summed=False,
    ),
    Stat(
        "proxy_reqs_processing",
        Kind.GAUGE,
        Source.COMPUTED,
        "requests sent to servers or waiting to be, not answered yet",
    ),
    _info("config_age", "seconds since the config now serving was loaded"),
    _info("config_last_attempt", "when the config was last loaded or tried (epoch seconds)"),
    _info("config_last_success", "when the config was last loaded (epoch seconds)"),
    Stat(
        "config_failures",
        Kind.COUNTER,
        Source.COMPUTED,
        "config reloads that failed (the previous config kept serving)",
        summed=False,
    ),
    Stat(
        "route_handle_failures",
        Kind.COUNTER,
        Source.COMPUTED,
        "requests answered with an error because a route handle failed (logged once per cause)",
    ),
    Stat(
        "background_requests_in_flight",
        Kind.GAUGE,
        Source.COMPUTED,
        "fire-and-forget requests (warm-up refills, ...) not answered yet",
    ),
    Stat(
        "background_requests_dropped",
        Kind.COUNTER,
        Source.COMPUTED,
        "fire-and-forget requests not sent: too many were in flight",
    ),
    Stat(
        "background_requests_failed",
        Kind.COUNTER,
        Source.COMPUTED,
        "fire-and-forget requests answered with an error",
    ),
    Stat(
        "asynclog_spooled",
        Kind.COUNTER,
        Source.STORED,
        "deletes a server failed, written to the spool (--async-dir) and answered NOT_FOUND",
    ),
    Stat(
        "asynclog_replayed",
        Kind.COUNTER,
        Source.STORED,
        "spooled deletes sent again and answered by their server",
    ),
    Stat(
        "asynclog_pending",
        Kind.GAUGE,
        Source.STORED,
        "spooled deletes not replayed yet (as of the last replay pass)",
    ),
    Stat(
        "asynclog_oldest_pending_age",
        Kind.GAUGE,
        Source.STORED,
        "seconds since the oldest delete not replayed yet was spooled (last replay pass)",
    ),
    # mcrouter's names (`stat_list.h`), in its order and groups, where they mean
    # something here (docs/operations.md lists the ones left out, and why).
    Stat(
        "num_client_connections",
        Kind.GAUGE,
        Source.COMPUTED,
        "client connections open (curr_connections, by mcrouter's name)",
        groups=Group.ODS | Group.DETAILED,
    ),
    *_ssl_servers(),
    _mcrouter_counter("num_connections_opened", "connections to servers opened"),
    _mcrouter_counter("num_connections_closed", "connections to servers closed (or lost)"),
    _mcrouter_counter("num_ssl_connections_opened", "TLS connections to servers opened"),
    _mcrouter_counter("num_ssl_connections_closed", "TLS connections to servers closed"),
    _mcrouter_counter(
        "num_ssl_resumption_attempts", "TLS connections to servers that offered a session"
    ),
    _mcrouter_counter(
        "num_ssl_resumption_successes", "TLS connections to servers that resumed a session"
    ),
    _tko_servers("soft"),
    _tko_servers("hard"),
    _mcrouter_counter(
        "num_fail_open_state_entered",
        "times a pool's tko_tracker started failing open (too many servers TKO)",
    ),
    _mcrouter_counter(
        "num_fail_open_state_exited", "times a pool's tko_tracker stopped failing open"
    ),
    Stat(
        "ps_rss",
        Kind.GAUGE,
        Source.COMPUTED,
        "resident memory, bytes (/proc/self/stat)",
        groups=Group.ODS | Group.BASIC,
    ),
    _process("ps_num_minor_faults", Kind.COUNTER, "page faults served without I/O"),
    _process("ps_num_major_faults", Kind.COUNTER, "page faults that read from disk"),
    _process("ps_user_time_sec", Kind.COUNTER, "CPU seconds in user mode (/proc)", "g"),
    _process("ps_system_time_sec", Kind.COUNTER, "CPU seconds in the kernel (/proc)", "g"),
    _process("ps_vsize", Kind.GAUGE, "virtual memory size, bytes"),
    Stat(
        "proxy_request_num_outstanding",
        Kind.GAUGE,
        Source.COMPUTED,
        "requests received from clients and not answered yet",
        groups=Group.ODS | Group.DETAILED,
    ),
    Stat(
        "request_sent_count",
        Kind.COUNTER,
        Source.COMPUTED,
        "requests received from clients and routed (every command)",
        groups=Group.COUNT,
    ),
    _mcrouter_counter(
        "request_error_count",
        "requests whose reply to the client was an error",
        groups=Group.COUNT,
    ),
    Stat(
        "request_success_count",
        Kind.COUNTER,
        Source.COMPUTED,
        "requests whose reply to the client was not an error",
        groups=Group.COUNT,
    ),
    Stat(
        "request_replied_count",
        Kind.COUNTER,
        Source.COMPUTED,
        "requests answered",
        groups=Group.COUNT,
    ),
    _rate_of("request_sent", "request_sent_count"),
    _rate_of("request_error", "request_error_count"),
    _rate_of("request_success", "request_success_count"),
    _rate_of("request_replied", "request_replied_count"),
    _mcrouter_counter(
        "dev_null_requests", "requests a DevNullRoute swallowed", groups=Group.DETAILED
    ),
    _event("failover_all", "requests a FailoverRoute sent on past its first child"),
    _rate_of("failover_all_failed", "failover_all_failed_count"),
    _event("failover_rate_limited", "failovers a FailoverRoute's failover_limit did not allow"),
    *_failover_policies(),
    _event(
        "before_latency_injected",
        "requests a LatencyInjectionRoute held back before sending (before_latency_ms)",
    ),
    _event(
        "after_latency_injected",
        "replies a LatencyInjectionRoute held back (after_latency_ms)",
    ),
    _event(
        "total_latency_injected",
        "requests a LatencyInjectionRoute padded out to its total latency",
    ),
    *_result_counts(),
    _event(
        "failover_num_collisions",
        "DeterministicOrderPolicy draws of a child already tried (or skipped), counted "
        "when a failover ran out of children or error tries",
        groups=Group.ODS | Group.COUNT,
    ),
    _event(
        "failover_num_failed_domain_collisions",
        "DeterministicOrderPolicy draws of a child in a failure domain that gave a TKO, "
        "counted when a failover ran out of children or error tries",
        groups=Group.ODS | Group.COUNT,
    ),
    _event(
        "failover_policy_result_error",
        "errors (not TKO) that made a FailoverRoute try another child, or spent its last try",
        groups=Group.ODS | Group.COUNT,
    ),
    _event(
        "failover_all_failed_count",
        "requests every child of a FailoverRoute failed (an error from the last)",
        groups=Group.ODS | Group.COUNT,
    ),
    _event(
        "failover_policy_tko_error",
        "TKO, connect error or connect timeout replies that made a FailoverRoute move on",
        groups=Group.ODS | Group.COUNT,
    ),
    _rate_of("final_result_error", "request_error_count"),
    *_result_rates(),
    _event(
        "asynclog_requests_rate",
        "failed deletes offered to the spool, written or not (per second)",
        groups=Group.ODS | Group.BASIC | Group.RATE,
    ),
    _rate_of("asynclog_spool_success_rate", "asynclog_spooled", Group.ODS | Group.BASIC),
    _destination_sum("destination_batches_sum", "writes to servers (per second)"),
    _destination_sum("destination_requests_sum", "requests written to servers (per second)"),
    _window(
        "max_num_tko",
        "the most servers TKO at once, within the window",
        Group.ODS | Group.BASIC | Group.MAX_MAX,
    ),
    _outstanding("destination_pending_reqs", "requests queued for servers, not written yet"),
    _outstanding("destination_inflight_reqs", "requests written to servers, awaiting replies"),
    _window(
        "destination_batch_size",
        "requests per write to a server, within the window",
        Group.ODS | Group.BASIC,
    ),
    _window(
        "duration_us",
        "mean microseconds from a request's write to a server to its reply, within the window",
        Group.ODS | Group.BASIC | Group.AVG,
    ),
    _window(
        "destination_max_pending_reqs",
        "the most requests queued for servers at once (sampled each second), within the window",
        Group.ODS | Group.BASIC | Group.MAX,
    ),
    _window(
        "destination_max_inflight_reqs",
        "the most requests awaiting servers' replies at once (sampled each second), "
        "within the window",
        Group.ODS | Group.BASIC | Group.MAX,
    ),
    # Per command, named as memcached and mcrouter name them.
    _requests("cmd_get", Op.GET),
    _requests("cmd_gets", Op.GETS),
    _requests("cmd_gat", Op.GAT),
    _requests("cmd_gats", Op.GATS),
    _requests("cmd_set", Op.SET),
    _requests("cmd_add", Op.ADD),
    _requests("cmd_replace", Op.REPLACE),
    _requests("cmd_append", Op.APPEND),
    _requests("cmd_prepend", Op.PREPEND),
    _requests("cmd_cas", Op.CAS),
    _requests("cmd_delete", Op.DELETE),
    _requests("cmd_incr", Op.INCR),
    _requests("cmd_decr", Op.DECR),
    _requests("cmd_touch", Op.TOUCH),
    _requests("cmd_flush", Op.FLUSH_ALL),
    _requests("cmd_meta_get", Op.MG),
    _requests("cmd_meta_set", Op.MS),
    _requests("cmd_meta_delete", Op.MD),
    _requests("cmd_meta_arithmetic", Op.MA),
)


def _server_counter(name: str, help: str, *, tls_only: bool = False) -> Stat:
    # Not reset: `stats reset` leaves per-server counters alone, as it always has.
    return Stat(name, Kind.COUNTER, Source.STORED, help, tls_only=tls_only)


#: The fields of a `stats servers` line, in order: its leading gauges come before the
#: server's state, the rest after it (mcrouter's fields first, then the proxy's own).
SERVER_STATS: Final = (
    Stat(
        "avg_latency_us",
        Kind.GAUGE,
        Source.COMPUTED,
        "mean microseconds from a request's write to its reply, since the proxy started",
        summed=False,  # worked out from the latency histograms, which are summed
        format=".3f",
    ),
    Stat(
        "pending_reqs",
        Kind.GAUGE,
        Source.COMPUTED,
        "requests queued for the server, not written to it yet",
    ),
    Stat(
        "inflight_reqs",
        Kind.GAUGE,
        Source.COMPUTED,
        "requests written to the server, awaiting its reply",
    ),
    _server_counter("requests", "requests routed to the server"),
    _server_counter("replies", "replies read from it"),
    _server_counter("errors", "requests failed here: no connection, broken, or timed out"),
    _server_counter("connects", "connections made"),
    _server_counter("connect_failures", "connections that failed or timed out"),
    _server_counter("failed_fast", "requests answered at once, unsent: server TKO or backing off"),
    _server_counter("probes", "version probes sent while the server was TKO"),
    _server_counter("batches", "writes, each carrying every request buffered by then"),
    _server_counter("get_batches", "multi-key gets made of single-key gets (--batch-gets)"),
    _server_counter("tls_handshakes", "TLS handshakes completed", tls_only=True),
    _server_counter("tls_resumed", "TLS handshakes that resumed a session", tls_only=True),
    # Ejection (auto_eject_hosts), after mcrouter's fields.
    _server_counter("ejections", "times a pool ejected the server from its hash ring"),
    Stat(
        "ejected",
        Kind.GAUGE,
        Source.STORED,
        "pools (summed over workers) whose hash ring the server is out of now (0: in every ring)",
    ),
)


def _stored_names(table: tuple[Stat, ...]) -> tuple[str, ...]:
    return tuple(stat.name for stat in table if stat.source is Source.STORED)


class _Counters:
    """A slot per `STORED` stat of a table, each starting at zero."""

    __slots__ = ()
    #: The slots' names, in table order.
    stored: tuple[str, ...] = ()

    if TYPE_CHECKING:
        # The slots are made from the tables, where the type checker cannot see them. A
        # misspelt counter still fails, at run time: there is no slot of that name.
        def __getattr__(self, name: str) -> int: ...
        def __setattr__(self, name: str, value: int) -> None: ...

    def __init__(self) -> None:
        for name in self.stored:
            setattr(self, name, 0)


class ProxyCounters(_Counters):
    """The proxy's stored counters (`PROXY_STATS`), bumped by the listeners."""

    stored = _stored_names(PROXY_STATS)
    __slots__ = stored


class ServerCounters(_Counters):
    """One server's stored counters (`SERVER_STATS`), bumped by its destination."""

    stored = _stored_names(SERVER_STATS)
    __slots__ = stored


#: Upper bounds, in seconds, of the latency histograms' buckets: 1, 2, 5 per decade from
#: 100 µs to 10 s; one more bucket takes everything slower.
LATENCY_BOUNDS: Final = (
    0.0001, 0.0002, 0.0005,
    0.001, 0.002, 0.005,
    0.01, 0.02, 0.05,
    0.1, 0.2, 0.5,
    1.0, 2.0, 5.0,
    10.0,
)  # fmt: skip


def latency_bucket(seconds: float) -> int:
    """The index of the bucket `seconds` is counted in: the first bound at or above it.

    The read loops inline this (`counts[bisect_left(LATENCY_BOUNDS, s)] += 1`) to save a
    call per reply; `len(LATENCY_BOUNDS)` is the last bucket, for anything slower.
    """
    return bisect_left(LATENCY_BOUNDS, seconds)


class Latencies:
    """A latency histogram as plain numbers: a count per bucket and the sum of seconds.

    Counting one observation is a list index increment and a float addition, with
    no Prometheus object on the request path; the metrics endpoint turns it into a
    Prometheus histogram at each scrape.
    """

    __slots__ = ("counts", "sum")

    def __init__(self, counts: list[int] | None = None, total: float = 0.0) -> None:
        #: Observations per bucket (not cumulative), `latency_bucket`'s index.
        self.counts = counts if counts is not None else [0] * (len(LATENCY_BOUNDS) + 1)
        #: Seconds observed in total.
        self.sum = total

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def mean(self) -> float:
        """Seconds per observation (0 before the first)."""
        count = self.count
        return self.sum / count if count else 0.0

    def copy(self) -> Latencies:
        return Latencies(list(self.counts), self.sum)

    def add(self, other: Latencies) -> None:
        """Count `other`'s observations here too (summing workers or servers)."""
        for index, count in enumerate(other.counts):
            self.counts[index] += count
        self.sum += other.sum

    def to_list(self) -> list[float]:
        """The counts, then the sum: how a worker's snapshot carries it."""
        return [*self.counts, self.sum]

    @classmethod
    def from_list(cls, values: list[float]) -> Latencies:
        """`to_list` read back; a list of another length (another version) counts nothing."""
        if len(values) != len(LATENCY_BOUNDS) + 2:
            return cls()
        return cls([int(count) for count in values[:-1]], float(values[-1]))
