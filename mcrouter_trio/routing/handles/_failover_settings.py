"""FailoverRoute's settings: which errors fail over, a cap on failovers, the order of tries.

Each is read from its JSON value by a field check (`parse_failover_errors`,
`parse_failover_limit`, `parse_failover_policy`) and follows mcrouter's
`FailoverErrorsSettingsBase`, `FailoverRateLimiter` and `FailoverPolicy.h`.
The limit and the least-failures policy keep state per route (as mcrouter keeps it
per route handle), so they compare by identity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

from mcrouter_trio.hashing import ch3, routing_key, weighted_ch3
from mcrouter_trio.messages import (
    FAILOVER_ERRORS,
    GET_LIKE,
    TKO_LIKE,
    UPDATE_LIKE,
    Op,
    Pending,
    Reply,
    Request,
    Result,
)
from mcrouter_trio.routing._base import Route, RouteContext
from mcrouter_trio.routing._checks import Invalid, check_bool, check_int, describe
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing.handles.destination import DestinationRoute

#: mcrouter's error result names (`mc_res_` dropped, `isErrorResult`), and the
#: results of this proxy each stands for. Names of results this proxy never
#: produces are accepted (a config written for mcrouter loads) and match nothing.
ERROR_NAMES: Final[Mapping[str, frozenset[Result]]] = {
    "timeout": frozenset({Result.TIMEOUT}),
    "connect_timeout": frozenset({Result.CONNECT_TIMEOUT}),
    "connect_error": frozenset({Result.CONNECT_ERROR}),
    "busy": frozenset({Result.BUSY}),
    "tko": frozenset({Result.TKO}),
    "local_error": frozenset({Result.LOCAL_ERROR}),
    "remote_error": frozenset({Result.REMOTE_ERROR}),
    "client_error": frozenset({Result.CLIENT_ERROR}),
    **dict.fromkeys(
        (
            "ooo", "try_again", "shutdown", "bad_command", "bad_key", "bad_flags",
            "bad_exptime", "bad_lease_id", "bad_cas_id", "bad_value", "aborted",
            "deadline_exceeded", "permission_denied", "hot_key", "overloaded",
        ),
        frozenset(),
    ),
}  # fmt: skip

#: `failover_errors` object keys: the operation classes they apply to.
_CLASSES: Final = ("gets", "updates", "deletes")


def _error_list(value: object, where: str) -> frozenset[Result]:
    if not isinstance(value, list):
        raise Invalid(f"{where}expected an array of error names, got {describe(value)}")
    results: set[Result] = set()
    for name in value:
        if not isinstance(name, str):
            raise Invalid(f"{where}failover error {describe(name)} is not a string")
        if name not in ERROR_NAMES:
            raise Invalid(f"{where}failover error '{name}' is not a valid error type")
        results |= ERROR_NAMES[name]
    return frozenset(results)


class FailoverErrors:
    """The results that fail over, per operation class (mcrouter `failover_errors`).

    Get-like, update-like and delete requests use their class's list (the default
    set where the config gives none); every other command always uses the default
    set. Meta commands count as their classic twins.
    """

    __slots__ = ("deletes", "gets", "updates")

    def __init__(
        self,
        gets: frozenset[Result] = FAILOVER_ERRORS,
        updates: frozenset[Result] = FAILOVER_ERRORS,
        deletes: frozenset[Result] = FAILOVER_ERRORS,
    ) -> None:
        self.gets = gets
        self.updates = updates
        self.deletes = deletes

    def for_request(self, request: Request) -> frozenset[Result]:
        op = request.op
        if op in GET_LIKE or op is Op.MG or op is Op.ME:
            return self.gets
        if op in UPDATE_LIKE:
            return self.updates
        if op is Op.DELETE or op is Op.MD:
            return self.deletes
        return FAILOVER_ERRORS


def parse_failover_errors(value: object) -> FailoverErrors:
    """An array of error names (every class), or an object of `gets`/`updates`/`deletes` arrays."""
    if isinstance(value, list):
        results = _error_list(value, "")
        return FailoverErrors(results, results, results)
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(_CLASSES))
        if unknown:
            raise Invalid(f"unknown key '{unknown[0]}' (known: {', '.join(_CLASSES)})")
        lists = {key: _error_list(value[key], f"{key}: ") for key in _CLASSES if key in value}
        return FailoverErrors(**lists)
    raise Invalid(f"failover errors must be an array or an object, got {describe(value)}")


class FailoverLimit:
    """A token bucket on the ratio of failovers to requests (mcrouter `failover_limit`).

    Time is counted in requests: every request routed adds `rate` tokens (up to
    `burst`), every failover takes one. The bucket starts full, as folly's
    TokenBucket does a million time units in (so with rate 0 it stays empty and
    nothing fails over but TKO). Without a token the reply that would have
    failed over is returned as it is.
    """

    __slots__ = ("_requests", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = min(burst, rate * 1e6)
        self._requests = 0
        self._stamp = 0

    def count_request(self) -> None:
        self._requests += 1

    def allow_failover(self) -> bool:
        elapsed = self._requests - self._stamp
        self._stamp = self._requests
        self._tokens = min(self.burst, self._tokens + self.rate * elapsed)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def _number(value: object, name: str) -> float:
    if type(value) not in (int, float):
        raise Invalid(f"{name} is not a number")
    return float(value)  # type: ignore[arg-type]  # int or float, checked above


def parse_failover_limit(value: object) -> FailoverLimit:
    """`{"rate": 0..1, "burst": >= 1}`; out-of-range values are clamped, as mcrouter does."""
    if not isinstance(value, dict):
        raise Invalid(f"failover limit is not an object, got {describe(value)}")
    unknown = sorted(set(value) - {"rate", "burst"})
    if unknown:
        raise Invalid(f"unknown key '{unknown[0]}' (known: rate, burst)")
    if "rate" not in value:
        raise Invalid("rate not found")
    rate = min(max(_number(value["rate"], "rate"), 0.0), 1.0)
    burst = max(_number(value["burst"], "burst"), 1.0) if "burst" in value else 1000.0
    return FailoverLimit(rate, burst)


class FailoverOrder:
    """Which children a request tries, in order, and how many error replies it may take."""

    #: Error replies (TKO and `exclude_errors` apart) after which no child is tried.
    max_error_tries: int = 1 << 32
    #: Results that do not count as a try.
    exclude_errors: frozenset[Result] = frozenset()
    #: Its name in the `failover_<name>_policy` stats, as mcrouter names them.
    stat_name: str = "inorder"

    def order(self, children: Sequence[Route], request: Request) -> Sequence[Route]:
        raise NotImplementedError


def _max_tries(value: Mapping[str, object], policy: str, count: int | None) -> int:
    if "max_tries" not in value:
        raise Invalid(f"{policy} must specify 'max_tries' field")
    try:
        tries = check_int(value["max_tries"], 1, (1 << 32) - 1)
    except Invalid as exc:
        raise Invalid(f"max_tries: {exc}") from None
    return tries if count is None else min(tries, count)


class _Counted:
    """A child whose replies update LeastFailuresPolicy's count of its recent errors."""

    __slots__ = ("_child", "_errors", "_index")

    def __init__(self, child: Route, index: int, errors: list[int]) -> None:
        self._child = child
        self._index = index
        self._errors = errors

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return sequence(self._child.route(request, ctx), self._count, name="FailoverRoute")

    def _count(self, reply: Reply) -> Reply:
        self._errors[self._index] = self._errors[self._index] + 1 if reply.is_error else 0
        return reply

    def route_whole(self, request: Request, ctx: RouteContext, split: object) -> None:
        return None

    def targets(self) -> Sequence[Route]:
        return (self._child,)


class _LeastFailuresOrder(Sequence[Route]):
    """Child 0 first; the rest by fewest recent errors, sorted once the first reply is in."""

    def __init__(self, counted: Sequence[_Counted], errors: list[int], tries: int) -> None:
        self._counted = counted
        self._errors = errors
        self._tries = tries
        self._order: list[int] | None = None

    def __len__(self) -> int:
        return self._tries

    def __getitem__(self, index: int) -> Route:  # type: ignore[override]  # ints only
        if index == 0:
            return self._counted[0]
        if self._order is None:
            errors = self._errors
            rest = sorted(range(1, len(errors)), key=errors.__getitem__)
            self._order = [0, *rest]
        return self._counted[self._order[index]]


class LeastFailuresPolicy(FailoverOrder):
    """mcrouter's FailoverLeastFailuresPolicy: `max_tries` children, the least failing first."""

    stat_name = "least_failures"

    def __init__(self, max_tries: int) -> None:
        self.max_tries = max_tries
        self._errors: list[int] = []
        self._counted: tuple[_Counted, ...] = ()
        self._children: Sequence[Route] = ()

    def order(self, children: Sequence[Route], request: Request) -> Sequence[Route]:
        if self._children is not children:
            self._children = children
            self._errors = [0] * len(children)
            self._counted = tuple(
                _Counted(child, index, self._errors) for index, child in enumerate(children)
            )
        tries = min(self.max_tries, len(children))
        return _LeastFailuresOrder(self._counted, self._errors, tries)


#: Attempts to find a child not tried yet before DeterministicOrderPolicy gives up.
_MAX_ATTEMPTS: Final = 100
#: After this many attempts a child in a failed failure domain is taken after all
#: (mcrouter's fail-safe: a few domains all marked failed must not block failover).
_FAILURE_DOMAIN_ATTEMPTS: Final = 3 * _MAX_ATTEMPTS // 4


class Draws:
    """How many of DeterministicOrderPolicy's draws collided, position by position.

    mcrouter's `failover_num_collisions` counts draws of a child already tried (or
    skipped), `failover_num_failed_domain_collisions` draws of a child in a failure
    domain that gave a TKO; a request's counts go to the stats when its failover
    runs out (`counted_until`).
    """

    __slots__ = ("collisions", "domain_collisions")

    def __init__(self) -> None:
        #: Per position drawn (1 on), the collisions of its draw.
        self.collisions = [0]
        self.domain_collisions = [0]

    def drew(self, collisions: int, domain_collisions: int) -> None:
        self.collisions.append(collisions)
        self.domain_collisions.append(domain_collisions)

    def counted_until(self, position: int) -> tuple[int, int]:
        """The collisions of the draws of positions 1 to `position`, all drawn already."""
        end = position + 1
        return sum(self.collisions[:end]), sum(self.domain_collisions[:end])


class DrawnOrder(Protocol):
    """An order whose draws collisions are counted (DeterministicOrderPolicy's)."""

    def __len__(self) -> int: ...

    def draws_until(self, position: int) -> tuple[int, int]:
        """The collisions and failed-domain collisions of positions 1 to `position`."""
        ...


class _DrawnOrder(list[Route]):
    """DeterministicOrderPolicy's order for one request, drawn whole, and its `Draws`."""

    def __init__(self, first: Route) -> None:
        super().__init__((first,))
        self.draws = Draws()

    def draws_until(self, position: int) -> tuple[int, int]:
        return self.draws.counted_until(position)


class DeterministicOrderPolicy(FailoverOrder):
    """mcrouter's FailoverDeterministicOrderPolicy: a key-determined order of `max_tries` children.

    After child 0, each next child is `Ch3(routing key + str(salt))` (or WeightedCh3)
    with the salt counting up from 2, skipping children already tried (up to 100
    draws). Unless `ignore_normal_reply_index`, the child after the server that
    child 0's hash picked is skipped too (a SaltedFailoverRoute shape: child 0 is
    the pool, child i+1 its server i). At most `max_error_tries` error replies are
    taken; `exclude_errors` do not count.

    With `enable_failure_domains`, a TKO reply marks the failure domain of the
    server that gave it (its pool's `failure_domains` entry) as failed for the rest
    of the request, and later draws skip children whose server is in a failed
    domain, until 75 draws have been spent. A child's domain is that of the first
    server it would send the request to, remembered per child once known (as
    mcrouter memoizes it). The order is then drawn try by try, after each reply.
    """

    stat_name = "deterministic_order"

    def __init__(
        self,
        max_tries: int,
        max_error_tries: int,
        exclude_errors: frozenset[Result],
        ignore_normal_reply_index: bool,
        weights: tuple[float, ...] | None,
        enable_failure_domains: bool = False,
    ) -> None:
        self.max_tries = max_tries
        self.max_error_tries = max_error_tries
        self.exclude_errors = exclude_errors
        self.ignore_normal_reply_index = ignore_normal_reply_index
        self.weights = weights
        self.enable_failure_domains = enable_failure_domains
        self._domains: dict[int, int] = {}
        self._children: Sequence[Route] = ()

    def hashed_as(self, weights: tuple[float, ...] | None) -> DeterministicOrderPolicy:
        """This policy with another hash: Ch3 (`weights` None) or WeightedCh3."""
        return DeterministicOrderPolicy(
            self.max_tries,
            self.max_error_tries,
            self.exclude_errors,
            self.ignore_normal_reply_index,
            weights,
            self.enable_failure_domains,
        )

    def _pick(self, key: bytes, count: int) -> int:
        if self.weights is None:
            return ch3(key, count)
        weights = [*self.weights[:count], *[0.5] * (count - len(self.weights))]
        return weighted_ch3(key, weights)

    def _used(self, children: Sequence[Route], request: Request) -> list[bool]:
        """Children not to draw: child 0, and the server child 0's hash picked."""
        count = len(children)
        used = [False] * count
        used[0] = True
        if not self.ignore_normal_reply_index:
            normal = _selected_index(children[0], request)
            if normal + 1 < count:
                used[normal + 1] = True
        return used

    def order(self, children: Sequence[Route], request: Request) -> _DrawnOrder | _DomainAwareOrder:
        if self.enable_failure_domains:
            if self._children is not children:
                self._children = children
                self._domains = {}
            return _DomainAwareOrder(self, children, request)
        count = len(children)
        used = self._used(children, request)
        key = routing_key(request.key)
        order = _DrawnOrder(children[0])
        salt = 1
        for _ in range(min(self.max_tries, count) - 1):
            index = 0
            picks = 0
            for _attempt in range(_MAX_ATTEMPTS + 1):
                salt += 1
                picks += 1
                index = self._pick(key + str(salt).encode(), count)
                if not used[index]:
                    break
            used[index] = True
            order.append(children[index])
            order.draws.drew(picks - 1, 0)
        return order

    def failure_domain(self, children: Sequence[Route], index: int, request: Request) -> int:
        """Child `index`'s failure domain for `request` (0: none), remembered once known."""
        domain = self._domains.get(index, 0)
        if domain:
            return domain
        domain = _first_server_domain(children[index], request)
        if domain:
            self._domains[index] = domain
        return domain


class _DomainAwareOrder(Sequence[Route]):
    """One request's DeterministicOrderPolicy order with failure domains.

    Each child is drawn when the failover reaches it, so that the TKOs seen so far
    steer the draw; each child tried reports its reply back (`_Reported`).
    """

    def __init__(
        self, policy: DeterministicOrderPolicy, children: Sequence[Route], request: Request
    ) -> None:
        self._policy = policy
        self._children = children
        self._request = request
        self._key = routing_key(request.key)
        self._used: list[bool] | None = None  # drawn lazily: most requests never fail over
        self._salt = 1
        self._picked = [0]
        self._failed: set[int] = set()
        self._tries = min(policy.max_tries, len(children))
        self._draws = Draws()

    def __len__(self) -> int:
        return self._tries

    def __getitem__(self, index: int) -> Route:  # type: ignore[override]  # ints only
        while len(self._picked) <= index:
            self._picked.append(self._draw())
        child = self._picked[index]
        return _Reported(self._children[child], child, self)

    def _draw(self) -> int:
        """mcrouter's `increment`: the next salt's pick not tried and not in a failed domain."""
        policy = self._policy
        if self._used is None:
            self._used = policy._used(self._children, self._request)
        used = self._used
        count = len(self._children)
        attempts = 0
        collisions = domain_collisions = 0
        while True:
            self._salt += 1
            index = policy._pick(self._key + str(self._salt).encode(), count)
            failed = (
                attempts <= _FAILURE_DOMAIN_ATTEMPTS
                and policy.failure_domain(self._children, index, self._request) in self._failed
            )
            if failed:
                domain_collisions += 1
            else:
                collisions += 1
            if not (used[index] or failed) or attempts >= _MAX_ATTEMPTS:
                break
            attempts += 1
        used[index] = True
        # The last draw, taken, is no collision (as mcrouter takes it back out).
        self._draws.drew(collisions - 1, domain_collisions)
        return index

    def draws_until(self, position: int) -> tuple[int, int]:
        """The collisions of the draws up to `position`, drawing it if not yet drawn
        (mcrouter's iterator has drawn the next child when error tries run out)."""
        while len(self._picked) <= position:
            self._picked.append(self._draw())
        return self._draws.counted_until(position)

    def replied(self, index: int, reply: Reply) -> Reply:
        """A TKO, connect error or connect timeout marks the domain of the server that
        gave it (child 0's, a pool's pick for this key, is not remembered: mcrouter
        memoizes drawn children only)."""
        if reply.result in TKO_LIKE:
            if index:
                domain = self._policy.failure_domain(self._children, index, self._request)
            else:
                domain = _first_server_domain(self._children[0], self._request)
            if domain:
                self._failed.add(domain)
        return reply


class _Reported:
    """A child whose reply to this request is shown to its `_DomainAwareOrder`."""

    __slots__ = ("_child", "_index", "_order")

    def __init__(self, child: Route, index: int, order: _DomainAwareOrder) -> None:
        self._child = child
        self._index = index
        self._order = order

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return sequence(
            self._child.route(request, ctx),
            lambda reply: self._order.replied(self._index, reply),
            name="FailoverRoute",
        )

    def route_whole(self, request: Request, ctx: RouteContext, split: object) -> None:
        return None

    def targets(self) -> Sequence[Route]:
        return (self._child,)


def _first_server_domain(route: Route, request: Request) -> int:
    """The failure domain of the first server `route` would send `request` to.

    mcrouter's traversal to the first access point: a hash route follows the child
    it picks for the key, any other route its first target.
    """
    node = route
    while not isinstance(node, DestinationRoute):
        targets = node.targets()
        if not targets:
            return 0
        picked = _selected_index(node, request)
        node = targets[picked] if 0 <= picked < len(targets) else targets[0]
    return node.server.failure_domain


def _selected_index(route: Route, request: Request) -> int:
    """The index child 0's hash picks for `request` (mcrouter's fiber-local selected index).

    -1 when child 0 is not a hash route, as in mcrouter when no selection ran.
    """
    selected_index: Callable[[Request], int] | None = getattr(route, "selected_index", None)
    return -1 if selected_index is None else selected_index(request)


_POLICY_TYPES: Final = ("LeastFailuresPolicy", "DeterministicOrderPolicy")


def parse_failover_policy(value: object) -> FailoverOrder | None:
    """`{"type": ..., ...}`; an unknown type means mcrouter's plain in-order policy (None)."""
    if not isinstance(value, dict):
        raise Invalid(f"failover policy is not an object, got {describe(value)}")
    kind = value.get("type")
    if kind == "LeastFailuresPolicy":
        return LeastFailuresPolicy(_max_tries(value, kind, None))
    if kind != "DeterministicOrderPolicy":
        return None
    tries = _max_tries(value, kind, None)
    if "max_error_tries" not in value:
        raise Invalid(f"{kind} must specify 'max_error_tries' field")
    try:
        error_tries = min(check_int(value["max_error_tries"], 1, (1 << 32) - 1), tries)
    except Invalid as exc:
        raise Invalid(f"max_error_tries: {exc}") from None
    excluded = (
        _error_list(value["exclude_errors"], "exclude_errors: ")
        if "exclude_errors" in value
        else frozenset()
    )
    ignore = check_bool(value.get("ignore_normal_reply_index", False))
    try:
        domains = check_bool(value.get("enable_failure_domains", False))
    except Invalid as exc:
        raise Invalid(f"enable_failure_domains: {exc}") from None
    weights = _policy_weights(value.get("hash"))
    return DeterministicOrderPolicy(tries, error_tries, excluded, ignore, weights, domains)


def _policy_weights(value: object) -> tuple[float, ...] | None:
    """DeterministicOrderPolicy's `hash`: `Ch3` (default) or `WeightedCh3` with `weights`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid(f"hash: expected an object, got {describe(value)}")
    func = value.get("hash_func", "Ch3")
    if not isinstance(func, str):
        raise Invalid("hash_func is not a string")
    if func == "Ch3":
        return None
    if func != "WeightedCh3":
        raise Invalid(f"Unknown hash function {func}")
    weights = value.get("weights", [])
    if not isinstance(weights, list):
        raise Invalid(f"weights: expected an array of numbers, got {describe(weights)}")
    return tuple(_number(weight, "weight") for weight in weights)
