"""The stats board: worker snapshots in shared memory, read back whole or not at all."""

from __future__ import annotations

import os
import struct
import time

import pytest

from mcrouter_trio.ops._board import SharedStats, StatsBoard


def test_a_published_snapshot_reads_back_with_its_generation() -> None:
    board = StatsBoard(workers=3, slot_bytes=1024)
    assert board.read(1) is None  # nothing published yet
    assert board.publish(1, 0, {"basic": {"cmd_get": 5}, "servers": {}})
    assert board.read(1) == (0, {"basic": {"cmd_get": 5}, "servers": {}})
    assert board.publish(1, 0, {"basic": {"cmd_get": 6}, "servers": {}})
    assert board.read(1) == (0, {"basic": {"cmd_get": 6}, "servers": {}})
    assert board.read(0) is None and board.read(2) is None


def test_a_snapshot_too_large_for_its_slot_is_refused() -> None:
    board = StatsBoard(workers=1, slot_bytes=64)
    assert not board.publish(0, 0, {"servers": {"x" * 100: [1]}})
    assert board.read(0) is None


def test_a_slot_being_written_is_not_read_until_written_again() -> None:
    board = StatsBoard(workers=1, slot_bytes=256)
    board.publish(0, 0, {"basic": {"cmd_get": 1}})
    # What a reader sees while the owner is between its two header writes, or for good
    # if the owner was killed there: an odd sequence number.
    struct.pack_into("<Q", board._map, 64, 3)
    assert board.read(0) is None
    board.publish(0, 0, {"basic": {"cmd_get": 2}})  # the restarted worker's first snapshot
    assert board.read(0) == (0, {"basic": {"cmd_get": 2}})
    board.publish(0, 0, {"basic": {"cmd_get": 3}})
    assert board.read(0) == (0, {"basic": {"cmd_get": 3}})


def test_worker_indexes_outside_the_board_are_refused() -> None:
    board = StatsBoard(workers=2, slot_bytes=256)
    with pytest.raises(IndexError):
        board.publish(2, 0, {})


def test_the_board_is_shared_with_forked_workers() -> None:
    board = StatsBoard(workers=2, slot_bytes=256)
    pid = os.fork()
    if pid == 0:
        code = 0 if board.publish(1, 0, {"basic": {"cmd_set": 7}}) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert board.read(1) == (0, {"basic": {"cmd_set": 7}})


def test_others_skip_this_worker_and_snapshots_from_before_a_reset() -> None:
    board = StatsBoard(workers=3, slot_bytes=256)
    first, second, third = (SharedStats(board, index) for index in range(3))
    for shared, count in ((first, 1), (second, 2), (third, 3)):
        shared.publish({"basic": {"cmd_get": count}, "servers": {}})
    assert sorted(s["basic"]["cmd_get"] for s in first.others()) == [2, 3]

    second.request_reset()
    assert not second.reset_due()  # the worker that answered `stats reset` reset at once
    assert first.reset_due() and third.reset_due()
    assert first.others() == []  # every other snapshot predates the reset: zero until renewed
    third.mark_reset()
    third.publish({"basic": {"cmd_get": 0}, "servers": {}})
    assert first.others() == [{"basic": {"cmd_get": 0}, "servers": {}}]


def test_a_worker_with_too_many_servers_still_shares_its_totals() -> None:
    board = StatsBoard(workers=2, slot_bytes=200)
    worker, reader = SharedStats(board, 0), SharedStats(board, 1)
    worker.publish(
        {"basic": {"cmd_get": 4}, "servers": {"s" * 300: [1]}, "latency": {"s" * 300: [1, 0.5]}}
    )
    assert reader.others() == [{"basic": {"cmd_get": 4}, "servers": {}, "latency": {}}]


def test_a_reader_never_sees_half_a_snapshot_while_another_process_writes() -> None:
    board = StatsBoard(workers=1, slot_bytes=4096)
    board.publish(0, 0, {"first": 0, "padding": "", "last": 0})
    pid = os.fork()
    if pid == 0:  # the writer: snapshots whose two counters always agree, of varying length
        deadline = time.monotonic() + 1.0
        count = 0
        while time.monotonic() < deadline:
            count += 1
            board.publish(0, 0, {"first": count, "padding": "x" * (count % 500), "last": count})
        os._exit(0)
    reads = 0
    exited = False
    try:
        while not exited:
            exited = os.waitpid(pid, os.WNOHANG) != (0, 0)
            entry = board.read(0)
            if entry is not None:
                snapshot = entry[1]
                assert snapshot["first"] == snapshot["last"], snapshot
                reads += 1
    finally:
        if not exited:
            os.waitpid(pid, 0)
    assert reads > 100


def test_a_payload_that_does_not_match_its_checksum_is_not_read() -> None:
    # What a reader could see where the processor makes stores visible out of order.
    board = StatsBoard(workers=1, slot_bytes=256)
    board.publish(0, 0, {"basic": {"cmd_get": 12}})
    payload_start = 64 + 32
    board._map[payload_start + 20 : payload_start + 22] = b"99"
    assert board.read(0) is None
