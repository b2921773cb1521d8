"""A request a route rewrites reaches the server rewritten, never as the client's bytes.

The parser keeps a plain get's own bytes (`Request.as_sent`) to skip rendering it
again; a rewritten copy must not carry them over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _routing import parse
from conftest import Memcached, Proxy, connect, direct_get, pool_config

from mcrouter_trio.messages import Op, Request
from mcrouter_trio.protocol import RequestParser

ProxyFactory = Callable[..., Proxy]


def shortcut(wire: bytes) -> Request:
    """The request for `wire` as the parser's plain-get shortcut makes it."""
    request = RequestParser().take_plain_get(wire)
    assert request is not None and request.wire == wire
    return request


@pytest.mark.parametrize(
    ("rewrite", "sent"),
    [
        pytest.param(lambda r: r.with_key(b"k"), b"get k\r\n", id="with_key"),
        pytest.param(lambda r: r.with_keys([b"k", b"x"]), b"get k x\r\n", id="with_keys"),
        pytest.param(lambda r: r.replace(key=b"k", keys=(b"k",)), b"get k\r\n", id="replace"),
        pytest.param(lambda r: r.replace(op=Op.GETS), b"gets /r/c/k\r\n", id="replace-op"),
        pytest.param(lambda r: r._replace(op=Op.GETS), b"gets /r/c/k\r\n", id="_replace-op"),
    ],
)
def test_a_rewritten_shortcut_request_is_rendered_afresh(rewrite: Any, sent: bytes) -> None:
    original = shortcut(b"get /r/c/k\r\n")
    rewritten = rewrite(original)
    assert rewritten.wire is None
    assert rewritten.to_wire() == sent
    assert original.to_wire() == b"get /r/c/k\r\n"  # the original is unchanged


@pytest.mark.parametrize(
    ("client", "exptime", "sent"),
    [
        (b"touch k 10\r\n", b"-1", b"touch k -1\r\n"),
        (b"set k 3 10 1\r\nv\r\n", b"0", b"set k 3 0 1\r\nv\r\n"),
        (b"gat 10 a b\r\n", b"99", b"gat 99 a b\r\n"),
        (b"cas k 0 5 1 77\r\nv\r\n", b"6", b"cas k 0 6 1 77\r\nv\r\n"),
    ],
)
def test_with_exptime_renders_the_new_exptime(client: bytes, exptime: bytes, sent: bytes) -> None:
    assert parse(client).with_exptime(exptime).to_wire() == sent


def test_with_exptime_refuses_a_command_without_one() -> None:
    with pytest.raises(ValueError, match="get has no exptime"):
        shortcut(b"get k\r\n").with_exptime(b"1")


@pytest.mark.parametrize(
    "get",
    [
        # Alone in its read, a plain get takes the parser's shortcut.
        pytest.param([b"get /././key\r\n"], id="shortcut"),
        pytest.param([b"get /././key /././key\r\n"], id="multi-get"),
        pytest.param([b"gets /././key\r\n"], id="gets"),
    ],
)
def test_a_stripped_routing_prefix_reaches_memcached(
    memcached: Memcached, proxy_factory: ProxyFactory, get: list[bytes]
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    with connect(proxy.port) as client:
        assert client.call(b"set /././key 5 0 3\r\nabc\r\n") == b"STORED\r\n"
        # Stored under the key without its routing prefix ...
        assert direct_get(memcached, b"key") == b"VALUE key 5 3\r\nabc\r\nEND\r\n"
        assert direct_get(memcached, b"/././key") == b"END\r\n"
        # ... and read back through the proxy under the client's own key.
        for request in get:
            reply = client.call(request, b"END\r\n")
            assert reply.startswith(b"VALUE /././key 5 3")
            assert reply.endswith(b"\r\nabc\r\nEND\r\n")
        assert client.call(b"delete /././key\r\n") == b"DELETED\r\n"
    assert direct_get(memcached, b"key") == b"END\r\n"
