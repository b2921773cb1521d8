"""The `mcrouter-trio` command: mcrouter's flag names where mcrouter has them."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

import attrs
import trio

from mcrouter_trio import __version__
from mcrouter_trio.config import ConfigError, ProxyConfig, load_config, load_config_file
from mcrouter_trio.config._prefixes import parse_config_params
from mcrouter_trio.downstream._router import RouterSettings
from mcrouter_trio.downstream._server import Proxy, ServerSettings, serve
from mcrouter_trio.ops._board import SharedStats, StatsBoard
from mcrouter_trio.ops._host import local_host_id
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.ops._workers import parent_watch, publish_stats, run_workers
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

log = logging.getLogger("mcrouter_trio")

#: Used when neither -f nor --config-str is given: memcached on its default port.
DEFAULT_CONFIG: Final = json.dumps(
    {"pools": {"default": {"servers": ["127.0.0.1:11211"]}}, "route": "PoolRoute|default"}
)
EXIT_BAD_CONFIG: Final = 3
EXIT_CANNOT_START: Final = 2
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


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError("must be a number of seconds, 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcrouter-trio",
        description="A memcached protocol router with mcrouter's config and semantics.",
        epilog="Sub-command: `mcrouter-trio certs init DIR` writes a CA and edge-pair certs.",
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
    add("-f", "--config-file", metavar="FILE", help="mcrouter JSON config file")
    add("--config-str", metavar="JSON", help="the config as a JSON string")
    add("--config", metavar="file:PATH|JSON", help="mcrouter's combined form of the two above")
    add(
        "-t",
        "--server-timeout",
        type=_positive_ms,
        default=1000,
        metavar="MS",
        help="reply timeout for servers whose pool sets no server_timeout (default 1000)",
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
        default=1024 * 1024,
        metavar="BYTES",
        help="largest value accepted from clients (default 1048576)",
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
        "--max-conns",
        type=_count,
        default=0,
        metavar="N",
        help="client connections accepted at once; 0 = no limit (default)",
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
    add("-v", "--verbosity", action="count", default=0, help="more logging (-v, -vv)")
    add("-V", "--version", action="version", version=f"mcrouter-trio {__version__}")
    add_tls_arguments(parser, _ports)
    return parser


def load(args: argparse.Namespace, host_id: int) -> ProxyConfig:
    """The config from -f / --config / --config-str, or the default one.

    `host_id` is this host's id (LatestRoute's per-host choice of servers).
    """
    options: dict[str, Any] = {
        "default_timeout_ms": args.server_timeout,
        "host_id": host_id,
        "default_route": args.route_prefix,
        "config_params": args.config_params,
        "num_proxies": args.num_proxies,
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["certs"]:
        from mcrouter_trio.tls.certs import main_certs

        return main_certs(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    check_tls_arguments(parser, args)
    _setup_logging(args)
    default_route = _normalise_prefix(args.route_prefix)
    host_id = local_host_id()
    try:
        config = load(args, host_id)
    except (ConfigError, OSError) as exc:
        print(f"mcrouter-trio: invalid config: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.validate_config == "exit":
        print("config is valid")
        return 0
    ports = tuple(port for group in args.port for port in group)
    if not ports and not ssl_ports(args):
        parser.error("at least one -p PORT or --ssl-port PORT is required")
    for warning in tls_warnings(args):
        log.warning("%s", warning)
    try:
        tls = load_tls(args)
    except TLSStartupError as exc:
        print(f"mcrouter-trio: cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    settings = ServerSettings(
        ports=ports,
        listen_addresses=tuple(a for a in args.listen_addresses.split(",") if a),
        max_value_size=args.max_value_size,
        max_line_length=args.max_line_length,
        max_outstanding=args.max_client_outstanding_reqs,
        max_conns=args.max_conns,
        max_pending_per_server=args.target_max_pending_requests,
        batch_gets=_BATCH_GETS[args.batch_gets],
        grace_period=args.graceful_shutdown_timeout,
        ssl_ports=ssl_ports(args),
        server_ssl_context=tls.server_context(),
        handshake_timeout=args.ssl_handshake_timeout,
    )
    router_settings = RouterSettings(
        default_route=default_route,
        enable_flush_cmd=args.enable_flush_cmd,
        send_invalid_route_to_default=args.send_invalid_route_to_default,
    )
    plan = ProxyPlan(
        config=config,
        settings=attrs.evolve(settings, reuse_port=args.num_proxies > 1),
        router_settings=router_settings,
        stats=ProxyStats(commandargs=" ".join(["mcrouter-trio", *argv])),
        tls=tls,
        tls_reload_interval=args.tls_reload_interval,
        host_id=host_id,
    )
    if args.num_proxies == 1:
        return _serve_process(plan, None)
    supervisor = os.getpid()
    servers = {*config.servers, *(s for pool in config.pools.values() for s in pool.servers)}
    board = StatsBoard.for_servers(args.num_proxies, len(servers))

    def run_worker(index: int) -> int:
        plan.stats.shared = SharedStats(board, index)
        return _serve_process(plan, supervisor)

    return run_workers(args.num_proxies, run_worker)


@attrs.frozen(kw_only=True)
class ProxyPlan:
    """Everything one proxy process needs, decided before any worker starts."""

    config: ProxyConfig
    settings: ServerSettings
    router_settings: RouterSettings
    stats: ProxyStats
    tls: TLSSetup
    tls_reload_interval: float
    host_id: int


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
    config, settings, tls = plan.config, plan.settings, plan.tls
    shutdown = trio.Event()
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
                task_status=task_status,
            )
            # Drained after a signal: stop the signal loop and the file watcher too.
            nursery.cancel_scope.cancel()

        proxy = await nursery.start(serve_then_stop)
        if plan.tls_reload_interval > 0:
            nursery.start_soon(partial(watch_tls_files, tls.holders(), plan.tls_reload_interval))
        if supervisor is not None:
            nursery.start_soon(parent_watch, supervisor, shutdown)
        if plan.stats.shared is not None:
            nursery.start_soon(publish_stats, plan.stats, proxy.router.ctx.destinations)
        tls_only = set(settings.ssl_ports) - set(settings.ports)
        for listener in proxy.listeners:
            host, port = listener.socket.getsockname()[:2]
            log.info("listening on %s port %s%s", host, port, " (TLS)" if port in tls_only else "")
        log.info("mcrouter-trio %s routing to %d servers", __version__, len(config.servers))
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if shutdown.is_set():
                    nursery.cancel_scope.cancel()  # second signal: stop now
                    break
                log.info("received %s: shutting down", signal.Signals(signum).name)
                shutdown.set()
