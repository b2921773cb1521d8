"""BlackholeRoute: requests whose fields match the policies go to a black hole."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from mcrouter_trio.messages import ARITHMETIC, EXPTIME_ARG, STORAGE, Op, Pending, Request
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing._checks import Invalid, check_str, describe
from mcrouter_trio.routing._registry import config_field, route_type
from mcrouter_trio.routing.handles.simple import NullRoute

_OPS: Final = frozenset({"equals", "not_equals"})
#: A field the request has but no policy value can match (a value block).
_UNMATCHABLE: Final = object()

#: One policy: (equals?, the value it compares with).
Policy = tuple[bool, object]


def check_policies(value: object) -> Mapping[str, tuple[Policy, ...]]:
    """`{"<field>": [{"op": "equals" | "not_equals", "value": ...}, ...], ...}`."""
    if not isinstance(value, dict):
        raise Invalid(f"BlackholeRoute: 'policies' must be an object, got {describe(value)}")
    policies: dict[str, tuple[Policy, ...]] = {}
    for field, entries in value.items():
        if not isinstance(entries, list):
            raise Invalid(f"BlackholeRoute: policies for '{field}' must be in an array.")
        parsed: list[Policy] = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise Invalid(
                    f"BlackholeRoute: each policy in the array for '{field}' must be an object."
                )
            if "op" not in entry:
                raise Invalid(
                    f"BlackholeRoute: policy object for '{field}' must contain an \"op\" option"
                )
            if check_str(entry["op"]) not in _OPS:
                raise Invalid(f"BlackholeRoute: policy op for '{field}' is not supported")
            if "value" not in entry:
                raise Invalid(
                    f"BlackholeRoute: policy object for '{field}' must contain an \"value\" option"
                )
            parsed.append((entry["op"] == "equals", entry["value"]))
        policies[field] = tuple(parsed)
    return policies


def request_fields(request: Request) -> dict[str, object]:
    """The request's fields as mcrouter's Carbon requests name them (meta: key and flags)."""
    op = request.op
    fields: dict[str, object] = {"key": request.key, "flags": 0}
    if op in STORAGE:
        fields["flags"] = int(request.args[0])
        fields["value"] = _UNMATCHABLE
    if op in ARITHMETIC:
        fields["delta"] = int(request.args[0])
    index = EXPTIME_ARG.get(op)
    if index is not None:
        fields["exptime"] = int(request.args[index])
    elif op is Op.DELETE:
        fields["exptime"] = 0
    return fields


def _matches(equals: bool, wanted: object, actual: object) -> bool:
    """mcrouter's comparison: strings with the key, numbers with numbers; else no match."""
    if isinstance(actual, bytes):
        if not isinstance(wanted, str):
            return False
        same = wanted.encode() == actual
    elif isinstance(actual, int):
        if isinstance(wanted, bool):
            same = wanted == (actual != 0)
        elif isinstance(wanted, int | float):
            same = wanted == actual
        else:
            return False
    else:
        return False
    return same if equals else not same


@route_type("BlackholeRoute")
@attrs.frozen
class BlackholeRoute:
    """Sends a request to `blackhole_child` (default NullRoute) if it matches `policies`.

    `policies` maps a request field (`key`, `flags`, `exptime`, `delta`) to policies
    `{"op": "equals" | "not_equals", "value": ...}`: a field matches if any of its
    policies does, and the request is blackholed when every field it has matches
    (a field the request lacks is skipped, as in mcrouter). Anything else goes to
    `default`.
    """

    default: Route
    policies: Mapping[str, tuple[Policy, ...]] = config_field(check=check_policies)
    blackhole_child: Route = attrs.field(factory=NullRoute)

    def blackholed(self, request: Request) -> bool:
        fields = request_fields(request)
        for name, policies in self.policies.items():
            if name in fields:
                actual = fields[name]
                if not any(_matches(equals, wanted, actual) for equals, wanted in policies):
                    return False
        return True

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        target = self.blackhole_child if self.blackholed(request) else self.default
        return target.route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # each key is judged on its own

    def targets(self) -> Sequence[Route]:
        return (self.default, self.blackhole_child)
