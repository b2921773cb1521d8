"""`--num-proxies N`: every worker's counters, so that `stats` describes the whole proxy.

mcrouter adds up its proxy threads' counters when it answers `stats`. Workers here
are processes, so each one publishes a snapshot of its counters into its own slot of
a board, an anonymous shared mapping the parent makes before it forks; the worker
that answers `stats` adds the other workers' latest snapshots to its own live
counters. Other workers' counts are therefore at most one publish interval old.

A slot holds a sequence number (odd while its owner writes it, so a reader that
sees it odd or changed retries), the reset generation the snapshot was taken in,
the payload's length, a CRC-32 of generation and payload, and the payload (JSON).
Every header field is an aligned 8-byte word written and read by one 8-byte copy,
so no reader sees half a number; `struct.pack_into` will not do, because it
zero-fills its target before it writes the fields. The checksum catches a torn
read even where the processor reorders stores. `stats reset` raises the board's
generation: each worker resets its own counters when it next publishes, and a
snapshot from an older generation counts as zero until then.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
import zlib
from typing import Any, Final

log = logging.getLogger("mcrouter_trio.ops")

#: Seconds between two snapshots of one worker.
PUBLISH_INTERVAL: Final = 0.5
_WORD: Final = struct.Struct("<Q")
#: Header word offsets within a slot; the payload follows the header.
_SEQUENCE, _GENERATION, _LENGTH, _CHECKSUM = 0, 8, 16, 24
_SLOT_HEADER_BYTES: Final = 32
#: The board's own header: the reset generation, then padding.
_BOARD_HEADER_BYTES: Final = 64
#: Tries a reader makes while the slot's owner is writing (a write takes microseconds).
_READ_TRIES: Final = 1000

Snapshot = dict[str, Any]


class StatsBoard:
    """Fixed-size slots in memory shared by the workers, one per worker."""

    def __init__(self, workers: int, slot_bytes: int) -> None:
        self.workers = workers
        self.slot_bytes = slot_bytes - slot_bytes % 8  # header words stay 8-byte aligned
        # Anonymous and MAP_SHARED (mmap's default): every forked worker sees one copy.
        self._map = mmap.mmap(-1, _BOARD_HEADER_BYTES + workers * self.slot_bytes)

    @classmethod
    def for_servers(cls, workers: int, servers: int) -> StatsBoard:
        """A board whose slots fit a snapshot with `servers` server lines and histograms."""
        return cls(workers, 4096 + 1024 * servers)

    @property
    def generation(self) -> int:
        return self._load(0)

    def next_generation(self) -> int:
        """`stats reset`: start a new generation; every worker resets when it sees it."""
        generation = self.generation + 1
        self._store(0, generation)
        return generation

    def publish(self, index: int, generation: int, snapshot: Snapshot) -> bool:
        """Write worker `index`'s snapshot; False if it is too large for a slot."""
        payload = json.dumps(snapshot, separators=(",", ":")).encode()
        if _SLOT_HEADER_BYTES + len(payload) > self.slot_bytes:
            return False
        slot = self._offset(index)
        # Odd while writing. A worker killed mid-write leaves it odd: its successor
        # in the slot keeps that odd number and still ends on an even one.
        writing = self._load(slot + _SEQUENCE) | 1
        self._store(slot + _SEQUENCE, writing)
        self._store(slot + _GENERATION, generation)
        self._store(slot + _LENGTH, len(payload))
        self._store(slot + _CHECKSUM, _checksum(generation, payload))
        start = slot + _SLOT_HEADER_BYTES
        self._map[start : start + len(payload)] = payload
        self._store(slot + _SEQUENCE, writing + 1)
        return True

    def read(self, index: int) -> tuple[int, Snapshot] | None:
        """Worker `index`'s latest (generation, snapshot), or None if it has none yet."""
        slot = self._offset(index)
        start = slot + _SLOT_HEADER_BYTES
        for _ in range(_READ_TRIES):
            sequence = self._load(slot + _SEQUENCE)
            if sequence == 0:
                return None
            if sequence % 2:
                continue  # being written
            generation = self._load(slot + _GENERATION)
            length = min(self._load(slot + _LENGTH), self.slot_bytes - _SLOT_HEADER_BYTES)
            checksum = self._load(slot + _CHECKSUM)
            payload = self._map[start : start + length]
            if (
                self._load(slot + _SEQUENCE) == sequence
                and _checksum(generation, payload) == checksum
            ):
                snapshot: Snapshot = json.loads(payload)
                return generation, snapshot
        return None

    def _offset(self, index: int) -> int:
        if not 0 <= index < self.workers:
            raise IndexError(f"worker {index} of {self.workers}")
        return _BOARD_HEADER_BYTES + index * self.slot_bytes

    def _load(self, offset: int) -> int:
        value: int = _WORD.unpack(self._map[offset : offset + 8])[0]
        return value

    def _store(self, offset: int, value: int) -> None:
        self._map[offset : offset + 8] = _WORD.pack(value)


def _checksum(generation: int, payload: bytes) -> int:
    return zlib.crc32(payload, generation & 0xFFFFFFFF)


class SharedStats:
    """One worker's place on the board: what it publishes, what the others published."""

    def __init__(self, board: StatsBoard, index: int) -> None:
        self.board = board
        self.index = index
        #: The reset generation this worker's counters belong to.
        self.generation = board.generation
        self._too_large_logged = False

    @property
    def workers(self) -> int:
        return self.board.workers

    def reset_due(self) -> bool:
        """Whether another worker answered `stats reset` since this one last reset."""
        return self.board.generation != self.generation

    def mark_reset(self) -> None:
        self.generation = self.board.generation

    def request_reset(self) -> None:
        """This worker answers `stats reset`: every worker resets (this one at once)."""
        self.generation = self.board.next_generation()

    def publish(self, snapshot: Snapshot) -> None:
        if not self.board.publish(self.index, self.generation, snapshot):
            # Per-server lines are what grows: the totals still fit without them.
            smaller = {**snapshot, "servers": {}, "latency": {}}
            self.board.publish(self.index, self.generation, smaller)
            if not self._too_large_logged:
                self._too_large_logged = True
                log.warning("stats: too many servers to share per-server counters")

    def others(self) -> list[Snapshot]:
        """The other workers' snapshots of the current generation."""
        current = self.board.generation
        found = []
        for index in range(self.board.workers):
            if index == self.index:
                continue
            entry = self.board.read(index)
            if entry is not None and entry[0] == current:
                found.append(entry[1])
        return found
