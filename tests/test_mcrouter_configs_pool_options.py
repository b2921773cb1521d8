"""PoolRoute's `slow_warmup` and `shard_splits` end to end, on mcrouter's own test configs.

Each test replays the mcrouter python test of the same name (`test_slow_warmup.py`,
`test_shard_splits.py`) through a real proxy and real memcached; the configs'
server addresses are replaced by the fixtures' ports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from conftest import Client, Memcached, Proxy, connect, stats_on

MemcachedFactory = Callable[..., Memcached]
ProxyFactory = Callable[..., Proxy]

CONFIGS = Path(__file__).parent / "data" / "mcrouter-configs"


def _config(name: str, addresses: dict[str, Memcached]) -> str:
    text = (CONFIGS / f"{name}.json").read_text()
    for address, server in addresses.items():
        text = text.replace(address, server.address)
    return text


def _get(client: Client, key: bytes) -> bytes | None:
    reply = client.call(b"get " + key + b"\r\n", b"END\r\n")
    if reply == b"END\r\n":
        return None
    return reply.split(b"\r\n")[1]


def _server_stats(server: Memcached) -> dict[str, str]:
    with connect(server.port) as direct:
        return stats_on(direct)


def test_slow_warmup_spares_a_cold_server(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    """test_slow_warmup.py: warm, made cold by 100 misses, then a share of the gets."""
    proxy = proxy_factory(_config("test_slow_warmup", {"localhost:11130": memcached}))
    with connect(memcached.port) as direct:
        assert direct.call(b"set abc 0 0 3\r\n123\r\n") == b"STORED\r\n"
    with connect(proxy.port) as client:
        assert [_get(client, b"abc") for _ in range(10)] == [b"123"] * 10
        for _ in range(100):
            assert _get(client, b"ghi") is None
        # Hit rate 10/110: a get reaches memcached with probability ~0.19, else
        # NullRoute answers a miss. mcrouter's test takes 30 gets; taking up to 300
        # makes "no hit" or "no spared get" by chance practically impossible.
        answers: list[bytes | None] = []
        while len(answers) < 300 and not (None in answers and b"123" in answers):
            answers.append(_get(client, b"abc"))
    assert None in answers and b"123" in answers
    # The spared gets never reached memcached: every "abc" it saw was a hit (and
    # once 100 replies were counted, some of the "ghi" gets were spared too).
    stats = _server_stats(memcached)
    assert int(stats["get_hits"]) == 10 + answers.count(b"123")
    assert 0 < int(stats["get_misses"]) < 100


def _three(memcached_factory: MemcachedFactory) -> Sequence[Memcached]:
    return [memcached_factory() for _ in range(3)]
