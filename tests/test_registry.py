"""The route handle registry: a handle declared in its own module is all the config needs."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Sequence

import attrs
import pytest

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.messages import Op, Pending, Reply, Request, Result
from mcrouter_trio.routing import REGISTRY, Route, RouteContext, load_handles, route_type
from mcrouter_trio.routing._base import SplitRouting
from mcrouter_trio.routing._checks import Invalid, check_int
from mcrouter_trio.routing._registry import config_field
from mcrouter_trio.routing.testing import FakeContext


def _check_copies(value: object) -> int:
    return check_int(value, 1, 3)


@route_type("RegistryTestEchoRoute", shorthand="children")
@attrs.frozen
class EchoRoute:
    """A handle that exists only in this test module: nothing else knows of it."""

    children: tuple[Route, ...]
    copies: int = config_field(default=1, check=_check_copies)
    greeting: str = "hello"

    def __attrs_post_init__(self) -> None:
        if self.greeting == "bye":
            raise Invalid("greeting may not be 'bye'")

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        raw = b"SERVER_ERROR %s x%d\r\n" % (self.greeting.encode(), self.copies)
        return Pending(Reply(Result.LOCAL_ERROR, raw))

    def route_whole(self, request: Request, ctx: RouteContext, split: SplitRouting) -> None:
        return None

    def targets(self) -> Sequence[Route]:
        return self.children


def config(route: object) -> str:
    return json.dumps({"pools": {"A": {"servers": ["127.0.0.1:1"]}}, "route": route})


def test_a_handle_registered_in_its_own_module_loads_in_every_form() -> None:
    ctx = FakeContext()
    by_object = load_config(
        config({"type": "RegistryTestEchoRoute", "children": "Pool|A", "copies": 2})
    )
    assert isinstance(by_object.route, EchoRoute)
    reply = by_object.route.route(Request(Op.GET, b"k"), ctx).reply
    assert reply is not None
    assert reply.raw == b"SERVER_ERROR hello x2\r\n"
    by_string = load_config(config("RegistryTestEchoRoute|Pool|A"))
    assert isinstance(by_string.route, EchoRoute)
    assert len(by_string.route.children) == 1
    nested = load_config(config({"type": "FailoverRoute", "children": ["RegistryTestEchoRoute|"]}))
    assert "127.0.0.1:1" not in {server.address for server in nested.servers}


@pytest.mark.parametrize(
    ("route", "message"),
    [
        pytest.param(
            {"type": "RegistryTestEchoRoute", "children": [], "copies": 4},
            "expected an integer in [1, 3], got 4 @ $.route.copies",
            id="field-check",
        ),
        pytest.param(
            {"type": "RegistryTestEchoRoute", "children": [], "greeting": "bye"},
            "greeting may not be 'bye' @ $.route",
            id="class-validation",
        ),
        pytest.param(
            "RegistryTestEchoRoute",
            "RegistryTestEchoRoute needs an argument: 'RegistryTestEchoRoute|<children>' @ $.route",
            id="shorthand-without-argument",
        ),
    ],
)
def test_a_handles_own_validation_is_reported_with_its_path(route: object, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config(route))
    assert message in error.value.errors


def test_every_module_of_the_handles_package_registers_its_handles() -> None:
    registry = load_handles()
    package = importlib.import_module("mcrouter_trio.routing.handles")
    registered_modules = {entry.cls.__module__ for entry in registry.values()}
    for module in pkgutil.iter_modules(package.__path__):
        name = f"{package.__name__}.{module.name}"
        if name.endswith(".destination") or module.name.startswith("_"):
            continue  # the leaf (made by pools, not named in configs); a family's helpers
        assert name in registered_modules, f"{name} registers no route type"
    assert REGISTRY["PrefixPolicyRoute"] is REGISTRY["OperationSelectorRoute"]
