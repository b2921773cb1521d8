"""Accept loops that ride out descriptor exhaustion without a log line per retry.

`trio.serve_listeners` logs a traceback every 0.1 s while accept fails with
EMFILE. Here an episode of such failures is logged twice: when it starts, and
when accepting works again, with how many accepts failed in between. Meanwhile
each loop waits 0.1 s between attempts (never a busy loop); new clients wait in
the listen backlog, and are served once descriptors are free again.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from typing import Final

import trio

log = logging.getLogger("mcrouter_trio.downstream")

#: accept(2) errors that mean the process or the system is out of something.
CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
RETRY_SECONDS: Final = 0.1

#: Takes an accepted connection over at once, in the accept loop (it never raises):
#: a plain one becomes a session of the reactor, a TLS one starts its handshake task.
Handler = Callable[[trio.SocketStream], None]


class AcceptShortage:
    """One process's episodes of failed accepts, shared by its listeners."""

    def __init__(self) -> None:
        self.failures = 0
        self._since: float | None = None

    def failed(self, exc: OSError) -> None:
        self.failures += 1
        if self._since is None:
            self._since = time.monotonic()
            log.warning(
                "cannot accept connections: %s (%s); new clients wait until descriptors are free",
                errno.errorcode.get(exc.errno or 0, exc.errno),
                os.strerror(exc.errno or 0),
            )

    def accepted(self) -> None:
        if self._since is not None:
            log.warning(
                "accepting connections again after %d failed accepts in %.1f s",
                self.failures,
                time.monotonic() - self._since,
            )
            self._since = None
            self.failures = 0


async def serve_listener(
    listener: trio.SocketListener, handler: Handler, shortage: AcceptShortage
) -> None:
    """Accept connections until cancelled, handing each to `handler`."""
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                shortage.failed(exc)
                await trio.sleep(RETRY_SECONDS)
                continue
            shortage.accepted()
            handler(stream)
