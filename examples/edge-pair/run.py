"""Run the secure edge pair (DC-A -> TLS -> DC-B) and TLS-to-memcached on one machine.

    python examples/edge-pair/run.py all            # everything below at once
    python examples/edge-pair/run.py dc-b           # memcached + the mutual-TLS DC-B proxy
    python examples/edge-pair/run.py dc-a           # the DC-A proxy (dials DC-B over TLS)
    python examples/edge-pair/run.py memcached-tls  # memcached -Z + a proxy dialing it over TLS

Certificates are created with `mcrouter-trio certs init` when the certificate directory
(default examples/edge-pair/certs) has none. The script prints every command it starts and
how to connect, runs until Ctrl-C (or SIGTERM), then stops everything it started. Port
options move any listener; the configs are then rewritten into a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOOPBACK = "127.0.0.1"
MODES = ("dc-b", "dc-a", "memcached-tls", "all")
CERT_FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")
PROXY = (sys.executable, "-m", "mcrouter_trio")

# The ports written in the JSON configs; a --*-port option that differs rewrites them.
DEFAULT_PORTS = {
    "dc_a": 5000,  # DC-A proxy, plain text, for local clients
    "dc_b_tls": 11433,  # DC-B proxy, TLS only (--ssl-port)
    "dc_b_memcached": 21311,  # memcached behind DC-B, plain text, loopback only
    "tls_proxy": 5001,  # proxy in front of memcached -Z, plain text
    "tls_memcached": 21312,  # memcached -Z (mutual TLS)
}


class Failure(Exception):
    """Something could not be started; the message says what and how to fix it."""


@dataclass(frozen=True)
class Options:
    mode: str
    certs: Path
    listen: str
    ports: dict[str, int]
    #: `--num-proxies` for every proxy started ("1": one process each).
    workers: str = "1"

    def worker_flags(self) -> list[str]:
        return [] if self.workers == "1" else ["--num-proxies", self.workers]


def parse_args(argv: Sequence[str] | None) -> Options:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog="Ports default to the ones in the configs: DC-A 5000, DC-B TLS 11433, DC-B's "
        "memcached 21311, TLS-to-memcached proxy 5001, memcached -Z 21312.",
    )
    parser.add_argument("mode", choices=MODES, help="what to start")
    parser.add_argument(
        "--certs",
        type=Path,
        default=HERE / "certs",
        help="certificate directory; created with `mcrouter-trio certs init` if empty "
        "(default: examples/edge-pair/certs)",
    )
    parser.add_argument(
        "--listen-addresses",
        default=LOOPBACK,
        metavar="ADDR[,ADDR]",
        help="where the proxies listen (default 127.0.0.1; DC-B on a real edge: its own address)",
    )
    parser.add_argument(
        "--num-proxies",
        default="1",
        metavar="N|auto",
        help="worker processes per proxy (default 1; `auto`: one per core, as on a host of "
        "its own)",
    )
    for key, port in DEFAULT_PORTS.items():
        flag = "--" + key.replace("_", "-") + "-port"
        parser.add_argument(flag, type=int, default=port, dest=key, metavar="PORT")
    args = parser.parse_args(argv)
    ports = {key: int(getattr(args, key)) for key in DEFAULT_PORTS}
    return Options(args.mode, args.certs.resolve(), args.listen_addresses, ports, args.num_proxies)


# --------------------------------------------------------------------------- helpers


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the current directory if inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def display(argv: Sequence[str]) -> str:
    """A command line for humans: `mcrouter-trio` for `python -m mcrouter_trio`, short paths."""
    words = list(argv)
    if tuple(words[:3]) == PROXY:
        words = ["mcrouter-trio", *words[3:]]
    cwd = f"{Path.cwd()}/"
    return shlex.join(word.replace(cwd, "") for word in words)


def memcached_binary() -> str:
    binary = shutil.which("memcached")
    if binary is None:
        raise Failure("memcached is not installed: apt-get install -y memcached")
    return binary


def memcached_has_tls(binary: str) -> bool:
    done = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10)
    return "--enable-ssl" in done.stdout + done.stderr


def ensure_certs(directory: Path) -> None:
    present = [name for name in CERT_FILES if (directory / name).exists()]
    if len(present) == len(CERT_FILES):
        print(f"using the certificates in {shown(directory)}/")
        return
    if present:
        raise Failure(
            f"{shown(directory)} holds only some of {', '.join(CERT_FILES)}; recreate them with "
            f"`mcrouter-trio certs init {shown(directory)} --force`"
        )
    command = [*PROXY, "certs", "init", str(directory)]
    print(f"$ {display(command)}")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise Failure(f"certs init failed: {(done.stderr or done.stdout).strip()}")
    print(f"wrote a CA, server and client certificates into {shown(directory)}/")


def render_config(name: str, ports: dict[str, int], workdir: Path) -> Path:
    """The example config, with its loopback ports replaced where an option moved them."""
    source = HERE / name
    moved = {
        str(DEFAULT_PORTS[key]): str(port)
        for key, port in ports.items()
        if port != DEFAULT_PORTS[key]
    }
    text = source.read_text()
    pattern = re.compile(r'"127\.0\.0\.1:(\d+)')
    if not moved or not any(m.group(1) in moved for m in pattern.finditer(text)):
        return source
    target = workdir / name
    target.write_text(
        pattern.sub(lambda m: f'"{LOOPBACK}:{moved.get(m.group(1), m.group(1))}', text)
    )
    return target


def answers(port: int, tls: ssl.SSLContext | None) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            if tls is not None:
                # Handshake and one request, so the server sees an ordinary client.
                with tls.wrap_socket(sock, server_hostname="localhost") as secure:
                    secure.sendall(b"version\r\n")
                    return secure.recv(100).startswith(b"VERSION ")
            return True
    except (OSError, ssl.SSLError):
        return False


def probe_context(certs: Path) -> ssl.SSLContext:
    """A TLS client with the example's client certificate, for the readiness probe."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
    return context


class Processes:
    """Everything this script started; `stop_all` ends them, newest first."""

    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: Sequence[str], port: int, tls: ssl.SSLContext | None = None
    ) -> None:
        """Start a server and wait until it answers on ``port`` (with a TLS handshake if
        ``tls`` is given, so a TLS listener does not log a half-open probe as an error)."""
        print(f"$ {display(argv)}", flush=True)
        # Own process group: a Ctrl-C in the terminal reaches only this script, which then
        # stops the servers in order (proxies before the memcached behind them).
        process = subprocess.Popen(list(argv), cwd=REPO, process_group=0)
        self.running.append((name, process))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise Failure(f"{name} exited with status {process.returncode}")
            if answers(port, tls):
                print(f"  {name} is listening on {LOOPBACK}:{port}", flush=True)
                return
            time.sleep(0.05)
        raise Failure(f"{name} did not listen on port {port} within 15 s")

    def wait_any(self) -> tuple[str, int]:
        """Block until one process exits; returns its name and status."""
        while True:
            for name, process in self.running:
                status = process.poll()
                if status is not None:
                    return name, status
            time.sleep(0.2)

    def stop_all(self) -> None:
        while self.running:
            _, process = self.running.pop()
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


# --------------------------------------------------------------------------- the set-ups


def memcached_argv(binary: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    # memcached refuses to run as root unless told which user to be.
    user = ["-u", "root"] if os.geteuid() == 0 else []
    return [binary, *user, "-l", LOOPBACK, "-p", str(port), "-U", "0", *extra]


def client_tls_flags(certs: Path) -> list[str]:
    return [
        "--pem-cert-path", str(certs / "client.crt"),
        "--pem-key-path", str(certs / "client.key"),
        "--pem-ca-path", str(certs / "ca.crt"),
        "--ssl-verify-peers",
    ]  # fmt: skip


def openssl_line(port: int, certs: Path) -> str:
    return (
        f"printf 'get greeting\\r\\nquit\\r\\n' | openssl s_client -quiet -connect "
        f"{LOOPBACK}:{port} -CAfile {shown(certs / 'ca.crt')} "
        f"-cert {shown(certs / 'client.crt')} -key {shown(certs / 'client.key')}"
    )


def start_dc_b(opts: Options, procs: Processes, workdir: Path, binary: str) -> list[str]:
    ports, certs = opts.ports, opts.certs
    procs.start(
        "DC-B memcached", memcached_argv(binary, ports["dc_b_memcached"]), ports["dc_b_memcached"]
    )
    argv = [
        *PROXY,
        "--ssl-port", str(ports["dc_b_tls"]),
        "-f", str(render_config("dc-b.json", ports, workdir)),
        "--listen-addresses", opts.listen,
        "--tls-cert", str(certs / "server.crt"),
        "--tls-key", str(certs / "server.key"),
        "--tls-ca", str(certs / "ca.crt"),
        "--ssl-require-peer-certs",
        *opts.worker_flags(),
    ]  # fmt: skip
    procs.start("DC-B proxy", argv, ports["dc_b_tls"], probe_context(certs))
    return [
        f"DC-B (mutual TLS on {ports['dc_b_tls']}), with the client certificate:",
        f"  {openssl_line(ports['dc_b_tls'], certs)}",
        "  without -cert/-key the handshake is refused (the proxy logs why)",
    ]


def start_dc_a(opts: Options, procs: Processes, workdir: Path) -> list[str]:
    config = render_config("dc-a.json", opts.ports, workdir)
    port = start_dialing_proxy("DC-A proxy", opts, procs, "dc_a", config)
    return [
        f"DC-A (plain text on {port}; forwards to DC-B {opts.ports['dc_b_tls']} over TLS):",
        try_line(port),
        f"  (or: telnet {LOOPBACK} {port})",
    ]


def start_dialing_proxy(
    name: str, opts: Options, procs: Processes, port_name: str, config: Path
) -> int:
    """A proxy with a plain-text port for local clients that dials its servers over TLS."""
    port = opts.ports[port_name]
    argv = [
        *PROXY,
        "-p", str(port),
        "-f", str(config),
        "--listen-addresses", opts.listen,
        *client_tls_flags(opts.certs),
        *opts.worker_flags(),
    ]  # fmt: skip
    procs.start(name, argv, port)
    return port


def try_line(port: int) -> str:
    """A set and a get through the proxy on `port`, as a shell line."""
    return (
        f"  printf 'set greeting 0 0 5\\r\\nhello\\r\\nget greeting\\r\\nquit\\r\\n' "
        f"| nc {LOOPBACK} {port}"
    )


def start_memcached_tls(opts: Options, procs: Processes, workdir: Path, binary: str) -> list[str]:
    ports, certs = opts.ports, opts.certs
    tls_options = ",".join(
        [
            f"ssl_chain_cert={certs / 'server.crt'}",
            f"ssl_key={certs / 'server.key'}",
            f"ssl_ca_cert={certs / 'ca.crt'}",
            "ssl_verify_mode=2",  # 2 = a client certificate is required
            # With verification on, memcached 1.6.18 aborts resumed handshakes unless its
            # session cache is enabled; the proxy resumes sessions when it reconnects.
            "ssl_session_cache",
        ]
    )
    mc_port = ports["tls_memcached"]
    mc_argv = memcached_argv(binary, mc_port, ["-Z", "-o", tls_options])
    procs.start("memcached -Z", mc_argv, mc_port, probe_context(certs))
    config = render_config("memcached-tls.json", ports, workdir)
    port = start_dialing_proxy("TLS-to-memcached proxy", opts, procs, "tls_proxy", config)
    return [
        f"TLS to memcached (plain text on {port}; memcached -Z on {mc_port}):",
        try_line(port),
        f"  memcached itself: {openssl_line(mc_port, certs)}",
    ]


def start(opts: Options, procs: Processes, workdir: Path) -> list[str]:
    """Start what `opts.mode` asks for; returns the "how to connect" lines."""
    ensure_certs(opts.certs)
    binary = memcached_binary() if opts.mode != "dc-a" else ""
    lines: list[str] = []
    if opts.mode in ("dc-b", "all"):
        lines += start_dc_b(opts, procs, workdir, binary)
    if opts.mode in ("dc-a", "all"):
        lines += start_dc_a(opts, procs, workdir)
    if opts.mode in ("memcached-tls", "all"):
        if memcached_has_tls(binary):
            lines += start_memcached_tls(opts, procs, workdir, binary)
        elif opts.mode == "all":
            lines.append("TLS to memcached: skipped, this memcached is built without TLS (-Z)")
        else:
            raise Failure("this memcached is built without TLS: `memcached -h` lists no -Z")
    return lines


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # A shell starts background jobs with SIGINT ignored; restore it so Ctrl-C (or kill -INT)
    # always reaches the clean-up below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    procs = Processes()
    status = 0
    with tempfile.TemporaryDirectory(prefix="edge-pair-") as tmp:
        try:
            lines = start(opts, procs, Path(tmp))
            print("\nConnect:", *lines, sep="\n")
            print("\nedge-pair: ready. Ctrl-C stops everything this script started.", flush=True)
            name, code = procs.wait_any()
            print(f"edge-pair: {name} exited with status {code}; stopping the rest", flush=True)
            status = 1
        except Failure as exc:
            print(f"edge-pair: {exc}", file=sys.stderr, flush=True)
            status = 1
        except KeyboardInterrupt:
            print("\nedge-pair: stopping", flush=True)
        finally:
            procs.stop_all()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
