"""This host's addresses and, from them, its mcrouter host id.

The addresses come from the C library's ``getifaddrs``, the call mcrouter walks
(``for_each_localaddr`` in ``mcrouter/lib/fbi/network.c``), so the first routable
address, and hence the id, is the one mcrouter would pick on the same host. The
structure layouts are Linux's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
from ipaddress import IPv4Address, IPv6Address

from mcrouter_trio.hashing import host_id_for

__all__ = ["local_addresses", "local_addresses_or_none", "local_host_id"]

log = logging.getLogger(__name__)


class _SockAddr(ctypes.Structure):
    # Linux's sockaddr header; sockaddr_in keeps the IPv4 address at offset 4 and
    # sockaddr_in6 the IPv6 address at offset 8.
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 22)]


class _IfAddrs(ctypes.Structure):
    pass


_IfAddrs._fields_ = [
    ("next", ctypes.POINTER(_IfAddrs)),
    ("name", ctypes.c_char_p),
    ("flags", ctypes.c_uint),
    ("addr", ctypes.POINTER(_SockAddr)),
    ("netmask", ctypes.POINTER(_SockAddr)),
    ("broadcast_or_destination", ctypes.POINTER(_SockAddr)),
    ("data", ctypes.c_void_p),
]


def local_addresses() -> list[IPv4Address | IPv6Address]:
    """The IPv4 and IPv6 addresses of this host's interfaces, in ``getifaddrs`` order.

    Raises OSError when the addresses cannot be listed.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    head = ctypes.POINTER(_IfAddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"getifaddrs: {os.strerror(errno)}")
    addresses: list[IPv4Address | IPv6Address] = []
    try:
        entry = head
        while entry:
            sockaddr = entry.contents.addr
            if sockaddr:
                family, data = sockaddr.contents.family, bytes(sockaddr.contents.data)
                if family == socket.AF_INET:
                    addresses.append(IPv4Address(data[2:6]))
                elif family == socket.AF_INET6:
                    addresses.append(IPv6Address(data[6:22]))
            entry = entry.contents.next
    finally:
        libc.freeifaddrs(head)
    return addresses


def local_addresses_or_none() -> list[IPv4Address | IPv6Address] | None:
    """`local_addresses()`, or None (logged) when they cannot be listed."""
    try:
        return local_addresses()
    except OSError as exc:
        log.warning("cannot list local addresses (%s): @isLocalIp fails", exc)
        return None


def local_host_id() -> int:
    """This host's id as mcrouter computes it; 0, as in mcrouter, when there is none."""
    try:
        addresses = local_addresses()
    except OSError as exc:
        log.warning("cannot list local addresses (%s): host id 0", exc)
        return 0
    host_id = host_id_for(addresses)
    if host_id == 0:
        log.warning("no address that is neither loopback nor link-local: host id 0")
    return host_id
