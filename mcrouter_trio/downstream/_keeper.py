"""Who owns client sessions: one keeper per proxy, and no task per connection.

The `ClientReactor` does every session's I/O; the `SessionKeeper` owns their
lifetimes. An idle connection is therefore a slotted `ClientSession` (its
descriptor, a few flags) and an epoll registration, not a Trio task, a coroutine
frame and socket wrappers: about 0.6 KB of memory instead of 4.5 KB.

A session that finishes (the client closed, `quit`, a broken socket, shutdown)
tells the keeper, which closes its connection gracefully: FIN after the last reply,
then the client's input is read and dropped until the replies are delivered.
Closing a socket with unread input makes the kernel send RST, and RST discards
whatever of our replies it has not yet delivered. Most connections close at once
(the client has closed too, or has acknowledged everything); the rest linger, and
the keeper's task (`run`, in the connection nursery) polls them until they are
done or `LINGER_SECONDS` have passed.

Shutdown: `drain` makes every session stop reading and answer what it has read;
`run` returns once every session is closed. If the grace period runs out first,
the connection nursery cancels `run`, which closes every connection left at once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import termios
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio

from mcrouter_trio.downstream._reactor import ClientReactor
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.transport._socket import Parker

if TYPE_CHECKING:
    from mcrouter_trio.downstream._session import ClientSession

log = logging.getLogger("mcrouter_trio.downstream")

#: The longest a closed connection waits for its replies to be delivered.
LINGER_SECONDS: Final = 2.0
_LINGER_POLL_SECONDS: Final = 0.01
_DROP_SIZE: Final = 65536

Close = Callable[[], None]


class SessionKeeper:
    """Opens client sessions, closes their connections, drains them at shutdown."""

    def __init__(self, reactor: ClientReactor, stats: ProxyStats) -> None:
        self._reactor = reactor
        self._stats = stats
        #: Connections closed on our side, waiting for their replies to be delivered:
        #: descriptor -> (deadline, close). They still count in `curr_connections`.
        self._lingering: dict[int, tuple[float, Close]] = {}
        self._draining = False
        #: The grace period is over: connections close at once, delivered or not.
        self._closing_all = False
        self._wake = Parker()

    def open(self, session: ClientSession) -> None:
        """Serve `session` (counted in `curr_connections` until its connection closes)."""
        self._stats.curr_connections += 1
        self._stats.total_connections += 1
        try:
            session.start()
        except Exception:
            log.exception("client session failed to start; closing its connection")
            session.stop()

    def finished(self, session: ClientSession) -> None:
        """`session` will read and write nothing more: close its connection."""
        self._reactor.remove(session)
        if session.abandoned or self._closing_all:
            self._close(session.close_socket)
        else:
            self._close_gracefully(session.fd, session.close_socket)
        if self._draining and not self._reactor.clients:
            self._wake.wake()

    def _close_gracefully(self, fd: int, close: Close) -> None:
        """FIN now; `close` once the client has what we sent, or closed, or after a while."""
        try:
            _shutdown_writes(fd)
        except OSError:
            self._close(close)  # already broken: nothing left to deliver
            return
        if _delivered_or_closed(fd):
            self._close(close)
            return
        self._lingering[fd] = (trio.current_time() + LINGER_SECONDS, close)
        self._wake.wake()

    def drain(self) -> None:
        """Shutdown: every session reads no more, answers what it has read, then closes."""
        self._draining = True
        for session in list(self._reactor.clients.values()):
            session.drain()
        self._wake.wake()

    async def run(self) -> None:
        """Close lingering connections; at shutdown, return once every one is closed."""
        try:
            while True:
                if self._lingering:
                    await trio.sleep(_LINGER_POLL_SECONDS)
                    self._poll_lingering()
                elif self._draining and not self._reactor.clients:
                    return
                else:
                    await self._wake.park()
        finally:
            self._close_all()

    def _poll_lingering(self) -> None:
        now = trio.current_time()
        for fd, (deadline, close) in list(self._lingering.items()):
            if now >= deadline or _delivered_or_closed(fd):
                del self._lingering[fd]
                self._close(close)

    def _close_all(self) -> None:
        """Cancelled (the grace period is over): close every connection left at once."""
        self._closing_all = True
        for session in list(self._reactor.clients.values()):
            session.stop()
        lingering, self._lingering = self._lingering, {}
        for _deadline, close in lingering.values():
            self._close(close)

    def _close(self, close: Close) -> None:
        self._stats.curr_connections -= 1
        try:
            close()
        except OSError as exc:
            if exc.errno != errno.EBADF:
                log.warning("closing a client connection failed: %s", exc)


def _shutdown_writes(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_WR)
    finally:
        sock.detach()


def _delivered_or_closed(fd: int) -> bool:
    """Drop the client's input; True once it closed or acknowledged every byte sent."""
    while True:
        try:
            if not os.read(fd, _DROP_SIZE):
                return True  # the client closed: nothing can be reset any more
        except BlockingIOError:
            break
        except OSError:
            return True  # reset or broken: nothing left to deliver
    return not _undelivered(fd)


def _undelivered(fd: int) -> int:
    """Bytes sent (our FIN included) that the client has not acknowledged."""
    try:
        size: int = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0
    return size
