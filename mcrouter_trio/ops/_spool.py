"""The delete spool writer (`-a/--async-dir`): one task owns the file, group commit.

Routing hands a failed delete to `AsyncLogWriter.spool`, which only encodes the
record, appends it to the batch in memory and returns a `Pending`. The writer task
takes the whole batch, writes it and fsyncs the file in a worker thread (the event
loop never waits for the disk), then resolves every Pending of the batch: each
client hears `NOT_FOUND` only after its delete is on disk, and the deletes that
arrive while one fsync runs share the next. A write that fails (disk full, spool
not writable) answers each delete of the batch with the error its server gave, and
logs one line per episode of failures (and one when writing works again).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Final

import trio

from mcrouter_trio.messages import Pending, Reply, Result
from mcrouter_trio.ops._asynclog import FILE_LIFETIME, WriterNames, encode_record, spool_file_path
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.transport._socket import Parker, WriteBatch

log = logging.getLogger("mcrouter_trio.asynclog")

#: mcrouter's reply to a delete it spooled (its DestinationRoute's default reply).
SPOOLED: Final = Reply(Result.NOTFOUND, b"NOT_FOUND\r\n")


class SpoolFile:
    """The file the writer appends to: opened as mcrouter names it, renewed every 15 min.

    Used from the writer's worker thread only.
    """

    def __init__(self, root: str, names: WriterNames, writer_id: str) -> None:
        self.root = root
        self._names = names
        self._writer_id = writer_id
        self._fd: int | None = None
        self._opened = 0.0

    def append(self, data: bytes) -> None:
        """Write `data` at the end of the current file and fsync it (`OSError` if not)."""
        fd = self._current()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            self.close()  # reopened (or replaced) by the next batch
            raise

    def _current(self) -> int:
        now = time.time()
        if self._fd is not None and now - self._opened <= FILE_LIFETIME:
            return self._fd
        self.close()
        hour, name = spool_file_path(now, self._names, self._writer_id)
        directory = os.path.join(self.root, hour)
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            # The new names must survive a crash as well as the records in them.
            _fsync_directory(directory)
            _fsync_directory(self.root)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._opened = fd, now
        return fd

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AsyncLogWriter:
    """Implements routing's `DeleteSpool`: batches records for the writer task (`run`)."""

    def __init__(
        self,
        file: SpoolFile,
        names: WriterNames,
        *,
        version2: bool = False,
        client_writes: WriteBatch | None = None,
        on_spooled: Callable[[int, bool], None] | None = None,
    ) -> None:
        self._file = file
        self._names = names
        self._version2 = version2
        self._client_writes = client_writes or WriteBatch()
        #: Told of every batch answered: its deletes, and whether they were written.
        self._on_spooled = on_spooled
        self._batch: list[tuple[bytes, Pending, Reply]] = []
        #: The batch being written (answered with its errors if the task is cancelled).
        self._writing: list[tuple[bytes, Pending, Reply]] = []
        self._wake = Parker()
        self._failing = False

    def spool(self, server: ServerSpec, key: bytes, pool: str, failure: Reply) -> Pending:
        record = encode_record(
            server.host, server.port, key, pool, time.time(), self._names, version2=self._version2
        )
        pending = Pending()
        self._batch.append((record, pending, failure))
        self._wake.wake()
        return pending

    async def run(self) -> None:
        """Write batches until cancelled; deletes left unwritten then get their error."""
        try:
            while True:
                if not self._batch:
                    await self._wake.park()
                    continue
                batch = self._writing = self._batch
                self._batch = []
                written = await self._write(b"".join(record for record, _, _ in batch))
                self._writing = []
                self._answer(batch, written)
        finally:
            # Cancelled (shutdown): whatever is not known to be on disk gets its error.
            batch = self._writing + self._batch
            self._writing, self._batch = [], []
            self._answer(batch, written=False)
            self._file.close()

    async def _write(self, data: bytes) -> bool:
        try:
            # Not abandoned on cancel: the thread finishes the write it started.
            await trio.to_thread.run_sync(self._file.append, data)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot write the delete spool in %s: %s; failed deletes are answered"
                    " with their error until it works again",
                    self._file.root,
                    exc,
                )
            return False
        if self._failing:
            self._failing = False
            log.warning("the delete spool in %s is written again", self._file.root)
        return True

    def _answer(self, batch: list[tuple[bytes, Pending, Reply]], written: bool) -> None:
        if not batch:
            return
        if self._on_spooled is not None:
            self._on_spooled(len(batch), written)
        writes = self._client_writes
        writes.hold()
        try:
            for _, pending, failure in batch:
                pending.resolve(SPOOLED if written else failure)
        finally:
            writes.release()
