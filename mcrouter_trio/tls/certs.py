"""``mcrouter-trio certs init``: a private CA plus one server and one client certificate.

The point is to make the TLS edge (proxy in DC-A -> proxy or memcached in DC-B) a one-command
set-up instead of an openssl recipe. Everything is built with ``cryptography``:

* ``ca.crt`` / ``ca.key``: a self-signed CA (basicConstraints CA:TRUE, pathlen 0, keyCertSign).
  Both sides trust it; nothing else is trusted.
* ``server.crt`` / ``server.key``: serverAuth, with every ``server_names`` entry as a SAN
  (DNS name or IP address), because TLS clients match SANs and ignore the CN.
* ``client.crt`` / ``client.key``: clientAuth, for mutual TLS; the first client name is the CN.

Private keys are written with mode 0600. Each file is written to a temporary name and renamed
into place, so ``--force`` into a live directory gives readers (the proxy's reloader, memcached's
``refresh_certs``) either the old or the new file, never a torn one.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_CLIENT_NAMES",
    "DEFAULT_DAYS",
    "DEFAULT_SERVER_NAMES",
    "init_certs",
    "main_certs",
]

DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_CLIENT_NAMES = ("mcrouter-trio-client",)
# 825 days is the longest server-certificate lifetime Apple platforms accept; staying under it
# avoids surprises if the same files are ever used with such clients.
DEFAULT_DAYS = 825

# Backdate validity a little so a peer whose clock runs slightly behind accepts fresh certs.
_CLOCK_SKEW = datetime.timedelta(hours=1)

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Output file names, keyed by the names used in the returned dict.
_FILES = {
    "ca_cert": "ca.crt",
    "ca_key": "ca.key",
    "server_cert": "server.crt",
    "server_key": "server.key",
    "client_cert": "client.crt",
    "client_key": "client.key",
}


def init_certs(
    directory: Path,
    *,
    server_names: Sequence[str],
    client_names: Sequence[str],
    days: int,
    key_type: str = "ec",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write a CA, a server and a client certificate (PEM) into ``directory``.

    Returns the written paths keyed ``ca_cert``, ``ca_key``, ``server_cert``, ``server_key``,
    ``client_cert``, ``client_key``. ``key_type`` is ``"ec"`` (P-256, the default: small and
    fast to handshake) or ``"rsa"`` (3072 bits, for peers without ECDSA). Raises
    ``FileExistsError`` before writing anything if any target exists and ``overwrite`` is
    false, and ``ValueError`` for empty name lists, a non-positive ``days`` or a bad key type.
    """
    _check_arguments(server_names, client_names, days, key_type)
    paths = {role: directory / name for role, name in _FILES.items()}
    if not overwrite:
        _refuse_existing(paths.values())

    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=days)
    ca_key = _new_key(key_type)
    ca_cert = _ca_certificate(ca_key, now, not_after)
    server_key = _new_key(key_type)
    server_cert = _leaf_certificate(
        ca_cert, ca_key, server_key, server_names, ExtendedKeyUsageOID.SERVER_AUTH, now, not_after
    )
    client_key = _new_key(key_type)
    client_cert = _leaf_certificate(
        ca_cert, ca_key, client_key, client_names, ExtendedKeyUsageOID.CLIENT_AUTH, now, not_after
    )

    # Everything is generated before the first write, so errors leave no partial set. With
    # --force into a live directory, a reloader looking between two renames sees a mismatched
    # key and certificate, rejects them and keeps its old context until the set is complete.
    directory.mkdir(parents=True, exist_ok=True)
    pems = {
        "ca_key": _key_pem(ca_key),
        "server_key": _key_pem(server_key),
        "client_key": _key_pem(client_key),
        "ca_cert": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server_cert": server_cert.public_bytes(serialization.Encoding.PEM),
        "client_cert": client_cert.public_bytes(serialization.Encoding.PEM),
    }
    for role, pem in pems.items():
        _write_atomically(paths[role], pem, mode=0o600 if role.endswith("_key") else 0o644)
    return paths


def _check_arguments(
    server_names: Sequence[str], client_names: Sequence[str], days: int, key_type: str
) -> None:
    if isinstance(server_names, str) or isinstance(client_names, str):
        raise TypeError("server_names and client_names must be sequences of names, not a str")
    if not server_names:
        raise ValueError("at least one server name is required")
    if not client_names:
        raise ValueError("at least one client name is required")
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    if key_type not in ("ec", "rsa"):
        raise ValueError(f"key_type must be 'ec' or 'rsa', got {key_type!r}")
    for name in (*server_names, *client_names):
        _general_name(name)  # raises ValueError for unusable names, before any key is made


def _refuse_existing(paths: Iterable[Path]) -> None:
    # Checked for all six files up front so a refusal never leaves a half-written set behind.
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite existing files: {', '.join(existing)}")


def _new_key(key_type: str) -> _PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mcrouter-trio"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _general_name(name: str) -> x509.GeneralName:
    """An IP address SAN for address literals, a DNS SAN otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name or not name.isascii():
        raise ValueError(f"not a usable DNS name or IP address: {name!r}")
    return x509.DNSName(name)


def _ca_certificate(
    key: _PrivateKey, now: datetime.datetime, not_after: datetime.datetime
) -> x509.Certificate:
    subject = _name("mcrouter-trio CA")
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        # pathlen 0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True, rsa_key=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    ca_cert: x509.Certificate,
    ca_key: _PrivateKey,
    key: _PrivateKey,
    names: Sequence[str],
    usage: x509.ObjectIdentifier,
    now: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.Certificate:
    public_key = key.public_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False, rsa_key=isinstance(key, rsa.RSAPrivateKey)), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _key_usage(*, ca: bool, rsa_key: bool) -> x509.KeyUsage:
    # CAs only sign certificates (and CRLs). RSA leaves also get keyEncipherment for TLS 1.2
    # RSA key exchange; ECDSA never needs it.
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=rsa_key and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: _PrivateKey) -> bytes:
    # Unencrypted PKCS#8: memcached and the proxy load keys unattended, with no passphrase.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to a temp file next to ``path`` (created with ``mode``), then rename."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; fchmod (not umask-dependent) sets the final mode before any
        # data is written, so a key is never readable by others even for a moment.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcrouter-trio certs", description="Manage TLS certificates for mcrouter-trio."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser(
        "init",
        help="create a CA plus server and client certificates",
        description="Create ca.crt/ca.key, server.crt/server.key and client.crt/client.key "
        "in DIR (PEM; keys mode 0600).",
    )
    init.add_argument("directory", metavar="DIR", type=Path)
    init.add_argument(
        "--server-name",
        action="append",
        metavar="NAME",
        help="DNS name or IP address for the server certificate (repeatable; default: "
        + ", ".join(DEFAULT_SERVER_NAMES)
        + ")",
    )
    init.add_argument(
        "--client-name",
        action="append",
        metavar="NAME",
        help=f"name for the client certificate (repeatable; default: {DEFAULT_CLIENT_NAMES[0]})",
    )
    init.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days (825)")
    init.add_argument("--key-type", choices=("ec", "rsa"), default="ec", help="key algorithm")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def main_certs(argv: list[str]) -> int:
    """Run ``mcrouter-trio certs ...``; ``argv`` is what follows ``certs`` (e.g. ``["init", d]``).

    Returns the exit status instead of exiting, including for ``--help`` and usage errors.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        paths = init_certs(
            args.directory,
            server_names=args.server_name or list(DEFAULT_SERVER_NAMES),
            client_names=args.client_name or list(DEFAULT_CLIENT_NAMES),
            days=args.days,
            key_type=args.key_type,
            overwrite=args.force,
        )
    except FileExistsError as exc:
        print(
            f"mcrouter-trio certs init: error: {exc}; add --force to replace them", file=sys.stderr
        )
        return 1
    except (OSError, ValueError) as exc:
        print(f"mcrouter-trio certs init: error: {exc}", file=sys.stderr)
        return 1
    print(_report(paths))
    return 0


def _report(paths: dict[str, Path]) -> str:
    p = {role: str(path) for role, path in paths.items()}
    written = "\n".join(f"  wrote {path}" for path in p.values())
    return f"""{written}

Next steps (copy the files to each host; keep the .key files private):
  receiving side (DC-B proxy), mutual TLS:
    mcrouter-trio ... --ssl-port PORT --tls-cert {p["server_cert"]} \\
        --tls-key {p["server_key"]} --tls-ca {p["ca_cert"]} --ssl-require-peer-certs
  dialing side (DC-A proxy); mark remote servers "host:port:ascii:ssl" or set pool "use_ssl":
    mcrouter-trio ... --pem-cert-path {p["client_cert"]} --pem-key-path {p["client_key"]} \\
        --pem-ca-path {p["ca_cert"]} --ssl-verify-peers
  or memcached itself as the TLS server:
    memcached -Z -o ssl_chain_cert={p["server_cert"]},ssl_key={p["server_key"]},\\
ssl_ca_cert={p["ca_cert"]},ssl_verify_mode=2,ssl_session_cache
    (ssl_session_cache: with client verification memcached 1.6 aborts resumed handshakes
    without it)"""
