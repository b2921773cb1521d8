"""The reliable delete stream's tasks: the spool writer and, in one worker, the replayer."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
import trio

from mcrouter_trio.ops._asynclog import WriterNames
from mcrouter_trio.ops._replay import Replayer
from mcrouter_trio.ops._spool import AsyncLogWriter, SpoolFile
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.upstream._context import ProxyContext


@attrs.frozen
class DeleteStreamSettings:
    """`-a/--async-dir` and the flags around it."""

    root: str
    version2: bool = False
    names: WriterNames = attrs.field(factory=WriterNames)
    #: Replay the spool in this process (off: `--asynclog-replay-disable`).
    replay: bool = True
    #: Replayed deletes per second at most (0: no limit).
    replay_rate: float = 0.0
    replay_interval: float = 1.0


def start_delete_stream(
    settings: DeleteStreamSettings,
    ctx: ProxyContext,
    nursery: trio.Nursery,
    stats: ProxyStats,
    servers: Callable[[], Iterable[ServerSpec]],
) -> None:
    """Spool the deletes routes hand to `ctx.asynclog`; replay them (first worker only)."""

    def spooled(count: int, written: bool) -> None:
        stats.asynclog_requests_rate += count  # offered, as mcrouter counts them
        if written:
            stats.asynclog_spooled += count

    writer = AsyncLogWriter(
        SpoolFile(settings.root, settings.names, f"{os.getpid()}"),
        settings.names,
        version2=settings.version2,
        client_writes=ctx.client_writes,
        on_spooled=spooled,
    )
    ctx.asynclog = writer
    nursery.start_soon(writer.run, name="delete spool writer")
    if settings.replay and (stats.shared is None or stats.shared.index == 0):
        replayer = Replayer(
            Path(settings.root), ctx, servers=servers, stats=stats, rate=settings.replay_rate
        )
        nursery.start_soon(replayer.run, settings.replay_interval, name="delete spool replayer")
