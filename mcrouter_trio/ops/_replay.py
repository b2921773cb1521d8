"""Replaying the delete spool: each spooled delete sent again once its server is back.

mcrouter leaves its spool to the operator (its issue #105). Here a replayer task
(the first worker's, in the serving nursery) makes a pass over the spool every
second, and `mcrouter-trio replay DIR` makes one by hand; both run `Replayer.replay_pass`
while holding the spool's lock file, so two never replay the same spool at once.

A pass reads the spool files oldest first. For each destination (`host:port`) it
sends that destination's deletes in file order, in batches, through the routing
context (so TLS and the TKO state apply); a destination that is TKO is skipped,
and one whose delete fails (anything but `DELETED` or `NOT_FOUND`) is left for the
next pass from that delete on, in this file and every later one, which keeps each
destination's deletes in order. After each batch the progress file (per file, per
destination, the offset replayed up to) is replaced and fsynced: a crash or restart
repeats at most the batch in flight, and never skips a delete.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final

import attrs
import trio

from mcrouter_trio.messages import Op, Pending, Reply, Request, Result
from mcrouter_trio.ops._asynclog import (
    PROGRESS_FILE,
    Progress,
    SpooledDelete,
    decode_progress,
    encode_progress,
    parse_records,
    pending_records,
    spool_file_order,
)
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.upstream._context import ProxyContext

log = logging.getLogger("mcrouter_trio.asynclog")

#: Deletes sent to one destination before the progress is saved.
BATCH: Final = 100
#: Replies that mean the delete is done: the key is gone either way.
_DONE: Final = frozenset({Result.DELETED, Result.NOTFOUND})
#: What memcached accepts as a key (a record that is not one can never be replayed).
_MAX_KEY: Final = 250


@attrs.define
class ReplayReport:
    """What a pass did: deletes sent and answered, and what is left, per destination."""

    sent: dict[str, int] = attrs.Factory(dict)
    pending: dict[str, int] = attrs.Factory(dict)
    #: Unix time of the oldest delete left, None if none is.
    oldest_pending: float | None = None
    #: Lines that are not delete records (or whose key memcached would refuse): skipped.
    bad_lines: int = 0

    def leave(self, records: list[SpooledDelete]) -> None:
        if not records:
            return
        destination = records[0].destination
        self.pending[destination] = self.pending.get(destination, 0) + len(records)
        first = records[0].time
        if self.oldest_pending is None or first < self.oldest_pending:
            self.oldest_pending = first


class Replayer:
    """Replays one spool directory through a routing context."""

    def __init__(
        self,
        root: Path,
        ctx: ProxyContext,
        *,
        servers: Callable[[], Iterable[ServerSpec]] = tuple,
        stats: ProxyStats | None = None,
        rate: float = 0.0,
    ) -> None:
        """`servers`: the configured servers, whose settings (TLS, timeouts) a replayed
        delete to their address uses. `rate`: deletes per second at most (0: no limit)."""
        self.root = root
        self._ctx = ctx
        self._servers = servers
        self.stats = stats or ProxyStats()
        self._rate = rate
        #: Files replayed to their end, by their size then (read again if they grow).
        self._finished: dict[str, int] = {}
        self._reported_bad: set[str] = set()
        self._failing_pass = False

    async def run(self, interval: float = 1.0) -> None:
        """A pass every `interval` seconds, until cancelled (a pass that fails is logged)."""
        while True:
            try:
                with self.locked(wait=False) as mine:
                    if mine:
                        await self.replay_pass()
                if self._failing_pass:
                    self._failing_pass = False
                    log.warning("replaying the delete spool in %s works again", self.root)
            except OSError as exc:
                if not self._failing_pass:
                    self._failing_pass = True
                    log.error("cannot replay the delete spool in %s: %s", self.root, exc)
            await trio.sleep(interval)

    @contextlib.contextmanager
    def locked(self, *, wait: bool) -> Iterator[bool]:
        """Hold the spool's replay lock; yields False if another holds it (and not `wait`).

        The lock is a flock of the spool directory itself: no file of the replayer's
        joins the writers' spool files there (mcrouter's tests count them).
        """
        if not self.root.is_dir():
            yield False
            return
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    async def replay_pass(self) -> ReplayReport:
        """Send every delete whose server is usable; the caller holds `locked`."""
        report = ReplayReport()
        progress = await trio.to_thread.run_sync(self._load_progress)
        servers = {(server.host, server.port): server for server in self._servers()}
        blocked: set[str] = set()
        files = await trio.to_thread.run_sync(self._spool_files)
        for name in files:
            path = self.root / name
            if self._finished.get(name) == path.stat().st_size:
                continue
            data = await trio.to_thread.run_sync(path.read_bytes)
            records, bad = parse_records(data)
            records = self._sendable(name, records, bad, report)
            marks = progress.setdefault(name, {})
            left_in_file = False
            for destination, pending in pending_records(records, marks).items():
                done = 0
                if destination not in blocked and self._usable(destination):
                    first = pending[0]
                    server = servers.get((first.host, first.port)) or ServerSpec(
                        first.host, first.port
                    )
                    done = await self._replay(server, name, pending, progress)
                    if done:
                        report.sent[destination] = report.sent.get(destination, 0) + done
                if done < len(pending):
                    blocked.add(destination)
                    left_in_file = True
                    report.leave(pending[done:])
            if not left_in_file:
                self._finished[name] = len(data)
        self.stats.asynclog_pending = sum(report.pending.values())
        oldest = report.oldest_pending
        self.stats.asynclog_oldest_pending_age = (
            0 if oldest is None else max(0, int(time.time() - oldest))
        )
        return report

    def _sendable(
        self, name: str, records: list[SpooledDelete], bad: list[int], report: ReplayReport
    ) -> list[SpooledDelete]:
        kept = [record for record in records if _valid_key(record.key)]
        skipped = len(bad) + len(records) - len(kept)
        report.bad_lines += skipped
        if skipped and name not in self._reported_bad:
            self._reported_bad.add(name)
            log.error(
                "spool file %s: %d lines are not deletes this proxy can replay; skipped",
                self.root / name,
                skipped,
            )
        return kept

    def _usable(self, destination: str) -> bool:
        tracker = self._ctx.tko.trackers.get(destination)
        return tracker is None or tracker.refusal is None

    async def _replay(
        self, server: ServerSpec, name: str, pending: list[SpooledDelete], progress: Progress
    ) -> int:
        """Send `pending` (one destination's, in order) in batches; how many were done."""
        done = 0
        for start in range(0, len(pending), BATCH):
            batch = pending[start : start + BATCH]
            replies = await self._send(server, batch)
            answered = 0
            for reply in replies:
                if reply.result not in _DONE:
                    break
                answered += 1
            if answered:
                progress[name][batch[0].destination] = batch[answered - 1].end
                await trio.to_thread.run_sync(self._save_progress, progress)
                self.stats.asynclog_replayed += answered
                done += answered
            if answered < len(batch):
                failure = replies[answered].raw.decode("utf-8", "replace").strip()
                log.info("replay to %s paused after %d deletes: %s", server.address, done, failure)
                break
            if self._rate > 0:
                await trio.sleep(len(batch) / self._rate)
        return done

    async def _send(self, server: ServerSpec, batch: list[SpooledDelete]) -> list[Reply]:
        pendings: list[Pending] = [
            self._ctx.send(server, Request(Op.DELETE, record.key)) for record in batch
        ]
        replies: list[Reply] = []
        for pending in pendings:
            replies.append(await _reply_of(pending))
        return replies

    def _spool_files(self) -> list[str]:
        names = []
        if self.root.is_dir():
            for hour in self.root.iterdir():
                if hour.is_dir():
                    names += [f"{hour.name}/{file.name}" for file in hour.iterdir()]
        return sorted(names, key=spool_file_order)

    def _load_progress(self) -> Progress:
        try:
            return decode_progress((self.root / PROGRESS_FILE).read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            # Starting over repeats deletes; trusting a damaged file could skip some.
            log.error(
                "replay progress %s is damaged (%s): replaying from the start",
                self.root / PROGRESS_FILE,
                exc,
            )
            return {}

    def _save_progress(self, progress: Progress) -> None:
        existing = {name: marks for name, marks in progress.items() if (self.root / name).exists()}
        temporary = self.root / (PROGRESS_FILE + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, encode_progress(existing))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.root / PROGRESS_FILE)
        directory = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _valid_key(key: bytes) -> bool:
    return 0 < len(key) <= _MAX_KEY and not any(byte <= 32 or byte == 127 for byte in key)


async def _reply_of(pending: Pending) -> Reply:
    replies: list[Reply] = []
    arrived = trio.Event()

    def answered(reply: Reply) -> None:
        replies.append(reply)
        arrived.set()

    pending.then(answered)
    await arrived.wait()
    return replies[0]


async def replay_spool(
    root: Path, servers: Iterable[ServerSpec], rate: float = 0.0
) -> ReplayReport:
    """One pass over the spool in `root` with connections of its own (`mcrouter-trio replay`).

    Waits for the lock while a proxy's replayer holds it.
    """
    known = tuple(servers)
    async with trio.open_nursery() as nursery:
        ctx = ProxyContext(nursery)
        nursery.start_soon(ctx.run_timers, name="route timers")
        replayer = Replayer(root, ctx, servers=lambda: known, rate=rate)
        with replayer.locked(wait=True):
            report = await replayer.replay_pass()
        nursery.cancel_scope.cancel()
    return report
