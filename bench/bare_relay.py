#!/usr/bin/env python3
"""A relay that only moves bytes: the floor under any Python proxy, with and without Trio.

`round_trip.py` runs it in front of memcached beside the real relays. It parses
nothing and routes nothing: it waits for one side to be readable, reads, writes what
it read to the other side, and waits again. With ``trio`` it waits the way a Trio
program does (`trio.lowlevel.wait_readable`, the leanest Trio wait); with ``epoll``
it waits on a bare `select.epoll`. The difference between the two is what the event
loop costs per wait; the difference between ``trio`` and mcrouter-trio is what the
proxy's own work costs.

Usage: ``python bench/bare_relay.py trio|epoll PORT UPSTREAM_PORT``. Connections are
served one at a time (the benchmark has one client), each with a new connection to
the upstream, until the process is stopped.
"""

from __future__ import annotations

import select
import socket
import sys

import trio

LOOPBACK = "127.0.0.1"
RECEIVE_SIZE = 65536
#: (client, upstream)
SocketPair = tuple[socket.socket, socket.socket]


def listen(port: int) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, port))
    listener.listen()
    return listener


def connect_pair(listener: socket.socket, upstream_port: int) -> SocketPair:
    client, _ = listener.accept()
    upstream = socket.create_connection((LOOPBACK, upstream_port))
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, upstream


def serve_epoll(port: int, upstream_port: int) -> None:
    listener = listen(port)
    while True:
        client, upstream = connect_pair(listener, upstream_port)
        with client, upstream:
            _relay_epoll(client, upstream)


def _relay_epoll(client: socket.socket, upstream: socket.socket) -> None:
    """Blocking sockets: epoll says which one has data, so `recv` never waits there."""
    other = {client.fileno(): (client, upstream), upstream.fileno(): (upstream, client)}
    with select.epoll() as epoll:
        for fd in other:
            epoll.register(fd, select.EPOLLIN)
        while True:
            for fd, _ in epoll.poll():
                source, target = other[fd]
                data = source.recv(RECEIVE_SIZE)
                if not data:
                    return  # one side is gone: so is the relay
                target.sendall(data)


async def serve_trio(port: int, upstream_port: int) -> None:
    listener = listen(port)
    listener.setblocking(False)
    while True:
        await trio.lowlevel.wait_readable(listener)
        client, upstream = connect_pair(listener, upstream_port)
        with client, upstream:
            for sock in (client, upstream):
                sock.setblocking(False)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)


async def _pump(source: socket.socket, target: socket.socket, scope: trio.CancelScope) -> None:
    while True:
        await trio.lowlevel.wait_readable(source)
        try:
            data = source.recv(RECEIVE_SIZE)
        except BlockingIOError:
            continue
        if not data:
            scope.cancel()  # one side is gone: so is the other direction
            return
        view = memoryview(data)
        while view:
            try:
                view = view[target.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(target)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("trio", "epoll"):
        print("usage: bare_relay.py trio|epoll PORT UPSTREAM_PORT", file=sys.stderr)
        return 2
    port, upstream_port = int(argv[1]), int(argv[2])
    try:
        if argv[0] == "epoll":
            serve_epoll(port, upstream_port)
        else:
            trio.run(serve_trio, port, upstream_port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
