"""The top level of a config's routes: `route` or `routes`, and `named_handles`.

mcrouter's `ProxyConfig` constructor, with its messages: exactly one of `route`
and `routes`; `routes` as a list of `{"aliases": [...], "route": ...}` or an
object `{alias: route}`; the default routing prefix (`-R`) must be an alias.
`named_handles` as a list is built in order; as an object, each entry is
registered and built when first referenced (an object entry takes its key as its
`name`, and a different `name` is an error).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from mcrouter_trio.config._jsonm_values import type_name
from mcrouter_trio.config._prefixes import BadPrefix, normalise_prefix
from mcrouter_trio.routing._base import Route


class RouteBuilder(Protocol):
    """What reading the top level needs of the route builder."""

    def build(self, value: object, path: str = "$.route") -> tuple[Route | None, list[str]]: ...

    def build_named(self, value: object, path: str) -> list[str]: ...

    def register(self, name: str, value: object) -> None: ...


def read_named_handles(builder: RouteBuilder, document: Mapping[str, object]) -> list[str]:
    """Register `named_handles`: a list is built now, in order; an object on first use."""
    named = document.get("named_handles")
    if named is None:
        return []
    errors: list[str] = []
    if isinstance(named, list):
        for index, value in enumerate(named):
            errors.extend(builder.build_named(value, f"$.named_handles[{index}]"))
    elif isinstance(named, dict):
        for name, value in named.items():
            if isinstance(value, dict):
                own = value.get("name", name)
                if own != name:
                    message = f"Ambiguous RouteHandle name in object for {name}"
                    errors.append(f"{message} @ $.named_handles.{name}")
                value = {**value, "name": name}
            builder.register(name, value)
    else:
        message = f"named_handles is {type_name(named)} expected array/object"
        errors.append(f"{message} @ $.named_handles")
    return errors


def read_roots(
    builder: RouteBuilder, document: Mapping[str, object], default_route: bytes
) -> tuple[dict[bytes, Route], list[str]]:
    """`route` (under the default prefix) or `routes`, with mcrouter's checks and messages."""
    if "route" in document and "routes" in document:
        return {}, ["Invalid config: both 'route' and 'routes' are specified @ $"]
    if "route" in document:
        route, route_errors = builder.build(document["route"])
        return ({default_route: route} if route is not None else {}), route_errors
    if "routes" not in document:
        return {}, ["No route/routes in config @ $"]
    routes = document["routes"]
    entries: list[tuple[str, list[tuple[str, str]], object]] = []  # (path, aliases, route)
    errors: list[str] = []
    if isinstance(routes, list):
        for index, entry in enumerate(routes):
            path = f"$.routes[{index}]"
            if not isinstance(entry, dict):
                errors.append(f"RoutePolicy is not an object @ {path}")
                continue
            if "route" not in entry:
                errors.append(f"RoutePolicy: no route @ {path}")
            if "aliases" not in entry:
                errors.append(f"RoutePolicy: no aliases @ {path}")
                continue
            aliases = entry["aliases"]
            if not isinstance(aliases, list):
                errors.append(f"RoutePolicy: aliases is not an array @ {path}.aliases")
                continue
            named = []
            for number, alias in enumerate(aliases):
                if not isinstance(alias, str):
                    message = "RoutePolicy: alias is not a string"
                    errors.append(f"{message} @ {path}.aliases[{number}]")
                else:
                    named.append((alias, f"{path}.aliases[{number}]"))
            if "route" in entry:
                entries.append((f"{path}.route", named, entry["route"]))
    elif isinstance(routes, dict):
        for alias, route in routes.items():
            path = f"$.routes.{alias}"
            entries.append((path, [(alias, path)], route))
    else:
        return {}, ["Config: routes is not array/object @ $.routes"]
    roots: dict[bytes, Route] = {}
    for path, aliases, value in entries:
        route, route_errors = builder.build(value, path)
        errors.extend(route_errors)
        for alias, alias_path in aliases:
            try:
                normalise_prefix(alias)
            except BadPrefix as exc:
                errors.append(f"{exc} @ {alias_path}")
                continue
            if route is not None:
                roots[alias.encode()] = route  # a repeated alias: the last one wins
    if not errors and default_route not in roots:
        errors.append(f"invalid default route: {default_route.decode()} @ $.routes")
    return roots, errors
