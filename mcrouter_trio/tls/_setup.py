"""The TLS command-line flags and what they turn into: reloading contexts for both sides.

Downstream (clients -> proxy) TLS listens on ``--ssl-port`` with ``--tls-cert/--tls-key``
(mcrouter's ``--server-pem-*`` names are aliases). Upstream (proxy -> servers whose spec has
mech ``ssl``) uses mcrouter's ``--pem-*`` and ``--ssl-verify-peers``. Every file is loaded
once at start, where a problem stops the proxy with a message naming the file, and then
re-checked every ``--tls-reload-interval`` seconds by `watch_tls_files`.
"""

from __future__ import annotations

import argparse
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.tls._contexts import (
    ClientTLSSettings,
    ReloadingContext,
    ServerTLSSettings,
    SettingsT,
    build_client_context,
    build_server_context,
    describe_ssl_error,
)

__all__ = [
    "TLSSetup",
    "TLSStartupError",
    "add_tls_arguments",
    "check_tls_arguments",
    "load_tls",
    "tls_warnings",
    "watch_tls_files",
]

log = logging.getLogger("mcrouter_trio.tls")

ContextSource = Callable[[], ssl.SSLContext]
_FileKind = Literal["certificate", "private key", "CA bundle"]


class TLSStartupError(Exception):
    """A TLS file cannot be used; the message names the flag and the file."""


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a number of seconds above 0")
    return value


def _interval(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number of seconds, 0 or more")
    return value


def add_tls_arguments(
    parser: argparse.ArgumentParser, port_list: Callable[[str], list[int]]
) -> None:
    downstream = parser.add_argument_group("TLS for clients of the proxy (downstream)")
    add = downstream.add_argument
    add(
        "--ssl-port",
        type=port_list,
        action="append",
        default=[],
        metavar="PORT[,PORT]",
        help="TCP port(s) to listen on for TLS clients, beside the plain -p ports (repeatable); "
        "needs --tls-cert and --tls-key",
    )
    add(
        "--tls-cert",
        "--server-pem-cert-path",
        metavar="FILE",
        help="certificate chain (PEM) the TLS listeners present",
    )
    add(
        "--tls-key",
        "--server-pem-key-path",
        metavar="FILE",
        help="unencrypted private key (PEM) of --tls-cert",
    )
    add(
        "--tls-ca",
        "--server-pem-ca-path",
        metavar="FILE",
        help="CA bundle (PEM) client certificates are verified against; a client that "
        "presents a certificate must pass, but only --ssl-require-peer-certs makes one "
        "mandatory. Without --tls-ca, client certificates are neither requested nor checked",
    )
    add(
        "--ssl-require-peer-certs",
        action="store_true",
        help="mutual TLS: refuse TLS clients without a certificate from --tls-ca",
    )
    add(
        "--ssl-handshake-timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="a TLS client that has not completed its handshake by then is disconnected "
        "(default 5)",
    )
    upstream = parser.add_argument_group(
        "TLS to servers (upstream)",
        "For servers whose mech is ssl: `host:port:ascii:ssl`, or in a pool with "
        '`"use_ssl": true` or `"security_mech": "ssl"`.',
    )
    add = upstream.add_argument
    add(
        "--pem-cert-path",
        metavar="FILE",
        help="client certificate (PEM) presented to TLS servers that ask for one (mutual TLS)",
    )
    add(
        "--pem-key-path",
        metavar="FILE",
        help="unencrypted private key (PEM) of --pem-cert-path; omit it if the key is in that file",
    )
    add(
        "--pem-ca-path",
        metavar="FILE",
        help="CA bundle (PEM) server certificates are verified against; used only with "
        "--ssl-verify-peers",
    )
    add(
        "--ssl-verify-peers",
        action="store_true",
        help="verify TLS servers' certificate chains against --pem-ca-path (the system trust "
        "store if it is not given). As in mcrouter only the chain is checked, except for "
        "pools that set server_name: their servers' certificates must also match that name. "
        "Without this flag the connection is encrypted but the server is not authenticated. "
        "SNI is always sent: the pool's server_name, else the server's host (IP addresses "
        "are never sent as SNI)",
    )
    both = parser.add_argument_group("TLS, both directions")
    add = both.add_argument
    add(
        "--tls13-only",
        action="store_true",
        help="accept and offer TLS 1.3 only, downstream and upstream (default: TLS 1.2 or 1.3)",
    )
    add(
        "--tls-reload-interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="how often the certificate, key and CA files are checked for changes "
        "(default 1; 0 = never). New handshakes use changed files; open connections keep "
        "theirs. A broken replacement is logged and the previous files stay in use",
    )


def ssl_ports(args: argparse.Namespace) -> tuple[int, ...]:
    return tuple(port for group in args.ssl_port for port in group)


def check_tls_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations that cannot work; each exits with status 2 through argparse."""
    if ssl_ports(args) and (args.tls_cert is None or args.tls_key is None):
        parser.error(
            "--ssl-port needs --tls-cert FILE and --tls-key FILE "
            "(the certificate and key the TLS listeners present)"
        )
    if args.ssl_require_peer_certs and args.tls_ca is None:
        parser.error(
            "--ssl-require-peer-certs needs --tls-ca FILE (the CA client certificates are "
            "verified against)"
        )
    if args.pem_key_path is not None and args.pem_cert_path is None:
        parser.error("--pem-key-path needs --pem-cert-path (the certificate of that key)")


def tls_warnings(args: argparse.Namespace) -> list[str]:
    """Flags that are accepted but have no effect, worth a line in the log."""
    warnings = []
    downstream = [
        name
        for name, value in (
            ("--tls-cert", args.tls_cert),
            ("--tls-key", args.tls_key),
            ("--tls-ca", args.tls_ca),
            ("--ssl-require-peer-certs", args.ssl_require_peer_certs),
        )
        if value
    ]
    if downstream and not ssl_ports(args):
        warnings.append(f"{', '.join(downstream)} without --ssl-port: no TLS listener uses them")
    if args.pem_ca_path is not None and not args.ssl_verify_peers:
        warnings.append("--pem-ca-path without --ssl-verify-peers: TLS servers are not verified")
    return warnings


@attrs.frozen
class TLSSetup:
    """The TLS contexts of one proxy, each rebuilt when its files change."""

    #: None when there are no --ssl-port listeners.
    server: ReloadingContext[ServerTLSSettings] | None
    #: For ssl servers; checks the chain only (when verifying at all).
    client: ReloadingContext[ClientTLSSettings]
    #: For ssl servers of pools that set server_name, under --ssl-verify-peers only.
    client_checking_hostname: ReloadingContext[ClientTLSSettings] | None = None

    def server_context(self) -> ContextSource | None:
        server = self.server
        return None if server is None else (lambda: server.context)

    def client_context_for(self, spec: ServerSpec) -> ContextSource | None:
        """What `Destination` dials `spec` with: None for plain servers."""
        if spec.mech != "ssl":
            return None
        holder = self.client
        if spec.server_name is not None and self.client_checking_hostname is not None:
            holder = self.client_checking_hostname
        return lambda: holder.context

    def holders(self) -> list[ReloadingContext[Any]]:
        found: list[ReloadingContext[Any]] = [self.client]
        if self.client_checking_hostname is not None:
            found.append(self.client_checking_hostname)
        if self.server is not None:
            found.append(self.server)
        return found


def load_tls(args: argparse.Namespace) -> TLSSetup:
    """Build every context the flags ask for; raises `TLSStartupError` naming a bad file."""
    server = None
    if ssl_ports(args):
        server_settings = ServerTLSSettings(
            cert_path=args.tls_cert,
            key_path=args.tls_key,
            ca_path=args.tls_ca,
            require_peer_certs=args.ssl_require_peer_certs,
            tls13_only=args.tls13_only,
        )
        server = _load(
            server_settings,
            build_server_context,
            [
                ("--tls-cert", args.tls_cert, "certificate"),
                ("--tls-key", args.tls_key, "private key"),
                ("--tls-ca", args.tls_ca, "CA bundle"),
            ],
        )
    client_files: list[tuple[str, str | None, _FileKind]] = [
        ("--pem-cert-path", args.pem_cert_path, "certificate"),
        ("--pem-key-path", args.pem_key_path, "private key"),
    ]
    if args.ssl_verify_peers:
        client_files.append(("--pem-ca-path", args.pem_ca_path, "CA bundle"))
    client_settings = ClientTLSSettings(
        cert_path=args.pem_cert_path,
        key_path=args.pem_key_path,
        ca_path=args.pem_ca_path,
        verify_peers=args.ssl_verify_peers,
        tls13_only=args.tls13_only,
    )
    client = _load(client_settings, build_client_context, client_files)
    checking = None
    if args.ssl_verify_peers:
        checking = _load(
            attrs.evolve(client_settings, check_hostname=True), build_client_context, client_files
        )
    return TLSSetup(server, client, checking)


def _load(
    settings: SettingsT,
    builder: Callable[[SettingsT], ssl.SSLContext],
    files: Sequence[tuple[str, str | None, _FileKind]],
) -> ReloadingContext[SettingsT]:
    try:
        return ReloadingContext(settings, builder)
    except (OSError, ValueError) as exc:
        given = [(flag, Path(path), kind) for flag, path, kind in files if path is not None]
        raise TLSStartupError(_explain(given, exc)) from exc


def _explain(files: Sequence[tuple[str, Path, _FileKind]], exc: Exception) -> str:
    # OpenSSL's errors ("[SSL] PEM lib") name no file; find the culprit ourselves.
    for flag, path, kind in files:
        problem = _file_problem(path, kind)
        if problem is not None:
            return f"{flag} {path}: {problem}"
    named = ", ".join(f"{flag} {path}" for flag, path, _ in files)
    if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
        return f"{named}: the private key does not belong to the certificate"
    return f"{named}: {describe_ssl_error(exc)}"


def _file_problem(path: Path, kind: _FileKind) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return exc.strerror or str(exc)
    if kind == "private key":
        if b"PRIVATE KEY-----" not in data:
            return "no PEM private key in the file"
        try:
            serialization.load_pem_private_key(data, password=None)
        except TypeError:
            return "the private key is encrypted; give the proxy an unencrypted key file"
        except ValueError:
            return "the PEM private key cannot be read"
        return None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        return f"no readable PEM certificate in the file (expected a {kind})"
    return None


async def watch_tls_files(holders: Sequence[ReloadingContext[Any]], interval: float) -> None:
    """Rebuild contexts whose files changed, every `interval` seconds, until cancelled."""
    while True:
        await trio.sleep(interval)
        for holder in holders:
            holder.maybe_reload()
