"""twemproxy placement in memory: the golden vectors recorded through nutcracker 0.5.0."""

from __future__ import annotations

import hashlib
import struct

import pytest

from mcrouter_trio.hashing import KEY_HASHES, server_name, twemproxy_selector
from mcrouter_trio.hashing._twemproxy import hash_tagged, ketama_point_counts, nutcracker_order

PORTS = (11211, 47312, 47313)
NAMES = [server_name("127.0.0.1", port) for port in PORTS]
KEYS = ["foo", "bar", "baz", "user:1", "user:2", "user:3", "session:abc", "a", "z9", "kéy"]
# Where nutcracker put `<hash>/<key>` over 127.0.0.1:11211:1, :47312:1, :47313:2.
GOLDEN = {
    "md5": [47313, 47312, 47313, 47312, 11211, 47313, 47312, 11211, 47313, 47313],
    "fnv1a_64": [47312, 47313, 47313, 47312, 47312, 47312, 47313, 11211, 47312, 11211],
}


@pytest.mark.parametrize("key_hash", list(GOLDEN))
def test_golden_vectors(key_hash: str) -> None:
    select = twemproxy_selector("ketama", key_hash, NAMES, [1, 1, 2])
    placed = [PORTS[select(f"{key_hash}/{key}".encode())] for key in KEYS]
    assert placed == GOLDEN[key_hash]


def test_names_and_ring_sanity_values() -> None:
    assert NAMES == ["127.0.0.1", "127.0.0.1:47312", "127.0.0.1:47313"]
    assert struct.unpack("<4I", hashlib.md5(b"127.0.0.1-0").digest()) == (
        3187647615, 2893990766, 813702075, 4292932786,
    )  # fmt: skip
    assert struct.unpack("<4I", hashlib.md5(b"127.0.0.1:47312-0").digest()) == (
        1572156820, 3835439673, 2813165369, 2450827515,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("key_hash", "key", "expected"),
    [
        ("fnv1a_64", b"foo", 4275688823),  # not textbook FNV-1a-32 (2851307223)
        ("md5", b"foo", 3675831724),
        ("crc32a", b"123456789", 0xCBF43926),  # the CRC-32 check value
        ("crc32", b"123456789", (0xCBF43926 >> 16) & 0x7FFF),
    ],
)
def test_key_hash_values(key_hash: str, key: bytes, expected: int) -> None:
    assert KEY_HASHES[key_hash](key) == expected


def test_crc16_keeps_bits_past_16() -> None:
    crc16 = KEY_HASHES["crc16"](b"123456789")
    assert crc16 & 0xFFFF == 0x31C3  # the XMODEM check value
    assert crc16 > 0xFFFF  # nutcracker never masks its register


def test_signed_char_bytes_differ_from_textbook_fnv() -> None:
    textbook = 2166136261
    for byte in "é".encode():
        textbook = ((textbook ^ byte) * 16777619) & 0xFFFFFFFF
    assert KEY_HASHES["fnv1a_32"]("é".encode()) != textbook


@pytest.mark.parametrize(
    ("weights", "counts"),
    [([1, 1, 1], [160, 160, 160]), ([1, 3], [80, 240])],
)
def test_ketama_point_counts(weights: list[int], counts: list[int]) -> None:
    assert ketama_point_counts(weights) == counts


@pytest.mark.parametrize(
    ("key", "hashed"),
    [
        (b"user{42}:name", b"42"),
        (b"{}x{y}", b"{}x{y}"),  # only the first opening byte counts: empty, whole key
        (b"no tag", b"no tag"),
        (b"{open", b"{open"),
        (b"a}b{c}", b"c"),
    ],
)
def test_hash_tag(key: bytes, hashed: bytes) -> None:
    assert hash_tagged(key, b"{}") == hashed


def test_nutcracker_keeps_servers_in_name_order() -> None:
    names = ["127.0.0.1:30000", "127.0.0.1:4000", "b", "a", "127.0.0.1:3999"]
    assert nutcracker_order(names) == [3, 2, 4, 1, 0]


def test_modula_slots_follow_name_order_not_config_order() -> None:
    # Config order: the longer name first, weight 1; "short" has weight 2.
    names, weights = ["longer-name", "short"], [1, 2]
    select = twemproxy_selector("modula", "md5", names, weights)
    # nutcracker's slots: short, short, longer-name; a key goes to slot hash % 3.
    slots = [1, 1, 0]
    for i in range(50):
        key = b"key%d" % i
        assert select(key) == slots[KEY_HASHES["md5"](key) % 3]
