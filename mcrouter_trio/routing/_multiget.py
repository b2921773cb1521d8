"""Multi-key gets taken apart and put together again (pure).

mcrouter routes each key of a multi-get on its own; the proxy merges the per-key
replies in the client's key order (`merge`), and when it sends the keys bound for
one server as one multi-key get, `split_multiget` gives each key the reply it
would have had on its own.
"""

from __future__ import annotations

from mcrouter_trio.messages import Pending, Reply, Result
from mcrouter_trio.protocol import values


def merge(replies: list[Reply]) -> Reply:
    """One multi-get reply from per-key replies, in the client's key order.

    Hits come first in key order (duplicates repeated, as memcached does); if any
    key failed, the first error (in key order) takes the place of END, which is
    mcrouter's rule for multi-get errors.
    """
    blocks = []
    error: Reply | None = None
    for reply in replies:
        if reply.result is Result.FOUND:
            blocks.append(reply.raw[:-5])  # drop the per-key "END\r\n"
        elif reply.is_error and error is None:
            error = reply
    if error is not None:
        return Reply(error.result, b"".join(blocks) + error.raw)
    result = Result.FOUND if blocks else Result.NOTFOUND
    return Reply(result, b"".join(blocks) + b"END\r\n")


def split_multiget(fragments: list[tuple[bytes, Pending]], reply: Reply) -> None:
    """Give each key of a batched get its own reply, as if it had been sent alone."""
    if reply.result is not Result.FOUND and not reply.raw.startswith(b"VALUE "):
        for _key, pending in fragments:  # a miss for every key, or one error for all
            pending.resolve(reply if reply.is_error else Reply(Result.NOTFOUND, b"END\r\n"))
        return
    blocks: dict[bytes, bytes] = {}
    end = 0
    for key, _header, block in values(reply.raw):
        blocks.setdefault(key, block)
        end += len(block)
    # After the blocks: END, or the error that cut the reply short.
    rest = reply.raw[end:]
    miss = Reply(Result.NOTFOUND, rest) if rest == b"END\r\n" else Reply(reply.result, rest)
    for key, pending in fragments:
        hit = blocks.get(key)
        pending.resolve(miss if hit is None else Reply(Result.FOUND, hit + b"END\r\n"))
