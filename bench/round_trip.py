#!/usr/bin/env python3
"""CPU per round trip of a TLS relay: stunnel vs mcrouter-trio as the edge pair's DC-B.

`run_bench.py` measures whole set-ups under a concurrent load. This tool takes one
hop apart: the relay that ends TLS in front of memcached, which is a *stunnel
server* in the seeds' chain and an mcrouter-trio TLS listener (DC-B) in the edge
pair. One client with a certificate sends one `get` of K keys, waits for the whole
reply, and repeats. What the relay's processes spent, divided by the round trips,
is its cost per round trip; with several K, the part that is paid per round trip
(waking up, reading, writing, encrypting) separates from the part paid per key.

In the edge pair, DC-A turns the single-key gets it routes in one pass into one
multi-key get, so DC-B sees round trips of this shape, with as many keys as DC-A
had gets in that pass. Beside stunnel and DC-B it measures the same proxy without
TLS, and `bare_relay.py` with and without Trio: the floor under any Python relay.

Usage: ``python bench/round_trip.py [--keys 1,14,32] [--seconds 1] [--repeat 5]``. The Markdown
table goes to stdout, progress to stderr. Exit status: 0 every relay was measured
or skipped (stunnel not installed), 1 a relay failed, 2 bad usage or no memcached,
130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from run_bench import (
    APT_PACKAGES,
    LOOPBACK,
    TLS_SERVER_NAME,
    CertPaths,
    SkipScenario,
    Stage,
    Supervisor,
    Tools,
    default_proxy_cmd,
    ensure_certs,
    find_tool,
    free_port,
    progress,
    proxy_argv,
    server_tls_args,
    start_stunnel_server,
    tls_listener_argv,
    tree_cpu_seconds,
    write_json_config,
)
from run_bench import BenchError as BenchError  # raised to callers of `measure`

VALUE = b"v" * 100  # the benchmark's 100-byte values
RELAYS = ("stunnel", "mcrouter-trio", "mcrouter-trio-plain", "bare-trio", "bare-epoll")
TITLES = {
    "stunnel": "stunnel server (TLS) → memcached",
    "mcrouter-trio": "mcrouter-trio DC-B (TLS) → memcached",
    "mcrouter-trio-plain": "mcrouter-trio, no TLS → memcached",
    "bare-trio": "bare Trio relay, no TLS, no parsing → memcached",
    "bare-epoll": "bare select.epoll relay, no Trio → memcached",
}
BARE_RELAY = Path(__file__).resolve().parent / "bare_relay.py"


@dataclass(frozen=True)
class Relay:
    """A started relay: where the client connects, whether with TLS, and its pid."""

    port: int
    tls: bool
    pid: int


@dataclass(frozen=True)
class Row:
    relay: str
    keys: int
    round_trips: int
    seconds: float
    cpu_seconds: float

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.round_trips * 1e6


def start_relay(name: str, stage: Stage, certs: CertPaths, memcached_port: int) -> Relay:
    """Start the relay `name` in front of the memcached on `memcached_port`."""
    port = free_port()
    if name == "stunnel":
        return Relay(port, True, start_stunnel_server(stage, certs, port, memcached_port))
    if name.startswith("bare-"):
        argv = [sys.executable, str(BARE_RELAY), name[5:], str(port), str(memcached_port)]
        return Relay(port, False, stage.start_server(name, argv, port))
    config = {
        "pools": {"local": {"servers": [f"{LOOPBACK}:{memcached_port}"]}},
        "route": "PoolRoute|local",
    }
    conf = write_json_config(stage.workdir / f"{name}.json", config)
    if name == "mcrouter-trio":
        argv = [*tls_listener_argv(stage.tools.proxy_cmd, port, conf), *server_tls_args(certs)]
        return Relay(port, True, stage.start_server(name, argv, port))
    argv = proxy_argv(stage.tools.proxy_cmd, port, conf)
    return Relay(port, False, stage.start_server(name, argv, port))


def connect(relay: Relay, certs: CertPaths) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, relay.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not relay.tls:
        return sock
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return context.wrap_socket(sock, server_hostname=TLS_SERVER_NAME)


def store_keys(memcached_port: int, count: int) -> list[bytes]:
    """Store `count` keys straight in memcached, so every get of the run is a hit."""
    keys = [b"round-trip:%05d" % index for index in range(count)]
    with socket.create_connection((LOOPBACK, memcached_port), timeout=10) as sock:
        sock.sendall(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(VALUE), VALUE) for k in keys))
        replies = b""
        while replies.count(b"\r\n") < count:
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError("memcached closed the connection while keys were stored")
            replies += chunk
    if replies != b"STORED\r\n" * count:
        raise BenchError(f"memcached did not store the keys: {replies[:80]!r}")
    return keys


def expected_reply(keys: Sequence[bytes]) -> bytes:
    blocks = (b"VALUE %s 0 %d\r\n%s\r\n" % (key, len(VALUE), VALUE) for key in keys)
    return b"".join(blocks) + b"END\r\n"


def round_trip(sock: socket.socket, request: bytes, size: int) -> bytes:
    """Send `request`, read its reply whole: `size` bytes, or a shorter reply (a miss, an error).

    The values hold no `END`, so a reply that ends in one is complete.
    """
    sock.sendall(request)
    reply = sock.recv(65536)
    while len(reply) < size and not _ends_reply(reply):
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("the relay closed the connection")
        reply += chunk
    return reply


def _ends_reply(data: bytes) -> bool:
    if data.endswith(b"END\r\n"):
        return True
    return data.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")) and data.endswith(b"\r\n")


def measure(
    name: str, relay: Relay, sock: socket.socket, keys: Sequence[bytes], seconds: float
) -> Row:
    request = b"get " + b" ".join(keys) + b"\r\n"
    expected = expected_reply(keys)
    # Checked on 20 untimed round trips before and on one after: a wrong relay is not timed.
    for _ in range(20):
        if round_trip(sock, request, len(expected)) != expected:
            raise BenchError(f"{name}: wrong reply to a {len(keys)}-key get")
    done = 0
    cpu_before = tree_cpu_seconds([relay.pid])
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            round_trip(sock, request, len(expected))
        done += 100
        now = time.perf_counter()
        if now >= deadline:
            break
    cpu = tree_cpu_seconds([relay.pid]) - cpu_before
    if round_trip(sock, request, len(expected)) != expected:
        raise BenchError(f"{name}: wrong reply to a {len(keys)}-key get")
    return Row(name, len(keys), done, now - start, cpu)


@dataclass
class Running:
    """A started relay and the client connection that measures it."""

    name: str
    relay: Relay
    sock: socket.socket
    samples: dict[int, list[Row]]


def median_row(samples: Sequence[Row]) -> Row:
    """The sample with the median CPU per round trip (the upper one of an even count)."""
    return sorted(samples, key=lambda row: row.cpu_us)[len(samples) // 2]


def measure_all(
    args: argparse.Namespace, stage: Stage, certs: CertPaths, skipped: dict[str, str]
) -> tuple[list[Row], bool]:
    """Start every relay, then measure them in turns; returns the rows and whether any failed.

    Turns (every relay for one second, then again) rather than one relay after the
    other: on a shared 2-core machine the background drifts, and each row is the
    median of its turns.
    """
    memcached_port, _ = stage.start_memcached()
    keys = store_keys(memcached_port, max(args.keys))
    running: list[Running] = []
    failed = False
    for name in args.relay or RELAYS:
        try:
            relay = start_relay(name, stage, certs, memcached_port)
            running.append(Running(name, relay, connect(relay, certs), {}))
        except SkipScenario as exc:
            skipped[name] = str(exc)
        except (BenchError, OSError) as exc:
            progress(f"{name}: failed: {exc}")
            failed = True
    try:
        for turn in range(1, args.repeat + 1):
            progress(f"turn {turn}/{args.repeat}: {len(running)} relays x {args.keys} keys...")
            if not take_turn(running, keys, args.keys, args.seconds):
                failed = True
    finally:
        for entry in running:
            entry.sock.close()
    rows = [
        median_row(entry.samples[count])
        for entry in running
        for count in args.keys
        if count in entry.samples
    ]
    return rows, failed


def take_turn(
    running: list[Running], keys: Sequence[bytes], counts: Sequence[int], seconds: float
) -> bool:
    """Measure every relay once per key count; a relay that fails is dropped (returns False)."""
    ok = True
    for count in counts:
        for entry in list(running):
            try:
                row = measure(entry.name, entry.relay, entry.sock, keys[:count], seconds)
            except (BenchError, OSError) as exc:
                progress(f"{entry.name}: failed: {exc}")
                ok = False
                running.remove(entry)
                entry.sock.close()
                continue
            entry.samples.setdefault(count, []).append(row)
    return ok


def markdown(rows: Sequence[Row], skipped: dict[str, str]) -> str:
    base = {row.keys: row.cpu_us for row in rows if row.relay == "stunnel"}
    lines = [
        "| relay | keys per get | round trips/s | relay CPU µs per round trip "
        "| µs per key | CPU vs stunnel |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        ratio = f"{row.cpu_us / base[row.keys]:.2f}" if row.keys in base else "-"
        lines.append(
            f"| {TITLES[row.relay]} | {row.keys} | {row.round_trips / row.seconds:,.0f} "
            f"| {row.cpu_us:.1f} | {row.cpu_us / row.keys:.2f} | {ratio} |"
        )
    for name, why in skipped.items():
        lines.append(f"| {TITLES[name]} | skipped: {why} | | | | |")
    return "\n".join(lines)


def key_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or any(count < 1 or count > 100 for count in counts):
        raise argparse.ArgumentTypeError(f"expected numbers from 1 to 100 with commas: {text!r}")
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=key_counts, default=[1, 14, 32], help="keys per get")
    parser.add_argument("--seconds", type=float, default=1.0, help="measured seconds per turn")
    parser.add_argument("--repeat", type=int, default=5, help="turns; each row is their median")
    parser.add_argument(
        "--relay", action="append", choices=RELAYS, help="measure only this relay (repeatable)"
    )
    parser.add_argument("--proxy-cmd", help="command for mcrouter-trio (as in run_bench.py)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> int:
    memcached = find_tool("memcached")
    if memcached is None:
        progress(f"memcached is not installed: apt-get install {APT_PACKAGES['memcached']}")
        return 2
    proxy_cmd = tuple(args.proxy_cmd.split()) if args.proxy_cmd else default_proxy_cmd()
    tools = Tools(memcached, "", "", proxy_cmd, find_tool("stunnel4", "stunnel"))
    supervisor = Supervisor(workdir, start_timeout_s=15)
    skipped: dict[str, str] = {}
    try:
        certs = ensure_certs(workdir / "certs")
        rows, failed = measure_all(args, Stage(supervisor, tools), certs, skipped)
    except BenchError as exc:
        progress(f"failed: {exc}")
        return 1
    finally:
        supervisor.stop_all()
    print(markdown(rows, skipped))
    return 1 if failed else 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with tempfile.TemporaryDirectory(prefix="mcrouter-trio-round-trip-") as tmp:
            return run(args, Path(tmp))
    except KeyboardInterrupt:
        progress("interrupted; every process this run started was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
