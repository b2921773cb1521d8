"""mcrouter's four-minute window: rates, highs and means of the stats over it.

mcrouter keeps a bin per second of every rate stat for the last 240 seconds and
shows, for a stat in its `rate_stats` group, the events per second over the bins in
use; for a `max_stats` one the highest value in a bin. Here the counters are
cumulative, so the window keeps samples of them instead: one per look (at most one
a second is kept), a look being every `stats` reply, every scrape and the proxy's
once-a-second tick. A rate is the change from the oldest sample to the newest over
the seconds between them; a high is the largest sample; a mean is one change over
another (microseconds per reply, requests per write).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Final

#: mcrouter's MOVING_AVERAGE_WINDOW_SIZE_IN_SECOND.
WINDOW_SECONDS: Final = 240.0
#: Looks closer together than this replace the newest sample rather than add one.
_SAMPLE_SECONDS: Final = 1.0

Sample = Mapping[str, float]


class StatWindow:
    """Samples of named values over the last `WINDOW_SECONDS`, plus one older as a base."""

    def __init__(self, now: float) -> None:
        #: (when, values); the first is the base: the newest sample at or before the
        #: window's start, or the process start, when every counter was zero.
        self._samples: deque[tuple[float, Sample]] = deque([(now, {})])

    def look(self, now: float, sample: Sample) -> None:
        samples = self._samples
        if len(samples) >= 2 and now - samples[-2][0] < _SAMPLE_SECONDS:
            samples[-1] = (now, sample)
        else:
            samples.append((now, sample))
        while len(samples) > 2 and samples[1][0] <= now - WINDOW_SECONDS:
            samples.popleft()

    def restart(self, now: float) -> None:
        """`stats reset`: the counters start again from zero."""
        self._samples.clear()
        self._samples.append((now, {}))

    def change(self, name: str) -> float:
        """How much `name` grew over the window (never below zero: a reset restarts it)."""
        base = self._samples[0][1].get(name, 0)
        return max(0.0, self._samples[-1][1].get(name, 0) - base)

    def rate(self, name: str) -> float:
        """`name`'s growth per second over the window (0 before a second look)."""
        seconds = self._samples[-1][0] - self._samples[0][0]
        return self.change(name) / seconds if seconds > 0 else 0.0

    def ratio(self, numerator: str, denominator: str) -> float:
        """One change over another within the window (0 if the second did not change)."""
        below = self.change(denominator)
        return self.change(numerator) / below if below else 0.0

    def highest(self, name: str) -> float:
        """The largest value `name` had in a sample of the window."""
        return max(sample.get(name, 0) for _when, sample in self._samples)
