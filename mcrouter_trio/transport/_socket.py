"""Thin fast paths around Trio for plain TCP, and cheap ways to wait.

Trio's `SocketStream.send_all`/`receive_some` add a checkpoint, a conflict
detector and a context manager to every call, and a Trio task switch costs
about 3 µs here: each is paid per proxied request unless avoided. For plain TCP
the proxy uses non-blocking syscalls directly and parks in
`wait_readable`/`wait_writable` only when the socket would block. TLS
connections get the same treatment from `TLSSocket` (`_tls.py`).
"""

from __future__ import annotations

import os
from typing import Protocol

import trio


class FastSocketIO:
    """`receive_some`/`send_all` on a connected non-blocking TCP socket."""

    __slots__ = ("_fd", "_read_first", "_socket")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._socket = stream.socket
        self._fd = stream.socket.fileno()
        self._read_first = True

    async def receive_some(self, max_bytes: int) -> bytes:
        if self._read_first:
            # The last read filled the buffer: more is probably waiting. Reading
            # without parking needs a checkpoint so other tasks still get a turn.
            await trio.lowlevel.checkpoint()
        else:
            # A short read emptied the socket: a read now would almost surely block.
            await trio.lowlevel.wait_readable(self._socket)
        while True:
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._socket)
                continue
            except (ConnectionResetError, TimeoutError):
                return b""
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            self._read_first = len(data) == max_bytes
            return data

    def write_now(self, data: bytes | bytearray) -> int:
        """Write what the socket takes without waiting; the count written. OSError if broken."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._socket)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            view = view[sent:]


class Parker:
    """One task parks until another wakes it: a one-waiter event without allocation."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    async def park(self) -> None:
        self._task = trio.lowlevel.current_task()

        def abort(_raise_cancel: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def wake(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)


class Flushable(Protocol):
    def flush(self) -> None: ...

    def fail(self) -> None: ...


class WriteBatch:
    """Batches writes made while a task works through a batch of input.

    Two run per process. Replies: a destination's reader resolves many replies per
    read, and each touched client session is written once when the read is done.
    Requests: the reactor routes every ready client's requests in one pass, and each
    touched destination writes to its server once when the pass is done (and a
    reader's replies may send requests too, from warm-up or failover routes).
    Between `hold` and `release` each touched party only asks to be flushed;
    `release` flushes every one of them once. Outside a hold (a reply failed by a
    timeout, a request sent from a timer) the flush happens at once.
    """

    __slots__ = ("_holds", "_requested")

    def __init__(self) -> None:
        self._requested: list[Flushable] = []
        self._holds = 0

    def request(self, party: Flushable) -> None:
        if self._holds:
            self._requested.append(party)
        else:
            _flush(party)

    def hold(self) -> None:
        self._holds += 1

    def release(self) -> None:
        self._holds -= 1
        if not self._holds and self._requested:
            requested = self._requested
            self._requested = []
            for party in requested:
                try:
                    party.flush()
                except Exception:
                    party.fail()  # as in `_flush`, inlined: this loop runs per request


def _flush(party: Flushable) -> None:
    try:
        party.flush()
    except Exception:
        # Runs in a task that serves many: a bug must cost one party, not all.
        party.fail()
