"""Reading mcrouter JSON configs: pure functions from text to frozen values.

No Trio and no sockets here: `load_config` turns config text into a
`ProxyConfig` (pools, the route tree, the servers it reaches, the MD5), or
raises one `ConfigError` listing every problem as `message @ $.json.path`.
The config layer builds routing values; the routing layer never imports it.
"""

from mcrouter_trio.config._jsonc import ConfigError, loads_jsonc
from mcrouter_trio.config._loader import (
    ProxyConfig,
    load_config,
    load_config_file,
)
from mcrouter_trio.config._servers import parse_server
from mcrouter_trio.routing._specs import DEFAULT_SERVER_TIMEOUT_MS, PoolSpec, ServerSpec

__all__ = [
    "DEFAULT_SERVER_TIMEOUT_MS",
    "ConfigError",
    "PoolSpec",
    "ProxyConfig",
    "ServerSpec",
    "load_config",
    "load_config_file",
    "loads_jsonc",
    "parse_server",
]
