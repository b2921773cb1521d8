"""TLS set-up for both sides: contexts, the TLS flags, certificate rotation, `certs init`.

`_contexts` builds `SSLContext`s and holds them in reloading holders (no Trio);
`_setup` turns the command line's TLS flags into those holders and watches their
files; `certs` writes a CA and the edge pair's certificates.
"""

from mcrouter_trio.tls._contexts import (
    ClientTLSSettings,
    ReloadingContext,
    ServerTLSSettings,
    SessionCache,
    build_client_context,
    build_server_context,
    describe_ssl_error,
)

__all__ = [
    "ClientTLSSettings",
    "ReloadingContext",
    "ServerTLSSettings",
    "SessionCache",
    "build_client_context",
    "build_server_context",
    "describe_ssl_error",
]
