"""The `mcrouter-trio` command: mcrouter's flag names where mcrouter has them."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from mcrouter_trio import __version__
from mcrouter_trio.config import ConfigError, ProxyConfig, load_config, load_config_file
from mcrouter_trio.config._prefixes import parse_config_params
from mcrouter_trio.downstream._admin import AdminCommands, AdminInfo, key_buckets, route_addresses
from mcrouter_trio.downstream._admin_request import ROUTABLE_OPS, AdminError
from mcrouter_trio.downstream._router import RouterSettings
from mcrouter_trio.downstream._server import Proxy, ServerSettings, inherited_port, serve
from mcrouter_trio.ops._asynclog import WriterNames
from mcrouter_trio.ops._board import SharedStats, StatsBoard
from mcrouter_trio.ops._delete_stream import DeleteStreamSettings
from mcrouter_trio.ops._host import local_addresses_or_none, local_host_id
from mcrouter_trio.ops._limits import default_max_conns, raise_open_files_limit
from mcrouter_trio.ops._mcrouter_flags import (
    add_mcrouter_flags,
    check_mcrouter_flags,
    log_ignored_flags,
)
from mcrouter_trio.ops._mcrouter_options import mcrouter_option_values
from mcrouter_trio.ops._metrics import renderer, serve_metrics
from mcrouter_trio.ops._reload import ConfigWatcher, files_digest
from mcrouter_trio.ops._replay import replay_spool
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.ops._stats_files import StatsFiles, stat_prefix, write_stats_files
from mcrouter_trio.ops._workers import parent_watch, publish_stats, run_workers
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.tls._setup import (
    TLSSetup,
    TLSStartupError,
    add_tls_arguments,
    check_tls_arguments,
    load_tls,
    ssl_ports,
    tls_warnings,
    watch_tls_files,
)
from mcrouter_trio.upstream import HealthSettings

log = logging.getLogger("mcrouter_trio")

#: Used when neither -f nor --config-str is given: memcached on its default port.
DEFAULT_CONFIG: Final = json.dumps(
    {"pools": {"default": {"servers": ["127.0.0.1:11211"]}}, "route": "PoolRoute|default"}
)
EXIT_BAD_CONFIG: Final = 3
EXIT_CANNOT_START: Final = 2
#: Signals that stop the proxy gracefully (a second one stops it at once).
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
#: Signals that must not kill the proxy: SIGHUP asks for a reload, the others are ignored.
_OTHER_SIGNALS: Final = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
#: `--batch-gets` choices, as `Destination(batch_gets=...)` takes them.
_BATCH_GETS: Final[dict[str, bool | None]] = {"tls": None, "always": True, "never": False}


def _ports(text: str) -> list[int]:
    ports = []
    for part in text.split(","):
        port = int(part)
        if not 0 <= port <= 65535:
            raise argparse.ArgumentTypeError(f"port out of range: {part}")
        ports.append(port)
    return ports


def _positive_ms(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("must be an integer from 1 to 1000000 (milliseconds)")
    return value


def _positive_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return value


def _size(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (bytes)")
    return value


#: memcached's default item size limit (`-I`), the proxy's own without big values.
DEFAULT_MAX_VALUE_SIZE = 1024 * 1024


def max_value_size(args: argparse.Namespace) -> int:
    """`--max-value-size`, or its default: memcached's 1 MiB, so that a value is
    refused as a default memcached refuses it; but values are split for the servers
    with `--big-value-split-threshold` (mcrouter's BigValueRoute stores values far
    over the servers' limit, and mcrouter has no limit of its own), and then only
    the client buffer bounds them: half of it, below which a client is served as
    usual."""
    if args.max_value_size is not None:
        return int(args.max_value_size)
    if not args.big_value_split_threshold:
        return DEFAULT_MAX_VALUE_SIZE
    return args.max_client_buffer // 2 if args.max_client_buffer else sys.maxsize


def _delay_ms(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 3_600_000:
        raise argparse.ArgumentTypeError("must be an integer from 0 to 3600000 (milliseconds)")
    return value


def _metrics_port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a port from 1 to 65535")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError("must be a number of seconds, 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcrouter-trio",
        description="A memcached protocol router with mcrouter's config and semantics.",
        epilog="Sub-commands: `mcrouter-trio certs init DIR` writes a CA and edge-pair certs; "
        "`mcrouter-trio route -f CONFIG [--op get] KEY...` shows where keys are routed; "
        "`mcrouter-trio import-twemproxy nutcracker.yml` prints an equivalent config.",
    )
    add = parser.add_argument
    add(
        "-p",
        "--port",
        type=_ports,
        action="append",
        default=[],
        metavar="PORT[,PORT]",
        help="TCP port(s) to listen on for plain-text clients (repeatable)",
    )
    add(
        "--listen-addresses",
        default="",
        metavar="ADDR[,ADDR]",
        help="addresses to listen on (default: every IPv4 and IPv6 interface)",
    )
    add(
        "--listen-sock-fd",
        type=int,
        default=-1,
        metavar="FD",
        help="also serve plain-text clients on this inherited TCP socket (bound, or "
        "bound by listen() to a free port), as mcrouter does; -1: none",
    )
    add("-f", "--config-file", metavar="FILE", help="mcrouter JSON config file")
    add("--config-str", metavar="JSON", help="the config as a JSON string")
    add("--config", metavar="file:PATH|JSON", help="mcrouter's combined form of the two above")
    add(
        "--big-value-split-threshold",
        type=_count,
        default=0,
        metavar="BYTES",
        help="store values over BYTES as mcrouter's chunks (BigValueRoute; default 0: off)",
    )
    add(
        "--big-value-batch-size",
        type=_count,
        default=10,
        metavar="N",
        help="big value chunks sent at a time (default 10; 0: all at once)",
    )
    add(
        "--big-value-hide-reply-flag",
        action="store_true",
        help="clear the big-value flag (0x8000) in replies to reads of big values",
    )
    add(
        "-t",
        "--server-timeout",
        type=_positive_ms,
        default=1000,
        metavar="MS",
        help="reply timeout for servers whose pool sets no server_timeout (default 1000)",
    )
    add(
        "--timeouts-until-tko",
        type=_positive_count,
        default=3,
        metavar="N",
        help="reply timeouts in a row that mark a server soft TKO (default 3)",
    )
    add(
        "-r",
        "--probe-timeout-initial",
        "--retry-timeout",  # mcrouter's deprecated name
        type=_positive_ms,
        default=10_000,
        metavar="MS",
        help="delay before the first probe of a TKO server; each next is 1.5 times longer "
        "(default 10000)",
    )
    add(
        "--probe-timeout-max",
        type=_positive_ms,
        default=60_000,
        metavar="MS",
        help="longest delay between probes of a TKO server (default 60000)",
    )
    add(
        "--disable-tko-tracking",
        action="store_true",
        help="never mark servers TKO: every request is sent (reconnects still back off)",
    )
    add(
        "-R",
        "--route-prefix",
        default="/././",
        metavar="/REGION/CLUSTER/",
        help="default routing prefix (default /././)",
    )
    add(
        "--config-params",
        type=_config_params,
        default={},
        metavar="NAME:VALUE[,NAME:VALUE]",
        help="values of %%NAME%% in the config (strings)",
    )
    add(
        "--additional-config-params",
        type=_config_params,
        default={},
        metavar="NAME:VALUE[,NAME:VALUE]",
        help="more values of %%NAME%%, over those of --config-params",
    )
    add(
        "--send-invalid-route-to-default",
        action="store_true",
        help="route keys whose routing prefix matches no route as if they had none",
    )
    add(
        "--enable-flush-cmd",
        action="store_true",
        help="let flush_all reach every server (refused by default)",
    )
    add(
        "--max-value-size",
        type=_size,
        default=None,
        metavar="BYTES",
        help="largest value accepted from clients (default 1048576; with "
        "--big-value-split-threshold, half of --max-client-buffer)",
    )
    add(
        "--max-line-length",
        type=_size,
        default=1024 * 1024,
        metavar="BYTES",
        help="longest multi-get command line accepted (default 1048576)",
    )
    add(
        "--max-client-outstanding-reqs",
        type=_count,
        default=34133,
        metavar="N",
        help="requests routed per client before its replies must be written; 0 = no limit "
        "(default 34133)",
    )
    add(
        "--max-client-buffer",
        type=_count,
        default=64 * 1024 * 1024,
        metavar="BYTES",
        help="most the proxy holds for one client (replies not yet written, requests not yet "
        "parsed): at half of it nothing more is routed for the client, past it the client is "
        "disconnected; 0 = no limit (default 67108864)",
    )
    add(
        "--client-timeout",
        type=_positive_ms,
        default=1000,
        metavar="MS",
        help="a client held at half --max-client-buffer that reads none of its replies for "
        "this long is disconnected (default 1000)",
    )
    add(
        "--max-conns",
        type=_count,
        default=0,
        metavar="N",
        help="client connections served at once, beyond which a client gets `ERROR Too many "
        "open connections`; 0 (default): the open-files limit less room for the proxy's own "
        "descriptors (32, one per listener, two per server)",
    )
    add(
        "--target-max-pending-requests",
        type=_count,
        default=100_000,
        metavar="N",
        help="requests queued per server before `SERVER_ERROR 307 busy`; 0 = no limit "
        "(default 100000)",
    )
    add(
        "--batch-gets",
        choices=sorted(_BATCH_GETS),
        default="tls",
        help="send the single-key gets routed together to a server as one multi-key get: "
        "to TLS servers (default), to every server, or never",
    )
    add(
        "--graceful-shutdown-timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long in-flight requests may finish after SIGTERM (default 5)",
    )
    add(
        "--validate-config",
        nargs="?",
        const="exit",
        choices=["exit", "run"],
        help="check the config; `exit` (default) exits 0 if valid and 3 if not",
    )
    add(
        "--num-proxies",
        "--proxy-threads",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="worker processes sharing the ports (SO_REUSEPORT), each a whole proxy with "
        "its own server connections; `auto`: one per core this process may use (default 1)",
    )
    add("-L", "--log-path", metavar="FILE", help="log to FILE instead of stderr")
    add(
        "--reconfiguration-delay-ms",
        type=_delay_ms,
        default=1000,
        metavar="MS",
        help="after the config file (or a file it imports) changes, or SIGHUP, wait this "
        "long, then load it and swap it in (default 1000)",
    )
    add(
        "--disable-reload-configs",
        action="store_true",
        help="never reload the config while running (SIGHUP then only logs)",
    )
    add(
        "--stats-root",
        metavar="DIR",
        help="write mcrouter's stats files (libmcrouter.<service>.<port>.stats, "
        ".startup_options, .config_sources_info) in DIR (default: none written)",
    )
    add(
        "--stats-logging-interval",
        type=_count,
        default=10_000,
        metavar="MS",
        help="how often the stats files are rewritten; 0 = never (default 10000)",
    )
    add(
        "--service-name",
        default="mcrouter",
        metavar="NAME",
        help="the service part of the stats files' names (default mcrouter)",
    )
    add(
        "--metrics-port",
        type=_metrics_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics (default: not served; "
        "with --num-proxies, the first worker serves the sums over every worker)",
    )
    add(
        "--metrics-address",
        default="",
        metavar="ADDR",
        help="address the metrics port listens on (default: every interface, as a "
        "Prometheus exporter does; 127.0.0.1 keeps it to this host)",
    )
    add(
        "-v",
        "--verbosity",
        action=_Verbosity,
        nargs="?",
        default=0,
        metavar="N",
        help="more logging: -v, -vv (debug); mcrouter's -v N sets the level (0 to 2)",
    )
    add(
        "-a",
        "--async-dir",
        metavar="DIR",
        help="spool the deletes a server fails under DIR (answered NOT_FOUND once on disk) "
        "and replay them when it is back (default: none; failed deletes get their error)",
    )
    add(
        "--asynclog-disable",
        action="store_true",
        help="never spool failed deletes, even with --async-dir (they get their error)",
    )
    add(
        "--use-asynclog-version2",
        action="store_true",
        help="write spool records in mcrouter's version 2 format (AS2.0)",
    )
    add(
        "--asynclog-replay-rate",
        type=_count,
        default=10_000,
        metavar="N",
        help="replay at most N spooled deletes per second; 0 = no limit (default 10000)",
    )
    add("-V", "--version", action="version", version=f"mcrouter-trio {__version__}")
    add_tls_arguments(parser, _ports)
    add_mcrouter_flags(parser)
    return parser


class _Verbosity(argparse.Action):
    """`-v` adds one, `-vv` two, `-v N` (mcrouter's form) sets N."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        value: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        text = value if isinstance(value, str) else None
        if text is None:
            level = namespace.verbosity + 1
        elif text.isdigit():
            level = int(text)
        elif text.strip("v") == "":  # -vv arrives as -v with the value "v"
            level = namespace.verbosity + 1 + len(text)
        else:
            parser.error(f"-v/--verbosity: not a level: {text!r}")
        namespace.verbosity = level


def load(args: argparse.Namespace, host_id: int) -> ProxyConfig:
    """The config from -f / --config / --config-str, or the default one.

    `host_id` is this host's id (LatestRoute's per-host choice of servers). The
    host's addresses (for `@isLocalIp`) are listed afresh, as mcrouter does on
    each load.
    """
    mcrouter_options = mcrouter_option_values(args)
    options: dict[str, Any] = {
        "default_timeout_ms": args.server_timeout,
        "host_id": host_id,
        "default_route": args.route_prefix,
        "config_params": {**args.config_params, **args.additional_config_params},
        "num_proxies": args.num_proxies,
        "big_value_split_threshold": args.big_value_split_threshold,
        "big_value_batch_size": args.big_value_batch_size,
        "big_value_hide_reply_flag": args.big_value_hide_reply_flag,
        "logging_route": mcrouter_options["enable_logging_route"] == "1",
        "mcrouter_options": mcrouter_options,
        "local_addresses": local_addresses_or_none(),
    }
    if args.config and args.config.startswith("file:"):
        return load_config_file(args.config[len("file:") :], **options)
    if args.config:
        return load_config(args.config, source="--config", **options)
    if args.config_file:
        return load_config_file(args.config_file, **options)
    if args.config_str:
        return load_config(args.config_str, source="--config-str", **options)
    return load_config(DEFAULT_CONFIG, source="default config", **options)


def _config_params(text: str) -> dict[str, str]:
    try:
        return parse_config_params(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers(text: str) -> int:
    if text == "auto":
        return min(len(os.sched_getaffinity(0)), 256)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("must be from 1 to 256, or auto (one per core)")
    return value


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING - 10 * min(args.verbosity, 2) if args.verbosity else logging.INFO
    process = " [%(process)d]" if args.num_proxies > 1 else ""
    logging.basicConfig(
        level=level,
        filename=args.log_path,
        format=f"%(asctime)s %(levelname)s{process} %(name)s: %(message)s",
    )


def config_failure(exc: ConfigError | OSError) -> str:
    """The startup error for a config that did not load: mcrouter's words first (`Can not
    read config from <source>`, which scripts grep for), then each problem with its path."""
    if not isinstance(exc, ConfigError):
        return f"mcrouter-trio: Can not read config: {exc}"
    first, *rest = exc.errors or ["invalid config"]
    lines = [f"mcrouter-trio: Can not read config from {exc.source}: {first}"]
    lines += [f"{exc.source}: {error}" for error in rest]
    return "\n".join(lines)


def main_import_twemproxy(argv: Sequence[str]) -> int:
    """`import-twemproxy FILE [--pool NAME]`: the config on stdout, notes on stderr."""
    from mcrouter_trio.config.twemproxy import TwemproxyConfigError, import_twemproxy

    parser = argparse.ArgumentParser(
        prog="mcrouter-trio import-twemproxy",
        description="Print an mcrouter-trio config that places every key where nutcracker"
        " does; what is not carried over is listed on stderr with its YAML path.",
    )
    parser.add_argument("file", help="nutcracker's YAML config")
    parser.add_argument("--pool", help="the pool to import, when the file has several")
    args = parser.parse_args(argv)
    try:
        with open(args.file, encoding="utf-8") as file:
            text = file.read()
        imported = import_twemproxy(text, args.pool, source=args.file)
    except (OSError, TwemproxyConfigError) as exc:
        print(f"mcrouter-trio import-twemproxy: {exc}", file=sys.stderr)
        return 2
    for note in imported.notes:
        print(f"{args.file}: {note}", file=sys.stderr)
    sys.stdout.write(imported.config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["certs"]:
        from mcrouter_trio.tls.certs import main_certs

        return main_certs(argv[1:])
    if argv[:1] == ["import-twemproxy"]:
        return main_import_twemproxy(argv[1:])
    if argv[:1] == ["route"]:
        return main_route(argv[1:])
    if argv[:1] == ["replay"]:
        return main_replay(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    check_tls_arguments(parser, args)
    check_mcrouter_flags(parser, args)
    _setup_logging(args)
    log_ignored_flags(args)
    default_route = _normalise_prefix(args.route_prefix)
    host_id = local_host_id()
    reload = _reload_plan(args, host_id)  # before loading: a change from now on reloads
    try:
        config = load(args, host_id)
    except (ConfigError, OSError) as exc:
        print(config_failure(exc), file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.validate_config == "exit":
        print("config is valid")
        return 0
    ports = tuple(port for group in args.port for port in group)
    listen_fds = (args.listen_sock_fd,) if args.listen_sock_fd >= 0 else ()
    try:
        for fd in listen_fds:
            inherited_port(fd)  # a TCP socket, or OSError
    except OSError as exc:
        parser.error(f"--listen-sock-fd {args.listen_sock_fd}: not a TCP socket: {exc}")
    if not ports and not ssl_ports(args) and not listen_fds:
        parser.error("at least one -p PORT, --ssl-port PORT or --listen-sock-fd FD is required")
    for warning in tls_warnings(args):
        log.warning("%s", warning)
    try:
        tls = load_tls(args)
    except TLSStartupError as exc:
        print(f"mcrouter-trio: cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    addresses = tuple(a for a in args.listen_addresses.split(",") if a)
    servers = {*config.servers, *(s for pool in config.pools.values() for s in pool.servers)}
    open_files = raise_open_files_limit()
    # Without addresses every port is bound twice: IPv4 and IPv6.
    listeners = (len(ports) + len(ssl_ports(args))) * (len(addresses) or 2) + len(listen_fds)
    max_conns = args.max_conns or default_max_conns(
        open_files, servers=len(servers), listeners=listeners
    )
    log.info("open-files limit %s: at most %s client connections", open_files, max_conns or "any")
    mcrouter_options = mcrouter_option_values(args)
    settings = ServerSettings(
        ports=ports,
        listen_addresses=addresses,
        listen_fds=listen_fds,
        max_value_size=max_value_size(args),
        max_line_length=args.max_line_length,
        max_outstanding=args.max_client_outstanding_reqs,
        max_client_buffer=args.max_client_buffer,
        client_timeout=args.client_timeout / 1000,
        max_conns=max_conns,
        max_pending_per_server=args.target_max_pending_requests,
        max_shadow_requests=int(mcrouter_options["target_max_shadow_requests"]),
        batch_gets=_BATCH_GETS[args.batch_gets],
        grace_period=args.graceful_shutdown_timeout,
        ssl_ports=ssl_ports(args),
        server_ssl_context=tls.server_context(),
        handshake_timeout=args.ssl_handshake_timeout,
        asynclog=_delete_stream(args, ports, default_route),
        health=HealthSettings(
            tko_tracking=not args.disable_tko_tracking,
            timeouts_until_tko=args.timeouts_until_tko,
            probe_delay_initial_ms=args.probe_timeout_initial,
            probe_delay_max_ms=args.probe_timeout_max,
        ),
    )
    router_settings = RouterSettings(
        default_route=default_route,
        enable_flush_cmd=args.enable_flush_cmd,
        send_invalid_route_to_default=args.send_invalid_route_to_default,
        allow_only_gets=mcrouter_options["allow_only_gets"] == "1",
    )
    plan = ProxyPlan(
        config=config,
        admin=admin_info(args, host_id, config.global_params),
        settings=attrs.evolve(settings, reuse_port=args.num_proxies > 1),
        router_settings=router_settings,
        stats=ProxyStats(commandargs=" ".join(["mcrouter-trio", *argv])),
        tls=tls,
        tls_reload_interval=args.tls_reload_interval,
        host_id=host_id,
        reload=reload,
        stats_files=_stats_files(args, ports),
        stats_interval=args.stats_logging_interval / 1000,
        metrics=(args.metrics_address, args.metrics_port) if args.metrics_port else None,
    )
    if args.num_proxies == 1:
        return _serve_process(plan, None)
    supervisor = os.getpid()
    servers = {*config.servers, *(s for pool in config.pools.values() for s in pool.servers)}
    # Room for the servers a reloaded config may add (a slot is 512 bytes per server).
    board = StatsBoard.for_servers(args.num_proxies, 4 * len(servers) + 64)

    def run_worker(index: int) -> int:
        plan.stats.shared = SharedStats(board, index)
        return _serve_process(attrs.evolve(plan, worker_index=index), supervisor)

    return run_workers(args.num_proxies, run_worker)


@attrs.frozen(kw_only=True)
class ProxyPlan:
    """Everything one proxy process needs, decided before any worker starts."""

    config: ProxyConfig
    admin: AdminInfo
    settings: ServerSettings
    router_settings: RouterSettings
    stats: ProxyStats
    tls: TLSSetup
    tls_reload_interval: float
    host_id: int
    #: This worker's index among the `--num-proxies` workers (mcrouter's proxy thread id).
    worker_index: int = 0
    #: How to reload the config while running; None: it is not reloaded.
    reload: ReloadPlan | None = None
    #: Where mcrouter's stats files go (--stats-root); None: not written.
    stats_files: StatsFiles | None = None
    stats_interval: float = 10.0
    #: Where Prometheus metrics are served (--metrics-address, --metrics-port); None: not.
    metrics: tuple[str, int] | None = None


@attrs.frozen(kw_only=True)
class ReloadPlan:
    load: Callable[[], ProxyConfig]
    #: The files whose changes trigger a reload.
    files: tuple[str, ...]
    #: The files' digest before the serving config was read from them.
    digest: str | None
    delay: float


#: Our flag names whose option mcrouter names otherwise (its internal names).
_OPTION_NAMES: Final = {
    "port": "ports",
    "route_prefix": "default_route",
    "server_timeout": "server_timeout_ms",
}


def options(args: argparse.Namespace) -> dict[str, str]:
    """Every option by mcrouter's name, as text as mcrouter gives it (`1`/`0`, `a,b`)."""
    result = {}
    for name, value in sorted(vars(args).items()):
        if name == "port":
            value = [port for group in value for port in group]
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, list | tuple):
            text = ",".join(str(item) for item in value)
        else:
            text = "" if value is None else str(value)
        result[_OPTION_NAMES.get(name, name)] = text
    return result


def config_source(args: argparse.Namespace) -> tuple[str | None, Callable[[], str]]:
    """The config file's path (None if inline) and how to read the config text now."""
    if args.config and args.config.startswith("file:"):
        path: str | None = args.config[len("file:") :]
    elif args.config:
        return None, lambda: str(args.config)
    elif args.config_file:
        path = args.config_file
    else:
        text = args.config_str if args.config_str else DEFAULT_CONFIG
        return None, lambda: str(text)
    return path, partial(_read_text, str(path))


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def admin_info(
    args: argparse.Namespace, host_id: int, global_params: Mapping[str, object]
) -> AdminInfo:
    path, text = config_source(args)
    return AdminInfo(
        path,
        text,
        options(args),
        host_id,
        verbosity=args.verbosity,
        global_params=global_params,
    )


def _stats_files(args: argparse.Namespace, ports: Sequence[int]) -> StatsFiles | None:
    """Named after the first -p port, "0" without one, as mcrouter's router name is
    (an inherited socket or TLS ports alone do not name it)."""
    if not args.stats_root or args.stats_logging_interval == 0:
        return None
    router_name = str(ports[0]) if ports else "0"
    return StatsFiles(Path(args.stats_root), stat_prefix(args.service_name, router_name))


def _delete_stream(
    args: argparse.Namespace, ports: Sequence[int], default_route: bytes
) -> DeleteStreamSettings | None:
    if not args.async_dir or args.asynclog_disable:
        return None
    region = default_route.decode().strip("/").split("/")[0]
    names = WriterNames(
        service=args.service_name, router=str(ports[0]) if ports else "0", region=region
    )
    return DeleteStreamSettings(
        args.async_dir,
        version2=args.use_asynclog_version2,
        names=names,
        replay_rate=args.asynclog_replay_rate,
    )


def main_replay(argv: Sequence[str]) -> int:
    """`mcrouter-trio replay DIR`: send the spooled deletes now; 0 if none is left."""
    parser = argparse.ArgumentParser(
        prog="mcrouter-trio replay",
        description="Send the deletes spooled under DIR (-a/--async-dir) to their servers, "
        "oldest first, recording progress as the proxy's replayer does, and report "
        "what was sent and what is left (exit status 1 if some are left).",
    )
    parser.add_argument("dir", metavar="DIR")
    parser.add_argument(
        "-f",
        "--config-file",
        metavar="FILE",
        help="take the servers' settings (TLS, timeouts) from this config",
    )
    parser.add_argument("--rate", type=_count, default=0, metavar="N", help="deletes/s at most")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    servers: frozenset[ServerSpec] = frozenset()
    if args.config_file:
        try:
            config = load_config_file(
                args.config_file, host_id=local_host_id(), local_addresses=local_addresses_or_none()
            )
        except (ConfigError, OSError) as exc:
            print(config_failure(exc), file=sys.stderr)
            return EXIT_BAD_CONFIG
        servers = frozenset(s for pool in config.pools.values() for s in pool.servers)
    if not os.path.isdir(args.dir):
        print(f"mcrouter-trio: no spool directory {args.dir}", file=sys.stderr)
        return EXIT_CANNOT_START
    report = trio.run(replay_spool, Path(args.dir), servers, args.rate)
    for destination, count in sorted(report.sent.items()):
        print(f"{destination}: {count} deletes replayed")
    for destination, count in sorted(report.pending.items()):
        print(f"{destination}: {count} deletes left (server unavailable or failing)")
    if report.bad_lines:
        print(f"{report.bad_lines} spool lines skipped (not deletes)")
    total = sum(report.sent.values())
    left = sum(report.pending.values())
    print(f"replayed {total}, left {left}")
    return 1 if left else 0


def main_route(argv: Sequence[str]) -> int:
    """`mcrouter-trio route -f CONFIG [--op get] KEY...`: where each key is routed."""
    parser = argparse.ArgumentParser(
        prog="mcrouter-trio route",
        description="Print the servers a request for each KEY reaches (as "
        "`get __mcrouter__.route(op,key)` answers), with every server up. A KEY "
        'may be a request in JSON, as mcrouter takes it: \'{"key":"k","value":"v"}\'.',
    )
    parser.add_argument("-f", "--config-file", metavar="FILE", required=True)
    parser.add_argument("--op", default="get", choices=sorted(ROUTABLE_OPS))
    parser.add_argument("-R", "--route-prefix", default="/././", metavar="/REGION/CLUSTER/")
    parser.add_argument(
        "--get-bucket",
        action="store_true",
        help="print the bucket each KEY falls in for each bucketized pool a get reaches "
        "(as `get __mcrouter__.get_bucket(key)` answers) instead of the servers",
    )
    parser.add_argument(
        "--num-proxies", type=_workers, default=1, metavar="N", help="as the proxy runs"
    )
    parser.add_argument(
        "--worker",
        type=int,
        default=0,
        metavar="K",
        help="route as worker K of N does (LatestRoute's thread_local_failover)",
    )
    parser.add_argument("keys", nargs="+", metavar="KEY")
    args = parser.parse_args(argv)
    if not 0 <= args.worker < args.num_proxies:
        parser.error(f"--worker {args.worker}: there are {args.num_proxies} workers (0..N-1)")
    try:
        config = load_config_file(
            args.config_file,
            host_id=local_host_id(),
            local_addresses=local_addresses_or_none(),
            num_proxies=args.num_proxies,
        )
    except (ConfigError, OSError) as exc:
        print(config_failure(exc), file=sys.stderr)
        return EXIT_BAD_CONFIG
    tree = config.tree(_normalise_prefix(args.route_prefix))
    status = 0
    for key in args.keys:
        if args.get_bucket:
            rows = key_buckets(tree, key.encode())
            found = [f"bucket {bucket} of keyspace {keyspace}" for _key, bucket, keyspace in rows]
            print(f"{key}: {', '.join(found) if found else '(no bucketized pool)'}")
            continue
        try:
            addresses = route_addresses(
                tree, ROUTABLE_OPS[args.op], key.encode(), lambda _s: False, args.worker
            )
        except AdminError as exc:
            print(f"{key}: ERROR: {exc}")
            status = 1
            continue
        print(f"{key}: {' '.join(addresses) if addresses else '(no route)'}")
    return status


def _reload_plan(args: argparse.Namespace, host_id: int) -> ReloadPlan | None:
    """How this process reloads its config: only a config read from a file reloads."""
    if args.disable_reload_configs:
        return None
    if args.config and args.config.startswith("file:"):
        path = args.config[len("file:") :]
    elif args.config_file and not args.config:
        path = args.config_file
    else:
        return None  # inline JSON: nothing to watch; SIGHUP has nothing new to read
    return ReloadPlan(
        load=partial(load, args, host_id),
        files=(path,),
        digest=files_digest([path]),
        delay=args.reconfiguration_delay_ms / 1000,
    )


def _serve_process(plan: ProxyPlan, supervisor: int | None) -> int:
    """Run one proxy until it is stopped; its exit status."""
    status = 0
    try:
        trio.run(_run, plan, supervisor)
    except* KeyboardInterrupt:
        pass
    except* OSError as group:
        for error in _leaves(group):
            print(f"mcrouter-trio: cannot start: {error}", file=sys.stderr)
        status = EXIT_CANNOT_START
    return status


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _normalise_prefix(prefix: str) -> bytes:
    parts = [part for part in prefix.strip("/").split("/") if part]
    if len(parts) != 2:
        raise SystemExit(f"mcrouter-trio: invalid --route-prefix {prefix!r}: want /region/cluster/")
    return f"/{parts[0]}/{parts[1]}/".encode()


async def _run(plan: ProxyPlan, supervisor: int | None = None) -> None:
    # Handlers first: a signal sent as soon as the port answers must not kill the proxy.
    with trio.open_signal_receiver(*_STOP_SIGNALS, *_OTHER_SIGNALS) as signals:
        await _serve_until_stopped(plan, supervisor, signals)


async def _serve_until_stopped(
    plan: ProxyPlan, supervisor: int | None, signals: AsyncIterator[int]
) -> None:
    config, settings, tls = plan.config, plan.settings, plan.tls
    shutdown = trio.Event()
    plan.admin.status = plan.stats.config
    admin = AdminCommands(plan.admin)
    async with trio.open_nursery() as nursery:

        async def serve_then_stop(task_status: trio.TaskStatus[Proxy]) -> None:
            await serve(
                config,
                settings,
                plan.router_settings,
                stats=plan.stats,
                shutdown=shutdown,
                client_ssl_context_for=tls.client_context_for,
                host_id=plan.host_id,
                worker_index=plan.worker_index,
                admin=admin,
                task_status=task_status,
            )
            # Drained after a signal: stop the signal loop and the file watcher too.
            nursery.cancel_scope.cancel()

        proxy = await nursery.start(serve_then_stop)
        if plan.tls_reload_interval > 0:
            nursery.start_soon(partial(watch_tls_files, tls.holders(), plan.tls_reload_interval))
        if supervisor is not None:
            nursery.start_soon(parent_watch, supervisor, shutdown)
        destinations = proxy.router.ctx.destinations
        if plan.stats.shared is not None:
            nursery.start_soon(publish_stats, plan.stats, destinations)
        first_worker = plan.stats.shared is None or plan.stats.shared.index == 0
        if plan.metrics is not None and first_worker:
            host, port = plan.metrics
            render = renderer(plan.stats, destinations)
            for listener in await nursery.start(serve_metrics, render, host, port):
                host, port = listener.socket.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info("serving metrics at http://%s:%s/metrics", shown, port)
        files = plan.stats_files
        if files is not None and first_worker:
            nursery.start_soon(
                write_stats_files,
                files,
                plan.stats_interval,
                plan.admin.options,
                partial(plan.stats.numbers, destinations),
                lambda: admin.sources_info(proxy.router.tree),
                name="stats files",
            )
        watcher = None
        if plan.reload is not None:
            default_route = plan.router_settings.default_route

            def apply(new: ProxyConfig) -> None:
                proxy.router.swap(new.tree(default_route))

            watcher = ConfigWatcher(
                plan.reload.load,
                apply,
                plan.reload.files,
                plan.stats.config,
                loaded_digest=plan.reload.digest,
                delay=plan.reload.delay,
            )
            watcher.watch_imports(config.imports)
            nursery.start_soon(watcher.run, name="config watcher")
        tls_only = set(settings.ssl_ports) - set(settings.ports)
        for listener in proxy.listeners:
            host, port = listener.socket.getsockname()[:2]
            log.info("listening on %s port %s%s", host, port, " (TLS)" if port in tls_only else "")
        log.info("mcrouter-trio %s routing to %d servers", __version__, len(config.servers))
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if watcher is None:
                    log.info(
                        "received SIGHUP: this config is not reloaded (inline or "
                        "--disable-reload-configs)"
                    )
                else:
                    log.info("received SIGHUP: reloading the config")
                    watcher.request_reload()
            elif signum not in _STOP_SIGNALS:
                log.info("received %s: ignored", name)
            elif shutdown.is_set():
                nursery.cancel_scope.cancel()  # second signal: stop now
                break
            else:
                log.info("received %s: shutting down", name)
                shutdown.set()
