"""Sequential failover: FailoverRoute, LatestRoute, MissFailoverRoute, FailoverWithExptimeRoute.

SaltedFailoverRoute, a FailoverRoute over a PoolRoute, is in `salted_failover.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from mcrouter_trio.counters import ProxyCounters
from mcrouter_trio.hashing._per_host import latest_order
from mcrouter_trio.hashing._weighted import DEFAULT_WEIGHT
from mcrouter_trio.messages import (
    FAILOVER_ERRORS,
    GET_LIKE,
    HITS,
    TKO_LIKE,
    Op,
    Pending,
    Reply,
    Request,
    Result,
    severity,
)
from mcrouter_trio.routing._base import (
    OverChildren,
    Route,
    RouteContext,
    SplitRouting,
    default_reply,
)
from mcrouter_trio.routing._checks import (
    Invalid,
    check_bool,
    check_int,
    check_str,
    check_weight_numbers,
    check_weight_range,
)
from mcrouter_trio.routing._combinators import count_failover_error, first_acceptable, sequence
from mcrouter_trio.routing._registry import config_field, route_type
from mcrouter_trio.routing.handles._failover_settings import (
    DeterministicOrderPolicy,
    DrawnOrder,
    FailoverErrors,
    FailoverLimit,
    FailoverOrder,
    parse_failover_errors,
    parse_failover_limit,
    parse_failover_policy,
)
from mcrouter_trio.routing.handles._failover_tag import TaggedOrder, tag_failovers
from mcrouter_trio.routing.handles.modify import ModifyExptimeRoute


def no_failover_error(reply: Reply) -> bool:
    return reply.result not in FAILOVER_ERRORS


def failover(
    children: Sequence[Route],
    request: Request,
    ctx: RouteContext,
    name: str,
    policy: str | None = None,
) -> Pending:
    """Try children in order until a reply is not a failover-type error.

    `policy`: count the failovers in the `failover_*` stats under that policy's name.
    """
    if not children:
        return Pending(default_reply(request))
    return first_acceptable(children, request, ctx, no_failover_error, name=name, policy=policy)


def failover_whole(
    children: Sequence[Route], request: Request, ctx: RouteContext, split: SplitRouting, name: str
) -> Pending | None:
    """A whole multi-get to the first child; on a failover-type error, the rest key by key.

    The rest are tried key by key (each key fails over on its own, as when the
    multi-get is split from the start), never the first child again.
    """
    if not children:
        return None
    first = children[0].route_whole(request, ctx, split)
    if first is None or len(children) == 1:
        return first
    rest = FailoverRoute(tuple(children[1:]))

    def after_first(reply: Reply) -> Reply | Pending:
        if no_failover_error(reply):
            return reply
        return split(rest, request)

    return sequence(first, after_first, name=name)


class _Tries:
    """One request's failover rule under FailoverRoute settings (mcrouter's `processReply`).

    A reply is final unless its result fails over for this request's class. A TKO,
    connect error or connect timeout (mcrouter's TKO or hard TKO: the server could not
    be reached) always moves on, counting no try and spending no failover token;
    another error moves on only if the failover limit has a token, and counts as a try
    unless the policy excludes it;
    after `max_error_tries` tries the reply is final (and counted in the
    `failover_policy_*_error` stats, as mcrouter weighs it before finding no try left).

    With a DeterministicOrderPolicy (`drawn`), the collisions of its draws are
    counted as mcrouter counts them: once the failover has run out, that is when
    the last child is about to be tried or the error tries are spent (the draws of
    the next child then count too, as mcrouter has drawn it).
    """

    __slots__ = ("counters", "drawn", "errors", "limit", "order", "position", "tries")

    def __init__(
        self,
        errors: frozenset[Result],
        limit: FailoverLimit | None,
        order: FailoverOrder | None,
        counters: ProxyCounters,
    ) -> None:
        self.errors = errors
        self.limit = limit
        self.order = order
        self.counters = counters
        self.tries = 0
        #: The order's position of the child whose reply `final` is shown next.
        self.position = 0
        self.drawn: DrawnOrder | None = None

    def final(self, reply: Reply) -> bool:
        position = self.position
        self.position = position + 1
        result = reply.result
        if result not in self.errors:
            return True
        if result in TKO_LIKE:
            self._moving_on(position)
            return False
        if self.limit is not None and not self.limit.allow_failover():
            # mcrouter counts the error, then the failover its limit refused.
            self.counters.failover_policy_result_error += 1
            self.counters.failover_rate_limited += 1
            return True
        order = self.order
        if order is None:
            return False
        if result not in order.exclude_errors:
            self.tries += 1
        if self.tries >= order.max_error_tries:
            # mcrouter weighs this reply as one to fail over from, then finds no try left.
            count_failover_error(self.counters, reply)
            self._count_draws(position + 1)
            return True
        self._moving_on(position)
        return False

    def _moving_on(self, position: int) -> None:
        drawn = self.drawn
        if drawn is not None and position + 2 == len(drawn):
            self._count_draws(position + 1)  # the last child is next

    def _count_draws(self, position: int) -> None:
        drawn = self.drawn
        if drawn is None or len(drawn) < 2:
            return
        collisions, domain_collisions = drawn.draws_until(min(position, len(drawn) - 1))
        self.counters.failover_num_collisions += collisions
        self.counters.failover_num_failed_domain_collisions += domain_collisions


@route_type("FailoverRoute", shorthand="children")
@attrs.frozen
class FailoverRoute(OverChildren):
    """Sends to the first child; on a failover-type error, to the next one, and so on.

    `failover_errors` says which errors fail over (per get/update/delete class),
    `failover_limit` caps failovers as a share of requests, `failover_policy`
    orders and bounds the tries (LeastFailuresPolicy, DeterministicOrderPolicy).
    Without them a request takes the plain path (no per-request state).
    With `failover_tag`, keys with a hash stop reach the failover children with
    `:failover=1` appended (see `_failover_tag.py`).
    """

    children: tuple[Route, ...]
    failover_errors: FailoverErrors | None = config_field(default=None, check=parse_failover_errors)
    failover_limit: FailoverLimit | None = config_field(default=None, check=parse_failover_limit)
    failover_policy: FailoverOrder | None = config_field(default=None, check=parse_failover_policy)
    failover_tag: bool = config_field(default=False, check=check_bool)
    #: mcrouter pairs a lease-set with the child whose lease-get issued the token.
    #: Only mcrouter's own lease-get/lease-set carry such tokens, and no memcached
    #: command does (meta `mg N` wins are not remapped by mcrouter either): checked
    #: as mcrouter checks it, then there is nothing to pair (docs/routes.md).
    enable_lease_pairing: bool = config_field(default=False, check=check_bool)
    name: str = config_field(default="", check=check_str)
    _plain: bool = attrs.field(init=False, repr=False, eq=False)
    #: The children as tried in config order (the failover ones tagging, if asked).
    _attempts: tuple[Route, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.enable_lease_pairing and not self.name:
            raise Invalid("name is required when lease pairing is enabled")
        plain = (self.failover_errors, self.failover_limit, self.failover_policy) == (None,) * 3
        object.__setattr__(self, "_plain", plain)
        attempts = tag_failovers(self.children) if self.failover_tag else self.children
        object.__setattr__(self, "_attempts", attempts)

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if self._plain:
            return failover(self._attempts, request, ctx, "FailoverRoute", "inorder")
        children = self.children
        if not children:
            return Pending(default_reply(request))
        errors = self.failover_errors
        tries = _Tries(
            FAILOVER_ERRORS if errors is None else errors.for_request(request),
            self.failover_limit,
            self.failover_policy,
            ctx.counters,
        )
        if self.failover_limit is not None:
            self.failover_limit.count_request()
        order: Sequence[Route] = self._attempts
        policy = "inorder"
        ordering = self.failover_policy
        if ordering is not None:
            if isinstance(ordering, DeterministicOrderPolicy):
                order = tries.drawn = ordering.order(children, request)
            else:
                order = ordering.order(children, request)
            policy = ordering.stat_name
            if self.failover_tag:
                order = TaggedOrder(order)
        return first_acceptable(
            order, request, ctx, tries.final, name="FailoverRoute", policy=policy
        )

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        if not self._plain:
            return None  # per-request settings apply key by key
        return failover_whole(self._attempts, request, ctx, split, "FailoverRoute")


def _check_failover_count(value: object) -> int:
    return check_int(value, 0)


def _check_latest_weights(value: object) -> tuple[float, ...] | None:
    return None if value is None else check_weight_numbers(value)


@route_type("LatestRoute", shorthand="children")
@attrs.frozen
class LatestRoute:
    """A FailoverRoute over up to `failover_count` children picked once from the host id.

    mcrouter's LatestRoute: the children and their order come from the host id
    (and `salt`) as in `hashing/_per_host.py`, so a host uses the same servers
    under mcrouter and here; `weights` (WeightedCh3's, missing ones 0.5, all 1.0
    without the field) make a child likelier. With `thread_local_failover` the
    proxy worker's index (`--num-proxies`; mcrouter's proxy thread id) is mixed
    into the choice, so the workers spread over the children: every worker's
    FailoverRoute is made here, and a request takes its worker's. The
    FailoverRoute underneath takes `failover_errors`, `failover_limit`,
    `failover_policy`, `failover_tag`, `enable_lease_pairing` and `name`, as
    mcrouter passes the same object on to it.
    """

    children: tuple[Route, ...]
    failover_count: int = config_field(default=5, check=_check_failover_count)
    weights: tuple[float, ...] | None = config_field(default=None, check=_check_latest_weights)
    salt: str = ""
    thread_local_failover: bool = config_field(default=False, check=check_bool)
    failover_errors: FailoverErrors | None = config_field(default=None, check=parse_failover_errors)
    failover_limit: FailoverLimit | None = config_field(default=None, check=parse_failover_limit)
    failover_policy: FailoverOrder | None = config_field(default=None, check=parse_failover_policy)
    failover_tag: bool = config_field(default=False, check=check_bool)
    enable_lease_pairing: bool = config_field(default=False, check=check_bool)
    name: str = config_field(default="", check=check_str)
    #: This proxy host's id: the config cannot set it.
    host_id: int = config_field(default=0, from_build="host_id")
    #: How many workers route with this tree: the config cannot set it.
    num_proxies: int = config_field(default=1, from_build="num_proxies")
    #: Each worker's FailoverRoute, by worker index; one for all without
    #: `thread_local_failover`.
    _by_worker: tuple[FailoverRoute, ...] = attrs.field(init=False, repr=False, eq=False)
    #: Every child some worker may send to, worker 0's first.
    _targets: tuple[Route, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        count = len(self.children)
        weights: Sequence[float] = (1.0,) * count
        if self.weights is not None:
            check_weight_range(self.weights, count)
            weights = [*self.weights[:count], *(DEFAULT_WEIGHT,) * (count - len(self.weights))]
        workers = range(self.num_proxies) if self.thread_local_failover else range(1)
        orders = [
            latest_order(self.host_id, weights, self.failover_count, self.salt, thread_id=worker)
            for worker in workers
        ]
        by_order = {order: self._failover(order) for order in orders}
        object.__setattr__(self, "_by_worker", tuple(by_order[order] for order in orders))
        picked = dict.fromkeys(index for order in orders for index in order)
        object.__setattr__(self, "_targets", tuple(self.children[index] for index in picked))

    def _failover(self, order: tuple[int, ...]) -> FailoverRoute:
        return FailoverRoute(
            tuple(self.children[index] for index in order),
            self.failover_errors,
            self.failover_limit,
            self.failover_policy,
            self.failover_tag,
            self.enable_lease_pairing,
            self.name,
        )

    def failover_for(self, worker_index: int) -> FailoverRoute:
        """The FailoverRoute the worker with `worker_index` routes through."""
        by_worker = self._by_worker
        return by_worker[worker_index] if len(by_worker) > 1 else by_worker[0]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return self.failover_for(ctx.worker_index).route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return self.failover_for(ctx.worker_index).route_whole(request, ctx, split)

    def targets(self) -> Sequence[Route]:
        return self._targets


def _is_hit(reply: Reply) -> bool:
    return reply.result in HITS


class _BestSoFar:
    """`return_best_on_error`: the least severe reply seen (the later one on a tie)."""

    __slots__ = ("best",)

    def __init__(self) -> None:
        self.best: Reply | None = None

    def keep(self, reply: Reply) -> None:
        best = self.best
        if best is None or severity(reply.result) <= severity(best.result):
            self.best = reply

    def acceptable(self, reply: Reply) -> bool:
        self.keep(reply)
        return _is_hit(reply)

    def answer(self, last: Reply) -> Reply:
        if _is_hit(last):
            return last
        self.keep(last)
        return self.best or last


@route_type("MissFailoverRoute", shorthand="children")
@attrs.frozen
class MissFailoverRoute(OverChildren):
    """Reads and deletes try the children in order until a hit; the rest go to the first child.

    A hit is FOUND, DELETED, TOUCHED or OK: misses and errors both move on. When no
    child hits, the last reply is returned, or with `return_best_on_error` the
    least severe one (a miss rather than an error). Meta `mg` and `md` count as
    their classic twins.
    """

    children: tuple[Route, ...]
    return_best_on_error: bool = False

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        children = self.children
        if not children:
            return Pending(default_reply(request))
        op = request.op
        if len(children) == 1 or not (
            op in GET_LIKE or op is Op.MG or op is Op.ME or op is Op.DELETE or op is Op.MD
        ):
            return children[0].route(request, ctx)
        if not self.return_best_on_error:
            return first_acceptable(children, request, ctx, _is_hit, name="MissFailoverRoute")
        best = _BestSoFar()
        last = first_acceptable(children, request, ctx, best.acceptable, name="MissFailoverRoute")
        return sequence(last, best.answer, name="MissFailoverRoute")

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # each key misses on its own


class ThroughInner:
    """For handles that are a FailoverRoute put together at config time (`_inner`)."""

    __slots__ = ()
    _inner: FailoverRoute

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return self._inner.route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return self._inner.route_whole(request, ctx, split)

    def targets(self) -> Sequence[Route]:
        return self._inner.children


@route_type("FailoverWithExptimeRoute")
@attrs.frozen
class FailoverWithExptimeRoute(ThroughInner):
    """FailoverRoute over `normal` then `failover`, the failover children's exptimes capped.

    Each failover child is wrapped in ModifyExptimeRoute `min` with
    `failover_exptime` (default 60 s; 0 or less: not wrapped), so a value written
    while the normal route is down expires soon from the failover pool. Deletes are
    not modified. `failover_errors`, `failover_limit`, `failover_policy` and
    `failover_tag` are FailoverRoute's.
    """

    normal: Route
    failover: tuple[Route, ...] = ()
    failover_exptime: int = 60
    failover_errors: FailoverErrors | None = config_field(default=None, check=parse_failover_errors)
    failover_limit: FailoverLimit | None = config_field(default=None, check=parse_failover_limit)
    failover_policy: FailoverOrder | None = config_field(default=None, check=parse_failover_policy)
    failover_tag: bool = config_field(default=False, check=check_bool)
    _inner: FailoverRoute = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        failover: tuple[Route, ...] = self.failover
        if self.failover_exptime > 0:
            failover = tuple(
                ModifyExptimeRoute(child, self.failover_exptime, "min") for child in failover
            )
        inner = FailoverRoute(
            (self.normal, *failover),
            self.failover_errors,
            self.failover_limit,
            self.failover_policy,
            self.failover_tag,
        )
        object.__setattr__(self, "_inner", inner)
