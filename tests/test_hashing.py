"""Golden-vector and property tests for ``mcrouter_trio.hashing``.

The vectors come from mcrouter's own unit tests (``Ch3HashTest.cpp``,
``Crc32HashTest.cpp``, ``WeightedCh3HashFuncTest.cpp``, ``ConstShardHashFuncTest.cpp``)
and folly's ``SpookyHashV2Test.cpp`` table, as collected in the project's mcrouter
reference notes (section 3).  Any deviation from mcrouter's key placement fails here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrouter_trio import hashing
from mcrouter_trio.hashing import (
    _selector,
    ch3,
    const_shard,
    crc32,
    make_selector,
    murmur64a,
    routing_key,
    spooky_hash32,
    weighted_ch3,
)
from mcrouter_trio.hashing._murmur import SEED, rehash

# 256 bytes 0x80..0xFF, 0x00..0x7F: long enough for many blocks and every tail byte.
KEY256 = bytes(range(0x80, 0x100)) + bytes(range(0x80))
CHECKSUM_KEYS = [b"k%d" % i for i in range(100_000)]
W10 = [0.429, 0.541, 0.117, 0.998, 0.283, 0.065, 0.109, 0.042, 0.676, 0.943]


def checksum(select: Callable[[bytes], int], count: int) -> int:
    """mcrouter's bulk checksum: acc = acc * 31 + index (mod 2**32) over b"k<i>"."""
    acc = 0
    for key in CHECKSUM_KEYS[:count]:
        acc = (acc * 31 + select(key)) & 0xFFFF_FFFF
    return acc


def counts(select: Callable[[bytes], int], n: int, keys: int) -> list[int]:
    """How many of the keys b"0" .. str(keys - 1) land on each of n children."""
    result = [0] * n
    for i in range(keys):
        result[select(str(i).encode())] += 1
    return result


# --------------------------------------------------------------------------- API


def test_public_api() -> None:
    assert sorted(hashing.__all__) == sorted(
        [
            "DISTRIBUTIONS",
            "KEY_HASHES",
            "HashFunc",
            "KeyHash",
            "ch3",
            "const_shard",
            "crc32",
            "host_id_for",
            "ip_address_hash",
            "make_selector",
            "murmur64a",
            "routing_key",
            "server_name",
            "spooky_hash32",
            "twemproxy_selector",
            "weighted_ch3",
        ]
    )


# --------------------------------------------------------------------------- Ch3


@pytest.mark.parametrize(
    ("key", "n", "expected"),
    [
        (b"sample", 100, 97),
        (b"", 100, 72),
        (b"", 8_388_608, 6_173_600),
        (b"sample", 8_388_608, 5_167_780),
        (KEY256, 99_999, 31_015),
        (KEY256[::-1], 99_999, 67_101),
        (b"foo", 3, 1),
        (b"foo", 10, 1),
        (b"foo", 100, 1),
        (b"key", 100, 11),
        (b"hello", 10, 9),
        (b"hello", 100, 96),
        (b"user:1234", 100, 51),
        (b"sample", 1, 0),
        (KEY256, 1, 0),
    ],
)
def test_ch3_vectors(key: bytes, n: int, expected: int) -> None:
    assert ch3(key, n) == expected


def test_ch3_distribution_n3() -> None:
    assert counts(lambda k: ch3(k, 3), 3, 1000) == [307, 342, 351]


def test_ch3_distribution_n10() -> None:
    assert counts(lambda k: ch3(k, 10), 10, 10_000) == [
        995,
        955,
        1046,
        968,
        1032,
        972,
        1016,
        1038,
        1010,
        968,
    ]


# The full 100 000-key checksums of bulkChecksumUnitWeights (about 0.3 s each).
@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (2, 1_346_413_954),
        (3, 914_505_363),
        (7, 4_252_552_508),
        (10, 2_894_016_351),
        (16, 2_995_729_350),
        (100, 2_289_223_413),
        (1000, 2_251_851_331),
        (10_000, 1_328_492_545),
        (100_000, 1_053_928_120),
    ],
)
def test_ch3_bulk_checksum(n: int, expected: int) -> None:
    assert checksum(lambda k: ch3(k, n), 100_000) == expected


@pytest.mark.parametrize("n", [0, -1, 8_388_609])
def test_ch3_rejects_bad_n(n: int) -> None:
    with pytest.raises(ValueError):
        ch3(b"key", n)


# --------------------------------------------------------------------------- Crc32


@pytest.mark.parametrize(
    ("key", "n", "expected"),
    [
        (b"sample", 100, 7),
        (b"", 100, 0),
        (b"sample", 2**30 - 1, 822_834_884),
        (KEY256, 99_999, 11_697),
        (KEY256[::-1], 99_999, 97_630),
    ],
)
def test_crc32_vectors(key: bytes, n: int, expected: int) -> None:
    assert crc32(key, n) == expected


def test_crc32_rejects_bad_n() -> None:
    with pytest.raises(ValueError):
        crc32(b"key", 0)


# --------------------------------------------------------------------------- SpookyHash V2


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        # Short path (< 192 bytes): empty, 1-3 byte tails, 15/16 (half round
        # boundary), 31/32 (full round boundary), the longest short message.
        (0, 0x6BF50919),
        (1, 0x70DE1D26),
        (2, 0xA2B37298),
        (3, 0x35BC5FBF),
        (15, 0x83EC01F9),
        (16, 0xF274736C),
        (31, 0x027BCA7C),
        (32, 0xE5CFC8B6),
        (191, 0xE13D9E19),
        # Long path: exactly two blocks, partial final blocks, block boundary.
        (192, 0x77E012BD),
        (255, 0x2F40EE0B),
        (288, 0x47880140),
        (300, 0x37E2B1DA),
        (383, 0x4827F45C),
        (384, 0x44EB5634),
        (511, 0xCC1C8250),
    ],
)
def test_spooky_folly_table(length: int, expected: int) -> None:
    buf = bytes((i + 128) & 0xFF for i in range(length))
    assert spooky_hash32(buf, 0) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [(b"foo", 0x314FCF27), (b"key", 0x0C529BEC), (b"hello", 0xD382E6CA)],
)
def test_spooky_strings(key: bytes, expected: int) -> None:
    assert spooky_hash32(key) == expected


# --------------------------------------------------------------------------- WeightedCh3


@pytest.mark.parametrize(("key", "expected"), [(b"sample", 59), (b"", 45)])
def test_weighted_ch3_all_zero_weights(key: bytes, expected: int) -> None:
    # No pick is ever accepted, so this checks the 32-try salting sequence itself.
    assert weighted_ch3(key, [0.0] * 100) == expected


def test_weighted_ch3_three_children() -> None:
    assert counts(lambda k: weighted_ch3(k, [1.0, 1.0, 0.7]), 3, 1000) == [341, 371, 288]


def test_weighted_ch3_ten_children() -> None:
    select = make_selector("WeightedCh3", 10, weights=W10)
    assert counts(select, 10, 10_000) == [1016, 1252, 288, 2354, 661, 195, 247, 122, 1668, 2197]


@pytest.mark.parametrize(
    ("n", "expected"), [(2, 2_395_690_262), (10, 547_444_706), (100, 2_951_198_297)]
)
def test_weighted_ch3_half_weights_checksum(n: int, expected: int) -> None:
    select = make_selector("WeightedCh3", n, weights=[0.5] * n)
    assert checksum(select, 10_000) == expected


def test_weighted_ch3_matches_selector() -> None:
    select = make_selector("WeightedCh3", 10, weights=W10)
    for i in range(200):
        key = b"key%d" % i
        assert select(key) == weighted_ch3(key, W10)


@pytest.mark.parametrize("weights", [[], [1.5], [-0.1, 0.5], [float("nan")]])
def test_weighted_ch3_rejects_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError):
        weighted_ch3(b"key", weights)


# --------------------------------------------------------------------------- ConstShard


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # Ch3 fallback (ConstShardHashFuncTest.cpp).
        (b"blahmeh", 2),
        (b"blah:meh", 0),
        (b"blah::meh", 1),
        (b"blah:12c34:meh", 0),
        (b"blah:4:meh", 3),
        # Shard number taken from the key.
        (b"b:3:meh", 3),
        (b"bl:2:meh", 2),
        (b"bla:1:meh", 1),
        (b"blah:0:meh", 0),
        (b"blah:003:meh", 3),
    ],
)
def test_const_shard_vectors(key: bytes, expected: int) -> None:
    assert const_shard(key, 4) == expected


def test_const_shard_fallbacks_are_ch3() -> None:
    for key in (b"a:4:b", b"a:99999999999999999999999:b", b"a:1", b"a:+1:b", b"a:-1:b"):
        assert const_shard(key, 4) == ch3(key, 4)
    assert const_shard(b"foo:0:test", 2) == 0
    assert const_shard(b"foo:1:test", 2) == 1


# --------------------------------------------------------------------------- routing key


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"/a/a/foo:1|#|x", b"foo:1"),
        (b"/b/b/foo:1|#|y", b"foo:1"),
        (b"foo:1", b"foo:1"),
        (b"foo:1|#|a|#|b", b"foo:1"),
        (b"/region/cluster/key", b"key"),
        (b"/*/*/key", b"key"),
        (b"/a/b", b"/a/b"),  # only two slashes: no routing prefix
        (b"a/b/c/key", b"a/b/c/key"),  # does not start with a slash
        (b"/a/b/", b""),
        (b"|#|x", b""),
        (b"", b""),
    ],
)
def test_routing_key(key: bytes, expected: bytes) -> None:
    assert routing_key(key) == expected


# --------------------------------------------------------------------------- make_selector


@pytest.mark.parametrize(
    ("name", "reference"),
    [("Ch3", ch3), ("Crc32", crc32), ("ConstShard", const_shard)],
)
def test_selector_matches_functions(name: str, reference: Callable[[bytes, int], int]) -> None:
    for n in (2, 3, 100):
        plain = make_selector(name, n)
        salted = make_selector(name, n, salt=b"salt")
        for i in range(300):
            key = b"x:%d:y" % (i % 7) if i % 2 else b"key%d" % i
            assert plain(key) == reference(key, n)
            assert salted(key) == reference(key + b"salt", n)
            assert plain(key) == reference(key, n)  # second lookup comes from the cache


def test_selector_weighted_salt_and_weight_padding() -> None:
    salted = make_selector("WeightedCh3", 3, salt=b"s", weights=[0.2, 0.9, 0.4])
    short = make_selector("WeightedCh3", 3, weights=[1.0])  # missing weights count 0.5
    extra = make_selector("WeightedCh3", 3, weights=[0.3, 0.6, 0.9, 0.0, 0.0])
    default = make_selector("WeightedCh3", 3)
    for i in range(300):
        key = b"key%d" % i
        assert salted(key) == weighted_ch3(key + b"s", [0.2, 0.9, 0.4])
        assert short(key) == weighted_ch3(key, [1.0, 0.5, 0.5])
        assert extra(key) == weighted_ch3(key, [0.3, 0.6, 0.9])
        assert default(key) == weighted_ch3(key, [0.5, 0.5, 0.5])


@pytest.mark.parametrize("name", ["Ch3", "Crc32", "WeightedCh3", "ConstShard"])
def test_selector_single_child_does_not_hash(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> int:
        raise AssertionError("hashed a key for a single-child pool")

    for attr in ("furc_hash", "crc32", "const_shard_unchecked", "weighted_ch3_thresholds"):
        monkeypatch.setattr(_selector, attr, boom)
    select = make_selector(name, 1, salt=b"salt", weights=[0.0])
    assert [select(k) for k in (b"", b"a", b"sample", KEY256)] == [0, 0, 0, 0]


@pytest.mark.parametrize("name", ["ch3", "CH3", "crc32", "Rendezvous", ""])
def test_selector_unknown_name(name: str) -> None:
    with pytest.raises(ValueError, match=r"^unknown hash function " + repr(name) + "$"):
        make_selector(name, 3)


@pytest.mark.parametrize(
    ("name", "n"),
    [("Ch3", 0), ("Ch3", 8_388_609), ("ConstShard", 8_388_609), ("WeightedCh3", 0), ("Crc32", 0)],
)
def test_selector_rejects_bad_n(name: str, n: int) -> None:
    with pytest.raises(ValueError):
        make_selector(name, n)


def test_selector_large_pools() -> None:
    assert make_selector("Ch3", 8_388_608)(b"sample") == 5_167_780
    assert make_selector("Crc32", 2**30 - 1)(b"sample") == 822_834_884


def test_selector_rejects_bad_weights() -> None:
    with pytest.raises(ValueError):
        make_selector("WeightedCh3", 2, weights=[0.5, 2.0])


def test_selector_cache_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_selector, "CACHE_LIMIT", 3)
    select = make_selector("Ch3", 100)
    for _ in range(2):
        for i in range(20):
            assert select(b"key%d" % i) == ch3(b"key%d" % i, 100)
    monkeypatch.setattr(_selector, "CACHE_LIMIT", 0)  # caching off
    select = make_selector("Ch3", 100)
    assert select(b"sample") == select(b"sample") == 97


# --------------------------------------------------------------------------- properties

keys = st.binary(max_size=300)


@settings(deadline=None)
@given(key=keys, n=st.integers(min_value=1, max_value=2**23))
def test_prop_results_in_range(key: bytes, n: int) -> None:
    assert 0 <= ch3(key, n) < n
    assert 0 <= const_shard(key, n) < n
    assert 0 <= crc32(key, n) < n
    assert 0 <= make_selector("Ch3", n)(key) < n


@settings(deadline=None)
@given(key=keys, weights=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=40))
def test_prop_weighted_in_range(key: bytes, weights: list[float]) -> None:
    assert 0 <= weighted_ch3(key, weights) < len(weights)


@settings(deadline=None)
@given(key=keys)
def test_prop_single_child_is_zero(key: bytes) -> None:
    assert ch3(key, 1) == crc32(key, 1) == const_shard(key, 1) == weighted_ch3(key, [0.3]) == 0
    for name in ("Ch3", "Crc32", "WeightedCh3", "ConstShard"):
        assert make_selector(name, 1)(key) == 0


@settings(deadline=None)
@given(key=keys, n=st.integers(min_value=1, max_value=300))
def test_prop_unit_weights_equal_ch3(key: bytes, n: int) -> None:
    # Strictly, a SpookyHash draw of exactly 0xFFFFFFFF would reject: odds 2**-32.
    assert weighted_ch3(key, [1.0] * n) == ch3(key, n)


@given(x=st.integers(min_value=0, max_value=2**64 - 1))
def test_prop_rehash_is_murmur_of_word(x: int) -> None:
    assert rehash(x) == murmur64a(x.to_bytes(8, "little"), SEED)


@given(key=keys)
def test_prop_routing_prefix_and_hash_stop_ignored(key: bytes) -> None:
    rk = routing_key(key)
    assert b"|#|" not in rk
    if not key.startswith(b"/"):
        assert routing_key(b"/r/c/" + key) == rk
        assert routing_key(key + b"|#|suffix") == rk
