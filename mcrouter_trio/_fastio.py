"""A thin fast path for plain TCP streams, and a cheap way to wait for a `Pending`.

Trio's `SocketStream.send_all`/`receive_some` add a checkpoint, a conflict
detector and a context manager to every call: a few microseconds each, paid twice
per proxied request. For plain TCP the proxy instead tries the non-blocking
syscall first and parks in `wait_readable`/`wait_writable` only when the socket
would block. TLS streams keep Trio's implementation.

Skipping Trio's checkpoints means a loop that never blocks could starve other
tasks; callers that did not park during an iteration call `checkpoint()`
(`Yielder`) so the scheduler still gets its turn.
"""

from __future__ import annotations

import os

import trio

from mcrouter_trio.messages import Pending, Reply


class FastSocketIO:
    """`receive_some`/`send_all` on a connected non-blocking TCP socket."""

    __slots__ = ("_fd", "_socket", "parked")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._socket = stream.socket
        self._fd = stream.socket.fileno()
        #: Set whenever a call had to wait: the caller then needs no extra checkpoint.
        self.parked = False

    async def receive_some(self, max_bytes: int) -> bytes:
        while True:
            try:
                return os.read(self._fd, max_bytes)
            except BlockingIOError:
                self.parked = True
                await trio.lowlevel.wait_readable(self._socket)
            except (ConnectionResetError, TimeoutError):
                return b""
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                self.parked = True
                await trio.lowlevel.wait_writable(self._socket)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            view = view[sent:]


async def wait_for(pending: Pending) -> Reply:
    """Park the current task until `pending` resolves (no Event, no channel)."""
    if pending.reply is not None:
        return pending.reply
    task = trio.lowlevel.current_task()
    waiting = [True]
    result: list[Reply] = []

    def wake(reply: Reply) -> None:
        result.append(reply)
        if waiting[0]:
            waiting[0] = False
            trio.lowlevel.reschedule(task)

    def abort(_raise_cancel: object) -> trio.lowlevel.Abort:
        waiting[0] = False
        return trio.lowlevel.Abort.SUCCEEDED

    pending.then(wake)
    await trio.lowlevel.wait_task_rescheduled(abort)
    return result[0]
