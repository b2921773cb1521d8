"""Server health: TKO ("technical knock-out") state, probe delays and reconnect backoff.

mcrouter's rules (`TkoTracker.cpp`, `ProxyDestinationBase.cpp`):

- A server is *soft TKO* after `timeouts_until_tko` reply timeouts in a row; any reply
  read from it in between starts the count again.
- It is *hard TKO* after one connect error or connect timeout; a soft TKO server whose
  connect then fails becomes hard TKO (the reason shown stays the first one).
- While TKO, nothing is sent to it: every request is answered at once with
  `SERVER_ERROR Server unavailable. Reason: mc_res_<reason>` (result TKO, which failover
  routes move on from).
- The destination that marked it probes it with `version`: the first probe after the
  initial delay, each next one 1.5 times later, up to the maximum, every delay
  stretched by a random 5-50 %; one probe in flight at a time. Only a probe that gets
  a reply clears TKO.

The state is kept per `host:port`, in one `TkoTracker` shared by every destination
(and so every pool) that reaches that address. With `--num-proxies`, each worker
process keeps its own.

A pool's `tko_tracker` (`PoolTkoLimit`, mcrouter's `PoolTkoTracker`) caps how many of
its servers are TKO at once: with `upper` of them TKO, the next server that fails is
not marked and the pool *fails open* (no server of it is marked TKO, so requests go
to the failing servers and get their real errors) until, at a recovery, no more than
`lower` are TKO. A server in several such pools follows the last one in the config,
as in mcrouter.

Without TKO (tracking disabled), a destination still never redials per request:
after a failed connection it waits out a backoff before the next connect (`Backoff`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import attrs

from mcrouter_trio.counters import ProxyCounters
from mcrouter_trio.messages import Reply, Result, error_reply
from mcrouter_trio.routing._specs import PoolSpec, TkoLimitSpec

if TYPE_CHECKING:
    from mcrouter_trio.upstream._destination import Destination

log = logging.getLogger("mcrouter_trio.upstream")

#: mcrouter's probe delay growth and jitter (`ProxyDestinationBase.cpp`).
PROBE_FACTOR: Final = 1.5
JITTER_MIN: Final = 0.05
JITTER_MAX: Final = 0.5

#: Reconnect backoff after failed connections, when the server is not TKO.
RECONNECT_DELAY_INITIAL: Final = 0.1
RECONNECT_DELAY_MAX: Final = 5.0


@attrs.frozen
class HealthSettings:
    """`--disable-tko-tracking`, `--timeouts-until-tko`, `-r`, `--probe-timeout-max`."""

    tko_tracking: bool = True
    timeouts_until_tko: int = 3
    probe_delay_initial_ms: int = 10_000
    probe_delay_max_ms: int = 60_000


def jittered(seconds: float, rng: random.Random) -> float:
    """`seconds` stretched by mcrouter's random 5-50 %."""
    return seconds * (1.0 + rng.uniform(JITTER_MIN, JITTER_MAX))


class ProbeSchedule:
    """The delays between probes of one TKO period, as mcrouter computes them."""

    __slots__ = ("_max_ms", "_next_ms")

    def __init__(self, settings: HealthSettings) -> None:
        self._next_ms = settings.probe_delay_initial_ms
        self._max_ms = settings.probe_delay_max_ms

    def next_delay(self, rng: random.Random) -> float:
        """Seconds until the next probe."""
        delay_ms = self._next_ms
        # Integer milliseconds, as mcrouter keeps them: 1 * 1.5 would stay 1.
        self._next_ms = 2 if delay_ms < 2 else int(delay_ms * PROBE_FACTOR)
        self._next_ms = min(self._next_ms, self._max_ms)
        return jittered(delay_ms / 1000, rng)


class Backoff:
    """Delays between connection attempts while they keep failing (no TKO to pace them).

    The first failure is retried by the next request at once (a server that closed one
    connection is usually fine on the next); from the second failure in a row on, the
    destination waits 0.1 s, then twice as long each time, up to 5 s, jittered.
    """

    __slots__ = ("failures",)

    def __init__(self) -> None:
        self.failures = 0

    def delay(self, rng: random.Random) -> float:
        """Seconds to wait before the next connect, after one more failure."""
        self.failures += 1
        if self.failures < 2:
            return 0.0
        delay = RECONNECT_DELAY_INITIAL * 2.0 ** min(self.failures - 2, 16)
        return jittered(min(delay, RECONNECT_DELAY_MAX), rng)


def tko_reply(reason: Result) -> Reply:
    """What a client gets from a TKO server, as mcrouter's DestinationRoute words it."""
    return error_reply(Result.TKO, f"Server unavailable. Reason: mc_res_{reason.name.lower()}")


class TkoTracker:
    """One `host:port`'s TKO state, shared by the destinations that reach it."""

    def __init__(self, address: str, registry: TkoRegistry) -> None:
        self.address = address
        self._registry = registry
        self.destinations: list[Destination] = []
        #: Reply timeouts in a row (towards soft TKO).
        self.timeouts = 0
        #: Failures in a row of any kind that counts towards TKO, probes included
        #: (mcrouter's `consecutiveFailureCount`, shown by `stats suspect_servers`).
        self.failures = 0
        #: The answer every request gets while TKO; None while the server is usable.
        self.refusal: Reply | None = None
        self.hard = False
        #: The destination that marked the server TKO: it alone probes and clears it.
        self.responsible: Destination | None = None
        #: The pool's `tko_tracker` limit this server counts towards, if any.
        self.pool_limit: PoolTkoLimit | None = None
        #: The limit that counted this server's TKO (released when it clears).
        self._counted_by: PoolTkoLimit | None = None

    @property
    def state(self) -> str:
        """`hard_tko`, `soft_tko`, or "" when usable."""
        if self.refusal is None:
            return ""
        return "hard_tko" if self.hard else "soft_tko"

    def record_timeouts(self, destination: Destination, count: int) -> None:
        """`count` requests timed out on `destination`: soft TKO once enough in a row."""
        self.failures += count
        if self.refusal is not None:
            return
        self.timeouts += count
        for each in self.destinations:
            each.watch_replies()
        if self.timeouts >= self._registry.settings.timeouts_until_tko:
            self._mark(destination, Result.TIMEOUT, hard=False)

    def record_connect_failure(self, destination: Destination, result: Result) -> None:
        """A connect error or timeout on `destination`: hard TKO."""
        self.failures += 1
        if self.refusal is None:
            self._mark(destination, result, hard=True)
        elif not self.hard and self.responsible is destination:
            self.hard = True
            log.warning("server %s: soft TKO is now hard TKO (connect failed)", self.address)

    def record_reply(self) -> None:
        """A reply came from the server: failures in a row start again (TKO stays)."""
        if self.refusal is None:
            self.timeouts = 0
            self.failures = 0

    def probe_answered(self, destination: Destination, probes: int) -> None:
        """A probe got a reply: the server is usable again."""
        if self.responsible is not destination:
            return
        self._clear()
        log.warning(
            "server %s recovered: probe %d answered (%s)",
            self.address,
            probes,
            self._registry.tko_count(),
        )

    def detach(self, destination: Destination) -> None:
        """`destination` stops; a TKO it was probing is cleared (mcrouter: removed from config)."""
        if destination in self.destinations:
            self.destinations.remove(destination)
        if self.responsible is destination:
            if self.refusal is not None:
                # mcrouter's words: tools grep the log for them.
                log.info("%s was TKO, removed from config", self.address)
            self._clear()

    def _mark(self, destination: Destination, reason: Result, *, hard: bool) -> None:
        limit = self.pool_limit
        if limit is not None:
            if not limit.admit(self.address):
                return  # the pool fails open
            self._counted_by = limit
        self.refusal = tko_reply(reason)
        self.hard = hard
        self.responsible = destination
        for each in self.destinations:
            each.refresh_refusal()
        log.warning(
            "server %s marked %s TKO: mc_res_%s (%s)",
            self.address,
            "hard" if hard else "soft",
            reason.name.lower(),
            self._registry.tko_count(),
        )
        destination.start_probing()

    def _clear(self) -> None:
        if self._counted_by is not None:
            self._counted_by.release()
            self._counted_by = None
        self.refusal = None
        self.hard = False
        self.responsible = None
        self.timeouts = 0
        self.failures = 0
        for each in self.destinations:
            each.refresh_refusal()


class PoolTkoLimit:
    """A pool's `tko_tracker`: at most `upper` servers TKO, then fail open down to `lower`.

    mcrouter's `PoolTkoTracker`, except that leaving fail-open also counts the server
    that recovered (mcrouter's count stays one too high after it leaves fail-open).
    """

    def __init__(
        self, pool: str, spec: TkoLimitSpec, counters: ProxyCounters | None = None
    ) -> None:
        self.pool = pool
        self.spec = spec
        #: Where entering and leaving fail-open are counted (`num_fail_open_state_*`).
        self.counters = counters if counters is not None else ProxyCounters()
        #: Servers of the pool marked TKO under this limit.
        self.tko = 0
        self.fail_open = False

    def admit(self, address: str) -> bool:
        """Whether `address` may be marked TKO now (False: the pool is failing open)."""
        if self.fail_open:
            return False
        if self.tko >= self.spec.upper:
            self.fail_open = True
            self.counters.num_fail_open_state_entered += 1
            log.warning(
                "pool %s fails open: %d servers TKO already, %s is not marked TKO"
                " (no more will be until at most %d are)",
                self.pool,
                self.tko,
                address,
                self.spec.lower,
            )
            return False
        self.tko += 1
        return True

    def release(self) -> None:
        """A server this limit counted is no longer TKO."""
        if self.fail_open and self.tko <= self.spec.lower:
            self.fail_open = False
            self.counters.num_fail_open_state_exited += 1
            log.warning("pool %s no longer fails open: %d servers TKO", self.pool, self.tko - 1)
        self.tko -= 1


class TkoRegistry:
    """Every `TkoTracker` of the proxy, by `host:port`, and the pools' TKO limits."""

    def __init__(self, settings: HealthSettings, counters: ProxyCounters | None = None) -> None:
        self.settings = settings
        #: The proxy's counters, which the pools' limits count fail-open in.
        self.counters = counters if counters is not None else ProxyCounters()
        self.trackers: dict[str, TkoTracker] = {}
        #: Each pool's `tko_tracker`, by pool name (kept across reloads while unchanged).
        self.pool_limits: dict[str, PoolTkoLimit] = {}

    def limit_pools(self, pools: Iterable[PoolSpec]) -> None:
        """Apply the pools' `tko_tracker` settings (a new config's) to their servers."""
        limits: dict[str, PoolTkoLimit] = {}
        chosen: dict[str, PoolTkoLimit | None] = {}
        for pool in pools:
            limit = None
            if pool.tko_limit is not None:
                limit = self.pool_limits.get(pool.name)
                if limit is None or limit.spec != pool.tko_limit:
                    limit = PoolTkoLimit(pool.name, pool.tko_limit, self.counters)
                limits[pool.name] = limit
            for server in pool.servers:
                if limit is not None or server.address not in chosen:
                    chosen[server.address] = limit
        self.pool_limits = limits
        for tracker in self.trackers.values():
            tracker.pool_limit = chosen.get(tracker.address)
        for address, limit in chosen.items():
            if limit is not None:
                self.tracker(address).pool_limit = limit

    def tracker(self, address: str) -> TkoTracker:
        tracker = self.trackers.get(address)
        if tracker is None:
            tracker = self.trackers[address] = TkoTracker(address, self)
        return tracker

    def tko_count(self) -> str:
        tko = sum(1 for tracker in self.trackers.values() if tracker.refusal is not None)
        return f"{tko} of {len(self.trackers)} servers TKO"
