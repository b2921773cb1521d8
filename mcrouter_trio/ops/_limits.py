"""Descriptor limits: the open-files limit the proxy runs under, and the client cap it implies.

Every client connection costs the proxy one descriptor, and so does every server
connection, listener and file it opens. memcached and mcrouter raise the soft
`RLIMIT_NOFILE` to the hard limit at start; so does mcrouter-trio. Without
`--max-conns`, the client cap is that limit less room for the proxy's own
descriptors, so that a client over the cap can still be accepted and told
`ERROR Too many open connections` instead of waiting in the listen backlog.
"""

from __future__ import annotations

import logging
import resource
from typing import Final

log = logging.getLogger("mcrouter_trio.ops")

#: Descriptors kept for the process itself: standard streams, Trio's epoll and wake-up
#: pipe, the client reactor's epoll, the log file, the stats board, TLS files read at
#: a reload, and clients being refused.
RESERVED_DESCRIPTORS: Final = 32
#: Per server: its connection, and the next one while a broken one is being replaced.
DESCRIPTORS_PER_SERVER: Final = 2
_NR_OPEN: Final = "/proc/sys/fs/nr_open"


def raise_open_files_limit() -> int:
    """Raise the soft `RLIMIT_NOFILE` to the hard limit; return the soft limit now in force.

    An unlimited hard limit is taken as the kernel's ceiling (`fs.nr_open`). The
    result is `resource.RLIM_INFINITY` when the soft limit is unlimited already.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _kernel_ceiling()
    if soft == resource.RLIM_INFINITY or target is None or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def _kernel_ceiling() -> int | None:
    try:
        with open(_NR_OPEN) as file:
            return int(file.read())
    except (OSError, ValueError):
        return None


def default_max_conns(open_files: int, *, servers: int, listeners: int) -> int:
    """The client cap for `--max-conns 0`: the open-files limit less the proxy's own needs.

    0 (no cap) when the limit is unlimited; at least 1 however low the limit.
    """
    if open_files == resource.RLIM_INFINITY:
        return 0
    reserve = RESERVED_DESCRIPTORS + listeners + DESCRIPTORS_PER_SERVER * servers
    return max(open_files - reserve, 1)
