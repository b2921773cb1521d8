"""What mcrouter hashes: the routing key (``lib/carbon/Keys-inl.h``).

Two parts of a request key never influence routing: a leading routing prefix
``/<region>/<cluster>/`` (only recognised when the key starts with ``/`` and has two
more ``/`` after it) and everything from the first hash stop ``|#|`` on.  So
``/a/a/foo:1|#|x``, ``/b/b/foo:1|#|y`` and ``foo:1`` all route alike.  Only the
routing computation uses this reduced key; the key sent to the server is unchanged
apart from prefix stripping, which is the caller's business.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HASH_STOP", "routing_key"]

#: Bytes after (and including) the first occurrence of this are not hashed.
HASH_STOP: Final = b"|#|"


def routing_key(key: bytes) -> bytes:
    """Return the part of ``key`` that is hashed: no routing prefix, nothing from ``|#|``."""
    if key[:1] == b"/":
        second = key.find(b"/", 1)
        if second > 0:
            third = key.find(b"/", second + 1)
            if third > 0:
                key = key[third + 1 :]
    stop = key.find(HASH_STOP)
    return key if stop < 0 else key[:stop]
