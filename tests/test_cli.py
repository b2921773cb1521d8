"""The command line as a user runs it: `python -m mcrouter_trio ...` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from mcrouter_trio import __version__

EXIT_BAD_CONFIG = 3

VALID_CONFIG = """\
// mcrouter's JSON dialect: comments and trailing commas are fine.
{
  "pools": {
    "A": { "servers": [ "127.0.0.1:11211", "127.0.0.1:11212", ] },
  },
  "route": "PoolRoute|A",
}
"""


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_validate_config_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(VALID_CONFIG)
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_validate_config_rejects_an_unknown_route_type(tmp_path: Path) -> None:
    path = tmp_path / "typo.json"
    path.write_text(
        '{"pools": {"A": {"servers": ["127.0.0.1:11211"]}},\n'
        ' "route": {"type": "PoolRute", "pool": "A"}}\n'
    )
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG
    assert "unknown route type 'PoolRute' @ $.route" in result.stderr
    assert str(path) in result.stderr
    assert "valid" not in result.stdout


def test_validate_config_names_every_problem_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "problems.json"
    path.write_text(
        '{"pools": {"A": {"servers": ["127.0.0.1:notaport"]}},\n'
        ' "route": {"type": "AllSyncRoute", "children": ["PoolRoute|A", "PoolRoute|B"]}}\n'
    )
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG
    assert "$.pools.A.servers[0]" in result.stderr
    assert "unknown pool 'B'" in result.stderr
    assert "$.route.children[1]" in result.stderr


def test_validate_config_rejects_broken_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"pools": {"A": {"servers": ["127.0.0.1:11211"]}}, "route": ')
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(path) in result.stderr


def test_validate_config_run_mode_still_rejects_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "typo.json"
    path.write_text('{"route": "PoolRute|A"}')
    result = run("--validate-config=run", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG  # an invalid config still stops it


def test_config_str_is_validated_too() -> None:
    result = run("--validate-config", "--config-str", '{"route": "NullRoute"}')
    assert result.returncode == 0, result.stderr
    result = run("--validate-config", "--config-str", '{"route": "NoSuchRoute"}')
    assert result.returncode == EXIT_BAD_CONFIG
    assert "NoSuchRoute" in result.stderr


def test_version_flag() -> None:
    for flag in ("-V", "--version"):
        result = run(flag)
        assert result.returncode == 0
        assert result.stdout.strip() == f"mcrouter-trio {__version__}"


def test_default_config_without_f_is_valid() -> None:
    result = run("--validate-config")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_help_lists_the_flags() -> None:
    result = run("--help")
    assert result.returncode == 0
    for flag in (
        "-p",
        "--port",
        "--listen-addresses",
        "-f",
        "--config-file",
        "--config-str",
        "-t",
        "--server-timeout",
        "--enable-flush-cmd",
        "--max-value-size",
        "--max-conns",
        "--max-client-outstanding-reqs",
        "--graceful-shutdown-timeout",
        "--validate-config",
        "-L",
        "--log-path",
        "-V",
        "--version",
    ):
        assert f" {flag}" in result.stdout, flag


def test_unreadable_config_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-config.json"
    result = run("--validate-config", "-f", str(missing))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr

    directory = tmp_path / "a-directory.json"
    directory.mkdir()
    result = run("--validate-config", "-f", str(directory))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(directory) in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_config_file_stops_the_server_too(tmp_path: Path) -> None:
    missing = tmp_path / "gone.json"
    result = run("-p", "0", "--listen-addresses", "127.0.0.1", "-f", str(missing))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(missing) in result.stderr


def test_non_utf8_config_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"route": "NullRoute", "x": "caf\xe9"}')
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(path) in result.stderr


# --- TLS flags ---------------------------------------------------------------------------------

TLS_FLAGS = (
    "--ssl-port",
    "--tls-cert",
    "--server-pem-cert-path",
    "--tls-key",
    "--server-pem-key-path",
    "--tls-ca",
    "--server-pem-ca-path",
    "--ssl-require-peer-certs",
    "--tls13-only",
    "--ssl-handshake-timeout",
    "--pem-cert-path",
    "--pem-key-path",
    "--pem-ca-path",
    "--ssl-verify-peers",
    "--tls-reload-interval",
)


def test_help_lists_the_tls_flags() -> None:
    result = run("--help")
    assert result.returncode == 0
    for flag in TLS_FLAGS:
        assert f" {flag}" in result.stdout, flag
    text = " ".join(result.stdout.split())
    assert "server_name" in text  # when the upstream host name is checked
    assert "system trust store" in text  # what --ssl-verify-peers trusts without a CA


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    other = ca.issue_cert("other.example")
    files = {
        "cert": tmp_path / "server.crt",
        "key": tmp_path / "server.key",
        "other_key": tmp_path / "other.key",
        "ca": tmp_path / "ca.crt",
        "garbage": tmp_path / "garbage.pem",
        "encrypted_key": tmp_path / "encrypted.key",
    }
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["garbage"].write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    files["encrypted_key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return files


def start(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Start a proxy that is expected to refuse to start."""
    return run(
        "-p", "0", "--listen-addresses", "127.0.0.1", "--config-str", NULL_ROUTE, *args,
        timeout=timeout,
    )  # fmt: skip


NULL_ROUTE = '{"route": "NullRoute"}'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ssl-port", "0"], "--ssl-port needs --tls-cert FILE and --tls-key FILE"),
        (["--ssl-port", "0", "--tls-cert", "c.pem"], "--ssl-port needs --tls-cert"),
        (["--ssl-require-peer-certs"], "--ssl-require-peer-certs needs --tls-ca FILE"),
        (["--pem-key-path", "k.pem"], "--pem-key-path needs --pem-cert-path"),
        (["--ssl-handshake-timeout", "0"], "--ssl-handshake-timeout"),
        (["--tls-reload-interval", "-1"], "--tls-reload-interval"),
    ],
)
def test_tls_flag_combinations_that_cannot_work(args: list[str], message: str) -> None:
    result = start(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t", "0"], "-t/--server-timeout: must be an integer from 1 to 1000000"),
        (["--max-conns", "-1"], "--max-conns: must be 0 (no limit) or more"),
        (["--max-client-outstanding-reqs", "-1"], "--max-client-outstanding-reqs: must be 0"),
        (["--target-max-pending-requests", "-5"], "--target-max-pending-requests: must be 0"),
        (["--max-value-size", "0"], "--max-value-size: must be at least 1 (bytes)"),
        (["--max-line-length", "-1"], "--max-line-length: must be at least 1"),
        (["--graceful-shutdown-timeout", "-1"], "--graceful-shutdown-timeout: must be a number"),
        (["--graceful-shutdown-timeout", "nan"], "--graceful-shutdown-timeout: must be a number"),
        (["--num-proxies", "0"], "--num-proxies/--proxy-threads: must be from 1 to 256, or auto"),
        (["--proxy-threads", "some"], "--num-proxies/--proxy-threads: must be from 1 to 256"),
    ],
)
def test_out_of_range_limits_are_refused_by_name(args: list[str], message: str) -> None:
    result = start(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_ports_or_ssl_ports_are_required() -> None:
    result = run("--listen-addresses", "127.0.0.1", "--config-str", NULL_ROUTE)
    assert result.returncode == 2
    assert "at least one -p PORT, --ssl-port PORT or --listen-sock-fd FD is required" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("flags", "culprit", "message"),
    [
        ({"--tls-cert": "missing", "--tls-key": "key"}, "--tls-cert", "No such file"),
        ({"--tls-cert": "garbage", "--tls-key": "key"}, "--tls-cert", "no readable PEM"),
        ({"--tls-cert": "cert", "--tls-key": "garbage"}, "--tls-key", "no PEM private key"),
        ({"--tls-cert": "cert", "--tls-key": "encrypted_key"}, "--tls-key", "encrypted"),
        ({"--tls-cert": "cert", "--tls-key": "key", "--tls-ca": "garbage"}, "--tls-ca", "PEM"),
        ({"--tls-cert": "cert", "--tls-key": "other_key"}, "--tls-key", "does not belong"),
        ({"--pem-cert-path": "missing"}, "--pem-cert-path", "No such file"),
        ({"--pem-cert-path": "cert", "--pem-key-path": "encrypted_key"}, "--pem-key-path", ""),
        ({"--pem-ca-path": "garbage", "--ssl-verify-peers": ""}, "--pem-ca-path", "PEM"),
    ],
)
def test_unusable_tls_files_stop_the_proxy_and_name_the_file(
    tls_files: dict[str, Path], flags: dict[str, str], culprit: str, message: str
) -> None:
    args: list[str] = []
    paths = {**tls_files, "missing": tls_files["cert"].with_name("missing.pem")}
    for flag, name in flags.items():
        args += [flag, str(paths[name])] if name else [flag]
    if "--tls-cert" in flags:
        args += ["--ssl-port", "0"]
    result = start(*args, timeout=10)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mcrouter-trio: cannot start: ")
    assert f"{culprit} {paths[flags[culprit]]}" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
