"""`import-twemproxy`: a nutcracker YAML pool as an mcrouter-trio config.

The config routes every key to the server nutcracker sends it to: one pool, one
PoolRoute whose `hash` is the pool's distribution (`Ketama`, `Modula`, `Random`)
with its key hash, `hash_tag`, server weights and the server names nutcracker
hashes (given only where they differ from the name mcrouter-trio would derive).
nutcracker's `listen` has no place in a config: it goes into a comment at the top,
as the command line that listens there. What cannot be carried over is listed as
notes (`message @ $.pool.key`); what would change placement or refuse to run is an
error instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import attrs
import yaml

from mcrouter_trio.hashing import DISTRIBUTIONS, KEY_HASHES, server_name

__all__ = ["Imported", "TwemproxyConfigError", "import_twemproxy"]

_DEFAULT_PORT: Final = 11211
#: Keys that do not change where keys go and that mcrouter-trio has no equivalent
#: for yet, with what to do instead.
_NOT_MAPPED: Final = {
    "backlog": "not mapped: mcrouter-trio uses the system's listen backlog",
    "client_connections": "not mapped: see --max-conns",
    "server_connections": "not mapped: mcrouter-trio keeps one pipelined connection per server",
    "tcpkeepalive": "not mapped",
    "preconnect": "not mapped: mcrouter-trio connects on the first request",
    "reuseport": "not mapped: see --num-proxies",
}
_REDIS_KEYS: Final = ("redis_auth", "redis_db")
_MAPPED: Final = frozenset({"listen", "hash", "hash_tag", "distribution", "timeout", "servers"})
#: nutcracker's ejection keys: the same pool keys here, checked as nutcracker does.
_EJECTION: Final = ("auto_eject_hosts", "server_failure_limit", "server_retry_timeout")
#: The largest `server_failure_limit` and `server_retry_timeout` (ms) a pool takes.
_EJECTION_MAX: Final = 1_000_000
#: mcrouter-trio's server timeout range, in ms.
_TIMEOUT_RANGE: Final = (1, 1_000_000)


class TwemproxyConfigError(ValueError):
    """The nutcracker config cannot be carried over; the message says why and where."""


@attrs.frozen
class Imported:
    #: The mcrouter-trio config (JSON with a leading comment).
    config: str
    #: What was not carried over, one `message @ $.path` per item.
    notes: tuple[str, ...]


@attrs.frozen
class _Server:
    address: str  # host:port as mcrouter-trio server strings write it
    weight: int
    name: str | None  # what nutcracker hashes, if it differs from mcrouter-trio's default


def import_twemproxy(text: str, pool: str | None = None, source: str = "") -> Imported:
    """Convert nutcracker YAML `text`; `pool` picks one when the file has several."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TwemproxyConfigError(f"not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not document:
        raise TwemproxyConfigError("expected a mapping of pool names to pools")
    if pool is None:
        if len(document) > 1:
            names = ", ".join(str(name) for name in document)
            raise TwemproxyConfigError(
                f"the file has several pools ({names}): choose one with --pool"
            )
        pool = str(next(iter(document)))
    if pool not in document:
        raise TwemproxyConfigError(f"no pool '{pool}' (pools: {', '.join(map(str, document))})")
    body = document[pool]
    if not isinstance(body, dict):
        raise TwemproxyConfigError(f"expected a mapping @ $.{pool}")
    return _import_pool(pool, body, source)


def _import_pool(name: str, body: Mapping[str, Any], source: str) -> Imported:
    notes: list[str] = []

    def at(key: str) -> str:
        return f"$.{name}.{key}"

    if body.get("redis"):
        raise TwemproxyConfigError(f"redis pools are not supported @ {at('redis')}")
    for key in body:
        if key in _NOT_MAPPED:
            notes.append(f"{key}: {_NOT_MAPPED[key]} @ {at(key)}")
        elif key in _REDIS_KEYS or key == "redis":
            if key != "redis":
                notes.append(f"{key}: redis only, ignored @ {at(key)}")
        elif key not in _MAPPED and key not in _EJECTION:
            notes.append(f"unknown key '{key}', ignored @ {at(key)}")

    distribution = str(body.get("distribution", "ketama"))
    if distribution not in DISTRIBUTIONS:
        raise TwemproxyConfigError(f"unknown distribution '{distribution}' @ {at('distribution')}")
    key_hash = str(body.get("hash", "fnv1a_64"))
    if key_hash not in KEY_HASHES:
        raise TwemproxyConfigError(f"unknown hash '{key_hash}' @ {at('hash')}")
    servers = _servers(body.get("servers"), at("servers"))

    hash_spec: dict[str, Any] = {"hash_func": distribution.capitalize(), "key_hash": key_hash}
    if "hash_tag" in body:
        tag = body["hash_tag"]
        if not isinstance(tag, str) or len(tag.encode()) != 2:
            raise TwemproxyConfigError(f"a hash tag is two characters @ {at('hash_tag')}")
        hash_spec["hash_tag"] = tag
    if any(server.weight != 1 for server in servers):
        hash_spec["server_weights"] = [server.weight for server in servers]
    if any(server.name is not None for server in servers):
        hash_spec["server_names"] = [server.name for server in servers]

    pool_body: dict[str, Any] = {"servers": [server.address for server in servers]}
    timeout = body.get("timeout")
    if type(timeout) is int and timeout > 0:
        low, high = _TIMEOUT_RANGE
        pool_body["server_timeout"] = min(max(timeout, low), high)
        if not low <= timeout <= high:
            notes.append(
                f"timeout {timeout} ms clamped to {pool_body['server_timeout']} @ {at('timeout')}"
            )
    else:
        notes.append(
            "timeout: nutcracker waits forever without one; mcrouter-trio's"
            f" server_timeout defaults to 1000 ms @ {at('timeout')}"
        )

    _carry_ejection(body, pool_body, at, notes)

    config = {
        "pools": {name: pool_body},
        "route": {"type": "PoolRoute", "pool": name, "hash": hash_spec},
    }
    header = [f"// Imported from nutcracker pool '{name}'{f' in {source}' if source else ''}."]
    header.extend(_listen_comment(body.get("listen"), at("listen"), notes))
    return Imported(
        "\n".join([*header, json.dumps(config, indent=2, ensure_ascii=False)]) + "\n", tuple(notes)
    )


def _carry_ejection(
    body: Mapping[str, Any], pool_body: dict[str, Any], at: Any, notes: list[str]
) -> None:
    """`auto_eject_hosts` and its two settings, as the pool keys of the same names."""
    eject = body.get("auto_eject_hosts", False)
    if type(eject) is not bool:
        raise TwemproxyConfigError(f"expected true or false @ {at('auto_eject_hosts')}")
    if eject:
        pool_body["auto_eject_hosts"] = True
    for key in ("server_failure_limit", "server_retry_timeout"):
        if key not in body:
            continue
        value = body[key]
        if type(value) is not int or value < 1:
            raise TwemproxyConfigError(f"expected a positive integer @ {at(key)}")
        if not eject:
            notes.append(f"{key}: no effect without auto_eject_hosts, ignored @ {at(key)}")
            continue
        pool_body[key] = min(value, _EJECTION_MAX)
        if value > _EJECTION_MAX:
            notes.append(f"{key} {value} clamped to {_EJECTION_MAX} @ {at(key)}")


def _listen_comment(listen: object, path: str, notes: list[str]) -> list[str]:
    if not isinstance(listen, str) or not listen:
        notes.append(f"no listen address @ {path}")
        return []
    if listen.startswith("/"):
        notes.append(f"unix socket listeners are not supported: listen on a TCP port @ {path}")
        return [f"// nutcracker listened on {listen}."]
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return [
        f"// nutcracker listened on {listen}; to listen there:",
        f"//   mcrouter-trio --listen-addresses {host} -p {port} -f <this file>",
    ]


def _servers(value: object, path: str) -> list[_Server]:
    if not isinstance(value, list) or not value:
        raise TwemproxyConfigError(f"expected a list of servers @ {path}")
    servers = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(value):
        server, hashed_name = _server(entry, f"{path}[{index}]")
        if hashed_name in seen:
            raise TwemproxyConfigError(
                f"servers #{seen[hashed_name]} and #{index} have the same name"
                f" '{hashed_name}' (nutcracker refuses this) @ {path}[{index}]"
            )
        seen[hashed_name] = index
        servers.append(server)
    return servers


def _server(entry: object, path: str) -> tuple[_Server, str]:
    """`host:port:weight [name]`, split from the end as nutcracker does."""
    if not isinstance(entry, str):
        raise TwemproxyConfigError(f"expected 'host:port:weight [name]' @ {path}")
    if entry.startswith("/"):
        raise TwemproxyConfigError(f"unix socket servers are not supported @ {path}")
    address, space, given_name = entry.rpartition(" ")
    if not space:
        address, given_name = entry, ""
    host_port, _, weight_text = address.rpartition(":")
    host, _, port_text = host_port.rpartition(":")
    if not host or not port_text.isdigit() or not weight_text.isdigit():
        raise TwemproxyConfigError(f"expected 'host:port:weight [name]', got '{entry}' @ {path}")
    port, weight = int(port_text), int(weight_text)
    if not 1 <= port <= 65535:
        raise TwemproxyConfigError(f"invalid port {port_text} @ {path}")
    if weight < 1:
        raise TwemproxyConfigError(f"a server's weight must be at least 1 @ {path}")
    # What nutcracker hashes: the given name, else the address as written.
    hashed = given_name or (host if port == _DEFAULT_PORT else f"{host}:{port_text}")
    bare_host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    derived = server_name(bare_host, port)
    shown = f"[{bare_host}]" if ":" in bare_host else bare_host
    return _Server(f"{shown}:{port}", weight, None if hashed == derived else hashed), hashed
