"""The TLS examples in examples/edge-pair/: configs are valid, and `run.py all` really works.

The end-to-end test runs the example script the way a user does (with free ports and a
temporary certificate directory), writes through the DC-A proxy and reads the value back
through DC-A, through DC-B's mutual-TLS listener and from DC-B's memcached; then stops the
script with SIGINT (Ctrl-C) and checks that everything it started is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Client, free_port

REPO = Path(__file__).resolve().parents[1]
EDGE_PAIR = REPO / "examples" / "edge-pair"
CONFIGS = sorted(EDGE_PAIR.glob("*.json"))
PORT_OPTIONS = ("dc_a", "dc_b_tls", "dc_b_memcached", "tls_proxy", "tls_memcached")


def _help_text() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    return done.stdout


def _memcached_has_tls() -> bool:
    done = subprocess.run(["memcached", "-h"], capture_output=True, text=True, timeout=10)
    return "--enable-ssl" in done.stdout


def test_there_are_three_example_configs() -> None:
    assert [p.name for p in CONFIGS] == ["dc-a.json", "dc-b.json", "memcached-tls.json"]


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_is_valid(config: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", "--validate-config", "-f", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "config is valid" in done.stdout


def test_run_script_help() -> None:
    done = subprocess.run(
        [sys.executable, str(EDGE_PAIR / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    for mode in ("dc-b", "dc-a", "memcached-tls", "all"):
        assert mode in done.stdout


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tls_call(port: int, certs: Path, request: bytes, *, client_cert: bool) -> bytes:
    """Send `request` over TLS to 127.0.0.1:port and read until END, ERROR or EOF."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if client_cert:
        context.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
    reply = b""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        while not reply.endswith((b"END\r\n", b"ERROR\r\n")):
            chunk = tls.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


class EdgePair:
    """A running `run.py all` with its ports and output."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.ports = {key: free_port() for key in PORT_OPTIONS}
        self.certs = tmp_path / "certs"
        self.output = tmp_path / "run.out"
        argv = [sys.executable, str(EDGE_PAIR / "run.py"), "all", "--certs", str(self.certs)]
        argv += extra
        for key, port in self.ports.items():
            argv += ["--" + key.replace("_", "-") + "-port", str(port)]
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while "edge-pair: ready" not in self.text():
            if self.process.poll() is not None:
                pytest.fail(f"run.py exited with {self.process.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"run.py not ready after {timeout} s:\n{self.text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM first: the script stops its servers (each in its own process group)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def edge_pair(tmp_path: Path) -> Iterator[EdgePair]:
    if "--ssl-port" not in _help_text():
        pytest.skip("mcrouter-trio has no TLS flags yet")
    pair = EdgePair(tmp_path)
    try:
        yield pair
    finally:
        pair.stop()


def test_run_all_end_to_end(edge_pair: EdgePair) -> None:
    edge_pair.wait_ready()
    ports = edge_pair.ports
    text = edge_pair.text()
    # The script shows the flags it used and how to connect.
    assert "--ssl-require-peer-certs" in text and "--ssl-verify-peers" in text
    assert f"openssl s_client -quiet -connect 127.0.0.1:{ports['dc_b_tls']}" in text
    assert all((edge_pair.certs / name).exists() for name in ("ca.crt", "client.key"))

    # Write through DC-A (plain text), read back through DC-A: the round trip crosses TLS.
    dc_a = Client(ports["dc_a"], timeout=10)
    try:
        assert dc_a.call(b"set edge 0 0 5\r\nhello\r\n") == b"STORED\r\n"
        assert dc_a.call(b"get edge\r\n", b"END\r\n") == b"VALUE edge 0 5\r\nhello\r\nEND\r\n"
    finally:
        dc_a.close()
    # A client that half-closes after pipelining (nc -N) gets every reply across the pair.
    with socket.create_connection(("127.0.0.1", ports["dc_a"]), timeout=10) as half_closed:
        half_closed.sendall(b"get edge\r\n" * 50)
        half_closed.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := half_closed.recv(65536):
            received += chunk
    assert received == b"VALUE edge 0 5\r\nhello\r\nEND\r\n" * 50
    # The value is in DC-B's memcached, and DC-B serves it to a client with a certificate.
    direct = Client(ports["dc_b_memcached"], timeout=10)
    try:
        assert direct.call(b"get edge\r\n", b"END\r\n") == b"VALUE edge 0 5\r\nhello\r\nEND\r\n"
    finally:
        direct.close()
    expected = b"VALUE edge 0 5\r\nhello\r\nEND\r\n"
    assert _tls_call(ports["dc_b_tls"], edge_pair.certs, b"get edge\r\n", client_cert=True) == (
        expected
    )
    # Without a client certificate DC-B refuses (TLS 1.3 reports it at the first read).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        reply = _tls_call(ports["dc_b_tls"], edge_pair.certs, b"get edge\r\n", client_cert=False)
        if not reply:
            raise ConnectionError("closed without a reply")

    if _memcached_has_tls():
        proxy = Client(ports["tls_proxy"], timeout=10)
        try:
            assert proxy.call(b"set mtls 0 0 2\r\nok\r\n") == b"STORED\r\n"
            assert proxy.call(b"get mtls\r\n", b"END\r\n") == b"VALUE mtls 0 2\r\nok\r\nEND\r\n"
        finally:
            proxy.close()
        reply = _tls_call(
            ports["tls_memcached"], edge_pair.certs, b"get mtls\r\n", client_cert=True
        )
        assert reply == b"VALUE mtls 0 2\r\nok\r\nEND\r\n"
    else:
        assert "memcached is built without TLS" in edge_pair.text()

    # Ctrl-C stops the script and everything it started.
    edge_pair.process.send_signal(signal.SIGINT)
    assert edge_pair.process.wait(timeout=30) == 0, edge_pair.text()
    assert "edge-pair: stopping" in edge_pair.text()
    for port in ports.values():
        assert not _accepts(port), f"port {port} still open after Ctrl-C"


def test_run_all_with_worker_processes(tmp_path: Path) -> None:
    if "--ssl-port" not in _help_text():
        pytest.skip("mcrouter-trio has no TLS flags yet")
    pair = EdgePair(tmp_path, "--num-proxies", "2")
    try:
        pair.wait_ready()
        ports = pair.ports
        assert pair.text().count("--num-proxies 2") >= 2  # DC-A and DC-B at least
        dc_a = Client(ports["dc_a"], timeout=10)
        try:
            assert dc_a.call(b"set workers 0 0 2\r\nok\r\n") == b"STORED\r\n"
            assert dc_a.call(b"get workers\r\n", b"END\r\n") == (
                b"VALUE workers 0 2\r\nok\r\nEND\r\n"
            )
            assert b"STAT num_proxies 2\r\n" in dc_a.call(b"stats\r\n", b"END\r\n")
        finally:
            dc_a.close()
        dc_b_stats = _tls_call(ports["dc_b_tls"], pair.certs, b"stats\r\n", client_cert=True)
        assert b"STAT num_proxies 2\r\n" in dc_b_stats
        pair.process.send_signal(signal.SIGINT)
        assert pair.process.wait(timeout=30) == 0, pair.text()
        for port in ports.values():
            assert not _accepts(port), f"port {port} still open after Ctrl-C"
    finally:
        pair.stop()
