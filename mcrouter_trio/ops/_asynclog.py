"""mcrouter's asynclog: the spool record format, file names and replay progress (pure).

A spooled delete is one line, a JSON array (`AsyncLog.cpp`):

- version 1: `["AS1.0", <unix time, ms>, "C", ["<host>", <port>, "delete <key>\\r\\n"]]`
- version 2 (`--use-asynclog-version2`): `["AS2.0", <time>, "C", {"s": service,
  "f": flavor, "r": region, "h": "[<host>]:<port>", "p": pool, "k": key, "a": {"al": 1}}]`

Files live under the spool root as
`<YYYYMMDD>T<HH>-<hour epoch>/<YYYYMMDD>T<HHMMSS>-<epoch>-<service>-<router>-t<id>-<ptr>`,
in local time, a new file every 15 minutes per writer.

Replay progress (ours: mcrouter has no replayer) is a JSON object saved next to the
files: for each spool file, for each destination `host:port`, the byte offset up to
which that destination's deletes have been sent and answered. Deletes of one
destination are replayed in file order, so one offset per destination says it all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

#: mcrouter's `DEFAULT_ASYNCLOG_LIFETIME`: a writer starts a new file this often.
FILE_LIFETIME: Final = 15 * 60
#: The replay progress file, in the spool root (never matches a spool hour directory).
PROGRESS_FILE: Final = "replay-progress.json"

_MAGIC_V1: Final = "AS1.0"
_MAGIC_V2: Final = "AS2.0"


@attrs.frozen
class WriterNames:
    """What a spool file's name and a version 2 record say about the writer."""

    service: str = "mcrouter"
    router: str = "0"
    flavor: str = ""
    region: str = ""


@attrs.frozen
class SpooledDelete:
    """One record read back from a spool file, with where it lies in the file."""

    host: str
    port: int
    key: bytes
    #: Unix time the delete was spooled.
    time: float
    pool: str
    #: Byte offset of the line's end (its `\\n` included) in its file.
    end: int

    @property
    def destination(self) -> str:
        return f"{self.host}:{self.port}"


def encode_record(
    host: str, port: int, key: bytes, pool: str, now: float, names: WriterNames, *, version2: bool
) -> bytes:
    """One spool line for a delete of `key` (no routing prefix) sent to `host:port`."""
    text_key = key.decode("utf-8", "surrogateescape")
    body: object
    if version2:
        body = {
            "s": names.service,
            "f": names.flavor,
            "r": names.region,
            "h": f"[{host}]:{port}",
            "p": pool,
            "k": text_key,
            "a": {"al": 1},
        }
    else:
        body = [host, port, f"delete {text_key}\r\n"]
    magic = _MAGIC_V2 if version2 else _MAGIC_V1
    stamp = round(now * 1000) / 1000
    line = json.dumps([magic, stamp, "C", body], separators=(",", ":"), ensure_ascii=False)
    return line.encode("utf-8", "surrogateescape") + b"\n"


class BadRecord(ValueError):
    """A spool line that is not an asynclog delete record."""


def parse_record(line: bytes, end: int) -> SpooledDelete:
    """The delete recorded by one spool line (without its `\\n`); `BadRecord` if none."""
    try:
        magic, stamp, _kind, body = json.loads(line.decode("utf-8", "surrogateescape"))
        if magic == _MAGIC_V1:
            host, port, command = body
            if not command.startswith("delete ") or not command.endswith("\r\n"):
                raise BadRecord(f"not a delete: {command!r}")
            key, pool = command[len("delete ") : -2], ""
        elif magic == _MAGIC_V2:
            host, _, port = body["h"].rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            key, pool = body["k"], body.get("p", "")
        else:
            raise BadRecord(f"unknown record version {magic!r}")
        return SpooledDelete(
            str(host),
            int(port),
            str(key).encode("utf-8", "surrogateescape"),
            float(stamp),
            str(pool),
            end,
        )
    except BadRecord:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadRecord(str(exc)) from exc


def parse_records(data: bytes) -> tuple[list[SpooledDelete], list[int]]:
    """Every complete line of a spool file: the records, and the offsets of bad lines.

    A last line without its `\\n` is being written (or was cut by a crash before its
    fsync, so no client was told it was spooled): it is left for later.
    """
    records: list[SpooledDelete] = []
    bad: list[int] = []
    start = 0
    while True:
        newline = data.find(b"\n", start)
        if newline < 0:
            return records, bad
        try:
            records.append(parse_record(data[start:newline], newline + 1))
        except BadRecord:
            bad.append(start)
        start = newline + 1


def spool_file_path(now: float, names: WriterNames, writer_id: str) -> tuple[str, str]:
    """(hour directory, file name) for a spool file opened at `now`, as mcrouter names them."""
    epoch = int(now)
    date = time.localtime(epoch)
    hour = f"{time.strftime('%Y%m%dT%H', date)}-{epoch - epoch % 3600}"
    name = (
        f"{time.strftime('%Y%m%dT%H%M%S', date)}-{epoch}-{names.service}-{names.router}"
        f"-t{writer_id}"
    )
    return hour, name


def spool_file_order(relative: str) -> tuple[int, str]:
    """Sort key of a spool file (`hour/name`): its opening time, then its name."""
    name = relative.rpartition("/")[2]
    parts = name.split("-")
    try:
        return int(parts[1]), name
    except (IndexError, ValueError):
        return 0, name


Progress = dict[str, dict[str, int]]


def encode_progress(progress: Mapping[str, Mapping[str, int]]) -> bytes:
    return json.dumps(progress, sort_keys=True, indent=1).encode() + b"\n"


def decode_progress(data: bytes) -> Progress:
    """The saved progress; `ValueError` if the file is not what `encode_progress` wrote."""
    loaded = json.loads(data) if data.strip() else {}
    if not isinstance(loaded, dict):
        raise ValueError("replay progress is not a JSON object")
    progress: Progress = {}
    for name, marks in loaded.items():
        if not isinstance(marks, dict) or not all(
            isinstance(offset, int) for offset in marks.values()
        ):
            raise ValueError(f"replay progress of {name!r} is not an object of offsets")
        progress[str(name)] = {str(dest): int(offset) for dest, offset in marks.items()}
    return progress


def pending_records(
    records: Iterable[SpooledDelete], marks: Mapping[str, int]
) -> dict[str, list[SpooledDelete]]:
    """The records not replayed yet, per destination, in file order."""
    pending: dict[str, list[SpooledDelete]] = {}
    for record in records:
        if record.end > marks.get(record.destination, 0):
            pending.setdefault(record.destination, []).append(record)
    return pending
