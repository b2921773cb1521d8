"""The routing combinators and timers, driven by hand: replies arrive when the test says."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NoReturn

import pytest
from _routing import MISS, STORED, TIMEOUT, error, hit, resolved

from mcrouter_trio.messages import Op, Pending, Reply, Request, Result
from mcrouter_trio.routing import (
    FAILURES,
    ROUTING_FAILED,
    Background,
    first_acceptable,
    gather,
    quorum,
    sequence,
)
from mcrouter_trio.routing._base import Route, RouteContext, SplitRouting
from mcrouter_trio.routing.testing import FakeContext

A, B, C = hit(b"a"), hit(b"b"), hit(b"c")


def test_gather_waits_for_every_reply_and_reports_arrival_order() -> None:
    pendings = [Pending(), Pending(), Pending()]
    seen: list[tuple[list[Reply], list[int]]] = []

    def combine(replies: list[Reply], arrival: list[int]) -> Reply:
        seen.append((replies, arrival))
        return STORED

    out = gather(pendings, combine, name="test")
    pendings[2].resolve(C)
    pendings[0].resolve(A)
    assert not resolved(out) and not seen
    pendings[1].resolve(B)
    assert out.reply is STORED
    [(replies, arrival)] = seen
    assert replies == [A, B, C]  # in the order of the pendings
    assert arrival == [2, 0, 1]


def test_gather_of_nothing_combines_at_once() -> None:
    out = gather(
        [], lambda replies, arrival: MISS if not replies and not arrival else TIMEOUT, name="t"
    )
    assert out.reply is MISS


def test_gather_may_combine_into_a_pending() -> None:
    later = Pending()
    out = gather([Pending(A)], lambda replies, arrival: later, name="test")
    assert not resolved(out)
    later.resolve(B)
    assert out.reply is B


def test_sequence_runs_the_step_once_the_first_reply_is_in() -> None:
    first, second = Pending(), Pending()
    steps: list[Reply] = []

    def step(reply: Reply) -> Pending:
        steps.append(reply)
        return second

    out = sequence(first, step, name="test")
    assert not steps
    first.resolve(A)
    assert steps == [A] and not resolved(out)
    second.resolve(B)
    assert out.reply is B


@pytest.mark.parametrize(
    ("replies", "tried", "answer"),
    [
        pytest.param([A], 1, 0, id="first-acceptable"),
        pytest.param([TIMEOUT, A], 2, 1, id="second-acceptable"),
        pytest.param([TIMEOUT, TIMEOUT, A], 3, 2, id="third-acceptable"),
        pytest.param([TIMEOUT, TIMEOUT, error(Result.BUSY)], 3, 2, id="none-acceptable-last"),
    ],
)
def test_first_acceptable_tries_one_at_a_time(
    replies: list[Reply], tried: int, answer: int
) -> None:
    attempts: list[Pending] = []
    answered = [0]

    def attempt() -> Pending:
        assert answered[0] == len(attempts)  # the previous attempt was answered
        attempts.append(Pending())
        return attempts[-1]

    routes = [Attempt(attempt) for _ in range(3)]
    out = first_acceptable(
        routes, REQUEST, FakeContext(), lambda reply: reply.result is Result.FOUND, name="test"
    )
    # The first attempt's own Pending, recovered in place: no Pending of its own.
    assert out is attempts[0]
    for reply in replies:
        assert not resolved(out)
        answered[0] += 1
        attempts[-1].resolve(reply)
    assert len(attempts) == tried
    assert out.reply is replies[answer]


def test_first_acceptable_of_one_is_that_attempt() -> None:
    only = Pending()
    routes = [Attempt(lambda: only)]
    assert first_acceptable(routes, REQUEST, FakeContext(), lambda r: False, name="test") is only


def test_first_acceptable_after_an_answer_already_known_tries_the_next() -> None:
    second = Pending()
    routes = [Attempt(lambda: Pending(TIMEOUT)), Attempt(lambda: second)]
    out = first_acceptable(routes, REQUEST, FakeContext(), lambda r: r is STORED, name="test")
    assert not resolved(out)
    second.resolve(STORED)
    assert out.reply is STORED


VOTE = STORED
NAY = Reply(Result.NOTSTORED, b"NOT_STORED\r\n")


def fallback(seen: list[Reply]) -> Reply:
    return Reply(Result.LOCAL_ERROR, b"SERVER_ERROR no quorum after %d\r\n" % len(seen))


def test_quorum_answers_as_soon_as_enough_agree() -> None:
    pendings = [Pending() for _ in range(5)]
    out = quorum(pendings, 3, lambda reply: reply is VOTE, fallback, name="test")
    pendings[4].resolve(VOTE)
    pendings[0].resolve(NAY)
    pendings[2].resolve(VOTE)
    assert not resolved(out)
    pendings[1].resolve(VOTE)
    assert out.reply is VOTE
    pendings[3].resolve(NAY)  # a late reply changes nothing
    assert out.reply is VOTE


def test_quorum_gives_up_once_it_cannot_be_reached() -> None:
    pendings = [Pending() for _ in range(4)]
    out = quorum(pendings, 3, lambda reply: reply is VOTE, fallback, name="test")
    pendings[0].resolve(VOTE)
    pendings[1].resolve(NAY)
    assert not resolved(out)  # three votes are still possible
    pendings[2].resolve(NAY)
    assert out.reply is not None
    assert out.reply.raw == b"SERVER_ERROR no quorum after 3\r\n"


@pytest.mark.parametrize(("count", "needed"), [(2, 3), (0, 1), (3, 0)])
def test_quorum_that_is_impossible_from_the_start_answers_otherwise(
    count: int, needed: int
) -> None:
    out = quorum([Pending() for _ in range(count)], needed, lambda r: True, fallback, name="t")
    assert out.reply is not None
    assert out.reply.raw == b"SERVER_ERROR no quorum after 0\r\n"


# ---------------------------------------------------------------------------
# Background


def test_background_drops_what_is_beyond_its_cap() -> None:
    background = Background(cap=2)
    sends: list[Pending] = []

    def send() -> Pending:
        sends.append(Pending())
        return sends[-1]

    assert background.start("test", send)
    assert background.start("test", send)
    assert not background.start("test", send)
    assert len(sends) == 2  # the third was never sent
    assert (background.started, background.in_flight, background.dropped) == (2, 2, 1)
    sends[0].resolve(STORED)
    assert background.in_flight == 1
    assert background.start("test", send)
    assert (background.started, background.in_flight, background.dropped) == (3, 2, 1)
    assert background.failed == 0


@pytest.mark.parametrize(
    ("limit", "shadows_sent"),
    [(2, 2), (1, 1), (0, 4)],  # 0: no limit of its own (mcrouter's `> 0 &&`)
)
def test_background_limits_a_names_share_in_flight(limit: int, shadows_sent: int) -> None:
    """`--target-max-shadow-requests`: the shadows' own cap, under the overall one."""
    background = Background(cap=10, limits={"ShadowRoute": limit})
    sends: list[Pending] = []

    def send() -> Pending:
        sends.append(Pending())
        return sends[-1]

    started = [background.start("ShadowRoute", send) for _ in range(4)]
    assert started.count(True) == shadows_sent
    assert background.dropped == 4 - shadows_sent
    assert background.start("AllAsyncRoute", send)  # other names are not limited by it
    sends[0].resolve(STORED)  # one answered: room for one more
    assert background.start("ShadowRoute", send)
    assert background.in_flight == len(sends) - 1


def test_background_counts_error_replies_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()
    errors = [Pending(), Pending(), Pending()]
    for pending in errors:
        background.start("Refill", lambda pending=pending: pending)  # type: ignore[misc]
    with caplog.at_level(logging.WARNING, logger="mcrouter_trio.routing"):
        errors[0].resolve(TIMEOUT)
        errors[1].resolve(TIMEOUT)
        errors[2].resolve(STORED)
    assert (background.failed, background.in_flight) == (2, 0)
    # One log line per handle and error line, not one per failure.
    assert [r.getMessage() for r in caplog.records] == [
        "background request of Refill failed: SERVER_ERROR Reply timeout (logged once per error)"
    ]


def test_background_send_that_raises_is_counted_failed() -> None:
    background = Background()
    before = FAILURES.count

    def send() -> Pending:
        raise RuntimeError("planted bug")

    assert not background.start("test", send)
    assert (background.failed, background.in_flight, background.started) == (1, 0, 0)
    assert FAILURES.count == before + 1


# ---------------------------------------------------------------------------
# Timers through the fake clock


def test_timers_fire_in_deadline_order_when_due() -> None:
    ctx = FakeContext()
    fired: list[str] = []
    ctx.call_later(3, lambda: fired.append("c"))
    ctx.call_later(1, lambda: fired.append("a"))
    ctx.call_later(2, lambda: fired.append("b1"))
    ctx.call_later(2, lambda: fired.append("b2"))
    assert ctx.timers == 4
    assert ctx.advance(0.5) == 0 and fired == []
    assert ctx.advance(1.5) == 3
    assert fired == ["a", "b1", "b2"]  # equal deadlines: in the order they were set
    assert ctx.advance(1) == 1
    assert fired == ["a", "b1", "b2", "c"]
    assert ctx.timers == 0


def test_a_cancelled_timer_does_not_fire() -> None:
    ctx = FakeContext()
    fired: list[str] = []
    timer = ctx.call_later(1, lambda: fired.append("cancelled"))
    ctx.call_later(1, lambda: fired.append("kept"))
    timer.cancel()
    assert ctx.timers == 1
    assert ctx.advance(5) == 1
    assert fired == ["kept"]


def test_a_failing_timer_is_recorded_and_the_others_still_run() -> None:
    ctx = FakeContext()
    fired: list[str] = []
    before = FAILURES.count

    def broken() -> None:
        raise RuntimeError("planted bug")

    ctx.call_later(1, lambda: fired.append("before"))
    ctx.call_later(2, broken)
    ctx.call_later(3, lambda: fired.append("after"))
    assert ctx.advance(10) == 3
    assert fired == ["before", "after"]
    assert FAILURES.count == before + 1


def test_a_timer_set_from_a_timer_runs_on_the_clock() -> None:
    ctx = FakeContext()
    fired: list[float] = []

    def again() -> None:
        ctx.call_later(1, lambda: fired.append(ctx.now()))

    ctx.call_later(1, again)
    ctx.advance(1)
    assert fired == [] and ctx.timers == 1
    ctx.advance(1)
    assert fired == [2.0]


# ---------------------------------------------------------------------------
# Every callback is guarded


REQUEST = Request(Op.GET, b"k")


class Attempt:
    """A route whose `route` calls `make` (first_acceptable's routes, scripted)."""

    def __init__(self, make: Callable[[], Pending]) -> None:
        self._make = make

    def route(self, request: Request, ctx: RouteContext) -> Pending:
        return self._make()

    def targets(self) -> Sequence[Route]:
        return ()

    def route_whole(self, request: Request, ctx: RouteContext, split: SplitRouting) -> None:
        return None


def raising(*_args: object) -> NoReturn:
    raise RuntimeError("planted bug")


def guarded_cases() -> list[tuple[str, Pending, list[Pending]]]:
    """(name, the combinator's answer, the pendings to resolve) with a callback that raises."""
    cases = []
    inputs = [Pending(), Pending()]
    cases.append(("gather-combine", gather(inputs, raising, name="t"), inputs))
    inputs = [Pending()]
    cases.append(("sequence-step", sequence(inputs[0], raising, name="t"), inputs))
    inputs = [Pending()]
    routes = [Attempt(lambda: inputs[0]), Attempt(raising)]
    out = first_acceptable(routes, REQUEST, FakeContext(), raising, name="t")
    cases.append(("first-acceptable-check", out, inputs))
    inputs = [Pending(), Pending()]
    routes = [Attempt(lambda: inputs[0]), Attempt(raising)]
    out = first_acceptable(routes, REQUEST, FakeContext(), lambda r: False, name="t")
    cases.append(("first-acceptable-attempt", out, inputs))
    inputs = [Pending(), Pending()]
    cases.append(("quorum-vote", quorum(inputs, 1, raising, fallback, name="t"), inputs))
    inputs = [Pending(), Pending()]
    out = quorum(inputs, 2, lambda r: False, raising, name="t")
    cases.append(("quorum-otherwise", out, inputs))
    return cases


@pytest.mark.parametrize("case", range(6), ids=[name for name, _, _ in guarded_cases()])
def test_a_raising_callback_answers_routing_failed(case: int) -> None:
    _name, out, inputs = guarded_cases()[case]
    before = FAILURES.count
    for pending in inputs:
        pending.resolve(A)  # the exception does not reach whoever resolves the reply
    assert out.reply is ROUTING_FAILED
    assert FAILURES.count == before + 1
    assert ROUTING_FAILED.raw == b"SERVER_ERROR Error routing request\r\n"


def test_a_recovered_pending_ignores_other_answers_while_it_waits_for_the_next() -> None:
    first, second = Pending(), Pending()
    routes = [Attempt(lambda: first), Attempt(lambda: second)]
    out = first_acceptable(routes, REQUEST, FakeContext(), lambda r: r is STORED, name="test")
    first.resolve(TIMEOUT)  # recovery: the second route is tried
    first.resolve(STORED)  # a stray second answer to the first must change nothing
    assert not resolved(out)
    second.resolve(MISS)
    assert out.reply is MISS
