"""OperationSelectorRoute (alias PrefixPolicyRoute): a route per command."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from mcrouter_trio.messages import Pending, Reply, Request, Result
from mcrouter_trio.routing._base import Route, RouteContext, policy_name

#: Operation names mcrouter accepts as `operation_policies` keys.
OPERATION_NAMES = frozenset(
    {
        "get", "gets", "gat", "gats", "set", "add", "replace", "append", "prepend", "cas",
        "delete", "touch", "incr", "decr", "lease-get", "lease-set", "metaget", "flushall",
        "flushre",
    }
)  # fmt: skip


@attrs.frozen
class OperationSelectorRoute:
    operation_policies: Mapping[str, Route] = attrs.field(factory=dict)
    default_policy: Route | None = None

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        name = policy_name(request)
        policy = self.operation_policies.get(name, self.default_policy)
        if policy is None:
            # mcrouter answers an operation with no policy with an empty reply.
            raw = f"SERVER_ERROR unexpected result mc_res_unknown (0) for {name}\r\n"
            return Pending(Reply(Result.LOCAL_ERROR, raw.encode()))
        return policy.route(request, ctx)

    def children(self) -> list[Route]:
        routes = list(self.operation_policies.values())
        if self.default_policy is not None:
            routes.append(self.default_policy)
        return routes
