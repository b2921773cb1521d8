"""Server strings and pool objects: the `pools` section (mcrouter's PoolFactory).

Pools are read by hand rather than with cattrs because a pool is more than a
record: `inherit` merges in another pool first, defaults depend on other fields
(`connect_timeout` defaults to the effective `server_timeout`, `use_ssl` to a
mech) and the keys mcrouter accepts but we do not implement are let through with
a warning instead of failing a config that works with mcrouter.

An object in a pool's `servers` is a route slot: the config loader builds it as
a route (`RouteSlotBuilder`) and the pool keeps it at its position.

Problems are returned, not raised, as `(path relative to the pool, message)`,
so one pass reports all of them and the caller can place them in the document.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Final, TypeVar

import attrs

from mcrouter_trio.config._jsonc import (
    Invalid,
    Path,
    Problem,
    check_bool,
    check_int,
    check_str,
    check_weights,
    describe,
)
from mcrouter_trio.hashing._spooky import spooky_hash32
from mcrouter_trio.routing._base import Route
from mcrouter_trio.routing._specs import (
    DEFAULT_SERVER_TIMEOUT_MS,
    EjectionSpec,
    PoolSpec,
    ServerSpec,
    TkoLimitSpec,
)

log = logging.getLogger("mcrouter_trio.config")

#: Security mechanisms we implement: "ssl" is TLS to the server.
MECHS = frozenset({"plain", "ssl"})
# mcrouter variants of TLS we do not implement; plain TLS ("ssl") serves their purpose.
_OTHER_MECHS = frozenset({"tls_to_plain", "fizz", "ktls12"})
#: mcrouter's own wire protocols, and why we cannot speak them to a server.
_OTHER_PROTOCOLS: Final = {
    "caret": "mcrouter's own binary protocol, not memcached's",
    "umbrella": "mcrouter's old binary protocol, not memcached's",
    "thrift": "Meta-only Thrift transport",
    "xdp": "Meta-only transport",
}
_COMPRESSIONS = frozenset({"compressed", "notcompressed"})
#: mcrouter's timeout range (folly `parseTimeout`), in ms.
TIMEOUT_RANGE = (1, 1_000_000)

_PORT = re.compile(r"[0-9]{1,5}")
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_mech(value: object) -> str:
    mech = check_str(value)
    if mech in MECHS:
        return mech
    if mech in _OTHER_MECHS:
        raise Invalid(f"security mech '{mech}' is not supported; use 'ssl'")
    raise Invalid(f"unknown security mech '{mech}'")


def _check_protocol(value: object) -> str:
    protocol = check_str(value)
    # Case-insensitive in a pool's `protocol`, as in mcrouter (server strings are not).
    if protocol.lower() == "ascii":
        return "ascii"
    if protocol.lower() in _OTHER_PROTOCOLS:
        raise Invalid(_unsupported_protocol(protocol, protocol.lower()))
    raise Invalid(f"unknown protocol '{protocol}'")


def _unsupported_protocol(written: str, protocol: str) -> str:
    return f"protocol '{written}' is not supported: {_OTHER_PROTOCOLS[protocol]}"


def parse_server(
    text: str,
    *,
    timeout_ms: int,
    connect_timeout_ms: int,
    default_mech: str = "plain",
    server_name: str | None = None,
    port_override: int = 0,
) -> ServerSpec:
    """`HOST:PORT[:PROTOCOL[:MECH[:COMPRESSION]]]`, hosts may be in brackets
    (IPv6 addresses must be).

    Omitted parts take the pool's defaults. A pool's `port_override` (not 0)
    replaces the port, which may then be left out, as in mcrouter. Raises
    `ValueError` (`Invalid`) reading `invalid server '<text>' (<reason>)`.
    """

    def bad(reason: str) -> Invalid:
        return Invalid(f"invalid server '{text}' ({reason})")

    if text.startswith("unix:"):
        raise bad("unix sockets are not supported")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise bad("missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        # mcrouter takes a bracketed host that is no IP address as a host name.
        if not (_is_ipv6(host) or _HOSTNAME.fullmatch(host)):
            raise bad("missing host" if not host else f"invalid host '{host}'")
        if rest and not rest.startswith(":"):
            raise bad("expected ':' after ']'")
        fields = rest[1:].split(":") if rest else []
    else:
        if _is_ipv6(text):
            raise bad("IPv6 addresses must be in brackets, e.g. '[::1]:11211'")
        host, _, rest = text.partition(":")
        if not _HOSTNAME.fullmatch(host):
            raise bad("missing host" if not host else f"invalid host '{host}'")
        fields = rest.split(":") if rest else []
    if len(fields) > 4:
        raise bad("too many ':' fields")
    if port_override:
        port = port_override
    elif not fields or not fields[0]:
        raise bad("missing port")
    elif not _PORT.fullmatch(fields[0]) or int(fields[0]) > 65535:
        raise bad(f"port must be 0..65535, got '{fields[0]}'")
    else:
        # Port 0 is accepted, as mcrouter does; connecting to it fails.
        port = int(fields[0])
    if len(fields) > 1 and fields[1] != "ascii":
        if fields[1] in _OTHER_PROTOCOLS:
            raise bad(_unsupported_protocol(fields[1], fields[1]))
        raise bad(f"unknown protocol '{fields[1]}'")
    mech = default_mech
    if len(fields) > 2:
        try:
            mech = check_mech(fields[2])
        except Invalid as exc:
            raise bad(str(exc)) from None
    if len(fields) > 3 and fields[3] not in _COMPRESSIONS:
        raise bad(f"unknown compression '{fields[3]}'")
    # COMPRESSION only matters to caret, so a valid value is accepted and unused.
    return ServerSpec(host, port, "ascii", mech, timeout_ms, connect_timeout_ms, server_name)


def _is_ipv6(text: str) -> bool:
    """True for an unbracketed IPv6 address, with or without a trailing `:port`."""
    for candidate in (text, text.rpartition(":")[0]):
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        return True
    return False


# ---------------------------------------------------------------------------
# Pools


@attrs.frozen
class PoolDefaults:
    """Settings a pool gets when it does not say (mcrouter command-line flags)."""

    timeout_ms: int = DEFAULT_SERVER_TIMEOUT_MS
    mech: str = "plain"


#: Pool keys we implement.
_POOL_KEYS = frozenset(
    {
        "servers", "server_timeout", "connect_timeout", "keep_routing_prefix", "weights",
        "protocol", "use_ssl", "security_mech", "server_name", "inherit", "name",
        "tko_tracker", "auto_eject_hosts", "server_failure_limit", "server_retry_timeout",
        "failure_domains", "port_override",
    }
)  # fmt: skip
#: Keys mcrouter knows that do not change where or how we send (FB-specific,
#: caret-only or tuning); a config using them still loads, with a warning.
_IGNORED_POOL_KEYS = frozenset(
    {
        "region", "cluster", "pool_locality", "qos", "enable_compression",
        "hostnames", "services", "additional_fanout", "tags",
        "error_on_empty", "service_id_override", "disable_request_deadline_check",
        "security_mech_within_dc", "security_mech_cross_dc", "port_override_within_dc",
        "port_override_cross_dc", "use_typed", "hash", "hash_salt", "hash_weights",
    }
)  # fmt: skip

T = TypeVar("T")


#: Builds a route object of a pool's `servers` list, given the object and its path
#: in the pool (None when the list is inherited: the pool it is written in reports
#: its problems). Returns None when it does not build, having reported why.
RouteSlotBuilder = Callable[[dict[str, object], Path | None], Route | None]


def parse_pool(
    name: str,
    body: object,
    defaults: PoolDefaults,
    library: Mapping[str, object],
    build_route: RouteSlotBuilder | None = None,
) -> tuple[PoolSpec, list[Problem]]:
    """One pool object; `library` holds the raw top-level pools for `inherit`.

    An object in `servers` is a route slot, built by `build_route` (mcrouter builds
    it as a route, in its place); without a builder it is a problem.
    Always returns a PoolSpec (with the servers that did parse) so that routes
    naming a broken pool do not add "unknown pool" noise to its real problems.
    """
    if not isinstance(body, dict):
        return PoolSpec(name, ()), [((), f"expected an object, got {describe(body)}")]
    own = set(body) - {"inherit"}
    merged, problems = _inherit(name, body, library)
    problems.extend(_check_keys(name, own))
    reader = _FieldReader(merged)
    reader.read("name", check_str, name)
    timeout = reader.read("server_timeout", _check_timeout, defaults.timeout_ms)
    connect_timeout = reader.read("connect_timeout", _check_timeout, timeout)
    keep_routing_prefix = reader.read("keep_routing_prefix", check_bool, False)
    weights: tuple[float, ...] | None = reader.read("weights", check_weights, None)
    reader.read("protocol", _check_protocol, "ascii")
    use_ssl = reader.read("use_ssl", check_bool, False)
    # `security_mech` wins over the deprecated `use_ssl`, as in mcrouter.
    mech = reader.read("security_mech", check_mech, "ssl" if use_ssl else defaults.mech)
    server_name: str | None = reader.read("server_name", _check_server_name, None)
    port_override: int = reader.read("port_override", _check_port_override, 0)
    ejection = _read_ejection(reader)
    servers: list[tuple[int, ServerSpec]] = []
    route_slots: list[tuple[int, Route]] = []
    if "servers" not in merged:
        reader.problems.append((("servers",), "required field missing"))
    elif not isinstance(merged["servers"], list):
        found = describe(merged["servers"])
        reader.problems.append((("servers",), f"expected an array of servers, got {found}"))
    else:
        for index, entry in enumerate(merged["servers"]):
            if isinstance(entry, dict) and build_route is not None:
                # An inherited list's routes report their problems at their own pool.
                at = ("servers", index) if "servers" in own else None
                route = build_route(entry, at)
                if route is not None:
                    route_slots.append((index, route))
                continue
            try:
                if not isinstance(entry, str):
                    raise Invalid(f"expected a server string, got {describe(entry)}")
                server = parse_server(
                    entry,
                    timeout_ms=timeout,
                    connect_timeout_ms=connect_timeout,
                    default_mech=mech,
                    server_name=server_name,
                    port_override=port_override,
                )
            except Invalid as exc:
                reader.problems.append((("servers", index), str(exc)))
            else:
                servers.append((index, server))
    if "failure_domains" in merged:
        servers = _with_failure_domains(servers, merged, reader.problems)
    # Percentages count the servers listed, parsed or not, as mcrouter does.
    listed = merged.get("servers")
    count = len(listed) if isinstance(listed, list) else 0
    tko_limit = reader.read("tko_tracker", partial(_check_tko_tracker, count), None)
    # Problems in inherited fields belong to (and are reported at) the parent;
    # a field missing everywhere is this pool's.
    problems.extend(
        (path, message)
        for path, message in reader.problems
        if path[0] in own or path[0] not in merged
    )
    spec = PoolSpec(
        name,
        tuple(server for _index, server in servers),
        keep_routing_prefix,
        weights,
        ejection,
        tko_limit,
        route_slots=tuple(route_slots) if len(route_slots) + len(servers) == count else (),
    )
    return spec, problems


def _read_ejection(reader: _FieldReader) -> EjectionSpec | None:
    """twemproxy's `auto_eject_hosts` with its `server_failure_limit` and `server_retry_timeout`.

    As in nutcracker, the last two are read (and checked) whether or not ejection
    is on, and only matter when it is.
    """
    defaults = EjectionSpec()
    limit = reader.read("server_failure_limit", _check_failure_limit, defaults.failure_limit)
    retry = reader.read("server_retry_timeout", _check_timeout, defaults.retry_timeout_ms)
    if not reader.read("auto_eject_hosts", check_bool, False):
        return None
    return EjectionSpec(limit, retry)


def _check_port_override(value: object) -> int:
    return check_int(value, 1, 65535)


def _check_failure_limit(value: object) -> int:
    return check_int(value, 1, 1_000_000)


def _check_tko_tracker(servers: int, value: object) -> TkoLimitSpec:
    """mcrouter's `{num,percent}_tko_threshold_{upper,lower}` (`num_` wins)."""
    if not isinstance(value, dict):
        raise Invalid(f"expected an object, got {describe(value)}")
    known = {
        f"{kind}_tko_threshold_{end}" for kind in ("num", "percent") for end in ("upper", "lower")
    }
    unknown = set(value) - known
    if unknown:
        raise Invalid(f"extra fields found ({', '.join(sorted(unknown))})")

    def threshold(end: str) -> int:
        number = value.get(f"num_tko_threshold_{end}")
        if number is not None:
            return _check_threshold(number, f"num_tko_threshold_{end}", None)
        percent = value.get(f"percent_tko_threshold_{end}")
        if percent is not None:
            share = _check_threshold(percent, f"percent_tko_threshold_{end}", 100)
            return share * servers // 100
        return 0

    upper, lower = threshold("upper"), threshold("lower")
    if upper <= 0 or lower <= 0:
        raise Invalid(
            "both tko threshold upper and lower must be configured (and come to at least"
            f" one server; got upper {upper}, lower {lower} of {servers} servers)"
        )
    if lower > upper:
        raise Invalid(
            f"tko upper threshold ({upper}) must be greater than or equal to lower ({lower})"
        )
    return TkoLimitSpec(upper, lower)


def _check_threshold(value: object, key: str, high: int | None) -> int:
    try:
        return check_int(value, 0, high)
    except Invalid as exc:
        raise Invalid(f"{key}: {exc}") from None


def _with_failure_domains(
    servers: list[tuple[int, ServerSpec]], pool: Mapping[str, object], problems: list[Problem]
) -> list[tuple[int, ServerSpec]]:
    """Each server with its entry of `failure_domains` (the one at its position in the
    list, as mcrouter reads them; a route slot's entry is unused).

    An integer is the domain (as a uint32), a string its SpookyHashV2 32-bit hash;
    anything else means no domain (0).
    """
    domains = pool["failure_domains"]
    if not isinstance(domains, list):
        problems.append((("failure_domains",), "failure_domains is not an array"))
        return servers
    listed = pool.get("servers")
    if isinstance(listed, list) and len(domains) != len(listed):
        message = (
            "failure_domains expected to be of the same size as servers,"
            f" expected {len(listed)}, got {len(domains)}"
        )
        problems.append((("failure_domains",), message))
        return servers
    return [
        (index, attrs.evolve(server, failure_domain=_failure_domain(domains[index])))
        for index, server in servers
    ]


def _failure_domain(value: object) -> int:
    if type(value) is int:
        return value & 0xFFFF_FFFF
    if isinstance(value, str):
        return spooky_hash32(value.encode())
    return 0


def _check_timeout(value: object) -> int:
    return check_int(value, *TIMEOUT_RANGE)


def _check_server_name(value: object) -> str:
    server_name = check_str(value)
    if not server_name:
        raise Invalid("expected a host name, got an empty string")
    return server_name


def _check_keys(name: str, keys: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    unknown = keys - _POOL_KEYS - _IGNORED_POOL_KEYS
    if unknown:
        problems.append(((), f"extra fields found ({', '.join(sorted(unknown))})"))
    ignored = keys & _IGNORED_POOL_KEYS
    if ignored:
        log.warning("pool %r: ignoring unsupported keys: %s", name, ", ".join(sorted(ignored)))
    if ignored & {"hash", "hash_salt", "hash_weights"}:
        log.warning("pool %r: mcrouter reads 'hash' from the PoolRoute, not the pool", name)
    return problems


def _inherit(
    name: str, body: dict[str, object], library: Mapping[str, object]
) -> tuple[dict[str, object], list[Problem]]:
    """The pool's fields with missing ones copied from its `inherit` chain.

    Only problems with this pool's own `inherit` are returned, plus cycles
    anywhere in the chain (which no single pool would otherwise report).
    """
    merged = {key: value for key, value in body.items() if key != "inherit"}
    chain = [name]
    current = body
    while "inherit" in current:
        parent_name = current["inherit"]
        first_hop = current is body
        if not isinstance(parent_name, str):
            problem = f"expected a pool name, got {describe(parent_name)}"
            return merged, [(("inherit",), problem)] if first_hop else []
        if parent_name in chain:
            cycle = " -> ".join([*chain, parent_name])
            return merged, [(("inherit",), f"cycle in pool inheritance ({cycle})")]
        parent = library.get(parent_name)
        if not isinstance(parent, dict):
            # A parent that is not an object reports that itself.
            unknown = parent is None and first_hop
            return merged, [(("inherit",), f"unknown pool '{parent_name}'")] if unknown else []
        chain.append(parent_name)
        for key, value in parent.items():
            if key != "inherit":
                merged.setdefault(key, value)
        current = parent
    return merged, []


class _FieldReader:
    """Reads optional fields, recording problems and falling back to defaults."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        self.fields = fields
        self.problems: list[Problem] = []

    def read(self, key: str, check: Callable[[object], T], default: T) -> T:
        if key not in self.fields:
            return default
        try:
            return check(self.fields[key])
        except Invalid as exc:
            self.problems.append(((key,), str(exc)))
            return default
