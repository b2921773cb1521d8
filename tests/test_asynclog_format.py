"""The delete stream in memory: the spool record format, and which deletes PoolRoute spools."""

from __future__ import annotations

import json

import attrs
import pytest
from handle_helpers import (
    CLIENT_ERROR,
    CONNECT_ERROR,
    DELETED,
    NOT_FOUND,
    REMOTE_ERROR,
    TIMEOUT,
    TKO,
    request,
    server,
)

from mcrouter_trio.messages import Pending, Reply
from mcrouter_trio.ops._asynclog import (
    BadRecord,
    WriterNames,
    decode_progress,
    encode_progress,
    encode_record,
    parse_record,
    parse_records,
    pending_records,
    spool_file_order,
    spool_file_path,
)
from mcrouter_trio.routing import ServerSpec
from mcrouter_trio.routing._specs import PoolSpec
from mcrouter_trio.routing.handles.hash import PoolRoute
from mcrouter_trio.routing.testing import FakeContext

NAMES = WriterNames(service="svc", router="5000", flavor="web", region="east")


def test_version1_record_is_mcroutes_line() -> None:
    line = encode_record("10.0.0.1", 11302, b"foo", "A", 1289416829.836, NAMES, version2=False)
    assert line == b'["AS1.0",1289416829.836,"C",["10.0.0.1",11302,"delete foo\\r\\n"]]\n'


def test_version2_record_has_mcroutes_fields() -> None:
    line = encode_record("10.0.0.1", 11302, b"foo", "pool", 1289416829.5, NAMES, version2=True)
    magic, stamp, kind, body = json.loads(line)
    assert (magic, stamp, kind) == ("AS2.0", 1289416829.5, "C")
    assert body == {
        "s": "svc",
        "f": "web",
        "r": "east",
        "h": "[10.0.0.1]:11302",
        "p": "pool",
        "k": "foo",
        "a": {"al": 1},
    }


@pytest.mark.parametrize("version2", [False, True])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_records_read_back_as_written(version2: bool, host: str) -> None:
    key = "ключ".encode() + b"\xff"
    line = encode_record(host, 11211, key, "A", 1000.25, NAMES, version2=version2)
    record = parse_record(line[:-1], len(line))
    assert (record.host, record.port, record.key, record.time, record.end) == (
        host,
        11211,
        key,
        1000.25,
        len(line),
    )
    assert record.pool == ("A" if version2 else "")


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b'["AS3.0",1,"C",[]]',
        b'["AS1.0",1,"C",["h",1,"set k 0 0 1\\r\\n"]]',
        b'["AS1.0",1,"C",["h","port","delete k\\r\\n"]]',
        b'["AS2.0",1,"C",{"h":"[h]:1"}]',
    ],
)
def test_lines_that_are_not_delete_records_are_refused(line: bytes) -> None:
    with pytest.raises(BadRecord):
        parse_record(line, 0)


def test_a_file_is_read_up_to_its_last_complete_line() -> None:
    one = encode_record("h", 1, b"a", "A", 1.0, NAMES, version2=False)
    two = encode_record("h", 2, b"b", "A", 2.0, NAMES, version2=False)
    data = one + b"garbage\n" + two + two[:10]
    records, bad = parse_records(data)
    assert [(r.port, r.key, r.end) for r in records] == [
        (1, b"a", len(one)),
        (2, b"b", len(one) + 8 + len(two)),
    ]
    assert bad == [len(one)]


def test_pending_records_are_per_destination_after_its_mark() -> None:
    lines = [encode_record("h", port, b"k%d" % n, "A", n, NAMES, version2=False)
             for n, port in enumerate([1, 2, 1, 2])]  # fmt: skip
    records, _ = parse_records(b"".join(lines))
    marks = {"h:1": records[0].end}  # h:1's first delete done, h:2 nothing yet
    pending = pending_records(records, marks)
    assert {dest: [r.key for r in rs] for dest, rs in pending.items()} == {
        "h:2": [b"k1", b"k3"],
        "h:1": [b"k2"],
    }


def test_progress_round_trips_and_damage_is_refused() -> None:
    progress = {"20260101T10-1767261600/f": {"h:1": 10, "h:2": 0}}
    assert decode_progress(encode_progress(progress)) == progress
    assert decode_progress(b"") == {}
    for damaged in (b"[]", b'{"f": 3}', b'{"f": {"h:1": "x"}}'):
        with pytest.raises(ValueError):
            decode_progress(damaged)


def test_file_names_sort_by_opening_time() -> None:
    hour, name = spool_file_path(7200 + 61, NAMES, "42")
    assert hour.endswith("-7200")
    assert name.split("-")[1:] == ["7261", "svc", "5000", "t42"]
    later = spool_file_path(10_000, NAMES, "1")
    names = [f"{later[0]}/{later[1]}", f"{hour}/{name}"]
    assert sorted(names, key=spool_file_order) == names[::-1]


# -- PoolRoute -----------------------------------------------------------------------


@attrs.define
class RecordingSpool:
    """Routing's `DeleteSpool`, in memory: records what it is asked to spool."""

    spooled: list[tuple[ServerSpec, bytes, str, Reply]] = attrs.Factory(list)
    pendings: list[Pending] = attrs.Factory(list)

    def spool(self, server: ServerSpec, key: bytes, pool: str, failure: Reply) -> Pending:
        self.spooled.append((server, key, pool, failure))
        pending = Pending()
        self.pendings.append(pending)
        return pending


def _pool_route(**options: object) -> PoolRoute:
    return PoolRoute(PoolSpec("A", (server(1),)), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("failure", [CONNECT_ERROR, TIMEOUT, TKO, REMOTE_ERROR])
def test_a_delete_the_server_fails_is_spooled_and_answered_when_on_disk(failure: Reply) -> None:
    ctx = FakeContext()
    spool = RecordingSpool()
    ctx.asynclog = spool
    pending = _pool_route().route(request(b"delete k\r\n"), ctx)
    ctx.sent[0].answer(failure)
    assert spool.spooled == [(server(1), b"k", "A", failure)]
    assert pending.reply is None  # not before the record is on disk
    spool.pendings[0].resolve(NOT_FOUND)
    assert pending.reply == NOT_FOUND


@pytest.mark.parametrize("reply", [DELETED, NOT_FOUND, CLIENT_ERROR])
def test_a_delete_the_server_answered_is_not_spooled(reply: Reply) -> None:
    ctx = FakeContext(answer=lambda _server, _request: reply)
    spool = RecordingSpool()
    ctx.asynclog = spool
    assert _pool_route().route(request(b"delete k\r\n"), ctx).reply == reply
    assert spool.spooled == []


@pytest.mark.parametrize(
    ("route", "wire", "spools"),
    [
        (_pool_route(), b"set k 0 0 1\r\nv\r\n", False),
        (_pool_route(), b"incr k 1\r\n", False),
        (_pool_route(asynclog=False), b"delete k\r\n", False),
        (_pool_route(), b"delete k\r\n", True),
    ],
)
def test_only_deletes_of_a_pool_route_with_asynclog_are_spooled(
    route: PoolRoute, wire: bytes, spools: bool
) -> None:
    ctx = FakeContext(answer=lambda _server, _request: CONNECT_ERROR)
    spool = RecordingSpool()
    ctx.asynclog = spool
    pending = route.route(request(wire), ctx)
    assert bool(spool.spooled) == spools
    assert (pending.reply is None) == spools


def test_no_spool_in_the_context_returns_the_error() -> None:
    ctx = FakeContext(answer=lambda _server, _request: CONNECT_ERROR)
    assert _pool_route().route(request(b"delete k\r\n"), ctx).reply == CONNECT_ERROR


@pytest.mark.parametrize(
    ("keep_routing_prefix", "logged"),
    [(False, b"k"), (True, b"/a/b/k")],
)
def test_the_key_is_spooled_without_its_routing_prefix_unless_the_pool_keeps_it(
    keep_routing_prefix: bool, logged: bytes
) -> None:
    ctx = FakeContext(answer=lambda _server, _request: TKO)
    spool = RecordingSpool()
    ctx.asynclog = spool
    pool = PoolSpec("A", (server(1),), keep_routing_prefix=keep_routing_prefix)
    PoolRoute(pool, asynclog_name="deletes").route(request(b"delete /a/b/k\r\n"), ctx)
    assert [(key, name) for _, key, name, _ in spool.spooled] == [(logged, "deletes")]
