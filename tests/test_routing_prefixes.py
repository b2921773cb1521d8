"""Routing prefixes in memory: which roots a prefix reaches, and what the router
does with one, several or none (mcrouter's RouteHandleMap and RootRoute)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import pytest

from mcrouter_trio.downstream._router import Router, RouterSettings
from mcrouter_trio.messages import Op, Pending, Reply, Request, Result
from mcrouter_trio.ops._stats import ProxyStats
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.routing._tree import RouteTree
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.testing import FakeContext

SERVERS = {name: ServerSpec("127.0.0.1", 6000 + index) for index, name in enumerate("abcdef")}
ROUTES = {name: DestinationRoute(server) for name, server in SERVERS.items()}

# Config order on purpose not default-first: the default root still comes first.
ROOTS = {
    b"/b/b/": ROUTES["e"],
    b"/a/b/": ROUTES["b"],
    b"/a/a/": ROUTES["a"],
    b"/a/fallback/": ROUTES["c"],
    b"/b/a/": ROUTES["d"],
    b"/b/again/": ROUTES["e"],  # the same root under a second alias
}


def tree(default: bytes = b"/a/a/", roots: dict[bytes, Any] | None = None) -> RouteTree:
    return RouteTree.build(roots or ROOTS, default, {}, "md5")


def names(routes: Iterable[Any]) -> str:
    by_route = {id(route): name for name, route in ROUTES.items()}
    return "".join(by_route[id(route)] for route in routes)


LOOKUPS = [
    (b"/a/a/", "a"),  # an alias
    (b"/b/a/", "d"),
    (b"/*/*/", "aebcd"),  # every root once, the default first, then config order
    (b"/a/*/", "abc"),  # the default's region, the default first
    (b"/b/*/", "ed"),
    (b"/z/*/", ""),  # a region with no root: no fallback for patterns
    (b"/*/a/", "ad"),  # globs: * matches within one part
    (b"/b*/*/", "ed"),
    (b"/*/*a*/", "acde"),
    (b"/b/*a*/", "de"),
    (b"/*/nothing/", ""),
    (b"/a/unknown/", "c"),  # an unknown cluster: /region/fallback/
    (b"/b/unknown/", ""),  # no /b/fallback/
    (b"/z/z/", ""),
]


@pytest.mark.parametrize(("prefix", "expected"), LOOKUPS)
def test_targets_for_a_prefix(prefix: bytes, expected: str) -> None:
    assert names(tree().targets_for(prefix)) == expected


def test_the_default_root_comes_first_whatever_the_default_is() -> None:
    assert names(tree(b"/b/a/").targets_for(b"/*/*/")) == "debac"


def test_lookups_without_a_glob_are_worked_out_when_the_tree_is_built() -> None:
    built = tree()
    assert set(built.lookup) == {*ROOTS, b"/*/*/", b"/a/*/", b"/b/*/"}


# ---------------------------------------------------------------------------
# The router: one target, several, none


class Context(FakeContext):
    """FakeContext plus the one ProxyContext method the router calls when built."""

    def prepare(self, tree: RouteTree) -> None:
        pass


def router(send_invalid_route_to_default: bool = False) -> tuple[Router, Context]:
    ctx = Context()
    settings = RouterSettings(
        default_route=b"/a/a/", send_invalid_route_to_default=send_invalid_route_to_default
    )
    routed = Router(tree(), cast(Any, ctx), ProxyStats(), settings)
    return routed, ctx


def sent_to(ctx: FakeContext) -> str:
    by_server = {server: name for name, server in SERVERS.items()}
    return "".join(by_server[sent.server] for sent in ctx.sent)


def reply_of(pending: Pending) -> Reply | None:
    return pending.reply


STORED = Reply(Result.STORED, b"STORED\r\n")
NOT_STORED = Reply(Result.NOTSTORED, b"NOT_STORED\r\n")


def test_a_prefix_reaching_several_roots_answers_with_the_first_ones_reply() -> None:
    routed, ctx = router()
    pending = routed.route(Request(Op.SET, b"/*/*/k", args=(b"0", b"0", b"1"), data=b"v"))
    assert sent_to(ctx) == "aebcd"
    assert [sent.request.key for sent in ctx.sent] == [b"k"] * 5  # prefix stripped
    for sent in ctx.sent[1:]:
        sent.answer(NOT_STORED)  # the others do not decide the reply...
    assert reply_of(pending) is None
    ctx.sent[0].answer(STORED)
    assert reply_of(pending) is STORED
    assert ctx.background.started == 4  # ...they ran in the background
    assert ctx.background.in_flight == 0


def test_the_first_reply_is_returned_even_while_the_others_are_still_out() -> None:
    routed, ctx = router()
    pending = routed.route(Request(Op.DELETE, b"/a/*/k"))
    assert sent_to(ctx) == "abc"
    ctx.sent[0].answer(Reply(Result.DELETED, b"DELETED\r\n"))
    assert pending.reply is not None
    assert pending.reply.raw == b"DELETED\r\n"
    assert ctx.background.in_flight == 2


def test_a_prefix_with_no_root_is_no_rh_found() -> None:
    routed, ctx = router()
    reply = routed.route(Request(Op.GET, b"/z/z/k")).reply
    assert reply is not None
    assert reply.raw == b"SERVER_ERROR RootRoute: No rh found\r\n"
    assert ctx.sent == []


def test_send_invalid_route_to_default_routes_it_as_if_it_had_no_prefix() -> None:
    routed, ctx = router(send_invalid_route_to_default=True)
    pending = routed.route(Request(Op.GET, b"/z/z/k"))
    assert sent_to(ctx) == "a"
    assert ctx.sent[0].request.key == b"k"
    ctx.sent[0].answer(Reply(Result.FOUND, b"VALUE k 0 1\r\nv\r\nEND\r\n"))
    assert pending.reply is not None
    assert pending.reply.raw == b"VALUE /z/z/k 0 1\r\nv\r\nEND\r\n"


def test_a_get_through_several_roots_answers_from_the_default() -> None:
    routed, ctx = router()
    pending = routed.route_get(Request(Op.GET, b"/*/a/k"))
    assert sent_to(ctx) == "ad"
    ctx.sent[0].answer(Reply(Result.NOTFOUND, b"END\r\n"))
    assert pending.reply is not None
    assert pending.reply.raw == b"END\r\n"
