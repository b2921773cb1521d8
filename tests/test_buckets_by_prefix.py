"""bucketize's `total_buckets_by_prefix`: keys under a prefix share that prefix's few buckets.

mcrouter (`McBucketRoute.h` `getBucket`): for a key under a listed prefix (the
longest one), bucket = Ch3(prefix + decimal(Ch3(key, prefix buckets)), total);
otherwise Ch3(key, total). Expected buckets below come from that rule written
out here with Ch3, and from mcrouter's own test (`McBucketRouteTest.cpp`).
"""

from __future__ import annotations

import json

import pytest
from handle_helpers import port_of, request

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.hashing import make_selector
from mcrouter_trio.hashing._buckets import Bucketizer
from mcrouter_trio.hashing._furc import ch3
from mcrouter_trio.routing import Route
from mcrouter_trio.routing.testing import FakeContext

BY_PREFIX = {"asdf": 1, "qwert": 20, "zxcv": 25}


def ref_bucket(key: bytes, total: int, by_prefix: dict[str, int]) -> int:
    matching = [prefix for prefix in by_prefix if key.startswith(prefix.encode())]
    if not matching:
        return ch3(key, total)
    prefix = max(matching, key=len)
    inner = ch3(key, by_prefix[prefix])
    return ch3(prefix.encode() + str(inner).encode(), total)


@pytest.mark.parametrize(
    ("key", "bucket"),
    [
        ("getReq", 755248),
        ("asdf:getReq", 304678),
        ("asdf:getReq2", 304678),
        ("asdf:getReq3", 304678),
        ("asdfgetReqanything", 304678),
        ("asd:getReq", 973109),
        ("qwert:getReq", 454705),
        ("zxcvgetReq", 97898),
        ("zxcv", 418469),
        ("zxc", 839734),
    ],
)
def test_mcrouters_colocation_vectors(key: str, bucket: int) -> None:
    assert Bucketizer(1_000_000, BY_PREFIX).bucket(key.encode()) == bucket


def test_the_longest_prefix_wins_and_keys_spread_over_its_buckets() -> None:
    by_prefix = {"a": 3, "ab": 7, "abc:": 50, "zz": 1000}
    buckets = Bucketizer(1000, by_prefix)
    keys = [
        f"{head}{i}".encode() for head in ("a", "ab", "abc:", "abd", "zz", "q") for i in range(80)
    ]
    for key in keys:
        assert buckets.bucket(key) == ref_bucket(key, 1000, by_prefix)
    assert len({buckets.bucket(b"ab%d" % i) for i in range(80)}) == 7
    assert len({buckets.bucket(b"a%d" % i) for i in range(10, 80)}) <= 3


def bucketized_pool(**options: object) -> Route:
    servers = [f"127.0.0.1:{port}" for port in range(1, 9)]
    route = {"type": "PoolRoute", "pool": "A", "bucketize": True, "total_buckets": 1000,
             "bucketization_keyspace": "space", **options}  # fmt: skip
    config = {"pools": {"A": {"servers": servers}, "S": {"servers": ["127.0.0.1:99"]}},
              "route": route}  # fmt: skip
    return load_config(json.dumps(config)).route


def server_of(route: Route, key: bytes) -> int:
    ctx = FakeContext()
    route.route(request(b"get " + key + b"\r\n"), ctx)
    return port_of(ctx.sent[0])


def test_a_pool_places_keys_by_their_prefixed_bucket() -> None:
    route = bucketized_pool(total_buckets_by_prefix={"user:": 1, "feed:": 4})
    select = make_selector("Ch3", 8)
    by_prefix = {"user:": 1, "feed:": 4}
    for i in range(40):
        for key in (b"user:%d" % i, b"feed:%d" % i, b"other%d" % i):
            expected = select(b"%d" % ref_bucket(key, 1000, by_prefix)) + 1
            assert server_of(route, key) == expected
            # The routing key is what counts: no routing prefix, nothing after |#|.
            assert server_of(route, b"/r/c/" + key + b"|#|tail") == expected
    assert len({server_of(route, b"user:%d" % i) for i in range(40)}) == 1


def test_shadow_key_fractions_use_the_prefixed_bucket() -> None:
    shadow = {"target": "PoolRoute|S", "index_range": [0, 7], "key_fraction_range": [0, 0.5]}
    route = bucketized_pool(total_buckets_by_prefix={"hot": 2}, shadows=[shadow])
    for i in range(60):
        key = b"hot%d" % i
        ctx = FakeContext()
        route.route(request(b"get " + key + b"\r\n"), ctx)
        copied = any(port_of(sent) == 99 for sent in ctx.sent)
        assert copied == (ref_bucket(key, 1000, {"hot": 2}) <= int(0.5 * 999))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 0}, "Bucket count should be in range (0, 1000], got 0 @ $.route"),
        ({"a": 1001}, "Bucket count should be in range (0, 1000], got 1001 @ $.route"),
        (
            {"a": "5"},
            'a: expected an integer bucket count, got "5" @ $.route.total_buckets_by_prefix',
        ),
        ({"a": 2.5}, "a: expected an integer bucket count"),
        ([1, 2], "expected an object of prefix to bucket count"),
    ],
)
def test_bad_bucket_counts(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        bucketized_pool(total_buckets_by_prefix=value)
    assert message in str(caught.value)
