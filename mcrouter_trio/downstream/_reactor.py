"""The client reactor: one Trio task doing the socket I/O of every client session.

Trio parks a task per wait and re-arms its one-shot epoll registration every time,
which costs a wake-up and a syscall per request when every client has a task that
waits for its socket. The reactor keeps client sockets in an epoll object of its
own instead, level-triggered and changed only when a session stops or resumes
reading, and waits for that epoll's descriptor in Trio. The sessions (see
session.py) do the work; the reactor only tells them what their socket is ready for.
"""

from __future__ import annotations

import contextlib
import select
from typing import Protocol

import trio

from mcrouter_trio.transport._socket import WriteBatch


class ReactorClient(Protocol):
    """What the reactor needs of a session."""

    fd: int
    #: The epoll interest currently registered (None: not registered).
    interest: int | None

    @property
    def finished(self) -> bool: ...

    @property
    def unanswered(self) -> int: ...

    def on_readable(self) -> None: ...

    def on_writable(self) -> None: ...

    def on_hangup(self) -> None: ...

    def fail(self) -> None: ...

    def drain(self) -> None: ...

    def stop(self) -> None: ...


class ClientReactor:
    """One task that does the reading and blocked writing of every client session.

    One wake-up handles every client that sent something, so their requests leave
    for each backend in one write.
    """

    def __init__(self, backend_writes: WriteBatch | None = None) -> None:
        self._epoll = select.epoll()
        #: Requests routed in one pass reach each server in one write, at its end.
        self._backend_writes = backend_writes or WriteBatch()
        #: Every session being served, by descriptor (the `SessionKeeper` adds and
        #: removes them; a finished session is removed before its descriptor closes).
        self.clients: dict[int, ReactorClient] = {}

    def add(self, session: ReactorClient) -> None:
        self._epoll.register(session.fd, select.EPOLLIN)
        session.interest = select.EPOLLIN
        self.clients[session.fd] = session

    def modify(self, session: ReactorClient, interest: int) -> None:
        self._epoll.modify(session.fd, interest)
        session.interest = interest

    def remove(self, session: ReactorClient) -> None:
        if self.clients.get(session.fd) is session:
            del self.clients[session.fd]
            # ValueError: the epoll is closed already (the reactor stopped first).
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(session.fd)
        session.interest = None

    async def run(self) -> None:
        epoll = self._epoll
        sessions = self.clients
        backend_writes = self._backend_writes
        hangup = select.EPOLLHUP | select.EPOLLERR
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                backend_writes.hold()
                try:
                    for fd, events in epoll.poll(0):
                        session = sessions.get(fd)
                        if session is None or session.finished:
                            continue
                        try:
                            if events & select.EPOLLIN:
                                session.on_readable()
                            elif events & select.EPOLLOUT:
                                session.on_writable()
                            elif events & hangup:
                                session.on_hangup()
                        except Exception:
                            session.fail()  # one client's failure must not stop the reactor
                finally:
                    backend_writes.release()
        finally:
            epoll.close()
