"""Key placement against a running nutcracker: the same keys land on the same servers.

Each case starts memcached servers, nutcracker with one pool over them, and the
proxy with the config `import-twemproxy` makes of nutcracker's YAML. Every key is
set through nutcracker (value `n`) and found by asking each memcached directly;
then set through the proxy (value `t`) and found again. The two must agree key by
key. Keys include UTF-8 bytes (which the signed-char hashes treat specially) and
hash tags, both matching and not.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import Memcached, _stop, free_port, wait_for_port

KEYS = 10_000


def nutcracker_binary() -> str:
    binary = shutil.which("nutcracker") or shutil.which("nutcracker", path="/usr/sbin")
    if binary is None:
        pytest.skip("nutcracker is not installed: apt-get install -y nutcracker")
    return binary


def make_keys(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-."
    keys = []
    for i in range(count):
        token = "".join(rng.choices(alphabet, k=rng.randint(1, 40)))
        if i % 7 == 0:
            key = f"kéy/{token}/ü€{i}"  # bytes >= 0x80
        elif i % 5 == 0:
            key = f"user{{{token}}}:{i}"  # a hash tag with something inside
        elif i % 11 == 0:
            key = f"{{}}{token}{{{i}"  # tag bytes, but nothing between a pair
        else:
            key = f"{token}{i}"
        keys.append(key.encode())
    return keys


def pipelined(port: int, requests: Sequence[bytes], terminator: bytes) -> list[bytes]:
    """Send requests in batches; return each reply (ending with `terminator`)."""
    replies: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        for start in range(0, len(requests), 500):
            batch = requests[start : start + 500]
            sock.sendall(b"".join(batch))
            buffer = b""
            while buffer.count(terminator) < len(batch):
                chunk = sock.recv(1 << 16)
                assert chunk, "connection closed"
                buffer += chunk
            parts = buffer.split(terminator)
            assert parts[-1] == b""
            replies.extend(part + terminator for part in parts[:-1])
    return replies


def set_all(port: int, keys: Sequence[bytes], value: bytes) -> None:
    requests = [b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value) for key in keys]
    replies = pipelined(port, requests, b"\r\n")
    assert replies == [b"STORED\r\n"] * len(keys)


def holders(servers: Sequence[Memcached], keys: Sequence[bytes], value: bytes) -> list[int]:
    """For each key, the index of the one server holding it with `value` (-1: none)."""
    where = dict.fromkeys(keys, -1)
    for index, server in enumerate(servers):
        requests = [
            b"get " + b" ".join(keys[i : i + 100]) + b"\r\n" for i in range(0, len(keys), 100)
        ]
        for reply in pipelined(server.port, requests, b"END\r\n"):
            lines = reply.split(b"\r\n")
            for header, data in zip(lines[0:-2:2], lines[1:-2:2], strict=True):
                key = header.split(b" ")[1]
                if data == value:
                    assert where[key] == -1, f"{key!r} on two servers"
                    where[key] = index
    return [where[key] for key in keys]


def start_nutcracker(tmp_path: Path, pool: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp_path / "nutcracker.yml"
    lines = ["pool:", f"  listen: 127.0.0.1:{port}"]
    for key, value in pool.items():
        if key == "servers":
            lines.append("  servers:")
            lines.extend(f"    - {server}" for server in value)
        else:
            lines.append(f"  {key}: {value}")
    conf.write_text("\n".join(lines) + "\n")
    command = [
        nutcracker_binary(), "-c", str(conf), "-s", str(free_port()), "-a", "127.0.0.1",
        "-p", str(tmp_path / "nutcracker.pid"), "-o", str(tmp_path / "nutcracker.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process)
    return process, port


def imported_config(tmp_path: Path) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcrouter_trio",
            "import-twemproxy",
            str(tmp_path / "nutcracker.yml"),
        ],
        capture_output=True,
        check=True,
    )
    return done.stdout.decode()


# One row per combination: nutcracker pool settings; `{i}` in a server line is the
# i-th memcached's address.
CASES: dict[str, dict[str, Any]] = {
    "ketama md5": {"hash": "md5", "distribution": "ketama", "servers": ["{0}:1", "{1}:1", "{2}:1"]},
    "ketama md5, weights": {
        "hash": "md5",
        "servers": ["{0}:1", "{1}:2", "{2}:3", "{3}:7"],
    },
    "ketama md5, weights and names": {
        "hash": "md5",
        "servers": ["{0}:1 alpha", "{1}:3 beta", "{2}:1"],
    },
    "ketama fnv1a_64 (nutcracker's defaults)": {"servers": ["{0}:1", "{1}:1", "{2}:1"]},
    "ketama murmur, hash_tag": {
        "hash": "murmur",
        "hash_tag": '"{}"',
        "servers": ["{0}:1", "{1}:1", "{2}:1"],
    },
    "modula md5": {"hash": "md5", "distribution": "modula", "servers": ["{0}:1", "{1}:1", "{2}:1"]},
    "modula fnv1a_64, weights": {
        "distribution": "modula",
        "servers": ["{0}:1", "{1}:2", "{2}:3"],
    },
    "modula crc32a, hash_tag": {
        "hash": "crc32a",
        "distribution": "modula",
        "hash_tag": '"{}"',
        "servers": ["{0}:2", "{1}:1", "{2}:1", "{3}:1"],
    },
}
# The other key hashes, fewer keys each.
OTHER_HASHES = [
    "one_at_a_time", "hsieh", "jenkins", "fnv1_64", "fnv1_32", "fnv1a_32", "crc32a", "crc16",
]  # fmt: skip
for key_hash in OTHER_HASHES:
    CASES[f"ketama {key_hash}, hash_tag"] = {
        "hash": key_hash,
        "hash_tag": '"{}"',
        "servers": ["{0}:1", "{1}:2", "{2}:1"],
        "keys": 2_000,
    }


@pytest.mark.parametrize("case", list(CASES))
def test_keys_land_where_nutcracker_puts_them(
    case: str, tmp_path: Path, memcached_factory: Any, proxy_factory: Any
) -> None:
    settings = dict(CASES[case])
    count = settings.pop("keys", KEYS)
    servers: list[Memcached] = []
    lines = []
    for line in settings.pop("servers"):
        index = int(line[1])
        while len(servers) <= index:
            servers.append(memcached_factory())
        lines.append(line.replace(f"{{{index}}}", servers[index].address))
    nutcracker, nutcracker_port = start_nutcracker(
        tmp_path, {**settings, "timeout": 5000, "servers": lines}
    )
    try:
        keys = make_keys(count, seed=len(case))
        set_all(nutcracker_port, keys, b"n")
        expected = holders(servers, keys, b"n")
        assert -1 not in expected
        # Every server gets some keys, or the comparison would prove little.
        assert set(expected) == set(range(len(servers)))
    finally:
        _stop(nutcracker)

    proxy = proxy_factory(imported_config(tmp_path))
    set_all(proxy.port, keys, b"t")
    placed = holders(servers, keys, b"t")
    wrong = [(key, e, p) for key, e, p in zip(keys, expected, placed, strict=True) if e != p]
    assert not wrong, f"{len(wrong)} of {count} keys placed differently, e.g. {wrong[:5]}"
