"""What every route handle shares: the routing protocol and reply helpers.

A route handle is a frozen attrs value built from the config. Routing is
synchronous and callback-driven: `route(request, ctx)` returns a `Pending` at once,
and composite handles combine their children's `Pending`s with callbacks. No task
is spawned per request; the only I/O happens in the destinations behind
`ctx.send`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

from mcrouter_trio.messages import (
    GET_LIKE,
    UPDATE_LIKE,
    Op,
    Pending,
    Reply,
    Request,
    Result,
    error_reply,
)
from mcrouter_trio.routing._specs import ServerSpec

log = logging.getLogger("mcrouter_trio.routing")


class RouteContext(Protocol):
    """What route handles may use at run time (owned by the proxy, not the config)."""

    rng: random.Random
    host_id: int

    def send(self, server: ServerSpec, request: Request) -> Pending:
        """Queue `request` on the shared pipelined connection to `server`."""
        ...


class Route(Protocol):
    def route(self, request: Request, ctx: RouteContext) -> Pending: ...

    def children(self) -> list[Route]:
        """Every route this one may send to (for `__mcrouter__.route`, flush_all, ...)."""
        ...


def chain(source: Pending, step: Callable[[Reply], Reply | Pending]) -> Pending:
    """A Pending for `step(reply)` once `source` resolves.

    A bug in `step` must not leave a client waiting for ever or break the
    destination that resolved `source`: the exception becomes an error reply.
    """
    out = Pending()

    def on_reply(reply: Reply) -> None:
        try:
            produced = step(reply)
        except Exception:
            log.exception("route handle failed")
            out.resolve(error_reply(Result.LOCAL_ERROR, "Error routing request"))
            return
        if isinstance(produced, Pending):
            produced.then(out.resolve)
        else:
            out.resolve(produced)

    source.then(on_reply)
    return out


def meta_echo(request: Request) -> bytes:
    """Return flags memcached reflects on every meta reply: O(opaque), k, b."""
    parts = []
    for flag in request.args:
        first = flag[:1]
        if first == b"O":
            parts.append(flag)
        elif flag == b"k":
            parts.append(b"k" + request.key)
        elif flag == b"b":
            parts.append(b"b")
    return b"".join(b" " + part for part in parts)


def default_reply(request: Request) -> Reply:
    """mcrouter's DefaultReply: what "nothing happened" looks like for each command."""
    op = request.op
    if op in GET_LIKE:
        return Reply(Result.NOTFOUND, b"END\r\n")
    if op is Op.MG or op is Op.ME:
        return Reply(Result.NOTFOUND, b"EN" + meta_echo(request) + b"\r\n")
    if op is Op.MS:
        return Reply(Result.NOTSTORED, b"NS" + meta_echo(request) + b"\r\n")
    if op is Op.MD or op is Op.MA:
        return Reply(Result.NOTFOUND, b"NF" + meta_echo(request) + b"\r\n")
    if op in UPDATE_LIKE:
        return Reply(Result.NOTSTORED, b"NOT_STORED\r\n")
    return Reply(Result.NOTFOUND, b"NOT_FOUND\r\n")


def policy_name(request: Request) -> str:
    """The operation name OperationSelectorRoute matches (mcrouter's names).

    Meta commands are routed like their classic counterparts, so an existing
    config with `get`/`set`/`delete` policies also covers mg/ms/md/ma clients.
    """
    op = request.op
    if op is Op.MG or op is Op.ME:
        return "get"
    if op is Op.MD:
        return "delete"
    if op is Op.MA:
        decr = any(flag[:1] == b"M" and flag[1:2] in (b"D", b"d", b"-") for flag in request.args)
        return "decr" if decr else "incr"
    if op is Op.MS:
        if any(flag[:1] == b"C" for flag in request.args):
            return "cas"
        for flag in request.args[1:]:
            if flag[:1] == b"M":
                return _MS_MODES.get(flag[1:2].upper(), "set")
        return "set"
    return op.name.lower()


_MS_MODES = {b"E": "add", b"A": "append", b"P": "prepend", b"R": "replace", b"S": "set"}
