"""Hostile input at scale: the request parser, the reply framer, and a live proxy.

`fuzz_parser` and `fuzz_framer` push generated and mutated inputs through the pure
protocol code and check its invariants: nothing but the documented exceptions, the
same events whether the bytes arrive in one piece or in random reads, and buffers
that stay bounded. `live_run` points hostile clients (random bytes, huge lengths,
binary-protocol magic, HTTP, slowloris trickles, half-sent values then close,
giant gets never read) at a running proxy next to checking clients, which verify
that every reply is their own and that none is an error.

`nox -s fuzz` runs this module for a million inputs and a minute live; the test
suite runs a short version (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mcrouter_trio.messages import Op, Request
from mcrouter_trio.protocol import (
    INCOMPLETE_LINE_LIMIT,
    NEED_DATA,
    CloseConnection,
    Event,
    GetBatchFramer,
    GetProgress,
    ReplyStreamError,
    RequestParser,
    frame_reply,
)

MAX_VALUE_SIZE = 4096
MAX_LINE_LENGTH = 8192

# -- generated requests -------------------------------------------------------------------

_COMMANDS = [
    b"get", b"gets", b"gat", b"gats", b"set", b"add", b"replace", b"append", b"prepend",
    b"cas", b"delete", b"incr", b"decr", b"touch", b"mg", b"ms", b"md", b"ma", b"me",
    b"mn", b"version", b"verbosity", b"stats", b"flush_all", b"quit", b"cache_memlimit",
    b"shutdown", b"bget", b"GET", b"POST",
]  # fmt: skip
_TOKENS = [
    b"0", b"1", b"-1", b"noreply", b"q", b"v", b"T10", b"N5", b"MS", b"b", b"k", b"O123",
    b"4294967296", b"18446744073709551616", b"2147483647", b"999999999", b"HTTP/1.1", b"",
    b"\x00", b"\t", b"\r", b"a" * 251, b"F7", b"C1", b"J3", b"D2", b"I", b"E1",
]  # fmt: skip


def _key(rng: random.Random) -> bytes:
    length = rng.choice([1, 3, 8, 250, 251])
    return bytes(rng.choice(b"abcxyz019_/:.") for _ in range(length))


def generated_request(rng: random.Random) -> bytes:
    """One request line (and data block) shaped like the protocol, often not quite."""
    command = rng.choice(_COMMANDS)
    words = [command]
    if command in (b"get", b"gets", b"gat", b"gats", b"bget"):
        if command.startswith(b"gat"):
            words.append(rng.choice(_TOKENS))
        words += [_key(rng) for _ in range(rng.choice([1, 1, 2, 5, 40]))]
        return b" ".join(words) + b"\r\n"
    words.append(_key(rng))
    if command in (b"set", b"add", b"replace", b"append", b"prepend", b"cas", b"ms"):
        length = rng.choice([0, 1, 5, 100, MAX_VALUE_SIZE + 1, 2**31 + 5])
        sent = min(length, 200)
        if command == b"ms":
            words.append(b"%d" % length)
        else:
            words += [rng.choice(_TOKENS), rng.choice(_TOKENS), b"%d" % length]
        words += [rng.choice(_TOKENS) for _ in range(rng.choice([0, 0, 1, 2]))]
        data = rng.randbytes(sent)
        end = rng.choice([b"\r\n", b"\r\n", b"\n", b"xx", b""])
        return b" ".join(words) + b"\r\n" + data + end
    words += [rng.choice(_TOKENS) for _ in range(rng.choice([0, 1, 2, 3, 25]))]
    return b" ".join(words) + rng.choice([b"\r\n", b"\r\n", b"\n"])


def mutated(rng: random.Random, data: bytes) -> bytes:
    """`data` with a few bytes flipped, inserted, deleted or repeated."""
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4])):
        where = rng.randrange(len(out) + 1)
        kind = rng.randrange(5)
        if kind == 0 and out:
            out[min(where, len(out) - 1)] = rng.getrandbits(8)
        elif kind == 1:
            out[where:where] = rng.choice([b"\r\n", b" ", b"\x00", b"\x80", b"\n", b"END"])
        elif kind == 2:
            del out[where : where + rng.randrange(1, 8)]
        elif kind == 3:
            out[where:where] = out[where : where + rng.randrange(1, 64)]
        else:
            out[where:where] = rng.randbytes(rng.randrange(1, 16))
    return bytes(out)


def request_inputs(rng: random.Random) -> bytes:
    """A client's whole input: a few requests, often mutated, sometimes pure noise."""
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randrange(1, 300))
    data = b"".join(generated_request(rng) for _ in range(rng.choice([1, 1, 2, 3, 6])))
    return mutated(rng, data) if roll < 0.6 else data


# -- the parser ---------------------------------------------------------------------------


def _event_key(event: Event) -> object:
    if isinstance(event, Request):
        wire = event.to_wire() if event.op is not Op.QUIT else b""
        fields = (event.op, event.key, event.keys, event.args, event.data, event.noreply)
        return (*fields, event.quiet_forwarded, wire)
    return event


def _ends_the_session(event: Event) -> bool:
    return isinstance(event, CloseConnection) or (
        isinstance(event, Request) and event.op is Op.QUIT
    )


def _drain(parser: RequestParser, events: list[object]) -> bool:
    """Every event `parser` has; True if one ends the session (nothing is read after it)."""
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            return False
        events.append(_event_key(event))
        if _ends_the_session(event):
            return True
        # What a session holds is bounded whatever the input.
        assert parser.buffered <= MAX_LINE_LENGTH + MAX_VALUE_SIZE + 2 + 65536


def _parser() -> RequestParser:
    return RequestParser(max_value_size=MAX_VALUE_SIZE, max_line_length=MAX_LINE_LENGTH)


def parse_at_once(data: bytes) -> list[object]:
    return parse_in_reads(data, [])


def parse_in_reads(data: bytes, cuts: list[int]) -> list[object]:
    """As a session parses: each read offered to the plain-get shortcut, else fed."""
    parser = _parser()
    events: list[object] = []
    start = 0
    for end in [*sorted(set(cuts)), len(data)]:
        chunk = data[start:end]
        start = max(start, end)
        if not chunk:
            continue
        plain = parser.take_plain_get(chunk)
        if plain is not None:
            events.append(_event_key(plain))
            continue
        parser.feed(chunk)
        if _drain(parser, events):
            break
    return events


def fuzz_parser(count: int, seed: int) -> None:
    """`count` inputs: parsed in one piece and in random reads, the same events."""
    rng = random.Random(seed)
    for index in range(count):
        data = request_inputs(rng)
        cuts = [rng.randrange(len(data) + 1) for _ in range(rng.choice([0, 1, 3, 10]))]
        try:
            whole = parse_at_once(data)
            pieces = parse_in_reads(data, cuts)
        except Exception as exc:
            raise AssertionError(f"input {index} (seed {seed}): {data!r}") from exc
        where = f"input {index} (seed {seed}) cut at {cuts}: {data!r}"
        if max(len(line) for line in data.split(b"\n")) <= INCOMPLETE_LINE_LIMIT:
            assert whole == pieces, where
        else:
            # A line without its newline is refused once INCOMPLETE_LINE_LIMIT bytes of
            # it are buffered, as memcached refuses it: where depends on the reads.
            # Up to that refusal, the events are the same.
            refused = [
                events[:-1] if events and isinstance(events[-1], CloseConnection) else events
                for events in (whole, pieces)
            ]
            shorter, longer = sorted(refused, key=len)
            assert longer[: len(shorter)] == shorter, where


# -- the reply framer ---------------------------------------------------------------------

_REPLY_OPS = [Op.GET, Op.GETS, Op.SET, Op.DELETE, Op.INCR, Op.TOUCH, Op.MG, Op.MS, Op.VERSION]


def generated_reply(rng: random.Random, op: Op) -> bytes:
    if op in (Op.GET, Op.GETS):
        hits = rng.choice([0, 1, 2, 30])
        blocks = []
        for i in range(hits):
            value = rng.randbytes(rng.choice([0, 3, 40]))
            cas = b" 7" if op is Op.GETS else b""
            blocks.append(b"VALUE k%d 0 %d%s\r\n%s\r\n" % (i, len(value), cas, value))
        return b"".join(blocks) + rng.choice([b"END\r\n", b"END\r\n", b"SERVER_ERROR oom\r\n"])
    return rng.choice(
        {
            Op.SET: [b"STORED\r\n", b"NOT_STORED\r\n"],
            Op.DELETE: [b"DELETED\r\n", b"NOT_FOUND\r\n"],
            Op.INCR: [b"12\r\n", b"NOT_FOUND\r\n", b"CLIENT_ERROR bad\r\n"],
            Op.TOUCH: [b"TOUCHED\r\n"],
            Op.MG: [b"EN\r\n", b"HD\r\n", b"VA 2 f1\r\nhi\r\n"],
            Op.MS: [b"HD\r\n", b"NS\r\n"],
            Op.VERSION: [b"VERSION 1.6.18\r\n"],
        }[op]
    )


def frame_stream(ops: list[Op], stream: bytes, cuts: list[int]) -> list[object]:
    """Frame replies to `ops` from `stream` arriving in reads, as a connection does."""
    progress = GetProgress()
    buf = bytearray()
    pos = fed = 0
    framed: list[object] = []
    pending = list(ops)
    for end in [*sorted(set(cuts)), len(stream)]:
        buf += stream[fed:end]
        fed = max(fed, end)
        while pending:
            try:
                result = frame_reply(buf, pos, pending[0], progress)
            except ReplyStreamError:
                return [*framed, "stream error"]
            if result is None:
                break
            reply, pos = result
            framed.append((reply.result, reply.raw))
            pending.pop(0)
        # The framer never holds more than the reply it waits for.
        assert len(buf) - pos <= len(stream)
        del buf[:pos]
        pos = 0
    return framed


def frame_batch(keys: list[bytes], stream: bytes, cuts: list[int]) -> object:
    framer = GetBatchFramer(keys)
    buf = bytearray()
    fed = 0
    for end in [*sorted(set(cuts)), len(stream)]:
        buf += stream[fed:end]
        fed = max(fed, end)
        try:
            after = framer.frame(buf, 0)
        except ReplyStreamError:
            return "stream error"
        if after is not None:
            return after, [(reply.result, reply.raw) for reply in framer.replies]
    return None


def fuzz_framer(count: int, seed: int) -> None:
    """`count` reply streams: framed at once and in random reads, the same replies."""
    rng = random.Random(seed)
    for index in range(count):
        ops = [rng.choice(_REPLY_OPS) for _ in range(rng.choice([1, 2, 5]))]
        stream = b"".join(generated_reply(rng, op) for op in ops)
        if rng.random() < 0.5:
            stream = mutated(rng, stream)
        cuts = [rng.randrange(len(stream) + 1) for _ in range(rng.choice([0, 1, 4, 20]))]
        where = f"stream {index} (seed {seed}) for {ops}: {stream!r}"
        keys = [b"k%d" % i for i in range(rng.choice([1, 2, 30]))]
        try:
            same = frame_stream(ops, stream, []) == frame_stream(ops, stream, cuts)
            same_batch = frame_batch(keys, stream, []) == frame_batch(keys, stream, cuts)
        except Exception as exc:
            raise AssertionError(where) from exc
        assert same, where
        assert same_batch, f"batched get of {len(keys)} keys: {where}"


# -- a live proxy -------------------------------------------------------------------------


def _hostile_behaviours(rng: random.Random) -> list[Callable[[socket.socket], None]]:
    def random_bytes(sock: socket.socket) -> None:
        sock.sendall(rng.randbytes(rng.randrange(1, 4000)))

    def huge_lengths(sock: socket.socket) -> None:
        sock.sendall(b"set huge 0 0 2147483600\r\n" + b"x" * 100000)

    def binary_magic(sock: socket.socket) -> None:
        sock.sendall(b"\x80\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x05" + b"\x00" * 12 + b"hello")

    def http(sock: socket.socket) -> None:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")

    def slowloris(sock: socket.socket) -> None:
        for byte in b"get " + b"s" * 3000:
            sock.send(bytes([byte]))
            time.sleep(0.002)

    def half_sent_value(sock: socket.socket) -> None:
        sock.sendall(b"set half 0 0 1000\r\n" + b"y" * rng.randrange(0, 999))

    def giant_get_unread(sock: socket.socket) -> None:
        sock.sendall(b"get " + b" ".join(b"key%d" % i for i in range(60000)) + b"\r\n")

    def pipelined_never_read(sock: socket.socket) -> None:
        sock.sendall(b"get big\r\n" * 20000)

    def mutated_requests(sock: socket.socket) -> None:
        sock.sendall(b"".join(request_inputs(rng) for _ in range(50)))

    return [
        random_bytes, huge_lengths, binary_magic, http, slowloris, half_sent_value,
        giant_get_unread, pipelined_never_read, mutated_requests,
    ]  # fmt: skip


def _hostile(port: int, seed: int, deadline: float, stop: threading.Event) -> None:
    rng = random.Random(seed)
    behaviours = _hostile_behaviours(rng)
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                rng.choice(behaviours)(sock)
                if rng.random() < 0.5:
                    sock.settimeout(0.05)
                    with contextlib.suppress(OSError):
                        sock.recv(65536)
                if rng.random() < 0.3:
                    sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy closed on us: what hostile input deserves


def _recv_reply(sock: socket.socket, buffer: bytearray, terminator: bytes) -> bytes:
    while True:
        end = buffer.find(terminator)
        if end >= 0:
            reply = bytes(buffer[: end + len(terminator)])
            del buffer[: end + len(terminator)]
            return reply
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the proxy closed a checking client's connection")
        buffer += data


def _checker(port: int, name: int, deadline: float, failures: list[str], counts: list[int]) -> None:
    """Sets and gets keys only it uses, with values only it writes: every reply must match."""
    rng = random.Random(name)
    buffer = bytearray()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            serial = 0
            while time.monotonic() < deadline:
                serial += 1
                keys = [b"check%d:%d:%d" % (name, serial, i) for i in range(rng.choice([1, 3]))]
                values = [b"v%d.%d.%d.%s" % (name, serial, i, os.urandom(4).hex().encode())
                          for i in range(len(keys))]  # fmt: skip
                for key, value in zip(keys, values, strict=True):
                    sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
                for key in keys:
                    reply = _recv_reply(sock, buffer, b"\r\n")
                    if reply != b"STORED\r\n":
                        failures.append(f"checker {name}: set {key!r} answered {reply!r}")
                        return
                sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
                expected = (
                    b"".join(
                        b"VALUE %s 0 %d\r\n%s\r\n" % (key, len(value), value)
                        for key, value in zip(keys, values, strict=True)
                    )
                    + b"END\r\n"
                )
                reply = _recv_reply(sock, buffer, b"END\r\n")
                if reply != expected:
                    failures.append(f"checker {name}: got {reply[:200]!r}, not {expected!r}")
                    return
                counts[name] += 1
    except OSError as exc:
        failures.append(f"checker {name}: {exc!r}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def live_run(
    port: int, pid: int, seconds: float, *, hostile: int = 20, checkers: int = 4, seed: int = 0
) -> tuple[list[str], list[int], int]:
    """Hostile and checking clients for `seconds`.

    Returns the checking clients' failures, their round trips each, and how much the
    proxy's RSS grew at its peak (KiB).
    """
    before = rss_kib(pid)
    deadline = time.monotonic() + seconds
    stop = threading.Event()
    failures: list[str] = []
    counts = [0] * checkers
    threads = [
        threading.Thread(target=_hostile, args=(port, seed * 1000 + i, deadline, stop), daemon=True)
        for i in range(hostile)
    ] + [
        threading.Thread(target=_checker, args=(port, i, deadline, failures, counts), daemon=True)
        for i in range(checkers)
    ]
    for thread in threads:
        thread.start()
    peak = before
    while time.monotonic() < deadline:
        time.sleep(0.2)
        peak = max(peak, rss_kib(pid))
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    return failures, counts, peak - before


# -- nox -s fuzz ----------------------------------------------------------------------------


def _batches(total: int, size: int) -> Iterator[int]:
    while total > 0:
        yield min(size, total)
        total -= size


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import free_port, wait_for_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--replies", type=int, default=300_000)
    parser.add_argument("--live-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args()
    print(f"seed {args.seed}", flush=True)
    done = 0
    for number, batch in enumerate(_batches(args.requests, 100_000)):
        fuzz_parser(batch, args.seed + number)
        done += batch
        print(f"parser: {done} inputs", flush=True)
    done = 0
    for number, batch in enumerate(_batches(args.replies, 100_000)):
        fuzz_framer(batch, args.seed + number)
        done += batch
        print(f"framer: {done} reply streams", flush=True)
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        memcached_port, proxy_port = free_port(), free_port()
        memcached = subprocess.Popen(
            ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(memcached_port), "-U", "0"]
        )
        config = Path(tmp) / "config.json"
        servers = [f"127.0.0.1:{memcached_port}"]
        config.write_text(
            json.dumps({"pools": {"A": {"servers": servers}}, "route": "PoolRoute|A"})
        )
        proxy = subprocess.Popen(
            [sys.executable, "-m", "mcrouter_trio", "-p", str(proxy_port),
             "--listen-addresses", "127.0.0.1", "-f", str(config), "-L", f"{tmp}/proxy.log"]
        )  # fmt: skip
        try:
            wait_for_port(memcached_port, memcached)
            wait_for_port(proxy_port, proxy)
            failures, counts, growth = live_run(
                proxy_port, proxy.pid, args.live_seconds, seed=args.seed
            )
            alive = proxy.poll() is None
        finally:
            proxy.terminate()
            memcached.terminate()
            proxy.wait()
            memcached.wait()
    print(f"live: {sum(counts)} checked round trips, RSS grew {growth} KiB, alive={alive}")
    for failure in failures:
        print(failure)
    if failures or not alive or not all(counts) or growth > LIVE_RSS_GROWTH_KIB:
        sys.exit("fuzz: FAILED")
    print("fuzz: ok")


#: What a live run may grow the proxy by: hostile clients are each held to
#: --max-client-buffer, but come and go; far less is normal.
LIVE_RSS_GROWTH_KIB = 200 * 1024

if __name__ == "__main__":
    main()
