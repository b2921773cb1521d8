"""The reliable delete stream, routing side (mcrouter's AsynclogRoute).

Not a config type: PoolRoute does it for the deletes it routes unless its
`asynclog` is false or the proxy runs with `--asynclog-disable`. A delete its
server answers with a failover-type error (connect error, timeout, TKO, remote
error, ...) is handed to the context's spool, and the client gets mcrouter's reply
for a spooled delete (`NOT_FOUND`) once the record is on disk: the proxy replays it
when the server is back (`ops/_replay.py`). Other replies pass through.
"""

from __future__ import annotations

from mcrouter_trio.messages import FAILOVER_ERRORS, Pending, Reply, Request
from mcrouter_trio.routing._base import DeleteSpool, Route, RouteContext
from mcrouter_trio.routing._combinators import sequence
from mcrouter_trio.routing.handles.destination import DestinationRoute, split_routing_prefix


def route_spooling_failures(
    child: Route,
    destination: DestinationRoute,
    request: Request,
    ctx: RouteContext,
    spool: DeleteSpool,
    pool: str,
) -> Pending:
    """Route a delete to `child` (the slot of `destination`, maybe shadowed); spool it if
    the server fails it."""

    def spool_failure(reply: Reply) -> Reply | Pending:
        if reply.result not in FAILOVER_ERRORS:
            return reply
        key = request.key
        if not destination.keep_routing_prefix:
            key = split_routing_prefix(key)[1]
        return spool.spool(destination.server, key, pool, reply)

    return sequence(child.route(request, ctx), spool_failure, name="AsynclogRoute")
