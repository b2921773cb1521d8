"""`--num-proxies N`: N worker processes sharing the listening ports.

mcrouter runs N proxy threads in one process; Python threads would share one
interpreter lock, so mcrouter-trio runs N processes instead. Each worker is a
whole proxy (its own client reactor and its own connection to every server) and
binds the ports with SO_REUSEPORT, so the kernel spreads client connections over
them. The parent only supervises:

- SIGTERM or SIGINT to the parent becomes one SIGTERM to every worker, which then
  drains gracefully; the parent exits when they all have (status: the worst one).
  SIGHUP (reload) is passed on to every worker; SIGUSR1 and SIGUSR2 are ignored.
  Workers run in their own process group, so Ctrl-C in a terminal reaches them
  once, through the parent, and not twice.
- A worker that dies on its own is restarted; one that dies within its first
  seconds (a port in use, say) stops the whole proxy instead of looping.
- A worker whose parent disappears shuts itself down (see `parent_watch`).
- Each worker keeps its counters on a shared stats board (`publish_stats`, see
  `_board.py`), so whichever worker answers `stats` answers for all of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import trio

from mcrouter_trio.ops._board import PUBLISH_INTERVAL

if TYPE_CHECKING:
    from mcrouter_trio.ops._stats import ProxyStats
    from mcrouter_trio.routing._specs import ServerSpec
    from mcrouter_trio.upstream._destination import Destination

log = logging.getLogger("mcrouter_trio.ops")

#: A worker that exits sooner than this after starting is not restarted: it failed
#: to bind its ports or load what it needs, and would fail again.
START_GRACE_SECONDS: Final = 1.0
RESTART_DELAY_SECONDS: Final = 1.0
#: Signals the supervisor handles without stopping: SIGHUP goes on to the workers.
_NOT_STOPPING: Final = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def run_workers(count: int, run_worker: Callable[[int], int]) -> int:
    """Fork `count` workers running `run_worker(index)`; supervise them; return a status."""
    workers: dict[int, tuple[int, float]] = {}  # pid -> (index, start time)
    stopping = False
    status = 0

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # Until the worker's own handlers are installed, these must not kill it.
            for signum in _NOT_STOPPING:
                signal.signal(signum, signal.SIG_IGN)
            code = 1
            try:
                code = run_worker(index)
            finally:
                logging.shutdown()
                os._exit(code)
        workers[pid] = (index, time.monotonic())
        log.info("worker %d started (pid %d)", index, pid)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("received %s: stopping %d workers", signal.Signals(signum).name, len(workers))
        stopping = True
        for pid in workers:
            _kill(pid, signal.SIGTERM)

    def pass_on(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            log.info("received %s: passing it to %d workers", name, len(workers))
            for pid in workers:
                _kill(pid, signum)
        else:
            log.info("received %s: ignored", name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for signum in _NOT_STOPPING:
        signal.signal(signum, pass_on)
    for index in range(count):
        start(index)
    while workers:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in workers:
            continue
        index, started = workers.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        status = max(status, code if code >= 0 else 1)
        if stopping:
            continue
        log.warning("worker %d (pid %d) exited with status %d", index, pid, code)
        if time.monotonic() - started < START_GRACE_SECONDS:
            log.error("worker %d failed at start: stopping the proxy", index)
            stop(signal.SIGTERM, None)
            continue
        time.sleep(RESTART_DELAY_SECONDS)
        start(index)
        status = 0
    return status


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        os.kill(pid, signum)


async def publish_stats(
    stats: ProxyStats,
    destinations: Mapping[ServerSpec, Destination],
    interval: float = PUBLISH_INTERVAL,
) -> None:
    """Keep this worker's counters on the stats board, for the other workers' `stats`."""
    while True:
        stats.publish(destinations)
        await trio.sleep(interval)


async def parent_watch(parent_pid: int, shutdown: trio.Event, interval: float = 1.0) -> None:
    """Shut this worker down once its supervising parent is gone."""
    while not shutdown.is_set():
        await trio.sleep(interval)
        if os.getppid() != parent_pid:
            log.warning("supervisor (pid %d) is gone: shutting down", parent_pid)
            shutdown.set()
            return
