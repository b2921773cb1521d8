"""bench/round_trip.py: it measures every relay, and refuses to time a wrong reply."""

from __future__ import annotations

import re
import shutil
import socket
import sys
from pathlib import Path

import pytest
from conftest import Memcached

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import round_trip


def test_every_relay_gets_a_row_per_key_count(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("stunnel4") is None and shutil.which("stunnel") is None:
        pytest.skip("stunnel is not installed")
    status = round_trip.main(["--keys", "1,3", "--seconds", "0.2", "--repeat", "2"])
    table = capsys.readouterr().out
    assert status == 0, table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "µs" not in line]
    assert [(row.split(" | ")[0][2:], row.split(" | ")[1]) for row in rows] == [
        (round_trip.TITLES[relay], keys) for relay in round_trip.RELAYS for keys in ("1", "3")
    ]
    for row in rows:
        cells = row.strip("| ").split(" | ")
        assert float(cells[2].replace(",", "")) > 0  # round trips per second
        assert float(cells[3]) > 0  # CPU per round trip
    # stunnel is the yardstick, so its own rows compare with it at exactly 1.
    assert all(row.endswith("| 1.00 |") for row in rows[:2])
    assert all(re.search(r"\| \d+\.\d\d \|$", row) for row in rows)


def test_a_wrong_reply_is_not_timed(memcached: Memcached) -> None:
    # memcached itself as the "relay", without the keys stored: every get misses.
    relay = round_trip.Relay(memcached.port, tls=False, pid=memcached.process.pid)
    with (
        socket.create_connection(("127.0.0.1", memcached.port)) as sock,
        pytest.raises(round_trip.BenchError, match="wrong reply to a 2-key get"),
    ):
        round_trip.measure("memcached", relay, sock, [b"a", b"b"], seconds=0.1)


def test_a_row_is_the_median_turn() -> None:
    turns = [round_trip.Row("stunnel", 1, 1000, 1.0, cpu) for cpu in (0.09, 0.05, 0.07, 0.2)]
    assert round_trip.median_row(turns[:3]).cpu_seconds == 0.07
    assert round_trip.median_row(turns).cpu_seconds == 0.09  # the upper middle of four
