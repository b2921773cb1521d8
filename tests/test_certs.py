"""``init_certs`` / ``mcrouter-trio certs init``: the files, checked by openssl and memcached.

The memcached tests run the real Debian memcached 1.6.18 with ``-Z`` on a free loopback port,
because "memcached accepts these files" is the claim the README makes.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mcrouter_trio.tls._contexts import ClientTLSSettings, SessionCache, build_client_context
from mcrouter_trio.tls.certs import (
    DEFAULT_CLIENT_NAMES,
    DEFAULT_SERVER_NAMES,
    init_certs,
    main_certs,
)

ROLES = ("ca_cert", "ca_key", "server_cert", "server_key", "client_cert", "client_key")
HOST = "127.0.0.1"


def make(
    directory: Path,
    *,
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
    client_names: Sequence[str] = DEFAULT_CLIENT_NAMES,
    days: int = 30,
    key_type: str = "ec",
    overwrite: bool = False,
) -> dict[str, Path]:
    return init_certs(
        directory,
        server_names=server_names,
        client_names=client_names,
        days=days,
        key_type=key_type,
        overwrite=overwrite,
    )


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    return make(tmp_path / "edge")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# --- the files -----------------------------------------------------------------------------


def test_writes_six_pem_files(certs: dict[str, Path], tmp_path: Path) -> None:
    assert sorted(certs) == sorted(ROLES)
    assert {p.name for p in certs.values()} == {
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    }
    assert all(p.parent == tmp_path / "edge" for p in certs.values())
    assert sorted(p.name for p in (tmp_path / "edge").iterdir()) == sorted(
        p.name for p in certs.values()
    )  # no temp files left behind
    for role, path in certs.items():
        marker = b"-----BEGIN PRIVATE KEY-----" if role.endswith("key") else b"-----BEGIN CERT"
        assert path.read_bytes().startswith(marker)


def test_private_keys_are_0600(certs: dict[str, Path]) -> None:
    for role, path in certs.items():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if role.endswith("key") else 0o644), role


def test_openssl_verifies_the_chain(certs: dict[str, Path]) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (apt-get install openssl)")
    ca = str(certs["ca_cert"])
    for role, purpose in (("server_cert", "sslserver"), ("client_cert", "sslclient")):
        leaf = str(certs[role])
        out = subprocess.run(
            ["openssl", "verify", "-purpose", purpose, "-CAfile", ca, leaf],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{leaf}: OK"


def test_ca_extensions(certs: dict[str, Path]) -> None:
    ca = load(certs["ca_cert"])
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert ca.issuer == ca.subject


def test_server_cert_names_and_usage(certs: dict[str, Path]) -> None:
    server = load(certs["server_cert"])
    names = sans(server)
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert ekus(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == load(certs["ca_cert"]).subject


def test_client_cert_names_and_usage(tmp_path: Path) -> None:
    paths = make(tmp_path, client_names=["edge-a.example", "10.0.0.7"])
    client = load(paths["client_cert"])
    assert common_name(client) == "edge-a.example"
    assert sans(client).get_values_for_type(x509.DNSName) == ["edge-a.example"]
    assert sans(client).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert ekus(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_validity_days(tmp_path: Path) -> None:
    cert = load(make(tmp_path, days=825)["server_cert"])
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 825 <= lifetime.days <= 826  # plus the backdating for clock skew


@pytest.mark.parametrize(
    ("key_type", "key_class"),
    [("ec", ec.EllipticCurvePublicKey), ("rsa", rsa.RSAPublicKey)],
)
def test_key_types(tmp_path: Path, key_type: str, key_class: type) -> None:
    paths = make(tmp_path, key_type=key_type)
    assert isinstance(load(paths["server_cert"]).public_key(), key_class)
    # The key files load into an ssl context together with their certificates.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths["server_cert"], paths["server_key"])
    ctx.load_cert_chain(paths["client_cert"], paths["client_key"])


def test_refuses_to_overwrite(certs: dict[str, Path]) -> None:
    before = {role: p.read_bytes() for role, p in certs.items()}
    with pytest.raises(FileExistsError, match=r"ca\.crt"):
        make(certs["ca_cert"].parent)
    assert {role: p.read_bytes() for role, p in certs.items()} == before


def test_refuses_if_any_single_file_exists(tmp_path: Path) -> None:
    (tmp_path / "client.key").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"client\.key"):
        make(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["client.key"]  # nothing half-written


def test_overwrite_replaces_everything(certs: dict[str, Path]) -> None:
    old_serial = load(certs["server_cert"]).serial_number
    os.chmod(certs["server_key"], 0o644)
    make(certs["ca_cert"].parent, overwrite=True)
    assert load(certs["server_cert"]).serial_number != old_serial
    assert stat.S_IMODE(certs["server_key"].stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"server_names": []}, "server name"),
        ({"client_names": []}, "client name"),
        ({"days": 0}, "days"),
        ({"key_type": "dsa"}, "key_type"),
        ({"server_names": ["bücher.example"]}, "DNS name"),
    ],
)
def test_bad_arguments(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(tmp_path / "new", **kw)
    assert list(tmp_path.iterdir()) == []  # not even the directory


def test_a_bare_string_is_not_a_list_of_names(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        make(tmp_path, server_names="localhost")


# --- the CLI -------------------------------------------------------------------------------


def test_cli_init_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "certs" / "edge"
    assert main_certs(["init", str(target)]) == 0
    out = capsys.readouterr().out
    for name in ("ca.crt", "server.key", "client.crt"):
        assert f"wrote {target / name}" in out
    for flag in ("--tls-cert", "--ssl-require-peer-certs", "--pem-cert-path", "--ssl-verify-peers"):
        assert flag in out
    assert "ssl_verify_mode=2,ssl_session_cache" in out
    server = load(target / "server.crt")
    assert sans(server).get_values_for_type(x509.DNSName) == ["localhost"]
    assert common_name(load(target / "client.crt")) == "mcrouter-trio-client"
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert lifetime.days >= 825


def test_cli_options_and_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["init", str(tmp_path), "--server-name", "cache.dc-b.example", "--server-name", "::1"]
    argv += ["--client-name", "dc-a", "--days", "90", "--key-type", "rsa"]
    assert main_certs(argv) == 0
    server = load(tmp_path / "server.crt")
    assert sans(server).get_values_for_type(x509.DNSName) == ["cache.dc-b.example"]
    assert isinstance(server.public_key(), rsa.RSAPublicKey)
    assert common_name(load(tmp_path / "client.crt")) == "dc-a"

    capsys.readouterr()
    assert main_certs(argv) == 1
    assert "--force" in capsys.readouterr().err
    assert main_certs([*argv, "--force"]) == 0


@pytest.mark.parametrize(
    ("argv", "status"),
    [(["--help"], 0), (["init", "--help"], 0), ([], 2), (["init"], 2), (["frobnicate"], 2)],
)
def test_cli_usage(argv: list[str], status: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_certs(argv) == status
    captured = capsys.readouterr()
    assert "usage: mcrouter-trio certs" in captured.out + captured.err


# --- memcached -Z accepts the files --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"memcached exited with {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"memcached did not listen on {port}: {log.read_text()}")


@contextmanager
def running_memcached(paths: dict[str, Path], *options: str) -> Iterator[int]:
    """memcached -Z with the generated files and mandatory client certs; yields its port."""
    if shutil.which("memcached") is None:
        pytest.skip("memcached not installed (apt-get install memcached)")
    port = free_port()
    tls = [
        f"ssl_chain_cert={paths['server_cert']}",
        f"ssl_key={paths['server_key']}",
        f"ssl_ca_cert={paths['ca_cert']}",
        "ssl_verify_mode=2",
        *options,
    ]
    user = ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses to run as root
    argv = ["memcached", *user, "-l", HOST, "-p", str(port), "-U", "0", "-Z", "-o", ",".join(tls)]
    log = paths["ca_cert"].parent / "memcached.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_listening(proc, port, log)
        yield port
    finally:
        # SIGKILL, not SIGTERM: memcached takes about a second to stop gracefully, and this
        # throwaway instance has nothing worth saving.
        proc.kill()
        proc.wait()


@pytest.fixture
def memcached_port(certs: dict[str, Path]) -> Iterator[int]:
    with running_memcached(certs) as port:
        yield port


def client_context(paths: dict[str, Path], *, with_cert: bool = True) -> ssl.SSLContext:
    return build_client_context(
        ClientTLSSettings(
            cert_path=paths["client_cert"] if with_cert else None,
            key_path=paths["client_key"] if with_cert else None,
            ca_path=paths["ca_cert"],
            verify_peers=True,
            check_hostname=True,  # the server cert's SANs include IP 127.0.0.1
        )
    )


def version_over_tls(
    ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None = None
) -> ssl.SSLSocket:
    """Send ``version``; return the socket (still open) after checking the reply."""
    sock = ctx.wrap_socket(
        socket.create_connection((HOST, port), timeout=5), server_hostname=HOST, session=session
    )
    try:
        sock.sendall(b"version\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(100)
            if not chunk:
                raise EOFError(f"connection closed after {reply!r}")
            reply += chunk
        assert reply == b"VERSION 1.6.18\r\n"
    except BaseException:
        sock.close()
        raise
    return sock


def test_memcached_accepts_client_cert(certs: dict[str, Path], memcached_port: int) -> None:
    with version_over_tls(client_context(certs), memcached_port) as sock:
        assert sock.version() == "TLSv1.3"


def refusal(ctx: ssl.SSLContext, port: int) -> str:
    """Connect, then read without sending; return the SSL error memcached's alert causes.

    Reading first matters with TLS 1.3: the client's handshake completes before the server
    has checked the certificate, and a write racing the server's close would fail with a
    bare EOF/reset instead of the alert that says why.
    """
    with pytest.raises(ssl.SSLError) as info:
        raw = socket.create_connection((HOST, port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname=HOST) as sock:
            sock.recv(100)
    return str(info.value)


def test_memcached_refuses_client_without_cert(certs: dict[str, Path], memcached_port: int) -> None:
    assert "certificate required" in refusal(client_context(certs, with_cert=False), memcached_port)
    ctx = client_context(certs, with_cert=False)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    assert "handshake failure" in refusal(ctx, memcached_port)


def test_memcached_refuses_foreign_client_cert(
    certs: dict[str, Path], memcached_port: int, tmp_path: Path
) -> None:
    foreign = make(tmp_path / "other")
    ctx = client_context(certs)
    ctx.load_cert_chain(foreign["client_cert"], foreign["client_key"])
    assert "unknown ca" in refusal(ctx, memcached_port)


def resumed_flags(ctx: ssl.SSLContext, port: int, rounds: int) -> Sequence[bool]:
    """Connect ``rounds`` times, offering the session cached from the previous connection."""
    cache, flags = SessionCache(), list[bool]()
    for _ in range(rounds):
        with version_over_tls(ctx, port, cache.get(HOST, port, ctx)) as sock:
            flags.append(bool(sock.session_reused))
            cache.put(HOST, port, ctx, sock.session)  # after a reply, so tickets have arrived
    return flags


@pytest.mark.parametrize("tls12", [False, True], ids=["tls1.3", "tls1.2"])
def test_memcached_session_resumption(certs: dict[str, Path], tls12: bool) -> None:
    ctx = client_context(certs)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with running_memcached(certs, "ssl_session_cache") as port:
        assert resumed_flags(ctx, port, 3) == [False, True, True]


def test_memcached_without_session_cache_fails_resumption(certs: dict[str, Path]) -> None:
    # Pins the interop quirk documented on SessionCache: with client verification on and
    # no ssl_session_cache, memcached 1.6.18 aborts a resumed handshake instead of falling
    # back to a full one. A fresh connection without a session still works.
    ctx = client_context(certs)
    with running_memcached(certs) as port:
        with version_over_tls(ctx, port) as sock:
            session = sock.session
        with pytest.raises(ssl.SSLError, match="internal error"):
            version_over_tls(ctx, port, session).close()
        version_over_tls(ctx, port).close()
