"""Timers for route handles: one queue per proxy, fired by one task (or a fake clock).

`RouteContext.call_later` puts a callback here; the proxy's timer task (or a test's
fake clock) calls `fire_due` when the earliest deadline passes. A heap keeps the
cost per timer at O(log n) and no task is spawned per timer.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from mcrouter_trio.routing._combinators import FAILURES


class Timer:
    """A scheduled callback; `cancel()` keeps it from running."""

    __slots__ = ("callback", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None] | None) -> None:
        self.deadline = deadline
        self.callback = callback

    def cancel(self) -> None:
        self.callback = None


class TimerQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def add(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        heapq.heappush(self._heap, (deadline, next(self._order), timer))
        return timer

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)  # cancelled
        return heap[0][0] if heap else None

    def fire_due(self, now: float) -> int:
        """Run every callback whose deadline is `now` or earlier; how many ran.

        A failing callback is recorded in `FAILURES` and the others still run.
        """
        heap = self._heap
        fired = 0
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            callback, timer.callback = timer.callback, None
            if callback is None:
                continue
            fired += 1
            try:
                callback()
            except Exception as exc:
                FAILURES.record("timer", exc)
        return fired

    def __len__(self) -> int:
        return sum(1 for _deadline, _order, timer in self._heap if timer.callback is not None)
