"""The clients side: listeners, sessions, the client reactor and the router entry point."""

from mcrouter_trio.downstream._router import Router, RouterSettings
from mcrouter_trio.downstream._server import Proxy, ServerSettings, serve

__all__ = ["Proxy", "Router", "RouterSettings", "ServerSettings", "serve"]
