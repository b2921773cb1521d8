"""Routes that pick a child by the request: by command or class of command, or by key prefix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from mcrouter_trio.messages import (
    ARITHMETIC,
    GET_LIKE,
    UPDATE_LIKE,
    Op,
    Pending,
    Reply,
    Request,
    Result,
)
from mcrouter_trio.routing._base import (
    NO_ROUTE,
    STATIC_POLICY_NAMES,
    Route,
    RouteContext,
    SplitRouting,
    policy_name,
)
from mcrouter_trio.routing._checks import Invalid
from mcrouter_trio.routing._registry import ROUTE_ARGUMENT, config_field, route_type
from mcrouter_trio.routing.handles.destination import split_routing_prefix

#: Operation names mcrouter accepts as `operation_policies` keys.
OPERATION_NAMES: Final = frozenset(
    {
        "get", "gets", "gat", "gats", "set", "add", "replace", "append", "prepend", "cas",
        "delete", "touch", "incr", "decr", "lease-get", "lease-set", "metaget", "flushall",
        "flushre",
    }
)  # fmt: skip


def check_operation_name(name: str) -> str:
    if name not in OPERATION_NAMES:
        raise Invalid(f"unknown operation '{name}'")
    return name


def no_policy(request: Request) -> Pending:
    """mcrouter's answer to a command its selector has no policy for: an empty reply."""
    raw = f"SERVER_ERROR unexpected result mc_res_unknown (0) for {policy_name(request)}"
    return Pending(Reply(Result.LOCAL_ERROR, raw.encode() + b"\r\n"))


def _policies_and_default(policies: Mapping[str, Route], default: Route | None) -> list[Route]:
    routes = list(policies.values())
    if default is not None:
        routes.append(default)
    return routes


@route_type("OperationSelectorRoute", "PrefixPolicyRoute", shorthand=ROUTE_ARGUMENT)
@attrs.frozen
class OperationSelectorRoute:
    """A route per command (`operation_policies`), else `default_policy`.

    Meta commands take their classic twin's policy (see `policy_name`).
    """

    operation_policies: Mapping[str, Route] = config_field(
        factory=dict, key_check=check_operation_name
    )
    default_policy: Route | None = None
    #: The policy of each command whose policy name does not depend on its flags.
    _by_op: Mapping[Op, Route] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.operation_policies and self.default_policy is None:
            raise Invalid("needs 'operation_policies' or 'default_policy'")
        by_op = {}
        for op, name in STATIC_POLICY_NAMES.items():
            policy = self.operation_policies.get(name, self.default_policy)
            if policy is not None:
                by_op[op] = policy
        object.__setattr__(self, "_by_op", by_op)

    def _policy(self, request: Request) -> Route | None:
        policy = self._by_op.get(request.op)
        if policy is None:
            policy = self.operation_policies.get(policy_name(request), self.default_policy)
        return policy

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        policy = self._by_op.get(request.op) or self._policy(request)
        if policy is None:
            return no_policy(request)
        return policy.route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        policy = self._policy(request)
        return None if policy is None else policy.route_whole(request, ctx, split)

    def targets(self) -> Sequence[Route]:
        return _policies_and_default(self.operation_policies, self.default_policy)


@route_type("PrefixSelectorRoute", top_only=True)
@attrs.frozen
class PrefixSelectorRoute:
    """The route of the longest key prefix in `policies`, else `wildcard` (Weibo's keymap).

    Matched on the key after its routing prefix; the key is sent unchanged. With no
    match and no wildcard the reply is `SERVER_ERROR RootRoute: No rh found`.
    """

    policies: Mapping[str, Route] = config_field(factory=dict)
    wildcard: Route | None = None
    #: (prefix length, prefix -> route), longest first: one dict look-up per length.
    _by_length: tuple[tuple[int, Mapping[bytes, Route]], ...] = attrs.field(
        init=False, repr=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        tables: dict[int, dict[bytes, Route]] = {}
        for prefix, route in self.policies.items():
            encoded = prefix.encode()
            tables.setdefault(len(encoded), {})[encoded] = route
        ordered = tuple(sorted(tables.items(), reverse=True))
        object.__setattr__(self, "_by_length", ordered)

    def select(self, key: bytes) -> Route | None:
        """The route for `key` (a key with or without a routing prefix)."""
        if key[:1] == b"/":
            key = split_routing_prefix(key)[1]
        for length, table in self._by_length:
            route = table.get(key[:length])
            if route is not None:
                return route
        return self.wildcard

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        route = self.select(request.key)
        if route is None:
            return Pending(NO_ROUTE)
        return route.route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        keys = request.keys or ()
        if not keys:
            return None
        route = self.select(keys[0])
        if route is None or any(self.select(key) is not route for key in keys[1:]):
            return None
        return route.route_whole(request, ctx, split)

    def targets(self) -> Sequence[Route]:
        routes = list(self.policies.values())
        if self.wildcard is not None:
            routes.append(self.wildcard)
        return routes


#: RoutingGroupRoute's groups and the commands in each (meta commands with their twins).
ROUTING_GROUPS: Final[Mapping[str, frozenset[Op]]] = {
    "get_like": GET_LIKE | {Op.MG, Op.ME},
    "update_like": UPDATE_LIKE,
    "delete_like": frozenset({Op.DELETE, Op.MD}),
    "arithmetic_like": ARITHMETIC | {Op.MA},
}


def check_routing_group(name: str) -> str:
    if name not in ROUTING_GROUPS:
        raise Invalid(f"{name} is not a valid routing group")
    return name


@route_type("RoutingGroupRoute", shorthand=ROUTE_ARGUMENT)
@attrs.frozen
class RoutingGroupRoute:
    """A route per class of command (`routing_group_policies`), else `default_policy`.

    Classes: `get_like`, `update_like`, `delete_like`, `arithmetic_like`; every
    other command (touch, flush_all, ...) takes `default_policy`.
    """

    routing_group_policies: Mapping[str, Route] = config_field(
        factory=dict, key_check=check_routing_group
    )
    default_policy: Route | None = None
    _by_op: Mapping[Op, Route] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.routing_group_policies and self.default_policy is None:
            raise Invalid("needs either 'default_policy' or 'routing_group_policies'")
        by_op = {}
        for group, ops in ROUTING_GROUPS.items():
            policy = self.routing_group_policies.get(group)
            if policy is not None:
                by_op.update(dict.fromkeys(ops, policy))
        object.__setattr__(self, "_by_op", by_op)

    def _policy(self, request: Request) -> Route | None:
        return self._by_op.get(request.op, self.default_policy)

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        policy = self._policy(request)
        if policy is None:
            return no_policy(request)
        return policy.route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        policy = self._policy(request)
        return None if policy is None else policy.route_whole(request, ctx, split)

    def targets(self) -> Sequence[Route]:
        return _policies_and_default(self.routing_group_policies, self.default_policy)
