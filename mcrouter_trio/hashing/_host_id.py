"""mcrouter's host id: a 32-bit hash of the host's first routable IP address.

mcrouter (``mcrouter/lib/fbi/cpp/globals.cpp``, ``globals::hostid``) walks the local
addresses in ``getifaddrs`` order, takes the first one that is neither loopback nor
link-local, and keeps the low 32 bits of folly's ``IPAddress::hash()`` of it; with no
such address the id is 0. LatestRoute (and other per-host choices) start from it, so
computing it the same way gives a host the same id under mcrouter and mcrouter-trio.

folly's ``IPAddress::hash()`` (``folly/IPAddressV4.h``, ``folly/IPAddressV6.cpp``):

* IPv4: ``hash_combine(AF_INET, fnv32_buf(address bytes))``;
* IPv6: ``hash_combine(AF_INET6, h1, h2)`` where ``h1, h2`` is SpookyHash V2
  ``Hash128`` of the 16 address bytes with zero seeds; an IPv4-mapped address
  hashes as the IPv4 address it maps.

``hash_combine`` with folly's ``StdHasher`` on 64-bit Linux hashes integers to
themselves and folds right to left with ``hash_128_to_64``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from ._folly import hash_128_to_64
from ._spooky import spooky_hash128

__all__ = ["host_id_for", "ip_address_hash"]

_FNV32_START: Final = 2166136261
# folly hashes the address family number; these are Linux's, where mcrouter runs.
_AF_INET: Final = 2
_AF_INET6: Final = 10


def _fnv32(data: bytes) -> int:
    """folly's ``fnv32_buf`` (its ``_BROKEN`` variant): FNV-1 xoring *signed* bytes.

    Each byte is sign-extended before the xor, so bytes of 0x80 and above flip the
    upper 24 bits too; this differs from textbook FNV-1 only for such bytes.
    """
    value = _FNV32_START
    for byte in data:
        value = (value * 16777619) & 0xFFFF_FFFF  # the shifts in folly add up to this
        value ^= (byte | 0xFFFF_FF00) if byte & 0x80 else byte
    return value


def ip_address_hash(address: IPv4Address | IPv6Address) -> int:
    """folly's ``IPAddress::hash()`` of `address`, truncated to 32 bits as mcrouter does."""
    address = _unmapped(address)
    if isinstance(address, IPv4Address):
        combined = hash_128_to_64(_AF_INET, _fnv32(address.packed))
    else:
        high, low = spooky_hash128(address.packed, 0, 0)
        combined = hash_128_to_64(_AF_INET6, hash_128_to_64(high, low))
    return combined & 0xFFFF_FFFF


def host_id_for(addresses: Iterable[IPv4Address | IPv6Address]) -> int:
    """The host id of a host with `addresses` (in ``getifaddrs`` order); 0 if none fits."""
    for address in addresses:
        # folly: a mapped IPv4 loopback is loopback; link-local is fe80::/10 for IPv6.
        if not (_unmapped(address).is_loopback or address.is_link_local):
            return ip_address_hash(address)
    return 0


def _unmapped(address: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    """An IPv4-mapped IPv6 address as the IPv4 address folly treats it as."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
