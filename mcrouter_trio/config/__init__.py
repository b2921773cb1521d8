"""Reading mcrouter JSON configs: pure functions from text to frozen values.

No Trio and no sockets here: `load_config` turns config text into a
`ProxyConfig` (pools, the route tree, the servers it reaches, the MD5), or
raises one `ConfigError` listing every problem as `message @ $.json.path`.

The loader is imported lazily: the route classes import `config._specs`, which
runs this file first, and the loader imports the route classes; importing it
eagerly here would be circular.
"""

from typing import TYPE_CHECKING, Any

from mcrouter_trio.config._jsonc import ConfigError, loads_jsonc
from mcrouter_trio.config._servers import parse_server
from mcrouter_trio.config._specs import DEFAULT_SERVER_TIMEOUT_MS, PoolSpec, ServerSpec

if TYPE_CHECKING:
    from mcrouter_trio.config._loader import (
        HASH_FUNCS,
        ROUTE_TYPES,
        ProxyConfig,
        load_config,
        load_config_file,
    )

__all__ = [
    "DEFAULT_SERVER_TIMEOUT_MS",
    "HASH_FUNCS",
    "ROUTE_TYPES",
    "ConfigError",
    "PoolSpec",
    "ProxyConfig",
    "ServerSpec",
    "load_config",
    "load_config_file",
    "loads_jsonc",
    "parse_server",
]

_LAZY = frozenset({"HASH_FUNCS", "ROUTE_TYPES", "ProxyConfig", "load_config", "load_config_file"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from mcrouter_trio.config import _loader

        return getattr(_loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
