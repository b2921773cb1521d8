"""`RouteContext.call_later` in the proxy: one timer task fires every route handle's timers.

Run on Trio's mock clock (autojump), so the test waits no real time and asserts
order, not duration.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mcrouter_trio.routing import FAILURES
from mcrouter_trio.upstream import ProxyContext


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_timers_fire_in_deadline_order_and_cancelled_ones_never(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        ctx = ProxyContext(nursery)
        nursery.start_soon(ctx.run_timers)
        start = ctx.now()

        def record(name: str) -> None:
            fired.append((name, ctx.now() - start))

        ctx.call_later(3.0, lambda: record("third"))
        ctx.call_later(1.0, lambda: record("first"))
        cancelled = ctx.call_later(2.0, lambda: record("cancelled"))
        await trio.sleep(0.5)
        # Added while the task sleeps towards a later deadline: it must wake earlier.
        ctx.call_later(1.0, lambda: record("second"))
        cancelled.cancel()
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in fired] == ["first", "second", "third"]
    assert [when for _, when in fired] == sorted(when for _, when in fired)
    assert all(when >= deadline for (_, when), deadline in zip(fired, (1.0, 1.5, 3.0), strict=True))


async def test_a_failing_timer_is_counted_and_the_others_still_fire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[str] = []
    failures = FAILURES.count

    def broken() -> None:
        raise RuntimeError("planted bug")

    async with trio.open_nursery() as nursery:
        ctx = ProxyContext(nursery)
        nursery.start_soon(ctx.run_timers)
        ctx.call_later(1.0, broken)
        ctx.call_later(1.0, lambda: fired.append("same deadline"))
        ctx.call_later(2.0, lambda: fired.append("later"))
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert fired == ["same deadline", "later"]
    assert FAILURES.count == failures + 1
