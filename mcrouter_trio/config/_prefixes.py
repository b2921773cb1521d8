"""Routing prefixes in configs: `-R`, `routes` aliases, the preprocessor's globals.

mcrouter's `RoutingPrefix`: `/region/cluster/` with a non-empty region and cluster;
a missing leading or trailing slash is added. `--config-params name:value,...`
fills `%name%` in the config; the global parameters (`%default-route%`, ...) are
always there and win over a user parameter of the same name, as in mcrouter's
`ProxyConfigBuilder::buildGlobalParams`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

#: What `%router-info-name%` expands to (mcrouter's memcache router).
ROUTER_INFO_NAME: Final = "Memcache"
#: `%mcr_opts-num_proxies%` and the like: mcrouter's options by field name.
MCROUTER_OPTION_PREFIX: Final = "mcr_opts-"


class BadPrefix(ValueError):
    """A routing prefix that is not `/region/cluster/`."""


def normalise_prefix(prefix: str) -> str:
    """`/region/cluster/` from `region/cluster`, `/region/cluster`, ...; else `BadPrefix`."""
    if not prefix:
        raise BadPrefix("Routing prefix can not be empty")
    full = prefix if prefix.startswith("/") else "/" + prefix
    full = full if full.endswith("/") else full + "/"
    parts = full.split("/")
    if len(parts) != 4 or not parts[1] or not parts[2]:
        raise BadPrefix(f"Routing prefix ({full}) should be of the form /region/cluster/")
    return full


def parse_config_params(text: str) -> dict[str, str]:
    """`--config-params name1:value1,name2:value2` (values are strings; ':' may repeat)."""
    params: dict[str, str] = {}
    for item in text.split(","):
        if not item:
            continue
        name, colon, value = item.partition(":")
        if not colon or not name:
            raise ValueError(f"expected NAME:VALUE, got {item!r}")
        params[name] = value
    return params


def global_params(
    default_route: str,
    host_id: int,
    num_proxies: int,
    user: Mapping[str, str],
    mcrouter_options: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Every `%name%` a config can use without defining it.

    `mcrouter_options` are mcrouter's integer and toggle options by name, already
    rendered (`ops/_mcrouter_options.py`); each is `%mcr_opts-<name>%`. As in
    mcrouter, the built-in names win over `user`, and `user` over the options.
    """
    region, cluster = default_route.strip("/").split("/")
    params: dict[str, object] = dict(user)
    params.update(
        {
            "default-route": default_route,
            "default-region": region,
            "default-cluster": cluster,
            "hostid": host_id,
            "router-name": "unknown",
            "service-name": "unknown",
            "service-router-capable": 0,
            "router-info-name": ROUTER_INFO_NAME,
            "num-proxies": num_proxies,
        }
    )
    for name, value in (mcrouter_options or {}).items():
        params.setdefault(MCROUTER_OPTION_PREFIX + name, value)
    return params
