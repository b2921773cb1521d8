"""The one registry of route handle types: a handle module declares itself, nothing else.

A handle class is registered with `@route_type(...)`, which says under which config
type names it is found and what its string shorthand means (`"AllSyncRoute|Pool|A"`:
the argument fills the `children` field). Its fields are its config keys; their
validation lives on the fields (`config_field(check=...)`) or in the class's
`__attrs_post_init__` (raising `Invalid`). The config builder reads all of this
generically, so adding a handle is one module in `routing/handles/` (every module
there is imported by `load_handles`) plus its tests and docs.
"""

from __future__ import annotations

import functools
import importlib
import keyword
import pkgutil
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeVar

import attrs

#: Field metadata: a check for the field's JSON value (raises `Invalid`).
CHECK: Final = "mcrouter_trio.check"
#: Field metadata: a check for each key of a mapping field (raises `Invalid`).
KEY_CHECK: Final = "mcrouter_trio.key_check"
#: Field metadata: the field is not read from the config but taken from the build
#: environment (`BuildEnv`) under this name, e.g. the host id.
FROM_BUILD: Final = "mcrouter_trio.from_build"

#: `shorthand` value: the string form is allowed and its argument is ignored.
IGNORED_ARGUMENT: Final = ""
#: `shorthand` value: the string form's argument is itself a route (mcrouter reads
#: `"OperationSelectorRoute|PoolRoute|A"` as `PoolRoute|A`).
ROUTE_ARGUMENT: Final = "<route>"

C = TypeVar("C", bound=type)


@attrs.frozen
class BuildEnv:
    """What the proxy knows at build time that no config says (`FROM_BUILD` fields)."""

    host_id: int = 0
    #: How many proxy workers will route with the tree (`--num-proxies`): a handle
    #: that differs per worker prepares every worker's version.
    num_proxies: int = 1


@attrs.frozen
class RouteType:
    cls: type
    names: tuple[str, ...]
    #: The field that `"Type|argument"`'s argument fills (or `IGNORED_ARGUMENT`,
    #: `ROUTE_ARGUMENT`); None: the type has no string form, only an object.
    shorthand: str | None
    #: Whether the string form may leave the argument out (`"NullRoute"`).
    shorthand_optional: bool
    #: Only allowed as the root of a route tree (mcrouter's PrefixSelectorRoute).
    top_only: bool


_REGISTRY: dict[str, RouteType] = {}
#: Every registered config type name, read-only.
REGISTRY: Final[Mapping[str, RouteType]] = MappingProxyType(_REGISTRY)
#: Type names the proxy knows but refuses, and why (`"<name> <reason>"`): mcrouter
#: handles that need Meta's own infrastructure (service-router pools, Meta's request
#: logging, Carbon lookaside caching, refills).
REFUSED: Final[Mapping[str, str]] = MappingProxyType(
    dict.fromkeys(
        ("SRRoute", "AxonLogRoute", "CarbonLookasideRoute", "McRefillRoute"),
        "exists only inside Meta and is not supported",
    )
)


def route_type(
    *names: str,
    shorthand: str | None = None,
    shorthand_optional: bool = False,
    top_only: bool = False,
) -> Callable[[C], C]:
    """Register a handle class under `names` (default: its class name)."""

    def register(cls: C) -> C:
        entry = RouteType(cls, names or (cls.__name__,), shorthand, shorthand_optional, top_only)
        for name in entry.names:
            if name in _REGISTRY and _REGISTRY[name].cls is not cls:
                raise RuntimeError(f"route type {name!r} registered twice")
            if name in REFUSED:
                raise RuntimeError(f"route type {name!r} is refused: {REFUSED[name]}")
            _REGISTRY[name] = entry
        return cls

    return register


def unknown_route_type(name: str) -> str:
    """Why `name` is not a route type this proxy builds."""
    reason = REFUSED.get(name)
    if reason is not None:
        return f"{name} {reason}"
    return f"unknown route type '{name}'"


def config_field(
    *,
    default: Any = attrs.NOTHING,
    factory: Callable[[], Any] | None = None,
    check: Callable[[object], Any] | None = None,
    key_check: Callable[[str], Any] | None = None,
    from_build: str | None = None,
) -> Any:
    """An attrs field with its config reading declared (see the metadata constants)."""
    metadata: dict[str, object] = {}
    if check is not None:
        metadata[CHECK] = check
    if key_check is not None:
        metadata[KEY_CHECK] = key_check
    if from_build is not None:
        metadata[FROM_BUILD] = from_build
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


@functools.cache
def config_keys(cls: type) -> frozenset[str]:
    """The keys a handle class reads from a config object (besides `type`).

    Its init fields, less those taken from the build environment; a field named
    after a Python keyword plus `_` is read from the keyword (`from_`: "from").
    """
    keys = set()
    for field in attrs.fields(cls):
        if not field.init or FROM_BUILD in field.metadata:
            continue
        name = field.name
        keys.add(name[:-1] if keyword.iskeyword(name[:-1]) else name)
    return frozenset(keys)


def load_handles() -> Mapping[str, RouteType]:
    """Import every handle module (each registers itself); the registry."""
    package = importlib.import_module("mcrouter_trio.routing.handles")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return REGISTRY
