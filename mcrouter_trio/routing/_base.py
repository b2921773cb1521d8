"""What every route handle shares: the routing protocol and reply helpers.

A route handle is a frozen attrs value built from the config. Routing is
synchronous and callback-driven: `route(request, ctx)` returns a `Pending` at once,
and composite handles combine their children's `Pending`s through the combinators
in `_combinators` (which guard every callback). No task is spawned per request;
the only I/O happens behind the `RouteContext`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from mcrouter_trio.counters import ProxyCounters
from mcrouter_trio.messages import GET_LIKE, UPDATE_LIKE, Op, Pending, Reply, Request, Result

if TYPE_CHECKING:
    # Only annotations here: specs import Route (a pool's route slots).
    from mcrouter_trio.routing._specs import ServerSpec


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class BackgroundWork(Protocol):
    """Fire-and-forget requests with a cap on how many are in flight (see `background`)."""

    def start(self, name: str, send: Callable[[], Pending]) -> bool: ...


class DeleteSpool(Protocol):
    """The reliable delete stream (`--async-dir`): deletes a server failed, kept on disk."""

    def spool(self, server: ServerSpec, key: bytes, pool: str, failure: Reply) -> Pending:
        """Spool a delete of `key` that `server` answered with `failure`.

        Resolves, once the record is on disk, to the reply for a spooled delete
        (`NOT_FOUND`), or to `failure` if it could not be written.
        """
        ...


class RouteContext(Protocol):
    """What route handles may use at run time (owned by the proxy, not the config).

    Handles reach I/O only through this: `send` queues a request on the shared
    connection to a server, `now` and `call_later` give time (one timer task for
    the whole proxy, not a task per timer), `background` runs fire-and-forget work.
    """

    rng: random.Random
    host_id: int
    #: Which proxy worker routes (0 .. `--num-proxies` - 1): mcrouter's proxy thread id.
    worker_index: int
    #: Where PoolRoute spools the deletes its servers fail; None: return the error.
    asynclog: DeleteSpool | None
    #: A dry run (the admin keys' `route`): replies are made up, so handles must not
    #: learn from them (ejection counts no failure).
    dry_run: bool
    #: The proxy's counters, for the stats of routing events (failovers, ...).
    counters: ProxyCounters

    @property
    def background(self) -> BackgroundWork: ...

    def send(self, server: ServerSpec, request: Request) -> Pending:
        """Queue `request` on the shared pipelined connection to `server`."""
        ...

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        """Run `callback()` after `delay` seconds (guarded: a failure is logged)."""
        ...


#: Routes a multi-key get key by key through a route (`Route.route_whole`'s fallback).
SplitRouting = Callable[["Route", Request], Pending]


class Route(Protocol):
    def route(self, request: Request, ctx: RouteContext) -> Pending:
        """Route one request; the reply comes through the returned `Pending`."""
        ...

    def targets(self) -> Sequence[Route]:
        """Every route this one may send to (for flush_all, the route tree, admin keys)."""
        ...

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        """Route a multi-key get as one request, or None if its keys part ways.

        A handle that would send every key of `request` the same way routes the
        whole request that way, so the server answers the client's multi-get as it
        is and nothing is split or merged. A handle that cannot tell (or would
        change the reply per key) returns None, and the caller routes key by key;
        one that decides only after a reply (failover) may use `split(route,
        request)` to route the keys one by one through `route` from then on.
        """
        ...


class KeyByKey:
    """For handles whose multi-gets always go key by key: `route_whole` declines."""

    __slots__ = ()

    def route_whole(
        self, request: Request, ctx: RouteContext, split: SplitRouting
    ) -> Pending | None:
        return None


class OverChildren:
    """For handles that route to their `children` field and nothing else."""

    __slots__ = ()
    children: tuple[Route, ...]

    def targets(self) -> Sequence[Route]:
        return self.children


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
    return STATIC_POLICY_NAMES[op]


_MS_MODES = {b"E": "add", b"A": "append", b"P": "prepend", b"R": "replace", b"S": "set"}

#: The policy name of every command whose name does not depend on its flags.
STATIC_POLICY_NAMES: dict[Op, str] = {
    **{op: op.name.lower() for op in Op},
    Op.MG: "get",
    Op.ME: "get",
    Op.MD: "delete",
    Op.FLUSH_ALL: "flushall",
}
del STATIC_POLICY_NAMES[Op.MA], STATIC_POLICY_NAMES[Op.MS]

#: No route for the key: its routing prefix or key prefix matches nothing (mcrouter's text).
NO_ROUTE: Final = Reply(Result.LOCAL_ERROR, b"SERVER_ERROR RootRoute: No rh found\r\n")
