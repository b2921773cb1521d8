"""Config text -> `ProxyConfig`: the top level and the route tree.

Route handles come from the one registry (`routing._registry`): a handle's
config type names, string shorthand, fields and field checks are declared in its
own module, and this builder reads them generically. It builds route trees with a
cattrs converter whose single hook for the `Route` union is registered *before*
any route class hook is generated: generated hooks capture their field types'
hooks at generation time, so registering the union first is what makes nested
`children` (and `"PoolRoute|A"` shorthands inside them) go through our hook. The
union hook reads mcrouter's three route forms: an object with `type`, a string
`"Type|argument"`, and (where a list is expected) an array, flattened.

Errors are cattrs exception groups annotated with field names and indexes;
`cattrs.transform_error` turns them into `message @ $.route.children[1]`
lines. Our own checks raise `Invalid` inside the same groups so their paths
come out the same way.
"""

from __future__ import annotations

import hashlib
import keyword
import logging
import operator
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from mcrouter_trio.config._jsonc import (
    ConfigError,
    Invalid,
    check_bool,
    check_float,
    check_int,
    check_str,
    check_weights,
    describe,
    loads_jsonc,
    render_path,
    render_problems,
)
from mcrouter_trio.config._jsonc import Path as JsonPath
from mcrouter_trio.config._jsonm import JsonmError, Preprocessor
from mcrouter_trio.config._prefixes import BadPrefix, global_params, normalise_prefix
from mcrouter_trio.config._routes import read_named_handles, read_roots
from mcrouter_trio.config._servers import (
    MECHS,
    TIMEOUT_RANGE,
    PoolDefaults,
    parse_pool,
)
from mcrouter_trio.routing._base import Route
from mcrouter_trio.routing._registry import (
    CHECK,
    FROM_BUILD,
    IGNORED_ARGUMENT,
    KEY_CHECK,
    ROUTE_ARGUMENT,
    BuildEnv,
    RouteType,
    config_keys,
    load_handles,
    unknown_route_type,
)
from mcrouter_trio.routing._specs import DEFAULT_SERVER_TIMEOUT_MS, PoolSpec, ServerSpec
from mcrouter_trio.routing._tree import RouteTree, reachable_servers
from mcrouter_trio.routing.handles.bigvalue import BigValueRoute
from mcrouter_trio.routing.handles.destination import pool_destinations
from mcrouter_trio.routing.handles.shadow import ShadowSpec
from mcrouter_trio.routing.handles.simple import LoggingRoute

log = logging.getLogger("mcrouter_trio.config")

# A root path no message contains, to cut paths off messages.
_HERE = "\x00"

T = TypeVar("T")


@attrs.frozen
class ProxyConfig:
    """A loaded config: everything a proxy needs to start routing."""

    pools: Mapping[str, PoolSpec]
    #: Root routes by routing prefix, in config order (`route`: one, under `-R`).
    roots: Mapping[bytes, Route]
    #: The routing prefix the config was loaded for (`-R`, `%default-route%`).
    default_route: bytes
    #: Every server the route trees can send to (one connection each).
    servers: frozenset[ServerSpec]
    #: Hex MD5 of the raw config text (mcrouter's `config_md5_digest`).
    md5: str
    #: The config after JSONM expansion (`__mcrouter__.preprocessed_config`).
    preprocessed: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    #: The global parameters the config was expanded with (`%hostid%`, `%mcr_opts-...%`,
    #: `--config-params`; `__mcrouter__.global_params`).
    global_params: Mapping[str, object] = attrs.field(factory=dict, eq=False)
    #: Every file `@import` read, in order (watched for reload with the config file).
    imports: tuple[str, ...] = ()
    #: True for a top-level `route`: it serves whatever `-R` is.
    single_route: bool = True

    @property
    def route(self) -> Route:
        """The default routing prefix's root."""
        return self.roots[self.default_route]

    def tree(self, default_prefix: bytes | None = None) -> RouteTree:
        """The route tree a router serves with, `default_prefix` (`-R`) as the default.

        A config with `routes` must have `default_prefix` among its aliases
        (mcrouter: "invalid default route").
        """
        prefix = self.default_route if default_prefix is None else default_prefix
        roots = self.roots
        if self.single_route:
            roots = {prefix: self.route}
        elif prefix not in roots:
            raise ConfigError([f"invalid default route: {prefix.decode()}"])
        return RouteTree.build(roots, prefix, self.pools, self.md5, self.preprocessed)


def load_config(
    text: str,
    *,
    source: str = "<config>",
    default_timeout_ms: int = DEFAULT_SERVER_TIMEOUT_MS,
    host_id: int = 0,
    default_mech: str = "plain",
    default_route: str = "/././",
    config_params: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    num_proxies: int = 1,
    big_value_split_threshold: int = 0,
    big_value_batch_size: int = 10,
    big_value_hide_reply_flag: bool = False,
    logging_route: bool = False,
    mcrouter_options: Mapping[str, str] | None = None,
    local_addresses: Collection[IPv4Address | IPv6Address] | None = (),
) -> ProxyConfig:
    """Parse, expand and check a config; every problem found is in one `ConfigError`.

    `default_route` is `-R` (it must be one of the aliases of a `routes` config);
    `config_params` are `--config-params`; `@import` paths are relative to
    `base_dir` (the config file's directory; the working directory if None).
    A `big_value_split_threshold` (`--big-value-split-threshold`) puts every root
    behind a BigValueRoute (with the batch size and hide-reply-flag options);
    `logging_route` (`--enable-logging-route`) puts every root behind a LoggingRoute,
    outermost, as mcrouter wraps its root.
    `mcrouter_options` (mcrouter's integer and toggle options by name, rendered)
    become `%mcr_opts-<name>%`; `local_addresses` are this host's, for
    `@isLocalIp` (None: they could not be listed).
    """
    env = _Env(
        default_route,
        dict(config_params or {}),
        base_dir,
        num_proxies,
        (big_value_split_threshold, big_value_batch_size, big_value_hide_reply_flag),
        logging_route,
        dict(mcrouter_options or {}),
        local_addresses,
    )
    try:
        return _load(text, source, PoolDefaults(default_timeout_ms, default_mech), host_id, env)
    except ConfigError:
        raise
    except Exception as exc:
        # A bug here must still read as "config not loaded", never as a crash.
        log.exception("unexpected error loading %s", source)
        raise ConfigError([f"internal error while loading the config: {exc!r}"], source) from exc


def load_config_file(
    path: str | os.PathLike[str],
    **options: Any,
) -> ProxyConfig:
    """`load_config` on a file's contents; errors name the file, imports are relative to it.

    `options` are `load_config`'s keyword arguments.
    """
    source = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read the config: {exc.strerror or exc}"], source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"the config is not UTF-8 (byte {exc.start})"], source) from None
    options.setdefault("base_dir", Path(path).parent)
    return load_config(text, source=source, **options)


@attrs.frozen
class _Env:
    """What a load takes from the command line besides pool defaults."""

    default_route: str
    config_params: dict[str, str]
    base_dir: str | os.PathLike[str] | None
    num_proxies: int
    #: `--big-value-split-threshold` (0: off), `--big-value-batch-size` and
    #: `--big-value-hide-reply-flag`.
    big_values: tuple[int, int, bool] = (0, 10, False)
    #: `--enable-logging-route`.
    logging_route: bool = False
    #: mcrouter's options, rendered, for `%mcr_opts-<name>%`.
    mcrouter_options: Mapping[str, str] = attrs.field(factory=dict)
    #: This host's addresses for `isLocalIp` (None: they could not be listed).
    local_addresses: Collection[IPv4Address | IPv6Address] | None = ()


def _load(text: str, source: str, defaults: PoolDefaults, host_id: int, env: _Env) -> ProxyConfig:
    low, high = TIMEOUT_RANGE
    if type(defaults.timeout_ms) is not int or not low <= defaults.timeout_ms <= high:
        message = f"default server timeout must be {low}..{high} ms, not {defaults.timeout_ms!r}"
        raise ConfigError([message], source)
    if defaults.mech not in MECHS:
        message = f"default security mech must be 'plain' or 'ssl', not {defaults.mech!r}"
        raise ConfigError([message], source)
    try:
        default_route = normalise_prefix(env.default_route)
    except BadPrefix as exc:
        raise ConfigError([f"invalid default route: {exc}"], source) from None
    md5 = hashlib.md5(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()
    raw_document = loads_jsonc(text, source=source)
    if not isinstance(raw_document, dict):
        raise ConfigError([f"expected an object, got {describe(raw_document)} @ $"], source)
    params = global_params(
        default_route, host_id, env.num_proxies, env.config_params, env.mcrouter_options
    )
    base_dir = Path(env.base_dir) if env.base_dir is not None else None
    preprocessor = Preprocessor(params, base_dir=base_dir, local_addresses=env.local_addresses)
    try:
        document = preprocessor.preprocess(raw_document)
    except JsonmError as exc:
        raise ConfigError([exc.render()], source) from None

    errors: list[str] = []
    raw_pools = document.get("pools", {})
    library = raw_pools if isinstance(raw_pools, dict) else {}
    if not isinstance(raw_pools, dict):
        errors.append(f"expected an object, got {describe(raw_pools)} @ $.pools")
    builder = _RouteBuilder(
        library, defaults, BuildEnv(host_id=host_id, num_proxies=env.num_proxies)
    )
    errors.extend(builder.parse_pools())
    errors.extend(read_named_handles(builder, document))
    roots, root_errors = read_roots(builder, document, default_route.encode())
    errors.extend(root_errors)
    errors.extend(builder.named_errors)
    _warn_ignored_fields(document, builder.ignored_fields)
    if errors or not roots:
        raise ConfigError(errors, source)
    threshold, batch_size, hide_flag = env.big_values
    if threshold > 0:
        roots = {
            prefix: BigValueRoute(root, threshold, batch_size, hide_flag)
            for prefix, root in roots.items()
        }
    if env.logging_route:
        roots = {prefix: LoggingRoute(root) for prefix, root in roots.items()}
    pools = {name: builder.pools[name] for name in library}  # in config order
    all_pools = MappingProxyType({**pools, **builder.inline_pools})
    return ProxyConfig(
        all_pools,
        MappingProxyType(roots),
        default_route.encode(),
        reachable_servers(roots.values()),
        md5,
        preprocessed=document,
        global_params=MappingProxyType(params),
        imports=tuple(preprocessor.imported),
        single_route="route" in document,
    )


# ---------------------------------------------------------------------------
# The route tree


def _has_string_form(cls: object) -> bool:
    """Config records that may also be written as a string (PoolRoute's `hash`)."""
    return isinstance(cls, type) and attrs.has(cls) and hasattr(cls, "from_string")


class _RouteBuilder:
    """Builds one config's pools and route trees.

    One converter per load keeps the per-config state (pools, host id) out of
    module globals; generating the hooks costs a few milliseconds per load.
    A pool's route slots are routes, so pools are built here too: a top-level pool
    when first named (a route slot may name one further down, as in mcrouter,
    which builds pools as routes reach them), then the rest in config order.
    """

    def __init__(
        self, raw_pools: Mapping[str, object], defaults: PoolDefaults, env: BuildEnv
    ) -> None:
        self._raw_pools = raw_pools
        #: The top-level pools built so far.
        self.pools: dict[str, PoolSpec] = {}
        #: Top-level pools being built: a route slot naming one of them is a cycle.
        self._building_pools: set[str] = set()
        #: Problems of the top-level pools, at their paths.
        self._pool_errors: list[str] = []
        self._defaults = defaults
        self._env = env
        self._types = load_handles()
        #: Pools defined inside the route tree (`{"type": "Pool", ...}`, PoolRoute `pool`).
        self.inline_pools: dict[str, PoolSpec] = {}
        #: Routes built from a name or a string, reused whenever it appears again
        #: (mcrouter's `seen_`): the first definition of a name wins, and the same
        #: string always yields the same route object.
        self._seen: dict[str, tuple[Route, ...]] = {}
        #: Object-form `named_handles` not built yet: built on first reference.
        self._registered: dict[str, object] = {}
        #: Problems found while building a registered named handle, at its own path.
        self.named_errors: list[str] = []
        #: Route objects with keys their type does not read, which were ignored:
        #: (the config's object, its type name, those keys).
        self.ignored_fields: list[tuple[Mapping[str, object], str, tuple[str, ...]]] = []

        converter = cattrs.Converter(forbid_extra_keys=True)
        # First: the union hook, so the hooks generated below pick it up.
        converter.register_structure_hook(Route, self._route)
        # Generic aliases cannot be registered directly; match them by equality.
        for alias, hook in (
            (tuple[Route, ...], self._route_list),
            (Mapping[str, Route], self._policies),
            (tuple[float, ...], _hook(check_weights)),
            (tuple[ShadowSpec, ...], self._shadows),
        ):
            converter.register_structure_hook_func(partial(operator.eq, alias), hook)
        converter.register_structure_hook(PoolSpec, self._pool)
        converter.register_structure_hook_func(_has_string_form, self._record)
        # mcrouter's types are strict: no "100" for 100, no 1 for true.
        converter.register_structure_hook(int, _hook(check_int))
        converter.register_structure_hook(float, _hook(check_float))
        converter.register_structure_hook(bool, _hook(check_bool))
        converter.register_structure_hook(str, _hook(check_str))
        self._converter = converter
        self._generated: dict[type, Callable[[Any, Any], Any]] = {}

    def parse_pools(self) -> list[str]:
        """Build every top-level pool; their problems."""
        for name in self._raw_pools:
            self._top_pool(name)
        return self._pool_errors

    def build(self, value: object, path: str = "$.route") -> tuple[Route | None, list[str]]:
        """A root route (`route`, one of `routes`), or its `message @ path...` errors."""
        try:
            return self._route(value, top=True), []
        except Exception as exc:
            return None, _messages(exc, path)

    def build_named(self, value: object, path: str) -> list[str]:
        """One entry of a `named_handles` list, built now; its errors."""
        try:
            self._route_list(value)
        except Exception as exc:
            return _messages(exc, path)
        return []

    def register(self, name: str, value: object) -> None:
        """An entry of the object form of `named_handles`, built when first referenced."""
        if name not in self._registered and name not in self._seen:
            self._registered[name] = value

    def _named(self, name: str) -> tuple[Route, ...] | None:
        """The routes a name or string stands for, if it was defined or seen before."""
        seen = self._seen.get(name)
        if seen is not None:
            return seen
        if name not in self._registered:
            return None
        value = self._registered.pop(name)  # popped first: a self-reference is unknown
        try:
            routes = self._route_list(value)
        except Exception as exc:
            self.named_errors.extend(_messages(exc, f"$.named_handles.{name}"))
            raise Invalid(f"named handle '{name}' is invalid") from None
        self._seen[name] = routes
        return routes

    # -- generated structure functions ---------------------------------------

    def _structure_fn(self, cls: type[T]) -> Callable[[Any, Any], T]:
        """cattrs' structure function for a handle or config record, from its field metadata."""
        generated = self._generated.get(cls)
        if generated is None:
            overrides: dict[str, Any] = {}
            for field in attrs.fields(cast(Any, cls)):
                metadata = field.metadata
                if FROM_BUILD in metadata:
                    overrides[field.name] = override(struct_hook=_as_given)
                elif CHECK in metadata:
                    overrides[field.name] = override(struct_hook=_hook(metadata[CHECK]))
                elif KEY_CHECK in metadata:
                    key_check = metadata[KEY_CHECK]
                    hook = partial(self._policies, key_check=key_check)
                    overrides[field.name] = override(struct_hook=hook)
                elif keyword.iskeyword(field.name[:-1]):
                    overrides[field.name] = override(rename=field.name[:-1])  # `from_`: "from"
            generated = make_dict_structure_fn(cls, self._converter, **overrides)
            self._generated[cls] = generated
        return cast(Callable[[Any, Any], T], generated)

    def _record(self, value: object, cls: type[T]) -> T:
        """A config record such as PoolRoute's `hash`: a string, or an object of its fields."""
        if isinstance(value, str):
            return cast(T, cls.from_string(value))  # type: ignore[attr-defined]
        if isinstance(value, dict):
            return self._structure_fn(cls)(value, cls)
        raise Invalid(f"expected a string or an object, got {describe(value)}")

    # -- the Route union -----------------------------------------------------

    def _route(self, value: object, _type: object = None, *, top: bool = False) -> Route:
        if isinstance(value, str):
            named = self._named(value) if value else None
            if named is not None:
                return _one(named)
            route = self._route_from_string(value, top)
            self._seen[value] = (route,)
            return route
        if isinstance(value, dict):
            if value.get("type") == "Pool":
                return _one(self._route_list(value))
            return self._route_from_object(value, top)
        if isinstance(value, list):
            # mcrouter builds every route as a list and takes its only element.
            return _one(self._route_list(value))
        raise Invalid(f"expected a route (object or string), got {describe(value)}")

    def _route_type(self, type_name: str, top: bool) -> RouteType:
        entry = self._types.get(type_name)
        if entry is None:
            raise Invalid(unknown_route_type(type_name))
        if entry.top_only and not top:
            raise Invalid(f"{type_name} is only allowed as the route of a route tree")
        return entry

    def _route_from_string(self, text: str, top: bool) -> Route:
        type_name, has_argument, argument = text.partition("|")
        if not text:
            raise Invalid("expected a route, got an empty string")
        if type_name == "Pool":
            routes = self._route_list(text)
            if len(routes) != 1:  # one server: that server's route, as in mcrouter
                raise Invalid(
                    f"{len(routes)} RouteHandles in list, expected 1: '{text}' is a list"
                    f" of routes, use 'PoolRoute|{argument}' for one route"
                )
            return routes[0]
        entry = self._route_type(type_name, top)
        field = entry.shorthand
        if field == ROUTE_ARGUMENT and has_argument:
            return self._route(argument, top=top)  # not an object: mcrouter reads a plain route
        if field is None or field == ROUTE_ARGUMENT:
            raise Invalid(f"{type_name} needs an object")
        if not has_argument and not entry.shorthand_optional:
            raise Invalid(f"{type_name} needs an argument: '{type_name}|<{field}>'")
        data: dict[str, object] = {}
        if field != IGNORED_ARGUMENT and has_argument:
            data[field] = argument
        try:
            return self._structure(entry.cls, data)
        except Exception as exc:
            # The whole string is one JSON value: report its problems right here,
            # without the paths inside the object it stands for.
            messages = [line.partition(f" @ {_HERE}")[0] for line in _messages(exc, _HERE)]
            raise _group([Invalid(message) for message in messages]) from None

    def _route_from_object(self, value: dict[str, object], top: bool) -> Route:
        return cast(Route, self._routes_from_object(value, top, many=False))

    def _routes_from_object(
        self, value: dict[str, object], top: bool, *, many: bool
    ) -> Route | tuple[Route, ...]:
        data = dict(value)
        if "type" not in data:
            raise _problems_error([(("type",), "required field missing")])
        type_name = data.pop("type")
        if not isinstance(type_name, str):
            raise _problems_error([(("type",), f"expected a string, got {describe(type_name)}")])
        name = data.get("name")
        if isinstance(name, str):
            # mcrouter's named handles: the first object with a name defines it,
            # any later object or string with that name is that route.
            named = self._named(name)
            if named is not None:
                return named if many else _one(named)
        cls = self._route_type(type_name, top).cls
        _drop_axonlog_fields(data)
        if "name" in data and "name" not in attrs.fields_dict(cls):
            data.pop("name")
        ignored = tuple(sorted(set(data) - config_keys(cls)))
        if ignored:
            # mcrouter's factories read the keys they know and ignore the rest, so
            # a config with a key this type does not read runs there: here too.
            for key in ignored:
                del data[key]
            self.ignored_fields.append((value, type_name, ignored))
        route = self._structure(cls, data)
        as_list = getattr(route, "as_list", None)  # a type standing for a list (ShadowRoute)
        routes: tuple[Route, ...] = (route,) if as_list is None else as_list()
        if isinstance(name, str):
            self._seen[name] = routes
        return routes if many else _one(routes)

    def _structure(self, cls: type, data: dict[str, object]) -> Route:
        for field in attrs.fields(cls):
            if FROM_BUILD in field.metadata:
                # Given to the class at once (not evolved in after): its checks and
                # derived state run once, with the build's values.
                data[field.name] = getattr(self._env, field.metadata[FROM_BUILD])
        route: Route = self._structure_fn(cls)(data, cls)
        return route

    # -- field types ---------------------------------------------------------

    def _route_list(self, value: object, _type: object = None) -> tuple[Route, ...]:
        """`children`: a route, a string such as `"Pool|A"`, or an array (flattened)."""
        if isinstance(value, list):
            routes: list[Route] = []
            errors: list[Exception] = []
            for index, item in enumerate(value):
                try:
                    routes.extend(self._route_list(item))
                except Exception as exc:
                    exc.add_note(IterableValidationNote(f"@ index {index}", index, Route))
                    errors.append(exc)
            if errors:
                raise IterableValidationError("invalid routes", errors, tuple)
            return tuple(routes)
        if isinstance(value, str):
            type_name, has_argument, argument = value.partition("|")
            if not value:
                return ()  # mcrouter: an empty string is an empty list
            named = self._named(value)
            if named is not None:
                return named
            if type_name == "Pool":
                if not has_argument:
                    raise Invalid("Pool needs a pool name: 'Pool|<name>'")
                destinations: tuple[Route, ...] = pool_destinations(self._named_pool(argument))
                self._seen[value] = destinations
                return destinations
        if isinstance(value, dict) and value.get("type") == "Pool":
            body = {key: item for key, item in value.items() if key != "type"}
            return pool_destinations(self._inline_pool(body))
        if isinstance(value, dict) and value.get("type") == "ShadowRoute":
            return cast(tuple[Route, ...], self._routes_from_object(value, False, many=True))
        return (self._route(value),)

    def _shadows(self, value: object, _type: object = None) -> tuple[ShadowSpec, ...]:
        """`shadows`: the entries that build; mcrouter logs each broken one and skips it.

        Skipped, not refused, so that a config mcrouter runs runs here too; the
        warning names the entry and its problem.
        """
        if not isinstance(value, list):
            log.warning("ignoring 'shadows': expected an array, got %s", describe(value))
            return ()
        shadows: list[ShadowSpec] = []
        for index, item in enumerate(value):
            try:
                if not isinstance(item, dict):
                    raise Invalid(f"expected a shadow object, got {describe(item)}")
                shadows.append(self._structure_fn(ShadowSpec)(item, ShadowSpec))
            except Exception as exc:
                for message in _messages(exc, f"shadows[{index}]"):
                    log.warning("ignoring a broken shadow, as mcrouter does: %s", message)
        return tuple(shadows)

    def _policies(
        self,
        value: object,
        _type: object = None,
        key_check: Callable[[str], object] | None = None,
    ) -> dict[str, Route]:
        """A mapping of names to routes (`operation_policies`, `policies`)."""
        if not isinstance(value, dict):
            raise Invalid(f"expected an object of name: route, got {describe(value)}")
        policies: dict[str, Route] = {}
        errors: list[Exception] = []
        for name, policy in value.items():
            try:
                if key_check is not None:
                    key_check(name)
                policies[name] = self._route(policy)
            except Exception as exc:
                exc.add_note(AttributeValidationNote(f"@ {name}", name, Route))
                errors.append(exc)
        if errors:
            raise ClassValidationError("invalid policies", errors, dict)
        return policies

    def _pool(self, value: object, _type: object = None) -> PoolSpec:
        """PoolRoute's `pool`: a pool name, or a pool object with a `name`."""
        if isinstance(value, str):
            return self._named_pool(value)
        if isinstance(value, dict):
            return self._inline_pool(value)
        raise Invalid(f"expected a pool name or a pool object, got {describe(value)}")

    # -- pools ---------------------------------------------------------------

    def _named_pool(self, name: str) -> PoolSpec:
        pool = self._top_pool(name) or self.inline_pools.get(name)
        if pool is None:
            raise Invalid(f"unknown pool '{name}'")
        return pool

    def _top_pool(self, name: str) -> PoolSpec | None:
        """The top-level pool `name` (built now if it was not yet), None if there is none."""
        pool = self.pools.get(name)
        if pool is not None or name not in self._raw_pools:
            return pool
        if name in self._building_pools:
            raise Invalid(f"pool '{name}' has a route slot that routes to the pool itself")
        self._building_pools.add(name)
        try:
            slot_builder = partial(self._top_pool_slot, name)
            body = self._raw_pools[name]
            pool, problems = parse_pool(name, body, self._defaults, self._raw_pools, slot_builder)
        finally:
            self._building_pools.discard(name)
        self.pools[name] = pool
        placed = (((name, *path), message) for path, message in problems)
        self._pool_errors.extend(render_problems("$.pools", placed))
        return pool

    def _top_pool_slot(
        self, pool: str, value: dict[str, object], at: JsonPath | None
    ) -> Route | None:
        """A route slot of a top-level pool; its problems are the pool's, at their paths."""
        try:
            return self._route(value)
        except Exception as exc:
            if at is not None:
                self._pool_errors.extend(_messages(exc, render_path("$.pools", (pool, *at))))
            return None

    @staticmethod
    def _inline_pool_slot(
        build: Callable[[object], Route],
        failures: list[tuple[JsonPath, Exception]],
        value: dict[str, object],
        at: JsonPath | None,
    ) -> Route | None:
        """A route slot of a pool defined inside a route: its failure is kept in
        `failures`, raised with the pool's other problems."""
        try:
            return build(value)
        except Exception as exc:
            if at is not None:
                failures.append((at, exc))
            return None

    def _inline_pool(self, body: dict[str, object]) -> PoolSpec:
        name = body.get("name")
        if not isinstance(name, str):
            problem = "required field missing"
            if name is not None:
                problem = f"expected a string, got {describe(name)}"
            raise _problems_error([(("name",), problem)])
        existing = self._top_pool(name) or self.inline_pools.get(name)
        if existing is not None:
            # mcrouter: the first definition of a pool name wins; `{"name": ...}`
            # alone is just a reference.
            if set(body) - {"name"}:
                log.warning("pool %r is defined more than once; using the first definition", name)
            return existing
        failures: list[tuple[JsonPath, Exception]] = []
        slot_builder = partial(self._inline_pool_slot, self._route, failures)
        pool, problems = parse_pool(name, body, self._defaults, self._raw_pools, slot_builder)
        if problems or failures:
            raise _problems_error([*problems, *failures])
        self.inline_pools[name] = pool
        return pool


def _warn_ignored_fields(
    document: Mapping[str, object],
    ignored: Sequence[tuple[Mapping[str, object], str, tuple[str, ...]]],
) -> None:
    """One warning per ignored route key, at its JSON path in the expanded config."""
    if not ignored:
        return
    paths: dict[int, str] = {}
    stack: list[tuple[object, str]] = [(document, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            paths.setdefault(id(node), path)
            stack.extend((value, f"{path}.{key}") for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{index}]") for index, value in enumerate(node))
    for node, type_name, keys in ignored:
        where = paths.get(id(node), f"$...(a {type_name})")
        for key in keys:
            log.warning(
                "ignoring '%s': %s does not read it (mcrouter ignores it too) @ %s.%s",
                key, type_name, where, key,
            )  # fmt: skip


def _drop_axonlog_fields(data: dict[str, object]) -> None:
    """mcrouter's `axonlog` options: true wraps the route in AxonLogRoute (Meta-only,
    which open-source mcrouter refuses too); otherwise the `axonlog_*` options do nothing."""
    if "axonlog" in data and check_bool(data["axonlog"]):
        message = "AxonLogRoute (axonlog: true) exists only inside Meta and is not supported"
        raise _problems_error([(("axonlog",), message)])
    for key in [key for key in data if key == "axonlog" or key.startswith("axonlog_")]:
        del data[key]


def _one(routes: tuple[Route, ...]) -> Route:
    """A list (an array, a Pool, a name) used where one route is expected, as mcrouter
    allows when it holds exactly one; mcrouter's message otherwise."""
    if len(routes) != 1:
        raise Invalid(f"{len(routes)} RouteHandles in list, expected 1")
    return routes[0]


def _as_given(value: T, _type: object) -> T:
    """The structure hook of a field the builder fills in itself (`FROM_BUILD`)."""
    return value


def _hook(check: Callable[[object], T]) -> Callable[[object, object], T]:
    """A cattrs structure hook from a one-argument checker."""

    def hook(value: object, _type: object) -> T:
        return check(value)

    return hook


# ---------------------------------------------------------------------------
# Errors


def _messages(exc: BaseException, root: str) -> list[str]:
    """`message @ path` lines for an error raised while structuring at `root`."""
    return cattrs.transform_error(exc, path=root, format_exception=_format)


def _format(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, Invalid):
        return str(exc)
    if isinstance(exc, (KeyError, ForbiddenExtraKeysError)):
        return cattrs.v.format_exception(exc, type_)
    # A route class rejecting its arguments (e.g. a hash function that cannot
    # take this many children).
    return f"cannot build route: {str(exc) or type(exc).__name__}"


def _group(errors: Sequence[Exception]) -> Exception:
    """One exception for several problems at the same place."""
    if len(errors) == 1:
        return errors[0]
    return ClassValidationError("invalid route", list(errors), Route)


def _problems_error(problems: Sequence[tuple[JsonPath, str | Exception]]) -> Exception:
    """cattrs' annotated exception groups for `(path, message)` problems.

    A problem may also be an exception raised at its path (a route slot's).

    So problems found by hand (pools defined inside routes) render through
    `transform_error` with the same paths as everything else. A JSON node is
    either an object (str keys) or an array (int indexes), so each level is one
    kind of group.
    """
    here: list[Exception] = [
        Invalid(message) if isinstance(message, str) else message
        for path, message in problems
        if not path
    ]
    below: dict[str | int, list[tuple[JsonPath, str | Exception]]] = {}
    for path, message in problems:
        if path:
            below.setdefault(path[0], []).append((path[1:], message))
    if not below:
        return _group(here)
    errors = here
    for key, nested in below.items():
        error = _problems_error(nested)
        if isinstance(key, int):
            error.add_note(IterableValidationNote(f"@ index {key}", key, object))
        else:
            error.add_note(AttributeValidationNote(f"@ {key}", key, object))
        errors.append(error)
    if any(isinstance(key, int) for key in below):
        return IterableValidationError("invalid config", errors, list)
    return ClassValidationError("invalid config", errors, dict)
