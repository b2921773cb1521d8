"""Small routes: answers without a backend, a child by chance or by host, logging and delays."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Final

import attrs

from mcrouter_trio.hashing._per_host import host_id_index
from mcrouter_trio.messages import Pending, Reply, Request, Result
from mcrouter_trio.routing._base import (
    KeyByKey,
    OverChildren,
    Route,
    RouteContext,
    SplitRouting,
    default_reply,
)
from mcrouter_trio.routing._checks import (
    Invalid,
    check_bool,
    check_float,
    check_int,
    check_str,
    describe,
)
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing._registry import IGNORED_ARGUMENT, config_field, route_type

log = logging.getLogger("mcrouter_trio.routing")


@route_type("NullRoute", shorthand=IGNORED_ARGUMENT, shorthand_optional=True)
@attrs.frozen
class NullRoute:
    """Answers "nothing happened" at once: a miss, NOT_STORED or NOT_FOUND."""

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return Pending(default_reply(request))

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return Pending(default_reply(request))

    def targets(self) -> Sequence[Route]:
        return ()


@route_type("DevNullRoute", shorthand=IGNORED_ARGUMENT, shorthand_optional=True)
@attrs.frozen
class DevNullRoute(NullRoute):
    """NullRoute that counts what it swallows in `dev_null_requests` (mcrouter's DevNullRoute).

    A class of its own so that NullRoute, which other handles default to, counts nothing.
    """

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        ctx.counters.dev_null_requests += 1
        return Pending(default_reply(request))

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        # mcrouter routes each key of a multi-get on its own: each counts.
        keys = request.keys
        ctx.counters.dev_null_requests += len(keys) if keys else 1
        return Pending(default_reply(request))


@route_type("RandomRoute", shorthand="children")
@attrs.frozen
class RandomRoute(KeyByKey, OverChildren):
    """Sends each request to a child chosen uniformly at random.

    Multi-gets go key by key: mcrouter draws per key, and one draw for the whole
    get would move every key together.
    """

    children: tuple[Route, ...]

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if not self.children:
            return Pending(default_reply(request))
        return self.children[ctx.rng.randrange(len(self.children))].route(request, ctx)


#: mcrouter's error result names (`carbon::resultFromString`) for ErrorRoute's
#: `result`: the class this proxy gives the reply (the nearest one it has) and
#: the line mcrouter writes when `response` is empty.
ERROR_RESULTS: Final[Mapping[str, tuple[Result, str]]] = {
    "mc_res_ooo": (Result.ERROR, "SERVER_ERROR out of order"),
    "mc_res_timeout": (Result.TIMEOUT, "SERVER_ERROR timeout"),
    "mc_res_connect_timeout": (Result.CONNECT_TIMEOUT, "SERVER_ERROR connection timeout"),
    "mc_res_connect_error": (Result.CONNECT_ERROR, "SERVER_ERROR connection error"),
    "mc_res_busy": (Result.BUSY, "SERVER_ERROR 307 busy"),
    "mc_res_try_again": (Result.BUSY, "SERVER_ERROR 302 try again"),
    "mc_res_shutdown": (Result.BUSY, "SERVER_ERROR 301 shutdown"),
    "mc_res_tko": (Result.TKO, "SERVER_ERROR unavailable"),
    "mc_res_bad_command": (Result.CLIENT_ERROR, "CLIENT_ERROR bad command"),
    "mc_res_bad_key": (Result.CLIENT_ERROR, "CLIENT_ERROR bad key"),
    "mc_res_bad_flags": (Result.CLIENT_ERROR, "CLIENT_ERROR bad flags"),
    "mc_res_bad_exptime": (Result.CLIENT_ERROR, "CLIENT_ERROR bad exptime"),
    "mc_res_bad_lease_id": (Result.CLIENT_ERROR, "CLIENT_ERROR bad lease_id"),
    "mc_res_bad_cas_id": (Result.CLIENT_ERROR, "CLIENT_ERROR bad cas_id"),
    "mc_res_bad_value": (Result.ERROR, "SERVER_ERROR bad value"),
    "mc_res_aborted": (Result.ERROR, "SERVER_ERROR aborted"),
    "mc_res_client_error": (Result.CLIENT_ERROR, "CLIENT_ERROR"),
    "mc_res_local_error": (Result.LOCAL_ERROR, "SERVER_ERROR local error"),
    "mc_res_remote_error": (Result.REMOTE_ERROR, "SERVER_ERROR remote error"),
    "mc_res_deadline_exceeded": (Result.REMOTE_ERROR, "SERVER_ERROR request deadline exceeded"),
    "mc_res_permission_denied": (Result.ERROR, "SERVER_ERROR permission denied"),
    "mc_res_hot_key": (Result.ERROR, "SERVER_ERROR hot key"),
    "mc_res_overloaded": (Result.ERROR, "SERVER_ERROR overloaded"),
}


def _check_error_result(value: object) -> str:
    name = check_str(value)
    if name not in ERROR_RESULTS:
        raise Invalid(f"result {name} is not a valid error result")
    return name


@route_type("ErrorRoute", shorthand="response", shorthand_optional=True)
@attrs.frozen
class ErrorRoute:
    """Answers every request with an error: `SERVER_ERROR <response>`.

    `result` (default `mc_res_local_error`) is the error's kind: a client error
    is written `CLIENT_ERROR <response>`, and with no `response` the line is
    mcrouter's text for the result (`SERVER_ERROR local error`, `SERVER_ERROR
    timeout`, ...). With `enable_logging` (the default) each request is logged at
    debug level through the `mcrouter_trio.routing` logger.
    """

    response: str = ""
    result: str = config_field(default="mc_res_local_error", check=_check_error_result)
    enable_logging: bool = True
    _reply: Reply = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        result, line = ERROR_RESULTS[self.result]
        if self.response:
            kind = "CLIENT_ERROR" if result is Result.CLIENT_ERROR else "SERVER_ERROR"
            line = f"{kind} {self.response}"
        object.__setattr__(self, "_reply", Reply(result, line.encode() + b"\r\n"))

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        if self.enable_logging and log.isEnabledFor(logging.DEBUG):
            log.debug("ErrorRoute answered %s: %r", _describe(request), self._reply.raw)
        return Pending(self._reply)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return self.route(request, ctx)

    def targets(self) -> Sequence[Route]:
        return ()


def _describe(request: Request) -> str:
    """A request for a log line: command and key (not the value)."""
    key = request.key.decode("utf-8", "backslashreplace")
    return f"{request.op.name.lower()} {key}".rstrip()


@route_type("HostIdRoute", shorthand="children")
@attrs.frozen
class HostIdRoute:
    """Always the same child on one proxy host: `host id % len(children)`.

    Spreads proxy hosts over the children (mcrouter HostIdRoute). With `salt` the
    host id is first hashed with it as mcrouter does, `folly::Hash()(hostid, salt)`
    (see `hashing/_per_host.py`), so a host picks the child mcrouter would.
    """

    children: tuple[Route, ...]
    salt: str = ""
    #: This proxy host's id: the config cannot set it.
    host_id: int = config_field(default=0, from_build="host_id")
    _chosen: Route | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        children = self.children
        chosen = None
        if children:
            chosen = children[host_id_index(self.host_id, self.salt, len(children))]
        object.__setattr__(self, "_chosen", chosen)

    def chosen(self) -> Route | None:
        return self._chosen

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        child = self.chosen()
        if child is None:
            return Pending(default_reply(request))
        return child.route(request, ctx)

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        child = self.chosen()
        return None if child is None else child.route_whole(request, ctx, split)

    def targets(self) -> Sequence[Route]:
        child = self.chosen()
        return () if child is None else (child,)


@route_type("LoggingRoute", shorthand="target", shorthand_optional=True)
@attrs.frozen
class LoggingRoute:
    """Passes requests to `target` (none: NullRoute) and logs each with its reply.

    Logged at debug level through the `mcrouter_trio.routing` logger, so it costs
    nothing unless that logger is at debug. The client sees no difference.
    """

    target: Route | None = None

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        target = self.target
        pending = Pending(default_reply(request)) if target is None else target.route(request, ctx)
        if not log.isEnabledFor(logging.DEBUG):
            return pending
        return sequence(pending, partial(_log_reply, request), name="LoggingRoute")

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None  # logged key by key

    def targets(self) -> Sequence[Route]:
        return () if self.target is None else (self.target,)


def _log_reply(request: Request, reply: Reply) -> Reply:
    first_line = reply.raw.split(b"\r\n", 1)[0]
    log.debug("%s -> %s", _describe(request), first_line.decode("utf-8", "backslashreplace"))
    return reply


def _check_latency(value: object) -> int | None:
    # mcrouter takes any integer; zero or less injects nothing.
    return check_int(value)


def _check_percentiles(value: object) -> tuple[tuple[float, int], ...]:
    """`total_latency_percentile_ms`: `[[percentile, ms], ...]`, percentiles increasing."""
    if not isinstance(value, list):
        raise Invalid(f"expected an array of [percentile, latency_ms], got {describe(value)}")
    points: list[tuple[float, int]] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, list) or len(entry) != 2:
            raise Invalid(f"[{index}]: expected a [percentile, latency_ms] array")
        percentile = check_float(entry[0])
        latency = check_int(entry[1])
        if not 0.0 < percentile <= 100.0:
            raise Invalid(f"[{index}]: percentile must be in (0, 100], got {entry[0]}")
        if latency < 0:
            raise Invalid(f"[{index}]: latency_ms must be non-negative, got {latency}")
        if points and percentile <= points[-1][0]:
            raise Invalid(f"[{index}]: percentiles must be strictly increasing")
        points.append((percentile, latency))
    return tuple(points)


_LATENCY_OPTIONS: Final = (
    "'before_latency_ms', 'after_latency_ms', 'total_latency_ms',"
    " 'total_latency_percentile_ms' or 'request_payload_latency'"
)


@route_type("LatencyInjectionRoute")
@attrs.frozen
class LatencyInjectionRoute(KeyByKey):
    """Delays requests to `child`, as mcrouter's LatencyInjectionRoute does.

    `before_latency_ms` before sending, `after_latency_ms` after the reply, then the
    whole is padded to the total latency: `total_latency_ms`, or, when that is not
    positive, one drawn per request from `total_latency_percentile_ms` (a step
    function: the first `[percentile, ms]` point whose percentile is above a uniform
    draw in [0, 100), else the last). `request_payload_latency` and
    `max_request_latency_us` take delays from fields of the request itself, which
    only mcrouter's binary (Carbon) requests have: no memcached text or meta command
    carries them, so they are accepted and inject nothing, as in mcrouter for such
    requests. The delays are timers on the proxy's clock (`ctx.call_later`), not a
    task per request. A route that injects nothing at all only forwards.
    """

    child: Route
    before_latency_ms: int | None = config_field(default=None, check=_check_latency)
    after_latency_ms: int | None = config_field(default=None, check=_check_latency)
    total_latency_ms: int | None = config_field(default=None, check=_check_latency)
    total_latency_percentile_ms: tuple[tuple[float, int], ...] | None = config_field(
        default=None, check=_check_percentiles
    )
    request_payload_latency: bool | None = config_field(default=None, check=check_bool)
    max_request_latency_us: int = config_field(default=0, check=check_int)

    def __attrs_post_init__(self) -> None:
        options = (
            self.before_latency_ms,
            self.after_latency_ms,
            self.total_latency_ms,
            self.total_latency_percentile_ms,
            self.request_payload_latency,
        )
        if all(option is None for option in options):
            raise Invalid(f"must specify either {_LATENCY_OPTIONS}")

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        started = ctx.now()
        before = self.before_latency_ms or 0
        total = self._sample_total(ctx)
        if before <= 0:
            return self._after(self.child.route(request, ctx), ctx, started, total)
        ctx.counters.before_latency_injected += 1
        child = self.child
        sent = sequence(
            _timer(ctx, before / 1000),
            lambda _: child.route(request, ctx),
            name="LatencyInjectionRoute",
        )
        return self._after(sent, ctx, started, total)

    def _sample_total(self, ctx: RouteContext) -> int:
        """The total latency for one request, in ms (mcrouter's sampleTotalLatency)."""
        total = self.total_latency_ms or 0
        points = self.total_latency_percentile_ms
        if total > 0 or not points:
            return total
        draw = ctx.rng.random() * 100.0
        for percentile, latency in points:
            if draw < percentile:
                return latency
        return points[-1][1]

    def _after(self, pending: Pending, ctx: RouteContext, started: float, total: int) -> Pending:
        after = self.after_latency_ms or 0
        if after <= 0 and total <= 0:
            return pending
        return sequence(
            pending,
            partial(self._delay_reply, ctx, started, max(after, 0) / 1000, max(total, 0) / 1000),
            name="LatencyInjectionRoute",
        )

    def _delay_reply(
        self, ctx: RouteContext, started: float, after: float, total: float, reply: Reply
    ) -> Reply | Pending:
        delay = after
        if after > 0:
            ctx.counters.after_latency_injected += 1
        elapsed = ctx.now() - started + after
        if total > elapsed:
            delay += total - elapsed
            ctx.counters.total_latency_injected += 1  # padded out to the total: mcrouter's stat
        if delay <= 0:
            return reply
        return sequence(_timer(ctx, delay), lambda _: reply, name="LatencyInjectionRoute")

    def targets(self) -> Sequence[Route]:
        return (self.child,)


#: What a `_timer` Pending resolves with: never seen by a client.
_ELAPSED: Final = Reply(Result.OK, b"")


def _timer(ctx: RouteContext, seconds: float) -> Pending:
    """A Pending that resolves `seconds` from now (on the proxy's one timer task)."""
    elapsed = Pending()
    ctx.call_later(seconds, partial(elapsed.resolve, _ELAPSED))
    return elapsed
