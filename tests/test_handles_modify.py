"""ModifyKeyRoute and ModifyExptimeRoute in memory: what reaches the child (one row per rule)."""

from __future__ import annotations

from typing import Any

import pytest
from handle_helpers import HIT, destinations, request

from mcrouter_trio.messages import Reply, Result
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.handles.modify import ModifyExptimeRoute, ModifyKeyRoute
from mcrouter_trio.routing.testing import FakeContext

(CHILD,) = destinations(1)
#: A child that sends keys with their routing prefix, so the tests see the whole key.
KEEPING = DestinationRoute(CHILD.server, keep_routing_prefix=True)

KEY_ROWS = [
    # (options, client key, key sent)
    pytest.param({"ensure_key_prefix": "foo:"}, b"bar", b"foo:bar", id="ensure-adds"),
    pytest.param({"ensure_key_prefix": "foo:"}, b"foo:bar", b"foo:bar", id="ensure-present"),
    pytest.param(
        {"ensure_key_prefix": "foo:", "modify_inplace": True}, b"abcdbar", b"foo:bar",
        id="inplace-overwrites",
    ),
    pytest.param(
        {"ensure_key_prefix": "foo:", "modify_inplace": True}, b"ab", b"foo:ab",
        id="inplace-short-key-prepends",
    ),
    pytest.param(
        {"ensure_key_prefix": "new:", "replace_key_prefix": "old:"}, b"old:k", b"new:k",
        id="replace",
    ),
    pytest.param(
        {"ensure_key_prefix": "new:", "replace_key_prefix": "old:"}, b"k", b"new:k",
        id="replace-absent-ensures",
    ),
    pytest.param({"set_key_suffix": ":v2"}, b"k", b"k:v2", id="suffix"),
    pytest.param({"set_routing_prefix": "/a/b/"}, b"k", b"/a/b/k", id="routing-prefix-added"),
    pytest.param({"set_routing_prefix": "/a/b/"}, b"/c/d/k", b"/a/b/k", id="routing-prefix-set"),
    pytest.param({"set_routing_prefix": ""}, b"/c/d/k", b"k", id="routing-prefix-dropped"),
    pytest.param(
        {"set_routing_prefix": "/a/b/", "ensure_key_prefix": "p"}, b"/c/d/k", b"/a/b/pk",
        id="prefix-and-routing-prefix",
    ),
    pytest.param({"ensure_key_prefix": "p"}, b"/c/d/k", b"/c/d/pk", id="keeps-routing-prefix"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "key", "sent"), KEY_ROWS)
def test_modify_key(options: dict[str, Any], key: bytes, sent: bytes) -> None:
    ctx = FakeContext()
    ModifyKeyRoute(KEEPING, **options).route(request(b"delete " + key + b"\r\n"), ctx)
    assert ctx.sent[0].request.key == sent


def test_modify_key_sends_an_unchanged_request_itself() -> None:
    ctx = FakeContext()
    req = request(b"get foo:k\r\n")
    ModifyKeyRoute(CHILD, ensure_key_prefix="foo:").route(req, ctx)
    assert ctx.sent[0].request is req


def test_modify_key_shows_the_client_its_own_key() -> None:
    ctx = FakeContext()
    pending = ModifyKeyRoute(CHILD, ensure_key_prefix="p:").route(request(b"get k\r\n"), ctx)
    assert ctx.sent[0].request.to_wire() == b"get p:k\r\n"
    ctx.sent[0].answer(Reply(Result.FOUND, b"VALUE p:k 5 1\r\nv\r\nEND\r\n"))
    assert pending.reply is not None and pending.reply.raw == b"VALUE k 5 1\r\nv\r\nEND\r\n"
    meta = ModifyKeyRoute(CHILD, ensure_key_prefix="p:").route(request(b"mg k k v\r\n"), ctx)
    assert ctx.sent[1].request.key == b"p:k"
    ctx.sent[1].answer(Reply(Result.FOUND, b"VA 1 kp:k\r\nv\r\n"))
    assert meta.reply is not None and meta.reply.raw == b"VA 1 kk\r\nv\r\n"


def test_modify_key_too_long_is_an_error_and_nothing_is_sent() -> None:
    ctx = FakeContext()
    route = ModifyKeyRoute(CHILD, set_key_suffix="x" * 10)
    pending = route.route(request(b"get " + b"k" * 245 + b"\r\n"), ctx)
    assert pending.reply is not None
    assert (
        pending.reply.raw == b"SERVER_ERROR ModifyKeyRoute: invalid key: invalid key: too long\r\n"
    )
    assert ctx.sent == []


EXPTIME_ROWS = [
    # (exptime, action, client request, what the child gets)
    pytest.param(10, "set", b"set k 1 0 1\r\nv\r\n", b"set k 1 10 1\r\nv\r\n", id="set-replaces"),
    pytest.param(10, "set", b"set k 1 99 1\r\nv\r\n", b"set k 1 10 1\r\nv\r\n", id="set-always"),
    pytest.param(10, "min", b"set k 1 0 1\r\nv\r\n", b"set k 1 10 1\r\nv\r\n", id="min-zero"),
    pytest.param(10, "min", b"add k 1 99 1\r\nv\r\n", b"add k 1 10 1\r\nv\r\n", id="min-longer"),
    pytest.param(10, "min", b"set k 1 5 1\r\nv\r\n", b"set k 1 5 1\r\nv\r\n", id="min-shorter"),
    pytest.param(10, "min", b"set k 1 -1 1\r\nv\r\n", b"set k 1 -1 1\r\nv\r\n", id="min-negative"),
    pytest.param(0, "min", b"set k 1 99 1\r\nv\r\n", b"set k 1 99 1\r\nv\r\n", id="min-0-no-op"),
    pytest.param(10, "set", b"touch k 99\r\n", b"touch k 10\r\n", id="touch"),
    pytest.param(10, "set", b"gat 99 a b\r\n", b"gat 10 a b\r\n", id="gat"),
    pytest.param(10, "set", b"delete k\r\n", b"delete k\r\n", id="delete-untouched"),
    pytest.param(10, "set", b"get k\r\n", b"get k\r\n", id="get-untouched"),
    pytest.param(10, "set", b"incr k 1\r\n", b"incr k 1\r\n", id="incr-untouched"),
    pytest.param(10, "set", b"ms k 1 T99 F3\r\nv\r\n", b"ms k 1 T10 F3\r\nv\r\n", id="ms-ttl"),
    pytest.param(10, "set", b"ms k 1\r\nv\r\n", b"ms k 1 T10\r\nv\r\n", id="ms-no-ttl-is-0"),
    pytest.param(10, "min", b"ms k 1 T5\r\nv\r\n", b"ms k 1 T5\r\nv\r\n", id="ms-min-shorter"),
    pytest.param(10, "set", b"mg k v T99\r\n", b"mg k v T10\r\n", id="mg-touch"),
    pytest.param(10, "set", b"mg k v\r\n", b"mg k v\r\n", id="mg-read-untouched"),
    pytest.param(10, "set", b"md k\r\n", b"md k\r\n", id="md-untouched"),
]


@pytest.mark.parametrize(("exptime", "action", "wire", "sent"), EXPTIME_ROWS)
def test_modify_exptime(exptime: int, action: str, wire: bytes, sent: bytes) -> None:
    ctx = FakeContext()
    pending = ModifyExptimeRoute(CHILD, exptime, action).route(request(wire), ctx)
    assert ctx.sent[0].request.to_wire() == sent
    ctx.sent[0].answer(HIT)
    assert pending.reply is HIT
