"""Routing combinators: how handles combine their children's replies, every callback guarded.

A composite handle never registers a bare callback on a `Pending`: it uses one of
these, and each runs its callbacks through `guarded`. A bug in a handle (an
exception in its callback, or in a child's `route` called from one) then answers
that one request with `SERVER_ERROR Error routing request`, is logged once per
cause with the handle's name (`FAILURES`), and the proxy keeps serving: the reader
task that resolved the reply never sees the exception.

- `sequence(first, step)`: `step(reply)` once `first` resolves (warm-up, prefixes).
- `gather(pendings, combine)`: every reply, then one answer (AllSync, multi-gets).
- `first_acceptable(routes, request, ctx, acceptable)`: try in order (failover).
- `quorum(pendings, needed, is_vote, otherwise)`: answer once enough agree.
- `Background.start(name, send)`: fire-and-forget with a cap on what is in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Final

from mcrouter_trio.counters import ProxyCounters, count_failover_result
from mcrouter_trio.messages import TKO_LIKE, Pending, Reply, Request, Result, error_reply
from mcrouter_trio.routing._base import Route, RouteContext

log = logging.getLogger("mcrouter_trio.routing")

#: What a client gets when a route handle fails on its request.
ROUTING_FAILED: Final = error_reply(Result.LOCAL_ERROR, "Error routing request")
#: Fire-and-forget requests in flight at once, per proxy, before more are dropped.
DEFAULT_BACKGROUND_CAP: Final = 10_000

Step = Callable[[Reply], "Reply | Pending"]


class FailureLog:
    """Route handle failures: each cause logged once with its traceback, all counted.

    A cause is the handle's name, the exception type and where it was raised, so a
    bug that fails every request is one log line and a count, not a flood.
    """

    def __init__(self) -> None:
        self.count = 0
        self._seen: set[tuple[str, str, str]] = set()

    def record(self, name: str, exc: BaseException) -> None:
        self.count += 1
        cause = (name, type(exc).__name__, _raised_at(exc))
        if cause in self._seen:
            return
        self._seen.add(cause)
        log.error(
            "route handle %s failed; its request got an error (logged once per cause): %r",
            name,
            exc,
            exc_info=exc,
        )


def _raised_at(exc: BaseException) -> str:
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


def failing_handle(exc: BaseException) -> str:
    """The type name of the innermost route handle whose method raised `exc`."""
    name = "route tree"
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and hasattr(owner, "targets") and hasattr(owner, "route"):
            name = type(owner).__name__
        tb = tb.tb_next
    return name


#: Every route handle failure in this process (`stats` shows the count).
FAILURES: Final = FailureLog()


def guarded(name: str, out: Pending, callback: Callable[[Reply], None]) -> Callable[[Reply], None]:
    """`callback`, but an exception resolves `out` with an error instead of escaping."""

    def run(reply: Reply) -> None:
        try:
            callback(reply)
        except Exception as exc:
            FAILURES.record(name, exc)
            out.resolve(ROUTING_FAILED)

    return run


def _deliver(out: Pending, produced: Reply | Pending) -> None:
    if isinstance(produced, Pending):
        produced.then(out.resolve)
    else:
        out.resolve(produced)


def sequence(first: Pending, step: Step, *, name: str) -> Pending:
    """The reply of `step(reply)` (a reply, or a Pending to wait for) once `first` resolves."""
    out = Pending()
    first.then(guarded(name, out, lambda reply: _deliver(out, step(reply))))
    return out


def gather(
    pendings: Sequence[Pending],
    combine: Callable[[list[Reply], list[int]], Reply | Pending],
    *,
    name: str,
) -> Pending:
    """One answer from every reply: `combine(replies, arrival)` once all are in.

    `replies` is in the order of `pendings`; `arrival` lists their indexes in the
    order the replies came (for "first of the equally bad" rules).
    """
    count = len(pendings)
    out = Pending()
    replies: list[Reply | None] = [None] * count
    arrival: list[int] = []

    def arrived(index: int, reply: Reply) -> None:
        replies[index] = reply
        arrival.append(index)
        if len(arrival) == count:
            _deliver(out, combine([r for r in replies if r is not None], arrival))

    if not count:
        _deliver(out, combine([], []))
    for index, pending in enumerate(pendings):
        pending.then(guarded(name, out, partial(arrived, index)))
    return out


def recovering(pending: Pending, recover: Callable[[Reply], Pending | None]) -> Pending:
    """`pending`, whose reply `recover` sees first and may replace (see `Pending.recover`).

    `recover` must guard itself. A reply already known, or a Pending someone else
    recovers, gets a Pending of its own.
    """
    if pending.reply is None and pending.recover is None:
        pending.recover = recover
        return pending
    out = Pending()
    out.recover = recover
    pending.then(out.resolve)
    return out


def _after_first(
    routes: Sequence[Route],
    request: Request,
    ctx: RouteContext,
    acceptable: Callable[[Reply], bool],
    name: str,
    policy: str | None,
    reply: Reply,
) -> Pending | None:
    """`first_acceptable`'s step after the first route's reply: None keeps it (the
    common case, with nothing counted), else the second route's Pending."""
    try:
        if acceptable(reply):
            return None
        if policy is not None:
            count_failover(ctx.counters, policy, reply, first=True)
        return _try(routes, request, ctx, acceptable, name, policy, 1)
    except Exception as exc:
        FAILURES.record(name, exc)
        return Pending(ROUTING_FAILED)


def _after_failover(
    routes: Sequence[Route],
    request: Request,
    ctx: RouteContext,
    acceptable: Callable[[Reply], bool],
    name: str,
    policy: str | None,
    index: int,
    reply: Reply,
) -> Pending | None:
    """The step after the reply of route `index - 1` (not the first): keep it, or try
    route `index`."""
    try:
        last = index >= len(routes)
        if last or acceptable(reply):
            if policy is not None:
                count_failover_end(ctx.counters, policy, reply, last=last)
            return None
        if policy is not None:
            count_failover(ctx.counters, policy, reply, first=False)
        return _try(routes, request, ctx, acceptable, name, policy, index)
    except Exception as exc:
        FAILURES.record(name, exc)
        return Pending(ROUTING_FAILED)


def _try(
    routes: Sequence[Route],
    request: Request,
    ctx: RouteContext,
    acceptable: Callable[[Reply], bool],
    name: str,
    policy: str | None,
    index: int,
) -> Pending:
    step = partial(_after_failover, routes, request, ctx, acceptable, name, policy, index + 1)
    return recovering(routes[index].route(request, ctx), step)


def count_failover_error(counters: ProxyCounters, reply: Reply) -> None:
    """A FailoverRoute weighed `reply` for failing over (mcrouter's `processReply`)."""
    if reply.result in TKO_LIKE:  # failing over from them is a tko error
        counters.failover_policy_tko_error += 1
    elif reply.is_error:
        counters.failover_policy_result_error += 1


def count_failover(counters: ProxyCounters, policy: str, reply: Reply, *, first: bool) -> None:
    """A FailoverRoute moves on from `reply` (mcrouter's `processReply` and `doRoute`)."""
    count_failover_error(counters, reply)
    if first:
        counters.failover_all += 1
        name = f"failover_{policy}_policy"
        setattr(counters, name, getattr(counters, name) + 1)
    elif reply.is_error:
        count_failover_result(counters, reply.result)


def count_failover_end(counters: ProxyCounters, policy: str, reply: Reply, *, last: bool) -> None:
    """A failover child's `reply` is the answer; `last`: no child was left to try."""
    if not reply.is_error:
        return
    count_failover_result(counters, reply.result)
    if last:
        counters.failover_all_failed_count += 1
        name = f"failover_{policy}_policy_failed"
        setattr(counters, name, getattr(counters, name) + 1)


def first_acceptable(
    routes: Sequence[Route],
    request: Request,
    ctx: RouteContext,
    acceptable: Callable[[Reply], bool],
    *,
    name: str,
    policy: str | None = None,
) -> Pending:
    """`request` through `routes` in order until a reply is acceptable; else the last reply.

    The first route's Pending is returned itself and recovered in place, so the
    common case (the first route answers well) costs no Pending and no callback.
    With `policy` (a FailoverRoute's order, as mcrouter names its stats), failing
    over is counted in the `failover_*` stats, on the failover path only.
    """
    first = routes[0].route(request, ctx)
    if len(routes) == 1:
        return first
    return recovering(first, partial(_after_first, routes, request, ctx, acceptable, name, policy))


def quorum(
    pendings: Sequence[Pending],
    needed: int,
    is_vote: Callable[[Reply], bool],
    otherwise: Callable[[list[Reply]], Reply],
    *,
    name: str,
) -> Pending:
    """The `needed`-th reply that `is_vote` accepts, as soon as it arrives.

    Once that can no longer happen (too few replies are left to reach `needed`),
    the answer is `otherwise(replies so far, in arrival order)`.
    """
    out = Pending()
    votes = [0]
    seen: list[Reply] = []
    count = len(pendings)

    def on_reply(reply: Reply) -> None:
        if out.reply is not None:
            return
        seen.append(reply)
        if is_vote(reply):
            votes[0] += 1
            if votes[0] >= needed:
                out.resolve(reply)
                return
        if votes[0] + count - len(seen) < needed:
            out.resolve(otherwise(seen))

    if needed <= 0 or count < needed:
        out.resolve(otherwise([]))
    for pending in pendings:
        pending.then(guarded(name, out, on_reply))
    return out


class Background:
    """Fire-and-forget requests (refills, async broadcasts) with a cap on those in flight.

    Beyond the cap a request is not sent and is counted as dropped: a slow server
    must not make the proxy hold an unbounded amount of work nobody waits for.
    `limits` caps some handles' share by name (mcrouter's `--target-max-shadow-requests`
    for ShadowRoute's copies); a limit of 0 is none. Error replies are counted and
    logged once per handle and error line.
    """

    def __init__(
        self, cap: int = DEFAULT_BACKGROUND_CAP, limits: Mapping[str, int] | None = None
    ) -> None:
        self.cap = cap
        self.in_flight = 0
        self.started = 0
        self.dropped = 0
        self.failed = 0
        self._logged: set[tuple[str, bytes]] = set()
        self.limits = {name: limit for name, limit in (limits or {}).items() if limit > 0}
        #: Requests in flight per limited name.
        self.in_flight_of = dict.fromkeys(self.limits, 0)

    def start(self, name: str, send: Callable[[], Pending]) -> bool:
        """Send now unless the cap (or `name`'s limit) is reached; whether it was sent."""
        limit = self.limits.get(name)
        if self.in_flight >= self.cap or (limit is not None and self.in_flight_of[name] >= limit):
            self.dropped += 1
            return False
        try:
            pending = send()
        except Exception as exc:
            FAILURES.record(name, exc)
            self.failed += 1
            return False
        self.in_flight += 1
        self.started += 1
        if limit is not None:
            self.in_flight_of[name] += 1
        pending.then(partial(self._finished, name))
        return True

    def _finished(self, name: str, reply: Reply) -> None:
        self.in_flight -= 1
        if name in self.in_flight_of:
            self.in_flight_of[name] -= 1
        if not reply.is_error:
            return
        self.failed += 1
        line = reply.raw.split(b"\r\n", 1)[0]
        if (name, line) not in self._logged:
            self._logged.add((name, line))
            log.warning(
                "background request of %s failed: %s (logged once per error)",
                name,
                line.decode("ascii", "replace"),
            )
