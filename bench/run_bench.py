#!/usr/bin/env python3
"""Throughput / CPU benchmark: memcached direct vs twemproxy vs mcrouter-trio, plain and TLS.

Every target gets the same memcaslap load (see ``LoadSpec``). For each target we
record ops/s and the CPU time consumed per operation by the proxy processes and
by the memcached behind them, read from ``/proc/<pid>/stat`` right before and
right after the measured run.

Targets are ``Scenario`` objects: each knows how to start its own processes
(always a fresh memcached, so every target starts from the same empty cache) and
which pids are "proxy" and which are "backend". Besides the plain targets (one of
them mcrouter-trio with a production-shaped route tree, ``bench/prod_route.json``)
there are three TLS ones: twemproxy -> stunnel -> stunnel -> memcached (the
classic encrypted edge), mcrouter-trio -> memcached -Z, and mcrouter-trio ->
mcrouter-trio -> memcached (a native TLS edge pair).

Usage: ``python bench/run_bench.py [--duration 10] [--proxy-cmd "mcrouter-trio"]``.
The Markdown table goes to stdout, progress to stderr, JSON to
``bench/results/latest.json``. Exit status: 0 all targets measured (or skipped
because a tool lacks a feature), 1 some target failed (still reported), 2
missing tools / bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

LOOPBACK = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "results" / "latest.json"
#: The route tree of the `mcrouter-trio-prod` target, over pools A and B.
PROD_ROUTE = BENCH_DIR / "prod_route.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Debian package that provides each external tool, for the "missing tool" hint.
APT_PACKAGES = {
    "memcached": "memcached",
    "memcaslap": "libmemcached-tools",
    "nutcracker": "nutcracker",
    "stunnel": "stunnel4",
}
# Debian installs nutcracker in /usr/sbin, which is not on a normal user's PATH.
EXTRA_TOOL_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

RESULT_LINE = re.compile(r"Run time:\s*([\d.]+)s\s+Ops:\s*(\d+)\s+TPS:\s*(\d+)")
COUNTER_LINE = re.compile(r"^(cmd_get|cmd_set|get_misses):\s*(\d+)\s*$", re.MULTILINE)


class BenchError(Exception):
    """A scenario failed; the run reports it and goes on with the next one.

    ``log`` holds the tail of the failing process's output for the JSON report,
    while the message stays short so it fits in the Markdown table.
    """

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


class StartError(BenchError):
    """A scenario's processes could not be brought up."""


class LoadError(BenchError):
    """The load generator did not produce a usable result."""


class SkipScenario(BenchError):
    """The scenario cannot run on this machine (e.g. memcached built without TLS)."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LoadSpec:
    """The load applied identically to every target."""

    duration_s: int = 10
    warmup_s: int = 2
    connections: int = 32
    threads: int = 2
    key_bytes: int = 32
    value_bytes: int = 100
    get_fraction: float = 0.9

    def memcaslap_config(self) -> str:
        """memcaslap -F file: key/value/cmd sections (cmd type 0 = set, 1 = get)."""
        set_fraction = round(1.0 - self.get_fraction, 6)
        return (
            f"key\n{self.key_bytes} {self.key_bytes} 1\n"
            f"value\n{self.value_bytes} {self.value_bytes} 1\n"
            f"cmd\n0 {set_fraction}\n1 {self.get_fraction}\n"
        )

    def describe(self) -> str:
        get_pct = round(self.get_fraction * 100)
        return (
            f"memcaslap, {self.connections} connections / {self.threads} threads, "
            f"{self.key_bytes}-byte keys, {self.value_bytes}-byte values, "
            f"{get_pct} % get / {100 - get_pct} % set, {self.duration_s} s per target "
            f"after a {self.warmup_s} s warm-up"
        )


@dataclass(frozen=True)
class Tools:
    memcached: str
    memcaslap: str
    nutcracker: str
    proxy_cmd: tuple[str, ...]
    # Optional: only the tls-stunnel scenario needs it, and it is skipped without.
    stunnel: str | None = None


def find_tool(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for directory in EXTRA_TOOL_DIRS:
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def default_proxy_cmd() -> tuple[str, ...]:
    # Fall back to the module when the console script is not installed (e.g. no
    # `pip install -e .` yet) so the bench still works from a plain checkout.
    script = shutil.which("mcrouter-trio")
    return (script,) if script else (sys.executable, "-m", "mcrouter_trio")


def resolve_tools(proxy_cmd: str | None) -> Tools:
    """Locate the external tools, or exit 2 with the apt packages to install."""
    found = {
        "memcached": find_tool("memcached"),
        "memcaslap": find_tool("memcaslap", "memaslap"),
        "nutcracker": find_tool("nutcracker"),
    }
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        packages = " ".join(sorted({APT_PACKAGES[name] for name in missing}))
        print(
            f"error: required tool(s) not found: {', '.join(missing)}\n"
            f"install with: sudo apt-get install {packages}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    command = tuple(shlex.split(proxy_cmd)) if proxy_cmd else default_proxy_cmd()
    return Tools(
        memcached=str(found["memcached"]),
        memcaslap=str(found["memcaslap"]),
        nutcracker=str(found["nutcracker"]),
        proxy_cmd=command,
        stunnel=find_tool("stunnel4", "stunnel"),
    )


# --------------------------------------------------------------------------- /proc CPU


def _read_stat(pid: int) -> tuple[int, int] | None:
    """Return (ppid, cpu ticks) of a process, or None if it vanished."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces or ')', so split after the LAST ')'.
    # fields[0] is stat field 3 (state); utime/stime/cutime/cstime are 14..17.
    fields = text[text.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    ticks = sum(int(value) for value in fields[11:15])
    return ppid, ticks


def _all_stats() -> dict[int, tuple[int, int]]:
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    return stats


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """CPU seconds (user+system) of the given processes and all their descendants.

    Descendants matter when the proxy command is a wrapper (shell, launcher) or
    forks workers; cutime/cstime keep the CPU of descendants that already exited.
    For a single process without children this is exactly utime+stime.
    """
    stats = _all_stats()
    return sum(stats[pid][1] for pid in _tree(roots, stats)) / CLK_TCK


def _tree(roots: Iterable[int], stats: dict[int, tuple[int, int]]) -> set[int]:
    """The live processes among `roots` and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    return seen


def tree_run_queue_wait_seconds(roots: Iterable[int]) -> float:
    """Seconds the threads of these processes (and descendants) were runnable but
    waiting for a CPU: the second field of ``/proc/<pid>/task/<tid>/schedstat``."""
    waited_ns = 0
    for pid in _tree(roots, _all_stats()):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                schedstat = Path(f"/proc/{pid}/task/{tid}/schedstat")
                with contextlib.suppress(OSError, IndexError, ValueError):
                    waited_ns += int(schedstat.read_text().split()[1])
    return waited_ns / 1e9


def idle_cpu_seconds() -> float:
    """Idle time of all CPUs together (idle + iowait in the first line of /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / CLK_TCK


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    # Binding to port 0 lets the kernel pick a free port; there is a small race
    # until the server binds it, which a clear "failed to start" error covers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def last_line(text: str) -> str:
    """The last non-blank line: for a Python traceback, the exception itself."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


class Supervisor:
    """Owns started processes; ``stop_all`` always tears them down."""

    def __init__(self, workdir: Path, start_timeout_s: float) -> None:
        self.workdir = workdir
        self.start_timeout_s = start_timeout_s
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        with self.log_path(name).open("wb") as log:
            # Own process group: Ctrl-C in the terminal reaches only us, so we decide
            # the teardown order, and killpg also reaches a wrapper's children. Not a
            # new session: with sched autogroup each session gets an equal CPU share,
            # which would skew how client, proxy and memcached share the CPUs.
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        self._procs.append((name, proc))
        return proc

    def log_tail(self, name: str, limit: int = 4000) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace").strip()
        except OSError:
            return ""
        return text[-limit:]

    def start_server(self, name: str, argv: Sequence[str], port: int) -> int:
        """Spawn a server and wait until it accepts TCP connections on ``port``."""
        try:
            proc = self.spawn(name, argv)
        except OSError as exc:
            raise StartError(f"{name}: cannot execute {argv[0]!r}: {exc}") from exc
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = self.log_tail(name)
                message = f"{name} exited with status {proc.returncode}: {last_line(log)}"
                raise StartError(message, log)
            if accepts_connections(port):
                return proc.pid
            time.sleep(0.05)
        log = self.log_tail(name)
        raise StartError(
            f"{name} did not accept connections on port {port} within "
            f"{self.start_timeout_s:g} s: {last_line(log)}",
            log,
        )

    def stop_all(self) -> None:
        # Reverse order: clients and proxies go before the memcached behind them.
        while self._procs:
            _, proc = self._procs.pop()
            _stop(proc)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
    if proc.poll() is not None:
        # Exited and reaped long ago (e.g. a finished memcaslap): its pid may have
        # been reused, so signalling its old group could hit a stranger.
        return
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    # SIGKILL the group even if the leader just exited: a wrapper (sh -c ...) may
    # leave children behind, and they keep the group id alive and unambiguous.
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Deployment:
    """What a started scenario exposes to the measurement."""

    port: int
    proxy_pids: tuple[int, ...]
    backend_pids: tuple[int, ...]
    commands: tuple[tuple[str, ...], ...]
    #: Standby memcached ports the route must not send any of the load to.
    standby_ports: tuple[int, ...] = ()


class Stage:
    """Helpers handed to ``Scenario.start``; everything started here is supervised."""

    def __init__(self, supervisor: Supervisor, tools: Tools) -> None:
        self.supervisor = supervisor
        self.tools = tools
        self.workdir = supervisor.workdir
        self.commands: list[tuple[str, ...]] = []

    def start_server(self, name: str, argv: Sequence[str], port: int) -> int:
        self.commands.append(tuple(argv))
        return self.supervisor.start_server(name, argv, port)

    def start_memcached(self, extra_args: Sequence[str] = ()) -> tuple[int, int]:
        """Start a fresh memcached; returns (port, pid)."""
        port = free_port()
        # -U 0: no UDP listener; -t 4 is memcached's default, stated for clarity.
        argv = [self.tools.memcached, "-l", LOOPBACK, "-p", str(port), "-U", "0"]
        argv += ["-m", "256", "-t", "4", *extra_args]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root otherwise
        return port, self.start_server("memcached", argv, port)


class Scenario(Protocol):
    """A benchmark target. Read-only attributes so frozen dataclasses qualify."""

    @property
    def key(self) -> str:
        """CLI / JSON identifier."""

    @property
    def title(self) -> str:
        """Label in the table."""

    @property
    def compare_with(self) -> tuple[str, ...]:
        """Keys of the baseline scenarios for the ratio table, one row each."""

    def start(self, stage: Stage) -> Deployment: ...


@dataclass(frozen=True)
class MemcachedDirect:
    key: str = "memcached"
    title: str = "memcached direct"
    compare_with: tuple[str, ...] = ()

    def start(self, stage: Stage) -> Deployment:
        port, pid = stage.start_memcached()
        # No proxy: the "proxy" CPU column shows memcached's own cost.
        return Deployment(port, (pid,), (pid,), tuple(stage.commands))


@dataclass(frozen=True)
class Twemproxy:
    key: str = "twemproxy"
    title: str = "twemproxy"
    compare_with: tuple[str, ...] = ()

    def start(self, stage: Stage) -> Deployment:
        mc_port, mc_pid = stage.start_memcached()
        port, pid = start_nutcracker(stage, mc_port)
        return Deployment(port, (pid,), (mc_pid,), tuple(stage.commands))


def start_nutcracker(stage: Stage, server_port: int) -> tuple[int, int]:
    """Start twemproxy in front of one memcached-speaking port; returns (port, pid)."""
    port, stats_port = free_port(), free_port()
    conf = stage.workdir / "twemproxy.yml"
    conf.write_text(
        "bench:\n"
        f"  listen: {LOOPBACK}:{port}\n"
        "  hash: fnv1a_64\n"
        "  distribution: ketama\n"
        "  timeout: 1000\n"
        "  servers:\n"
        f"    - {LOOPBACK}:{server_port}:1\n"
    )
    check_nutcracker_config(stage.tools.nutcracker, conf)
    log = stage.workdir / "nutcracker-internal.log"
    argv = [stage.tools.nutcracker, "-c", str(conf), "-s", str(stats_port)]
    # -a keeps the stats listener on loopback; -o avoids /var/log/nutcracker.
    argv += ["-a", LOOPBACK, "-o", str(log)]
    return port, stage.start_server("nutcracker", argv, port)


def check_nutcracker_config(nutcracker: str, conf: Path) -> None:
    check = subprocess.run(
        [nutcracker, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=10
    )
    if check.returncode != 0:
        output = (check.stdout + check.stderr).strip()
        raise StartError(f"nutcracker rejected {conf.name}: {output}")


@dataclass(frozen=True)
class McrouterTrio:
    key: str = "mcrouter-trio"
    title: str = "mcrouter-trio"
    compare_with: tuple[str, ...] = ("twemproxy",)
    #: `--num-proxies`: worker processes sharing the port (their CPU is counted too).
    workers: int = 1

    def start(self, stage: Stage) -> Deployment:
        mc_port, mc_pid = stage.start_memcached()
        config = {"pools": {"A": plain_pool(mc_port)}, "route": "PoolRoute|A"}
        port, pid = start_mcrouter_trio(stage, config, self.workers)
        return Deployment(port, (pid,), (mc_pid,), tuple(stage.commands))


@dataclass(frozen=True)
class McrouterTrioProd:
    """mcrouter-trio with the route tree a production config has (`bench/prod_route.json`).

    Pool A is the memcached the load should reach, as in `mcrouter-trio`; pool B is a
    standby memcached that only failover (or a key prefix the load never uses) would
    reach, so it must see none of the load: the measured cost is that of walking the
    tree, not of extra traffic.
    """

    key: str = "mcrouter-trio-prod"
    title: str = "mcrouter-trio, production-shaped route"
    compare_with: tuple[str, ...] = ("mcrouter-trio", "twemproxy")
    route_file: Path = PROD_ROUTE

    def start(self, stage: Stage) -> Deployment:
        route = read_route(self.route_file)
        a_port, a_pid = stage.start_memcached()
        b_port, b_pid = stage.start_memcached()
        pools = {"A": plain_pool(a_port), "B": plain_pool(b_port)}
        port, pid = start_mcrouter_trio(stage, {"pools": pools, "route": route}, workers=1)
        commands = tuple(stage.commands)
        return Deployment(port, (pid,), (a_pid, b_pid), commands, standby_ports=(b_port,))


@dataclass(frozen=True)
class McrouterTrioAllSync:
    """mcrouter-trio replicating every request to two pools (`AllSyncRoute`), one memcached each.

    Every request reaches both memcached servers and the client gets the worse reply,
    so the proxy sends, frames and compares two replies per request.
    """

    key: str = "mcrouter-trio-allsync"
    title: str = "mcrouter-trio, AllSyncRoute over two pools"
    compare_with: tuple[str, ...] = ("mcrouter-trio", "twemproxy")

    def start(self, stage: Stage) -> Deployment:
        a_port, a_pid = stage.start_memcached()
        b_port, b_pid = stage.start_memcached()
        pools = {"A": plain_pool(a_port), "B": plain_pool(b_port)}
        route = {"type": "AllSyncRoute", "children": ["PoolRoute|A", "PoolRoute|B"]}
        port, pid = start_mcrouter_trio(stage, {"pools": pools, "route": route}, workers=1)
        return Deployment(port, (pid,), (a_pid, b_pid), tuple(stage.commands))


def read_route(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StartError(f"cannot read the route from {path}: {exc}") from exc


def plain_pool(port: int) -> dict[str, Any]:
    return {"servers": [f"{LOOPBACK}:{port}"]}


def start_mcrouter_trio(stage: Stage, config: dict[str, Any], workers: int) -> tuple[int, int]:
    """Start one mcrouter-trio (with `workers` processes) on `config`; returns (port, pid)."""
    port = free_port()
    conf = write_json_config(stage.workdir / "mcrouter-trio.json", config)
    argv = [*proxy_argv(stage.tools.proxy_cmd, port, conf), *worker_args(workers)]
    return port, stage.start_server("mcrouter-trio", argv, port)


def worker_args(workers: int) -> list[str]:
    return [] if workers == 1 else ["--num-proxies", str(workers)]


def proxy_argv(command: Sequence[str], port: int, conf: Path) -> list[str]:
    """Append the standard arguments unless the command places {port}/{config} itself."""
    if any("{port}" in part or "{config}" in part for part in command):
        return [part.format(port=port, config=conf) for part in command]
    # mcrouter-trio listens on every interface by default; keep it on loopback.
    return [*command, "-p", str(port), "-f", str(conf), "--listen-addresses", LOOPBACK]


def write_json_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- TLS scenarios
#
# All three TLS targets use the same private CA and certificates (EC P-256, made once per
# run by `mcrouter-trio certs init`), mutual TLS on every encrypted hop, server certificates
# verified against the CA and the name "localhost" on the dialing side, and whatever TLS
# version both ends prefer (1.3 everywhere here). Each encrypted hop carries one long-lived
# connection: twemproxy opens one to its server, mcrouter-trio one per destination.

TLS_SERVER_NAME = "localhost"


@dataclass(frozen=True)
class CertPaths:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def ensure_certs(directory: Path) -> CertPaths:
    """The run's CA, server and client certificates; created on first use."""
    certs = CertPaths(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    if all(path.exists() for path in vars(certs).values()):
        return certs
    # The module from this checkout (cwd), not --proxy-cmd, which may be a wrapper or template.
    argv = [sys.executable, "-m", "mcrouter_trio", "certs", "init", str(directory), "--force"]
    done = subprocess.run(argv, cwd=REPO_DIR, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise StartError(f"mcrouter-trio certs init failed: {last_line(output)}", output)
    return certs


@cache
def memcached_supports_tls(memcached: str) -> bool:
    """Whether this memcached binary was built with TLS (``-Z``), from its ``-h`` text."""
    try:
        done = subprocess.run([memcached, "-h"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--enable-ssl" in done.stdout + done.stderr


def start_memcached_tls(stage: Stage, certs: CertPaths) -> tuple[int, int]:
    """memcached -Z with mutual TLS (ssl_verify_mode=2); returns (port, pid)."""
    if not memcached_supports_tls(stage.tools.memcached):
        raise SkipScenario("memcached built without TLS")
    options = ",".join(
        [
            f"ssl_chain_cert={certs.server_cert}",
            f"ssl_key={certs.server_key}",
            f"ssl_ca_cert={certs.ca}",
            "ssl_verify_mode=2",
            # With client verification on, memcached 1.6.18 aborts resumed handshakes unless
            # its session cache is enabled; the proxy resumes sessions when it reconnects.
            "ssl_session_cache",
        ]
    )
    return stage.start_memcached(["-Z", "-o", options])


def client_tls_args(certs: CertPaths) -> list[str]:
    """mcrouter-trio's upstream TLS flags: client certificate, verify the server."""
    return [
        "--pem-cert-path", str(certs.client_cert),
        "--pem-key-path", str(certs.client_key),
        "--pem-ca-path", str(certs.ca),
        "--ssl-verify-peers",
    ]  # fmt: skip


def server_tls_args(certs: CertPaths) -> list[str]:
    """mcrouter-trio's listener TLS flags, mutual TLS."""
    return [
        "--tls-cert", str(certs.server_cert),
        "--tls-key", str(certs.server_key),
        "--tls-ca", str(certs.ca),
        "--ssl-require-peer-certs",
    ]  # fmt: skip


def tls_listener_argv(command: Sequence[str], ssl_port: int, conf: Path) -> list[str]:
    """A proxy listening for TLS only on ``ssl_port`` (no ``-p``).

    A ``--proxy-cmd`` template with ``{port}`` gets a spare port there (a plain listener
    nothing connects to), because the template decides where ``-p`` goes.
    """
    if any("{port}" in part or "{config}" in part for part in command):
        return [*proxy_argv(command, free_port(), conf), "--ssl-port", str(ssl_port)]
    return [*command, "--ssl-port", str(ssl_port), "-f", str(conf), "--listen-addresses", LOOPBACK]


def stunnel_config(
    name: str, accept: int, connect: int, cert: Path, key: Path, certs: CertPaths, client: bool
) -> str:
    """One stunnel service, run in the foreground with its log on stderr.

    Like the seed article's set-up (section 4.3.3), with its TCP_NODELAY options and mutual
    verification, but modern defaults instead of its `sslVersion = TLSv1`.
    """
    lines = [
        "foreground = yes",
        "pid =",  # no pid file
        "syslog = no",
        "debug = warning",
        f"[{name}]",
        f"accept = {LOOPBACK}:{accept}",
        f"connect = {LOOPBACK}:{connect}",
        f"cert = {cert}",
        f"key = {key}",
        f"CAfile = {certs.ca}",
        "verifyChain = yes",  # the peer's chain must lead to CAfile
        "socket = l:TCP_NODELAY=1",
        "socket = r:TCP_NODELAY=1",
    ]
    if client:
        lines += ["client = yes", "delay = no", f"checkHost = {TLS_SERVER_NAME}"]
    else:
        lines += ["requireCert = yes"]  # mutual TLS, as memcached ssl_verify_mode=2
    return "\n".join(lines) + "\n"


def require_stunnel(stage: Stage) -> str:
    if stage.tools.stunnel is None:
        raise SkipScenario(f"stunnel not installed (apt-get install {APT_PACKAGES['stunnel']})")
    return stage.tools.stunnel


def start_stunnel_server(stage: Stage, certs: CertPaths, port: int, memcached_port: int) -> int:
    """A stunnel server on `port` (mutual TLS) in front of the memcached on `memcached_port`."""
    conf = stage.workdir / "stunnel-server.conf"
    conf.write_text(
        stunnel_config(
            "memcached-server", port, memcached_port, certs.server_cert, certs.server_key, certs,
            client=False,
        )
    )  # fmt: skip
    return stage.start_server("stunnel-server", [require_stunnel(stage), str(conf)], port)


@dataclass(frozen=True)
class TlsStunnel:
    """twemproxy -> stunnel (client) -> TLS -> stunnel (server) -> memcached."""

    key: str = "tls-stunnel"
    title: str = "TLS: twemproxy → stunnel → stunnel → memcached"
    compare_with: tuple[str, ...] = ()

    def start(self, stage: Stage) -> Deployment:
        stunnel = require_stunnel(stage)
        certs = ensure_certs(stage.workdir.parent / "certs")
        mc_port, mc_pid = stage.start_memcached()
        server_port, client_port = free_port(), free_port()
        server_pid = start_stunnel_server(stage, certs, server_port, mc_port)
        client_conf = stage.workdir / "stunnel-client.conf"
        client_conf.write_text(
            stunnel_config(
                "memcached-client", client_port, server_port, certs.client_cert, certs.client_key,
                certs, client=True,
            )
        )  # fmt: skip
        client_pid = stage.start_server("stunnel-client", [stunnel, str(client_conf)], client_port)
        port, nutcracker_pid = start_nutcracker(stage, client_port)
        proxies = (nutcracker_pid, client_pid, server_pid)
        return Deployment(port, proxies, (mc_pid,), tuple(stage.commands))


@dataclass(frozen=True)
class TlsMcrouterTrioMemcached:
    """mcrouter-trio -> TLS (mutual) -> memcached -Z."""

    key: str = "tls-mcrouter-trio-memcached"
    title: str = "TLS: mcrouter-trio → memcached -Z"
    compare_with: tuple[str, ...] = ("tls-stunnel",)
    workers: int = 1

    def start(self, stage: Stage) -> Deployment:
        if not memcached_supports_tls(stage.tools.memcached):
            raise SkipScenario("memcached built without TLS")
        certs = ensure_certs(stage.workdir.parent / "certs")
        mc_port, mc_pid = start_memcached_tls(stage, certs)
        port = free_port()
        pool = {"servers": [f"{LOOPBACK}:{mc_port}:ascii:ssl"], "server_name": TLS_SERVER_NAME}
        conf = write_json_config(
            stage.workdir / "mcrouter-trio.json", {"pools": {"A": pool}, "route": "PoolRoute|A"}
        )
        argv = [*proxy_argv(stage.tools.proxy_cmd, port, conf), *client_tls_args(certs)]
        pid = stage.start_server("mcrouter-trio", [*argv, *worker_args(self.workers)], port)
        return Deployment(port, (pid,), (mc_pid,), tuple(stage.commands))


@dataclass(frozen=True)
class TlsMcrouterTrioPair:
    """mcrouter-trio (DC-A) -> TLS (mutual) -> mcrouter-trio (DC-B) -> memcached."""

    key: str = "tls-mcrouter-trio-pair"
    title: str = "TLS: mcrouter-trio → mcrouter-trio → memcached"
    compare_with: tuple[str, ...] = ("tls-stunnel",)
    #: Workers of each of the two proxies.
    workers: int = 1

    def start(self, stage: Stage) -> Deployment:
        certs = ensure_certs(stage.workdir.parent / "certs")
        mc_port, mc_pid = stage.start_memcached()
        ssl_port, port = free_port(), free_port()
        dc_b_conf = write_json_config(
            stage.workdir / "dc-b.json",
            {
                "pools": {"local": {"servers": [f"{LOOPBACK}:{mc_port}"]}},
                "route": "PoolRoute|local",
            },
        )
        dc_b_argv = tls_listener_argv(stage.tools.proxy_cmd, ssl_port, dc_b_conf)
        dc_b_argv += [*server_tls_args(certs), *worker_args(self.workers)]
        dc_b_pid = stage.start_server("mcrouter-trio-dc-b", dc_b_argv, ssl_port)
        pool = {
            "servers": [f"{LOOPBACK}:{ssl_port}"],
            "use_ssl": True,
            "server_name": TLS_SERVER_NAME,
        }
        dc_a_conf = write_json_config(
            stage.workdir / "dc-a.json", {"pools": {"dc-b": pool}, "route": "PoolRoute|dc-b"}
        )
        dc_a_argv = [*proxy_argv(stage.tools.proxy_cmd, port, dc_a_conf), *client_tls_args(certs)]
        dc_a_argv += worker_args(self.workers)
        dc_a_pid = stage.start_server("mcrouter-trio-dc-a", dc_a_argv, port)
        return Deployment(port, (dc_a_pid, dc_b_pid), (mc_pid,), tuple(stage.commands))


#: Targets run only when named with --only: four proxy processes on two cores do
#: worse than two (0.59 x the stunnel chain against 0.70 x in the README's run).
OPT_IN_TARGETS = frozenset({"tls-mcrouter-trio-pair-2w", "mcrouter-trio-allsync"})
#: Worker processes of the `-2w` targets: one per core of a 2-core machine, as
#: `--num-proxies` is meant to be used (the stunnel chain runs three processes).
WORKERS = 2


def build_scenarios(prod_route: Path = PROD_ROUTE) -> list[Scenario]:
    two = f"`--num-proxies {WORKERS}`"
    return [
        MemcachedDirect(),
        Twemproxy(),
        McrouterTrio(),
        McrouterTrioProd(route_file=prod_route),
        McrouterTrioAllSync(),
        McrouterTrio(key="mcrouter-trio-2w", title=f"mcrouter-trio {two}", workers=WORKERS),
        TlsStunnel(),
        TlsMcrouterTrioMemcached(),
        TlsMcrouterTrioMemcached(
            key="tls-mcrouter-trio-memcached-2w",
            title=f"TLS: mcrouter-trio {two} → memcached -Z",
            workers=WORKERS,
        ),
        TlsMcrouterTrioPair(),
        TlsMcrouterTrioPair(
            key="tls-mcrouter-trio-pair-2w",
            title=f"TLS: mcrouter-trio {two} → mcrouter-trio {two} → memcached",
            workers=WORKERS,
        ),
    ]


# --------------------------------------------------------------------------- measurement


@dataclass
class Result:
    key: str
    title: str
    status: str = "ok"  # "ok" | "failed" | "skipped"
    error: str | None = None
    error_log: str | None = None  # tail of the failing process's output
    ops: int | None = None
    ops_per_s: float | None = None
    run_time_s: float | None = None
    wall_s: float | None = None
    cmd_get: int | None = None
    cmd_set: int | None = None
    get_misses: int | None = None
    proxy_cpu_s: float | None = None
    backend_cpu_s: float | None = None
    total_cpu_s: float | None = None
    client_cpu_s: float | None = None
    proxy_cpu_us_per_op: float | None = None
    backend_cpu_us_per_op: float | None = None
    total_cpu_us_per_op: float | None = None
    proxy_cpu_util: float | None = None
    #: Run-queue wait of the proxy processes per second of load (summed, like
    #: proxy_cpu_util), and the share of all CPUs left idle, over the middle of the run.
    proxy_wait_util: float | None = None
    machine_idle: float | None = None
    commands: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class LoadOutput:
    ops: int
    tps: int
    run_time_s: float
    counters: dict[str, int]


def parse_memcaslap(output: str) -> LoadOutput:
    """Parse memcaslap's summary, e.g. ``Run time: 10.0s Ops: 1190187 TPS: 119009 ...``."""
    matches = RESULT_LINE.findall(output)
    if not matches:
        tail = output.strip()[-4000:]
        message = (
            f"no 'Run time: ... Ops: ... TPS: ...' line in memcaslap output: {last_line(tail)}"
        )
        raise LoadError(message, tail)
    run_time, ops, tps = matches[-1]  # the final summary is the last such line
    counters = {name: int(value) for name, value in COUNTER_LINE.findall(output)}
    return LoadOutput(ops=int(ops), tps=int(tps), run_time_s=float(run_time), counters=counters)


def run_memcaslap(
    supervisor: Supervisor, tools: Tools, cfg: Path, port: int, seconds: int, spec: LoadSpec
) -> LoadOutput:
    argv = [tools.memcaslap, "-s", f"{LOOPBACK}:{port}", "-F", str(cfg), "-t", f"{seconds}s"]
    argv += ["-T", str(spec.threads), "-c", str(spec.connections)]
    proc = supervisor.spawn("memcaslap", argv)
    try:
        # Bound every run: memcaslap can hang if a target stops answering.
        proc.wait(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise LoadError(f"memcaslap did not finish within {seconds + 30} s") from None
    output = supervisor.log_path("memcaslap").read_text(errors="replace")
    if proc.returncode != 0:
        tail = output.strip()[-4000:]
        raise LoadError(f"memcaslap exited with status {proc.returncode}: {last_line(tail)}", tail)
    return parse_memcaslap(output)


def smoke_check(port: int, timeout_s: float = 5.0) -> None:
    """One set+get through the target so a broken proxy fails fast and clearly."""
    request = b"set __bench_probe 0 0 2\r\nok\r\nget __bench_probe\r\n"
    expected = b"STORED\r\nVALUE __bench_probe 0 2\r\nok\r\nEND\r\n"
    reply = b""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
            sock.sendall(request)
            while len(reply) < len(expected) and not reply.endswith(b"END\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        raise StartError(f"smoke test set/get failed: {exc}; got {reply[:120]!r}") from exc
    if reply != expected:
        raise StartError(f"smoke test set/get: expected {expected!r}, got {reply[:120]!r}")


#: memcached `stats` counters of the commands a route could send a standby.
COMMAND_STATS = ("cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses")


def memcached_stats(port: int, timeout_s: float = 5.0) -> dict[str, str]:
    reply = b""
    with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
        sock.sendall(b"stats\r\n")
        while not reply.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    fields = (line.split(" ", 2) for line in reply.decode("ascii", "replace").splitlines())
    return {parts[1]: parts[2] for parts in fields if len(parts) == 3 and parts[0] == "STAT"}


def check_standbys_idle(ports: Sequence[int]) -> None:
    """Fail the run if the load reached a standby memcached (a route or key-prefix mistake)."""
    for port in ports:
        try:
            stats = memcached_stats(port)
        except OSError as exc:
            raise LoadError(f"cannot read the stats of the standby memcached: {exc}") from exc
        served = {name: int(stats.get(name, "0")) for name in COMMAND_STATS}
        if any(served.values()):
            counts = ", ".join(f"{name} {count}" for name, count in served.items() if count)
            raise LoadError(f"the load reached the standby memcached on port {port}: {counts}")


@dataclass(frozen=True)
class CpuSnapshot:
    proxy: float
    backend: float
    total: float
    client: float


class SchedulerWindow:
    """The proxy's run-queue wait and the machine's idle CPU over the middle of a run.

    Both are rates, so they are sampled where the load is steady (from about 1 s
    after it starts to 1 s before it ends) instead of over the CPU window, which
    includes memcaslap's idle second after the load. A proxy that is runnable
    but waiting for a core while the machine has idle CPU is short of scheduling,
    not of CPU.
    """

    def __init__(self, proxy_pids: Sequence[int], duration_s: float) -> None:
        margin = min(1.0, duration_s / 4)
        self._offsets = (margin, duration_s - margin)
        self._proxy_pids = tuple(proxy_pids)
        self._samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(time.monotonic(),), daemon=True)
        self._thread.start()

    def _sample(self, started: float) -> None:
        for offset in self._offsets:
            if self._stop.wait(max(0.0, started + offset - time.monotonic())):
                return
            waited = tree_run_queue_wait_seconds(self._proxy_pids)
            self._samples.append((time.monotonic(), idle_cpu_seconds(), waited))

    def finish(self) -> tuple[float, float] | None:
        """(proxy wait per second, idle share of all CPUs), or None if the run was too short."""
        self._stop.set()
        self._thread.join()
        if len(self._samples) < 2:
            return None
        (t0, idle0, wait0), (t1, idle1, wait1) = self._samples
        span = t1 - t0
        if span <= 0:
            return None
        return (wait1 - wait0) / span, (idle1 - idle0) / (span * (os.cpu_count() or 1))


def cpu_snapshot(deployment: Deployment) -> CpuSnapshot:
    client = os.times()
    return CpuSnapshot(
        proxy=tree_cpu_seconds(deployment.proxy_pids),
        backend=tree_cpu_seconds(deployment.backend_pids),
        # Union of pids, so memcached direct is not counted twice.
        total=tree_cpu_seconds({*deployment.proxy_pids, *deployment.backend_pids}),
        # Reaped children's CPU: within the measured window that is memcaslap only.
        client=client.children_user + client.children_system,
    )


def fill_result(
    result: Result, load: LoadOutput, before: CpuSnapshot, after: CpuSnapshot, wall_s: float
) -> None:
    result.ops, result.ops_per_s, result.run_time_s = load.ops, float(load.tps), load.run_time_s
    result.wall_s = wall_s
    result.cmd_get = load.counters.get("cmd_get")
    result.cmd_set = load.counters.get("cmd_set")
    result.get_misses = load.counters.get("get_misses")
    result.proxy_cpu_s = after.proxy - before.proxy
    result.backend_cpu_s = after.backend - before.backend
    result.total_cpu_s = after.total - before.total
    result.client_cpu_s = after.client - before.client
    ops = max(load.ops, 1)
    result.proxy_cpu_us_per_op = result.proxy_cpu_s * 1e6 / ops
    result.backend_cpu_us_per_op = result.backend_cpu_s * 1e6 / ops
    result.total_cpu_us_per_op = result.total_cpu_s * 1e6 / ops
    # memcaslap idles ~1 s after the load ends before exiting, so utilisation is
    # relative to its reported run time, when the load was actually applied.
    busy_s = load.run_time_s or wall_s
    result.proxy_cpu_util = result.proxy_cpu_s / busy_s if busy_s > 0 else None


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(scenario: Scenario, stage: Stage, spec: LoadSpec, cfg: Path, prefix: str) -> Result:
    result = Result(key=scenario.key, title=scenario.title)
    progress(f"{prefix} {scenario.title}: starting processes...")
    try:
        deployment = scenario.start(stage)
        smoke_check(deployment.port)
    except SkipScenario as exc:
        result.status, result.error = "skipped", f"skipped: {exc}"
        progress(f"{prefix} {scenario.title}: {result.error}")
        return result
    except (StartError, OSError, subprocess.SubprocessError) as exc:
        result.commands = [list(cmd) for cmd in stage.commands]
        log = exc.log if isinstance(exc, StartError) else ""
        return failed(result, f"failed to start: {exc}", prefix, log)
    result.commands = [list(cmd) for cmd in deployment.commands]
    tools, supervisor = stage.tools, stage.supervisor
    try:
        if spec.warmup_s > 0:
            # memcaslap only gets keys it has set itself, so gets hit regardless;
            # the warm-up is for connection setup, memcached slabs and allocators.
            progress(f"{prefix} {scenario.title}: warming up {spec.warmup_s} s...")
            run_memcaslap(supervisor, tools, cfg, deployment.port, spec.warmup_s, spec)
        progress(f"{prefix} {scenario.title}: running {spec.duration_s} s load...")
        before, started = cpu_snapshot(deployment), time.monotonic()
        window = SchedulerWindow(deployment.proxy_pids, spec.duration_s)
        try:
            load = run_memcaslap(supervisor, tools, cfg, deployment.port, spec.duration_s, spec)
        finally:
            scheduling = window.finish()
        after, wall_s = cpu_snapshot(deployment), time.monotonic() - started
        check_standbys_idle(deployment.standby_ports)
    except LoadError as exc:
        return failed(result, f"load failed: {exc}", prefix, exc.log)
    fill_result(result, load, before, after, wall_s)
    if scheduling is not None:
        result.proxy_wait_util, result.machine_idle = scheduling
    progress(f"{prefix} {scenario.title}: {summary(result)}")
    return result


def failed(result: Result, message: str, prefix: str, log: str) -> Result:
    result.status, result.error, result.error_log = "failed", message, log or None
    progress(f"{prefix} {result.title}: {message}")
    if log:
        progress("    | " + "\n    | ".join(log.splitlines()[-15:]))
    return result


def summary(result: Result) -> str:
    return (
        f"{result.ops_per_s or 0:,.0f} ops/s, proxy {result.proxy_cpu_us_per_op or 0:.2f} "
        f"CPU µs/op, memcached {result.backend_cpu_us_per_op or 0:.2f} CPU µs/op"
    )


def run_scenario(
    scenario: Scenario, tools: Tools, spec: LoadSpec, workdir: Path, prefix: str, timeout_s: float
) -> Result:
    # Each scenario gets its own directory and processes, all torn down before
    # the next one starts so idle servers never compete for the 2 CPUs.
    scenario_dir = workdir / scenario.key
    scenario_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(scenario_dir, timeout_s)
    try:
        return measure(scenario, Stage(supervisor, tools), spec, workdir / "memcaslap.cfg", prefix)
    finally:
        supervisor.stop_all()


# --------------------------------------------------------------------------- reporting


def ratios(results: Sequence[Result], scenarios: Sequence[Scenario]) -> list[dict[str, Any]]:
    by_key = {result.key: result for result in results}
    rows: list[dict[str, Any]] = []
    for scenario in scenarios:
        mine = by_key.get(scenario.key)
        for base_key in scenario.compare_with:
            base = by_key.get(base_key)
            if mine is None or base is None:
                continue
            rows.append(
                {
                    "scenario": mine.key,
                    "baseline": base.key,
                    "ops_per_s_ratio": _ratio(mine.ops_per_s, base.ops_per_s),
                    "proxy_cpu_per_op_ratio": _ratio(
                        mine.proxy_cpu_us_per_op, base.proxy_cpu_us_per_op
                    ),
                    "total_cpu_per_op_ratio": _ratio(
                        mine.total_cpu_us_per_op, base.total_cpu_us_per_op
                    ),
                }
            )
    return rows


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{100 * share:.0f} %"


def _hit_rate(result: Result) -> str:
    if not result.cmd_get or result.get_misses is None:
        return "—"
    return f"{100 * (1 - result.get_misses / result.cmd_get):.1f} %"


def _escape(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def markdown(results: Sequence[Result], ratio_rows: Sequence[dict[str, Any]], host: str) -> str:
    lines = [
        "| Target | ops/s | proxy CPU µs/op | memcached CPU µs/op | total CPU µs/op "
        "| proxy CPU % | proxy waiting % | idle CPU % | get hits |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.title} | {_escape(r.error or r.status)} |" + " — |" * 7)
            continue
        lines.append(
            f"| {r.title} | {_cell(r.ops_per_s, ',.0f')} | {_cell(r.proxy_cpu_us_per_op, '.2f')} "
            f"| {_cell(r.backend_cpu_us_per_op, '.2f')} | {_cell(r.total_cpu_us_per_op, '.2f')} "
            f"| {_percent(r.proxy_cpu_util)} | {_percent(r.proxy_wait_util)} "
            f"| {_percent(r.machine_idle)} | {_hit_rate(r)} |"
        )
    if ratio_rows:
        titles = {r.key: r.title for r in results}
        lines += [
            "",
            "| Ratio | ops/s | proxy CPU per op | total CPU per op |",
            "|---|--:|--:|--:|",
        ]
        for row in ratio_rows:
            name = f"{titles[row['scenario']]} / {titles[row['baseline']]}"
            lines.append(
                f"| {name} | {_cell(row['ops_per_s_ratio'], '.2f')} "
                f"| {_cell(row['proxy_cpu_per_op_ratio'], '.2f')} "
                f"| {_cell(row['total_cpu_per_op_ratio'], '.2f')} |"
            )
    lines += ["", host]
    return "\n".join(lines)


def tool_version(argv: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else None


def stunnel_version(stunnel: str | None) -> str | None:
    """``stunnel 5.68 on x86_64-pc-linux-gnu platform``: its ``-version`` text has a preamble."""
    if stunnel is None:
        return None
    try:
        done = subprocess.run([stunnel, "-version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"^stunnel \d.*$", done.stdout + done.stderr, re.MULTILINE)
    return found.group(0) if found else None


def git_commit() -> str | None:
    return tool_version(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"])


def environment(tools: Tools) -> dict[str, Any]:
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "versions": {
            "memcached": tool_version([tools.memcached, "-V"]),
            "nutcracker": tool_version([tools.nutcracker, "-V"]),
            "memcaslap": tool_version([tools.memcaslap, "-V"]),
            "stunnel": stunnel_version(tools.stunnel),
            "memcached_tls": memcached_supports_tls(tools.memcached),
        },
        "tools": asdict(tools),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None, keys: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per target")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before (0: off)")
    parser.add_argument("--connections", type=int, default=32, help="memcaslap -c")
    parser.add_argument("--threads", type=int, default=2, help="memcaslap -T")
    parser.add_argument(
        "--proxy-cmd",
        help="mcrouter-trio command (shell-quoted); '-p PORT -f CONFIG --listen-addresses "
        "127.0.0.1' is appended unless "
        "it contains {port} / {config}. Default: mcrouter-trio, else python -m mcrouter_trio",
    )
    parser.add_argument(
        "--only", action="append", choices=keys, help="run only this target (repeatable)"
    )
    parser.add_argument(
        "--prod-route",
        type=Path,
        default=PROD_ROUTE,
        help="JSON route (over pools A and B) of the mcrouter-trio-prod target",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    parser.add_argument("--start-timeout", type=float, default=15.0, help="seconds per server")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here (default: temp)")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--duration and --threads must be >= 1, --warmup >= 0")
    if args.connections < args.threads or args.connections % args.threads:
        parser.error("--connections must be a positive multiple of --threads (memcaslap rule)")
    if not args.prod_route.is_file():
        parser.error(f"--prod-route: no such file: {args.prod_route}")
    return args


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into the same path as Ctrl-C so every finally block runs.
    raise KeyboardInterrupt


def run(args: argparse.Namespace, scenarios: Sequence[Scenario], workdir: Path) -> int:
    tools = resolve_tools(args.proxy_cmd)
    spec = LoadSpec(args.duration, args.warmup, args.connections, args.threads)
    (workdir / "memcaslap.cfg").write_text(spec.memcaslap_config())
    env = environment(tools)
    results = []
    for index, scenario in enumerate(scenarios, start=1):
        prefix = f"[{index}/{len(scenarios)}]"
        results.append(run_scenario(scenario, tools, spec, workdir, prefix, args.start_timeout))
    ratio_rows = ratios(results, scenarios)
    host = f"{spec.describe()}; {env['cpus']} CPUs, client and servers on one host (loopback)."
    print(markdown(results, ratio_rows, host))
    document = {
        "schema": 1,
        "environment": env,
        "load": asdict(spec),
        "results": [asdict(result) for result in results],
        "ratios": ratio_rows,
    }
    write_json(args.output, document)
    progress(f"wrote {args.output}")
    return 0 if all(result.status in ("ok", "skipped") for result in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, [scenario.key for scenario in build_scenarios()])
    all_scenarios = build_scenarios(args.prod_route.resolve())
    if args.only:
        scenarios = [s for s in all_scenarios if s.key in args.only]
    else:
        scenarios = [s for s in all_scenarios if s.key not in OPT_IN_TARGETS]
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Python leaves SIGINT ignored when started in the background by a shell;
    # restore Ctrl-C so an interrupt always reaches the teardown code.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            return run(args, scenarios, args.workdir.resolve())
        with tempfile.TemporaryDirectory(prefix="mcrouter-trio-bench-") as tmp:
            return run(args, scenarios, Path(tmp))
    except KeyboardInterrupt:
        progress("interrupted; all benchmark processes were stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
