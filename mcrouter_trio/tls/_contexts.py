"""TLS building blocks: ``ssl.SSLContext`` factories, hot reloading and client session reuse.

This module is pure (no Trio import): it only turns settings into ``ssl.SSLContext`` objects.
The listeners and the destinations wrap their sockets themselves, in a
``transport.TLSSocket`` made from ``holder.context``.

Semantics follow mcrouter (``--ssl-port`` / ``--server-pem-*`` downstream, ``--pem-*`` and
``--ssl-verify-peers`` upstream), with two deliberate differences:

* TLS 1.2 is the floor on both sides (memcached's default ``ssl_min_version`` too); TLS 1.3 is
  negotiated whenever the peer offers it, and ``tls13_only`` raises the floor.
* Certificates are re-read when their files change (checked with ``os.stat`` whenever the
  caller asks, typically every second), not every 30 minutes as in mcrouter. A broken
  replacement never takes the service down: the previous context stays in use.

Rotation only affects new handshakes. A connection keeps the ``SSLObject`` (and thus the
context) it was created with until it closes, which is exactly what a rolling rotation needs.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import attrs

__all__ = [
    "ClientTLSSettings",
    "ReloadingContext",
    "ServerTLSSettings",
    "SessionCache",
    "build_client_context",
    "build_server_context",
    "describe_ssl_error",
]

logger = logging.getLogger("mcrouter_trio.tls")


def _to_path(value: str | os.PathLike[str]) -> Path:
    return Path(value)


def _to_optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _present(*paths: Path | None) -> tuple[Path, ...]:
    return tuple(p for p in paths if p is not None)


@attrs.frozen(kw_only=True)
class ServerTLSSettings:
    """Downstream (listener) TLS: what clients of the proxy see.

    ``ca_path`` enables client-certificate verification. As in mcrouter, a presented client
    certificate is always verified, but only ``require_peer_certs`` makes one mandatory
    (mutual TLS). Requiring certificates without a CA to check them against is rejected here,
    at configuration time, rather than failing every handshake later.
    """

    cert_path: Path = attrs.field(converter=_to_path)
    key_path: Path = attrs.field(converter=_to_path)
    ca_path: Path | None = attrs.field(default=None, converter=_to_optional_path)
    require_peer_certs: bool = False
    tls13_only: bool = False

    def __attrs_post_init__(self) -> None:
        if self.require_peer_certs and self.ca_path is None:
            raise ValueError("require_peer_certs needs a CA file (ca_path) to verify clients")

    def watched_paths(self) -> tuple[Path, ...]:
        """The files whose change should trigger a rebuild."""
        return _present(self.cert_path, self.key_path, self.ca_path)


@attrs.frozen(kw_only=True)
class ClientTLSSettings:
    """Upstream (destination) TLS: how the proxy dials TLS servers.

    The defaults mirror mcrouter: no server verification unless ``verify_peers`` is set
    (``--ssl-verify-peers``), and even then no hostname check (mcrouter trusts the chain only)
    unless ``check_hostname`` is set. The name sent in SNI and checked is the destination's
    (its pool's ``server_name``, else its host), chosen by whoever dials.
    """

    cert_path: Path | None = attrs.field(default=None, converter=_to_optional_path)
    key_path: Path | None = attrs.field(default=None, converter=_to_optional_path)
    ca_path: Path | None = attrs.field(default=None, converter=_to_optional_path)
    verify_peers: bool = False
    check_hostname: bool = False
    tls13_only: bool = False

    def __attrs_post_init__(self) -> None:
        if self.key_path is not None and self.cert_path is None:
            raise ValueError("key_path given without cert_path")

    def watched_paths(self) -> tuple[Path, ...]:
        """The files whose change should trigger a rebuild."""
        return _present(self.cert_path, self.key_path, self.ca_path)


def _refuse_encrypted_key() -> str:
    # Without a password callback OpenSSL prompts on the terminal for an encrypted key, which
    # would hang a daemon at start or, worse, in the middle of a reload.
    raise ValueError("the private key is encrypted; give the proxy an unencrypted key file")


def _set_versions(ctx: ssl.SSLContext, tls13_only: bool) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls13_only else ssl.TLSVersion.TLSv1_2


def build_server_context(s: ServerTLSSettings) -> ssl.SSLContext:
    """Build a listener context from ``s``; raises ``OSError``/``ssl.SSLError`` on bad files.

    Built on a bare ``PROTOCOL_TLS_SERVER`` context rather than ``create_default_context``:
    the latter loads the system CA store, which would let any public CA vouch for clients.
    Session tickets and the server-side session cache keep OpenSSL's defaults (on), so
    reconnecting proxies can resume instead of paying a full handshake.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _set_versions(ctx, s.tls13_only)
    ctx.load_cert_chain(certfile=s.cert_path, keyfile=s.key_path, password=_refuse_encrypted_key)
    if s.ca_path is not None:
        ctx.load_verify_locations(cafile=s.ca_path)
        ctx.verify_mode = ssl.CERT_REQUIRED if s.require_peer_certs else ssl.CERT_OPTIONAL
    return ctx


def build_client_context(s: ClientTLSSettings) -> ssl.SSLContext:
    """Build a destination context from ``s``; raises ``OSError``/``ssl.SSLError`` on bad files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _set_versions(ctx, s.tls13_only)
    if s.cert_path is not None:
        ctx.load_cert_chain(
            certfile=s.cert_path, keyfile=s.key_path, password=_refuse_encrypted_key
        )
    if s.verify_peers:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = s.check_hostname
        if s.ca_path is not None:
            ctx.load_verify_locations(cafile=s.ca_path)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        # Order matters: the ssl module refuses CERT_NONE while check_hostname is on.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)" -> "wrong version number"
_OPENSSL_NOISE = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$")


def describe_ssl_error(exc: BaseException) -> str:
    """A one-line, human-readable reason for a failed TLS operation or file load."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        text = _OPENSSL_NOISE.sub("", str(exc.args[1] if len(exc.args) > 1 else exc))
        return text or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if exc.filename is None else f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


class _WatchedSettings(Protocol):
    def watched_paths(self) -> tuple[Path, ...]: ...


SettingsT = TypeVar("SettingsT", bound=_WatchedSettings)

# (st_mtime_ns, st_size, st_ino) per watched file, or None while the file is missing.
# The inode catches `mv new cert.pem` even when mtime and size happen to match.
_Fingerprint = tuple[tuple[int, int, int] | None, ...]


def _fingerprint(paths: tuple[Path, ...]) -> _Fingerprint:
    return tuple(_stat_key(p) for p in paths)


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ReloadingContext(Generic[SettingsT]):
    """Holds the current ``SSLContext`` for one set of TLS files and rebuilds it on change.

    The first build happens in the constructor and its errors propagate: a proxy should not
    start with unusable certificates. Later rebuilds never raise; a failure (mismatched key,
    half-written file, missing file) is logged on ``mcrouter_trio.tls``, kept in
    ``last_error``, and the previous context stays current. A failed set of files is not
    retried until one of them changes again, so a periodic caller does not spam the log.

    Changes are detected by (mtime_ns, size, inode). Replacing a file by rename always
    changes the inode; an in-place rewrite with identical size inside one coarse kernel
    timestamp tick (a few ms) could go unnoticed, which is one more reason to rotate with
    write-to-temp-then-``mv``.
    """

    def __init__(
        self,
        settings: SettingsT,
        builder: Callable[[SettingsT], ssl.SSLContext],
    ) -> None:
        self._settings = settings
        self._builder = builder
        self._paths = settings.watched_paths()
        # Stat before reading: if a file changes while we build, the next check sees a
        # different fingerprint and rebuilds, so we can never miss a write.
        self._seen = _fingerprint(self._paths)
        self._context = builder(settings)
        self.generation = 0
        self.last_error: str | None = None

    @property
    def settings(self) -> SettingsT:
        return self._settings

    @property
    def context(self) -> ssl.SSLContext:
        """The context new connections should use."""
        return self._context

    def maybe_reload(self) -> bool:
        """Rebuild if any watched file changed; return True only if a new context is in use.

        Costs one ``os.stat`` per file when nothing changed.
        """
        current = _fingerprint(self._paths)
        if current == self._seen:
            return False
        self._seen = current
        try:
            context = self._builder(self._settings)
        except (OSError, ValueError) as exc:
            self._record_failure(exc)
            return False
        self._context = context
        self.generation += 1
        self.last_error = None
        logger.info("reloaded TLS material from %s", ", ".join(map(str, self._paths)))
        return True

    def _record_failure(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.error(
            "TLS reload from %s failed, keeping the previous certificates: %s",
            ", ".join(map(str, self._paths)),
            self.last_error,
        )


class SessionCache:
    """Client-side TLS sessions per destination, for abbreviated (resumed) handshakes.

    Usage (as ``upstream`` does, with ``session=`` passed on to ``SSLContext.wrap_bio``)::

        ctx = holder.context
        offered = cache.get(host, port, ctx)
        tls = TLSSocket(tcp, ctx, server_hostname=name, session=offered)
        try:
            await tls.do_handshake()
        except (ssl.SSLError, OSError):
            if offered is not None:
                cache.disable(host, port)     # then redial once without a session
            raise
        ...                                   # send a request, read its reply
        cache.put(host, port, ctx, tls.session)

    Three details matter:

    * With TLS 1.3 the server sends its tickets *after* the handshake, so ``session`` only
      becomes resumable once some application data has been read; store it after the first
      reply (or again before closing).
    * ``ssl`` rejects a session created by a different ``SSLContext``; since a reload swaps
      contexts, entries remember their context and ``get`` ignores stale ones.
    * Some servers fail a resumed handshake outright instead of falling back to a full one.
      memcached 1.6.18 with ``ssl_verify_mode`` >= 1 but without ``-o ssl_session_cache``
      answers every resumption attempt with an ``internal error`` alert (observed; OpenSSL
      needs a session id context there and memcached only sets one with the cache on).
      ``disable`` stops offering sessions to such a destination.
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, int], tuple[ssl.SSLContext, ssl.SSLSession]] = {}
        self._disabled: set[tuple[str, int]] = set()

    def get(self, host: str, port: int, context: ssl.SSLContext) -> ssl.SSLSession | None:
        """The session to offer when dialing ``(host, port)`` with ``context``, if any."""
        entry = self._sessions.get((host, port))
        if entry is None or entry[0] is not context:
            return None
        return entry[1]

    def put(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        session: ssl.SSLSession | None,
    ) -> None:
        """Remember ``session`` (read from a live connection) for later dials.

        ``None`` (no session yet) and disabled destinations are ignored.
        """
        if session is not None and (host, port) not in self._disabled:
            self._sessions[(host, port)] = (context, session)

    def discard(self, host: str, port: int) -> None:
        """Forget the session for ``(host, port)``; a later ``put`` stores a new one."""
        self._sessions.pop((host, port), None)

    def disable(self, host: str, port: int) -> None:
        """Forget the session and never offer one to ``(host, port)`` again."""
        self.discard(host, port)
        self._disabled.add((host, port))

    def __len__(self) -> int:
        return len(self._sessions)
