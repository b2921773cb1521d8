"""mcrouter's flags that mean nothing here, or that the proxy does not implement.

An init script written for mcrouter passes flags for machinery this proxy does not
have (fibers, debug fifos, Thrift, ...). Those are accepted and each logs one notice
saying why it has no effect (`NO_EFFECT`). Flags whose absence would change what
clients get (a Unix socket to listen on, errors grouped,
access checks) are refused at start unless given mcrouter's default value
(`UNSUPPORTED`): serving differently from what the script asked for would be worse
than not starting. A flag mcrouter never had is still argparse's error.

The flags the proxy implements are declared in `cli.py` (and `tls/_setup.py`), but
for mcrouter's own options that take mcrouter's toggle syntax (`IMPLEMENTED`,
declared here, read through `_mcrouter_options`).
"""

from __future__ import annotations

import argparse
import logging
from typing import Final

import attrs

log = logging.getLogger("mcrouter_trio")


@attrs.frozen
class McrouterFlag:
    name: str
    """The long flag without its dashes, as mcrouter spells it."""
    toggle: bool = False
    """mcrouter's toggles take no value, or an attached one (`--test-mode=0`)."""
    short: str | None = None

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


def _values(*names: str) -> tuple[McrouterFlag, ...]:
    return tuple(McrouterFlag(name) for name in names)


def _toggles(*names: str) -> tuple[McrouterFlag, ...]:
    return tuple(McrouterFlag(name, toggle=True) for name in names)


#: Why each group of flags has no effect here, and the flags.
NO_EFFECT: Final[dict[str, tuple[McrouterFlag, ...]]] = {
    "mcrouter's threads and fibers: each --num-proxies worker here is a process "
    "running one event loop": (
        *_values(
            "fibers-max-pool-size",
            "fibers-stack-size",
            "fibers-record-stack-size-every",
            "fibers-pool-resize-period-ms",
            "max-no-flush-event-loops",
            "num-listening-sockets",
            "core-multiplier",
            "core-multiplier-threshold",
            "proxy-cpu-interval-s",
            "server-load-interval-ms",
        ),
        *_toggles(
            "disable-fibers-use-guard-pages",
            "use-mux-io-thread-pool",
            "remote-thread",
            "thread-affinity",
            "force-same-thread",
            "jemalloc-nodump-buffers",
        ),
    ),
    "services inside Meta (carbon, QoS marking, Axon, the service router, pool stats)": (
        *_values(
            "carbon-router-name",
            "default-qos-class",
            "default-qos-path",
            "thrift-compression-threshold",
            "xdp-tx-truncate-bytes",
            "external-carbon-connection-log-rate-per-hour",
            "external-carbon-connection-log-max-burst",
            "external-carbon-connection-log-sample-rate",
            "pool-stats-config-file",
        ),
        *_toggles(
            "enable-qos",
            "enable-axonlog",
            "enable-service-router",
            "external-carbon-connection-logging-enabled",
            "delete-carbon-instance-upon-init-failure",
        ),
    ),
    "debugging files (mcpiper's fifos, config dumps) are not written; "
    "`get __mcrouter__.preprocessed_config` answers the config serving": (
        *_values(
            "debug-fifo-root",
            "config-dump-root",
            "max-dumped-config-age",
            "max_preprocessed_config_history",
        ),
        *_toggles("dump_preprocessed_config_enabled"),
    ),
    "mcrouter's own logging and sampling: the proxy logs through -L and -v": (
        *_values(
            "logging-rtt-outlier-threshold-us",
            "stats-async-queue-length",
            "collect-rxmit-stats-every-hz",
            "rxmit-latency-deviation-us",
            "min-rxmit-reconnect-threshold",
            "max-rxmit-reconnect-threshold",
        ),
        *_toggles("disable-failure-logging", "test-mode"),
    ),
    "the config is reloaded on file system events, --reconfiguration-delay-ms after a change": (
        *_values(
            "file-observer-poll-period-ms",
            "file-observer-sleep-before-update-ms",
            "reconfiguration-jitter-ms",
            "post-reconfiguration-delay-ms",
        ),
        *_toggles("constantly-reload-configs"),
    ),
    "TCP tuning left to the kernel's settings": (
        McrouterFlag("keepalive-count", short="K"),
        McrouterFlag("keepalive-interval", short="i"),
        McrouterFlag("keepalive-idle", short="I"),
        *_values(
            "tcp-listen-backlog",
            "tcp-rto-min",
            "tcp-zero-copy-threshold",
            "tfo-queue-size",
            "reset-inactive-connection-interval",
            "connect-timeout-retries",
        ),
        *_toggles("enable-ssl-tfo", "retain-source-ip"),
    ),
    "queue limits the proxy does not have: it queues per server up to "
    "--target-max-pending-requests": (
        *_values(
            "target-max-inflight-requests",
            "proxy-max-inflight-requests",
            "proxy-max-inflight-shadow-requests",
            "proxy-max-throttled-requests",
            "waiting-request-timeout-ms",
            "max-shadow-token-map-size",
        ),
        *_toggles("disable-request-deadline-check"),
    ),
    "TLS extras not implemented: session tickets from seed files, kernel TLS, "
    "service identities; sessions are cached by the TLS library": (
        *_values(
            "tls-ticket-key-seed-path",
            "server-ssl-service-identity",
            "ssl-service-identity",
            "additional-ssl-service-identities",
        ),
        *_toggles(
            "ssl-use-ktls12",
            "ssl-service-identity-authorization-log",
            "ssl-connection-cache",
            "ssl-handshake-offload",
        ),
    ),
    "values and requests are forwarded as they are (no compression, no reserialising)": (
        _toggles("enable-compression", "enable-server-compression", "enable-pass-through-mode")
    ),
    "no shard splits or runtime variables here": (
        *_values("runtime-vars-file"),
        *_toggles("disable-shard-split-route", "disable-send-to-main-shard-split"),
    ),
    "deprecated: mcrouter ignores it too": _toggles("gets", "skip-sanity-checks"),
}


#: mcrouter's options the proxy implements, with their help: read as mcrouter reads
#: them (`mcrouter_option_values`), so a toggle takes `--flag`, `--flag=1` or `--flag=0`.
IMPLEMENTED: Final[tuple[tuple[McrouterFlag, str], ...]] = (
    (
        McrouterFlag("allow-only-gets", toggle=True),
        "testing: route only reads (get, gets, gat, gats, mg, me); answer every other "
        "command with its default reply (NOT_STORED, NOT_FOUND)",
    ),
    (
        McrouterFlag("enable-logging-route", toggle=True),
        "put every route behind a LoggingRoute (requests and replies logged at debug)",
    ),
    (
        McrouterFlag("target-max-shadow-requests"),
        "shadow copies in flight per worker before more are dropped (default 1000; 0: no limit)",
    ),
)


@attrs.frozen
class Unsupported:
    flag: McrouterFlag
    defaults: frozenset[str]
    """The values meaning what mcrouter does without the flag: accepted, silently."""
    reason: str


def _unsupported(name: str, default: str, reason: str) -> Unsupported:
    toggle = default == "false"
    defaults = {"0", "false"} if toggle else {default}
    return Unsupported(McrouterFlag(name, toggle=toggle), frozenset(defaults), reason)


_LISTEN = "listen with -p, --ssl-port or --listen-sock-fd"
_ENFORCED = "access checks are not implemented: the proxy would serve every client"
UNSUPPORTED: Final = (
    _unsupported("unix-domain-sock", "", f"Unix sockets are not implemented; {_LISTEN}"),
    _unsupported("use-thrift", "false", "the proxy speaks memcached's protocols only"),
    _unsupported("thrift-port", "0", "the proxy speaks memcached's protocols only"),
    _unsupported("thrift-listen-sock-fd", "-1", "the proxy speaks memcached's protocols only"),
    _unsupported(
        "group-remote-errors", "false", "not implemented: error replies are passed on as they are"
    ),
    _unsupported(
        "cross-region-timeout-ms",
        "0",
        "timeouts by region are not implemented; set server_timeout on pools",
    ),
    _unsupported(
        "cross-cluster-timeout-ms",
        "0",
        "timeouts by cluster are not implemented; set server_timeout on pools",
    ),
    _unsupported(
        "within-cluster-timeout-ms",
        "0",
        "timeouts by cluster are not implemented; set server_timeout on pools",
    ),
    _unsupported("acl-checker-enable", "false", _ENFORCED),
    _unsupported("acl-checker-enforce", "false", _ENFORCED),
    _unsupported("prefix-acl-checker-enable", "false", _ENFORCED),
    _unsupported("key-client-binding-enable", "false", _ENFORCED),
    _unsupported("key-client-binding-nonlookaside-enable", "false", _ENFORCED),
    _unsupported("key-client-binding-nonlookaside-verifier", "ucache", _ENFORCED),
    _unsupported("ssl-service-identity-authorization-enforce", "false", _ENFORCED),
)


def add_mcrouter_flags(parser: argparse.ArgumentParser) -> None:
    """Accept mcrouter's flags listed above (absent from the namespace unless given)."""
    flags = [(flag, argparse.SUPPRESS) for group in NO_EFFECT.values() for flag in group]
    flags += [(unsupported.flag, argparse.SUPPRESS) for unsupported in UNSUPPORTED]
    flags += IMPLEMENTED
    implemented = {flag for flag, _help in IMPLEMENTED}
    for flag, help_text in flags:
        names = [f"--{flag.name}", *([f"-{flag.short}"] if flag.short else [])]
        if flag.toggle:
            # Bare, the value is "": the flag flips mcrouter's default (see _mcrouter_options).
            parser.add_argument(
                *names, dest=flag.dest, nargs="?", const="", default=argparse.SUPPRESS,
                metavar="0|1", help=help_text,
            )  # fmt: skip
        else:
            # The implemented ones are counts, checked here; the others are never read.
            parser.add_argument(
                *names, dest=flag.dest, default=argparse.SUPPRESS, metavar="VALUE",
                help=help_text, type=_count if flag in implemented else str,
            )  # fmt: skip


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}")
    return value


def check_mcrouter_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse an unsupported flag given with a value other than mcrouter's default."""
    for unsupported in UNSUPPORTED:
        value = getattr(args, unsupported.flag.dest, None)
        if value is not None and value.lower() not in unsupported.defaults:
            parser.error(f"--{unsupported.flag.name}: {unsupported.reason}")


def log_ignored_flags(args: argparse.Namespace) -> None:
    """One notice per mcrouter flag given that has no effect here."""
    for reason, flags in NO_EFFECT.items():
        for flag in flags:
            if hasattr(args, flag.dest):
                log.info("--%s: accepted for mcrouter's sake, no effect: %s", flag.name, reason)
