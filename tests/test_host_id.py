"""The host id: mcrouter's hash of the host's first routable address, given to LatestRoute."""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
from conftest import Memcached, Proxy, connect, direct_get

from mcrouter_trio.config import load_config
from mcrouter_trio.hashing import host_id_for, ip_address_hash
from mcrouter_trio.ops._host import local_addresses, local_host_id
from mcrouter_trio.routing._specs import ServerSpec
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.handles.failover import LatestRoute

ProxyFactory = Callable[..., Proxy]

# Reference values from folly itself: its FnvHash.h and SpookyHashV2.cpp compiled with
# folly's hash_128_to_64, hashing the address as IPAddressV4/V6::hash() does (the
# harness reproduced folly's own test vectors: fnv32_buf("\xff\xff\xff") = 2420936562
# and SpookyHashV2::Hash32 of 16 bytes = 0xf274736c).
FOLLY_IP_HASHES = [
    ("192.0.2.2", 4204271812),
    ("10.0.0.1", 3131136340),
    ("127.0.0.1", 945921392),
    ("203.0.113.200", 3918636910),
    ("255.255.255.255", 94819895),
    ("fd00::2", 4149112297),
    ("2001:db8::1", 3993375061),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 4218853104),
    ("::ffff:192.0.2.2", 4204271812),  # IPv4-mapped: hashed as the IPv4 address
]


@pytest.mark.parametrize(("address", "expected"), FOLLY_IP_HASHES)
def test_ip_address_hash_is_follys(address: str, expected: int) -> None:
    assert ip_address_hash(ip_address(address)) == expected


def test_host_id_is_the_hash_of_the_first_routable_address() -> None:
    addresses = [
        ip_address(text)
        for text in ("127.0.0.1", "::1", "::ffff:127.0.0.2", "169.254.1.1", "fe80::1", "fd00::2")
    ]
    assert host_id_for(addresses) == ip_address_hash(IPv6Address("fd00::2"))
    assert host_id_for([IPv4Address("203.0.113.200"), *addresses]) == 3918636910


def test_host_id_without_a_routable_address_is_zero() -> None:
    assert host_id_for([IPv4Address("127.0.0.1"), IPv6Address("::1"), IPv6Address("fe80::1")]) == 0
    assert host_id_for([]) == 0


def test_different_host_ids_choose_different_latest_children() -> None:
    children = tuple(DestinationRoute(ServerSpec("127.0.0.1", port)) for port in range(1, 17))
    host_ids = [ip_address_hash(IPv4Address(f"198.51.100.{n}")) for n in range(1, 9)]
    assert len(set(host_ids)) == len(host_ids)
    first = {LatestRoute(children, failover_count=3, host_id=h).targets()[0] for h in host_ids}
    assert len(first) > 1


def test_local_addresses_are_the_interfaces() -> None:
    addresses = local_addresses()
    assert IPv4Address("127.0.0.1") in addresses
    if_inet6 = Path("/proc/net/if_inet6")
    if if_inet6.exists():
        listed = {
            IPv6Address(bytes.fromhex(line.split()[0]))
            for line in if_inet6.read_text().splitlines()
        }
        assert {a for a in addresses if isinstance(a, IPv6Address)} == listed


def test_local_host_id_is_that_of_the_first_routable_local_address() -> None:
    routable = [a for a in local_addresses() if not (a.is_loopback or a.is_link_local)]
    if not routable:
        pytest.skip("this host has no address that is neither loopback nor link-local")
    assert local_host_id() == ip_address_hash(routable[0]) != 0


def test_proxy_latest_route_uses_the_local_host_id(
    memcached_factory: Callable[..., Memcached], proxy_factory: ProxyFactory
) -> None:
    host_id = local_host_id()
    if host_id == 0:
        pytest.skip("this host has no address that is neither loopback nor link-local")
    servers = [memcached_factory() for _ in range(3)]

    def config(salt: str) -> str:
        route = {"type": "LatestRoute", "children": "Pool|A", "failover_count": 1, "salt": salt}
        return json.dumps(
            {"pools": {"A": {"servers": [s.address for s in servers]}}, "route": route}
        )

    def chosen(salt: str, host: int) -> ServerSpec:
        (server,) = load_config(config(salt), host_id=host).servers
        return server

    # A salt for which this host and a host of id 0 prefer different servers.
    salt = next(s for s in map(str, range(100)) if chosen(s, host_id) != chosen(s, 0))
    expected = chosen(salt, host_id)
    proxy = proxy_factory(config(salt))
    with connect(proxy.port) as client:
        assert client.call(b"set hostkey 0 0 2\r\nhi\r\n") == b"STORED\r\n"
    holders = [s for s in servers if direct_get(s, b"hostkey") != b"END\r\n"]
    assert [s.port for s in holders] == [expected.port]
