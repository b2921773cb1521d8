"""Route handles in memory: a routing context that records sends and fakes the clock.

`FakeContext` implements `RouteContext` without I/O. Every `send` is recorded as a
`Sent` whose reply the test gives when it likes (`Sent.answer`), or at once through
an `answer` function; `call_later` timers fire when the test moves the clock
(`advance`). So a handle's rules can be tested one row at a time:

    ctx = FakeContext()
    pending = route.route(request, ctx)
    ctx.sent[0].answer(Reply(Result.TIMEOUT, b"SERVER_ERROR Reply timeout\\r\\n"))
    assert ctx.sent[1].server == backup
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from mcrouter_trio.counters import ProxyCounters
from mcrouter_trio.messages import Pending, Reply, Request
from mcrouter_trio.routing._base import DeleteSpool
from mcrouter_trio.routing._combinators import DEFAULT_BACKGROUND_CAP, Background
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.routing._timers import Timer, TimerQueue

#: Answers a send at once (a reply), or leaves it to the test (None).
Answer = Callable[[ServerSpec, Request], Reply | None]


@attrs.define
class Sent:
    """One request a handle sent to a server, and the reply it is waiting for."""

    server: ServerSpec
    request: Request
    pending: Pending
    #: Whether the server's answer was delivered. Not `pending.reply`: a route may
    #: recover the Pending it got (failover), which then waits for another reply.
    answered: bool = False

    def answer(self, reply: Reply) -> None:
        """Deliver `reply` as the server's answer (as a destination's reader would)."""
        if self.answered:
            raise AssertionError(f"{self.request!r} to {self.server.address} was answered already")
        self.answered = True
        self.pending.resolve(reply)


class FakeContext:
    """A `RouteContext` for tests: records sends, runs timers on a fake clock."""

    def __init__(
        self,
        *,
        answer: Answer | None = None,
        seed: int = 0,
        host_id: int = 0,
        worker_index: int = 0,
        background_cap: int = DEFAULT_BACKGROUND_CAP,
        dry_run: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.host_id = host_id
        self.worker_index = worker_index
        self.asynclog: DeleteSpool | None = None
        self.dry_run = dry_run
        self.counters = ProxyCounters()
        self.background = Background(background_cap)
        self.sent: list[Sent] = []
        self.clock = 0.0
        self._answer = answer
        self._timers = TimerQueue()

    def send(self, server: ServerSpec, request: Request) -> Pending:
        sent = Sent(server, request, Pending())
        self.sent.append(sent)
        if self._answer is not None:
            reply = self._answer(server, request)
            if reply is not None:
                sent.answer(reply)
        return sent.pending

    @property
    def waiting(self) -> list[Sent]:
        """The sends not answered yet, in the order they were sent."""
        return [sent for sent in self.sent if not sent.answered]

    def now(self) -> float:
        return self.clock

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self._timers.add(self.clock + delay, callback)

    def advance(self, seconds: float) -> int:
        """Move the clock on and fire the timers now due; how many fired."""
        self.clock += seconds
        return self._timers.fire_due(self.clock)

    @property
    def timers(self) -> int:
        """Timers scheduled and neither fired nor cancelled."""
        return len(self._timers)
