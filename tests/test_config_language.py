"""mcrouter's config language as `load_config` reads it: `routes`, `named_handles`,
macros and parameters in a whole config, and the messages of bad ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcrouter_trio.config import ConfigError, load_config, load_config_file
from mcrouter_trio.config._prefixes import parse_config_params
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.handles.hash import PoolRoute
from mcrouter_trio.routing.handles.simple import ErrorRoute, NullRoute

POOLS = {
    "A": {"servers": ["127.0.0.1:5001"]},
    "B": {"servers": ["127.0.0.1:5002"]},
}


def load(document: dict[str, Any], **kwargs: Any) -> Any:
    return load_config(json.dumps(document), **kwargs)


def errors_of(document: dict[str, Any] | str, **kwargs: Any) -> list[str]:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(ConfigError) as caught:
        load_config(text, **kwargs)
    return caught.value.errors


def pool_of(route: Any) -> str:
    assert isinstance(route, PoolRoute)
    return route.pool.name


# ---------------------------------------------------------------------------
# routes


def test_routes_list_gives_each_alias_its_tree_and_shares_it_between_aliases() -> None:
    config = load(
        {
            "pools": POOLS,
            "routes": [
                {"aliases": ["/dc1/a/", "/dc1/b/"], "route": "PoolRoute|A"},
                {"aliases": ["/dc2/a/"], "route": "PoolRoute|B"},
            ],
        },
        default_route="/dc1/a/",
    )
    assert list(config.roots) == [b"/dc1/a/", b"/dc1/b/", b"/dc2/a/"]
    assert config.roots[b"/dc1/a/"] is config.roots[b"/dc1/b/"]
    assert pool_of(config.roots[b"/dc2/a/"]) == "B"
    assert config.route is config.roots[b"/dc1/a/"]
    assert {server.port for server in config.servers} == {5001, 5002}


def test_routes_object_form_keys_are_the_aliases() -> None:
    config = load(
        {"pools": POOLS, "routes": {"/a/a/": "PoolRoute|A", "/b/b/": "PoolRoute|B"}},
        default_route="a/a",  # -R without its slashes, as mcrouter allows
    )
    assert [pool_of(route) for route in config.roots.values()] == ["A", "B"]
    assert config.default_route == b"/a/a/"


def test_the_same_route_string_is_one_route_under_every_alias() -> None:
    # mcrouter builds a string once; /*/*/ then sends to it once.
    config = load(
        {"pools": POOLS, "routes": {"/a/a/": "PoolRoute|A", "/b/b/": "PoolRoute|A"}},
        default_route="/a/a/",
    )
    assert config.roots[b"/a/a/"] is config.roots[b"/b/b/"]
    assert config.tree().targets_for(b"/*/*/") == (config.roots[b"/a/a/"],)


def test_a_single_route_serves_whatever_default_prefix_the_tree_gets() -> None:
    config = load({"pools": POOLS, "route": "PoolRoute|A"})
    tree = config.tree(b"/x/y/")
    assert tree.default_prefix == b"/x/y/"
    assert list(tree.roots) == [b"/x/y/"]


def test_a_routes_config_refuses_a_default_prefix_it_has_no_alias_for() -> None:
    config = load({"routes": {"/a/a/": "NullRoute"}}, default_route="/a/a/")
    with pytest.raises(ConfigError) as caught:
        config.tree(b"/b/b/")
    assert caught.value.errors == ["invalid default route: /b/b/"]


# ---------------------------------------------------------------------------
# named_handles


def test_named_handles_list_is_built_in_order_and_reused_by_name() -> None:
    config = load(
        {
            "pools": POOLS,
            "named_handles": [
                {"type": "PoolRoute", "name": "route:a", "pool": "A"},
                {"type": "PoolRoute", "name": "route:a", "pool": "B"},  # first wins
            ],
            "route": {"type": "FailoverRoute", "children": ["route:a", "route:a"]},
        }
    )
    route: Any = config.route
    first, second = route.children
    assert first is second
    assert pool_of(first) == "A"


def test_named_handles_object_is_built_on_first_use_and_reused() -> None:
    config = load(
        {
            "pools": POOLS,
            "named_handles": {
                "main": {"type": "PoolRoute", "pool": "A"},
                "short": "PoolRoute|B",
                "never-used": {"type": "NoSuchRoute"},  # never referenced: never built
            },
            "route": {
                "type": "OperationSelectorRoute",
                "operation_policies": {"get": "main", "set": "short", "delete": "main"},
            },
        }
    )
    route: Any = config.route
    policies = route.operation_policies
    assert policies["get"] is policies["delete"]
    assert pool_of(policies["get"]) == "A"
    assert pool_of(policies["set"]) == "B"


def test_a_named_object_anywhere_defines_the_name_for_later_references() -> None:
    config = load(
        {
            "pools": POOLS,
            "route": {
                "type": "FailoverRoute",
                "children": [
                    {"type": "PoolRoute", "name": "shared", "pool": "A"},
                    "shared",
                    {"type": "PoolRoute", "name": "shared", "pool": "B"},
                ],
            },
        }
    )
    route: Any = config.route
    first, second, third = route.children
    assert first is second is third


def test_a_named_list_expands_where_children_are_expected() -> None:
    config = load(
        {
            "pools": POOLS,
            "named_handles": {"both": ["PoolRoute|A", "PoolRoute|B"]},
            "route": {"type": "AllSyncRoute", "children": "both"},
        }
    )
    route: Any = config.route
    assert [pool_of(child) for child in route.children] == ["A", "B"]


def test_pool_destinations_by_name_string_are_reused() -> None:
    config = load({"pools": POOLS, "route": {"type": "AllSyncRoute", "children": "Pool|A"}})
    route: Any = config.route
    assert route.children == (DestinationRoute(config.pools["A"].servers[0]),)


# ---------------------------------------------------------------------------
# macros and parameters in a whole config


def test_macros_params_and_globals_expand_before_the_config_is_read() -> None:
    text = json.dumps(
        {
            "macros": {
                "pool": {
                    "type": "macroDef",
                    "params": ["port"],
                    "result": {"servers": ["127.0.0.1:%port%"]},
                },
            },
            "pools": {"A": "@pool(%PORT%)"},
            "routes": [
                {"aliases": ["%default-route%"], "route": "PoolRoute|A"},
                {"aliases": ["/%default-region%/other/"], "route": "ErrorRoute|%NAME%"},
            ],
        }
    )
    config = load_config(
        text, default_route="/dc9/web/", config_params={"PORT": "5005", "NAME": "down"}
    )
    assert config.pools["A"].servers[0].port == 5005
    assert list(config.roots) == [b"/dc9/web/", b"/dc9/other/"]
    assert config.roots[b"/dc9/other/"] == ErrorRoute(response="down")
    assert config.preprocessed["pools"] == {"A": {"servers": ["127.0.0.1:5005"]}}
    assert "macros" not in config.preprocessed


def test_global_params_win_over_config_params_of_the_same_name() -> None:
    text = '{"route": "ErrorRoute|%default-route% %router-info-name%", "id": "%hostid%"}'
    config = load_config(text, host_id=42, config_params={"default-route": "/mine/x/"})
    assert config.route == ErrorRoute(response="/././ Memcache")
    assert config.preprocessed["id"] == 42


def test_import_is_relative_to_the_config_file_and_recorded(tmp_path: Path) -> None:
    (tmp_path / "pools.json").write_text(json.dumps(POOLS))
    path = tmp_path / "main.json"
    path.write_text('{"pools": "@import(pools.json)", "route": "PoolRoute|B"}')
    config = load_config_file(path)
    assert pool_of(config.route) == "B"
    assert config.imports == (str(tmp_path / "pools.json"),)


@pytest.mark.parametrize(
    ("text", "params"),
    [("a:1,b:2", {"a": "1", "b": "2"}), ("url:http://x", {"url": "http://x"}), ("", {})],
)
def test_config_params_flag(text: str, params: dict[str, str]) -> None:
    assert parse_config_params(text) == params


@pytest.mark.parametrize("text", ["novalue", ":x"])
def test_bad_config_params_flag(text: str) -> None:
    with pytest.raises(ValueError):
        parse_config_params(text)


# ---------------------------------------------------------------------------
# Bad configs: mcrouter's messages, at their JSON paths

BAD = [
    pytest.param(
        {"route": "NullRoute", "routes": {"/a/a/": "NullRoute"}},
        {},
        ["Invalid config: both 'route' and 'routes' are specified @ $"],
        id="route-and-routes",
    ),
    pytest.param({"pools": {}}, {}, ["No route/routes in config @ $"], id="no-route"),
    pytest.param(
        {"routes": "NullRoute"}, {}, ["Config: routes is not array/object @ $.routes"], id="string"
    ),
    pytest.param(
        {"routes": [1, {"route": "NullRoute"}, {"aliases": ["/a/a/"]}, {"aliases": "/a/a/"}]},
        {},
        [
            "RoutePolicy is not an object @ $.routes[0]",
            "RoutePolicy: no aliases @ $.routes[1]",
            "RoutePolicy: no route @ $.routes[2]",
            "RoutePolicy: no route @ $.routes[3]",
            "RoutePolicy: aliases is not an array @ $.routes[3].aliases",
        ],
        id="route-policies",
    ),
    pytest.param(
        {"routes": [{"aliases": ["/././", 5, "/only-region/"], "route": "NullRoute"}]},
        {},
        [
            "RoutePolicy: alias is not a string @ $.routes[0].aliases[1]",
            "Routing prefix (/only-region/) should be of the form /region/cluster/"
            " @ $.routes[0].aliases[2]",
        ],
        id="aliases",
    ),
    pytest.param(
        {"routes": {"/a/a/": "NullRoute"}},
        {},
        ["invalid default route: /././ @ $.routes"],
        id="default-not-an-alias",
    ),
    pytest.param(
        {"route": "NullRoute"},
        {"default_route": "/onlyregion"},
        [
            "invalid default route: Routing prefix (/onlyregion/) should be of the form"
            " /region/cluster/"
        ],
        id="bad-default-route",
    ),
    pytest.param(
        {"routes": [{"aliases": ["/././"], "route": "NoSuchRoute|x"}]},
        {},
        ["unknown route type 'NoSuchRoute' @ $.routes[0].route"],
        id="route-error-path",
    ),
    pytest.param(
        {"named_handles": "x", "route": "NullRoute"},
        {},
        ["named_handles is string expected array/object @ $.named_handles"],
        id="named-handles-type",
    ),
    pytest.param(
        {"named_handles": [{"type": "Nope", "name": "n"}], "route": "NullRoute"},
        {},
        ["unknown route type 'Nope' @ $.named_handles[0]"],
        id="named-list-entry",
    ),
    pytest.param(
        {"named_handles": {"x": {"type": "NullRoute", "name": "y"}}, "route": "x"},
        {},
        ["Ambiguous RouteHandle name in object for x @ $.named_handles.x"],
        id="named-ambiguous",
    ),
    pytest.param(
        {"named_handles": {"x": {"type": "Nope"}}, "route": "x"},
        {},
        ["named handle 'x' is invalid @ $.route", "unknown route type 'Nope' @ $.named_handles.x"],
        id="named-object-error-at-its-own-path",
    ),
    pytest.param(
        {"named_handles": {"two": ["NullRoute", "NullRoute"]}, "route": "two"},
        {},
        ["2 RouteHandles in list, expected 1 @ $.route"],
        id="named-list-where-one-route-is-expected",
    ),
    pytest.param(
        {"named_handles": {"self": {"type": "FailoverRoute", "children": ["self"]}},
         "route": "self"},
        {},
        [
            "named handle 'self' is invalid @ $.route",
            "unknown route type 'self' @ $.named_handles.self.children[0]",
        ],
        id="named-self-reference",
    ),
    pytest.param(
        {"macros": {"m": {"type": "macroDef", "params": ["a"], "result": "@select(%a%,x)"}},
         "route": {"type": "FailoverRoute", "children": ["@m(1)"]}},
        {},
        [
            "macro 'm': macro 'select': Select: dictionary is string, expected array/object"
            " @ $.route.children[0]"
        ],
        id="macro-error",
    ),
    pytest.param(
        {"route": "PoolRoute|%POOL%"},
        {},
        ["Param in string: 'POOL' not found @ $.route"],
        id="missing-config-param",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("document", "kwargs", "errors"), BAD)
def test_bad_configs(document: dict[str, Any], kwargs: dict[str, Any], errors: list[str]) -> None:
    assert errors_of(document, **kwargs) == errors


def test_null_route_reference_through_a_name_is_the_same_value() -> None:
    config = load({"named_handles": [{"type": "NullRoute", "name": "n"}], "route": "n"})
    assert config.route == NullRoute()
