"""Failover handles in memory: failover_errors, failover_limit, failover_policy,
MissFailoverRoute, FailoverWithExptimeRoute, SaltedFailoverRoute (one row per rule)."""

from __future__ import annotations

import pytest
from handle_helpers import (
    CLIENT_ERROR,
    CONNECT_ERROR,
    CONNECT_TIMEOUT,
    DELETED,
    HIT,
    MISS,
    NOT_FOUND,
    REMOTE_ERROR,
    STORED,
    TIMEOUT,
    TKO,
    destinations,
    port_of,
    request,
)

from mcrouter_trio.hashing import ch3, routing_key
from mcrouter_trio.messages import Reply, Request, Result
from mcrouter_trio.routing import Invalid, PoolSpec, ServerSpec
from mcrouter_trio.routing.handles._failover_settings import (
    FailoverOrder,
    parse_failover_errors,
    parse_failover_limit,
    parse_failover_policy,
)
from mcrouter_trio.routing.handles.destination import DestinationRoute
from mcrouter_trio.routing.handles.failover import (
    FailoverRoute,
    FailoverWithExptimeRoute,
    MissFailoverRoute,
)
from mcrouter_trio.routing.handles.salted_failover import SaltedFailoverRoute
from mcrouter_trio.routing.testing import FakeContext

GET = request(b"get k\r\n")
SET = request(b"set k 0 0 1\r\nv\r\n")
DELETE = request(b"delete k\r\n")
INCR = request(b"incr k 1\r\n")


def tried(route: object, req: Request, replies: list[Reply]) -> tuple[list[int], Reply | None]:
    """The children (ports) `req` went to when each answers with the next of `replies`."""
    ctx = FakeContext()
    pending = route.route(req, ctx)  # type: ignore[attr-defined]
    for index, reply in enumerate(replies):
        if index == len(ctx.sent):
            break
        ctx.sent[index].answer(reply)
    assert len(ctx.sent) <= len(replies), "a child was sent to but given no reply"
    ports = [port_of(sent) for sent in ctx.sent]
    return ports, pending.reply


ERRORS_ROWS = [
    # (failover_errors, request, replies, children tried, reply)
    pytest.param(None, GET, [TIMEOUT, HIT], [1, 2], HIT, id="default-timeout-fails-over"),
    pytest.param(None, GET, [CLIENT_ERROR], [1], CLIENT_ERROR, id="default-client-error-stays"),
    pytest.param(None, GET, [MISS], [1], MISS, id="a-miss-is-an-answer"),
    pytest.param(["timeout"], GET, [TIMEOUT, HIT], [1, 2], HIT, id="list-names-fail-over"),
    pytest.param(["timeout"], SET, [REMOTE_ERROR], [1], REMOTE_ERROR, id="list-others-stay"),
    pytest.param(["client_error"], SET, [CLIENT_ERROR, STORED], [1, 2], STORED, id="any-error"),
    pytest.param({"gets": []}, GET, [TIMEOUT], [1], TIMEOUT, id="empty-list-never-fails-over"),
    pytest.param({"gets": []}, SET, [TIMEOUT, STORED], [1, 2], STORED, id="missing-class-default"),
    pytest.param({"updates": ["remote_error"]}, SET, [TIMEOUT], [1], TIMEOUT, id="updates-list"),
    pytest.param({"deletes": ["tko"]}, DELETE, [TKO, DELETED], [1, 2], DELETED, id="deletes-list"),
    pytest.param(
        {"deletes": ["tko"]}, request(b"md k\r\n"), [TIMEOUT], [1], TIMEOUT, id="meta-delete"
    ),
    pytest.param({"gets": ["tko"]}, request(b"mg k v\r\n"), [TKO, HIT], [1, 2], HIT, id="meta-get"),
    pytest.param(["tko"], INCR, [TIMEOUT, STORED], [1, 2], STORED, id="arithmetic-default"),
]


@pytest.mark.parametrize(("errors", "req", "replies", "ports", "expected"), ERRORS_ROWS)
def test_failover_errors(
    errors: object, req: Request, replies: list[Reply], ports: list[int], expected: Reply
) -> None:
    settings = None if errors is None else parse_failover_errors(errors)
    route = FailoverRoute(destinations(3), failover_errors=settings)
    assert tried(route, req, replies) == (ports, expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["timeout", "nope"], "failover error 'nope' is not a valid error type"),
        ({"gets": ["found"]}, "gets: failover error 'found' is not a valid error type"),
        ({"sets": []}, "unknown key 'sets' (known: gets, updates, deletes)"),
        ({"gets": "timeout"}, 'gets: expected an array of error names, got "timeout"'),
        ("timeout", 'failover errors must be an array or an object, got "timeout"'),
        ([1], "failover error 1 is not a string"),
    ],
)
def test_failover_errors_refused(value: object, message: str) -> None:
    with pytest.raises(Invalid) as raised:
        parse_failover_errors(value)
    assert str(raised.value) == message


def test_failover_limit_lets_rate_times_requests_fail_over_beyond_the_burst() -> None:
    # The bucket holds 2 and refills by 0.5 per request: after the first three
    # failovers (2 at the start, 0.5 + 0.5 since), one per two requests.
    route = FailoverRoute(
        destinations(2), failover_limit=parse_failover_limit({"rate": 0.5, "burst": 2})
    )
    outcomes = [tried(route, GET, [TIMEOUT, HIT])[0] for _ in range(6)]
    assert outcomes == [[1, 2], [1, 2], [1, 2], [1], [1, 2], [1]]


def test_failover_limit_does_not_spend_tokens_on_tko() -> None:
    limit = parse_failover_limit({"rate": 0.5, "burst": 1})
    route = FailoverRoute(destinations(2), failover_limit=limit)
    assert tried(route, GET, [TIMEOUT, HIT])[0] == [1, 2]  # the one token
    assert tried(route, GET, [TKO, HIT])[0] == [1, 2]  # no token needed
    assert tried(route, GET, [TIMEOUT, HIT])[0] == [1, 2]  # 0.5 + 0.5 refilled


def test_failover_limit_with_rate_zero_never_fails_over_but_from_an_unreachable_server() -> None:
    route = FailoverRoute(destinations(2), failover_limit=parse_failover_limit({"rate": 0}))
    assert tried(route, GET, [TIMEOUT, HIT]) == ([1], TIMEOUT)
    assert tried(route, GET, [REMOTE_ERROR, HIT]) == ([1], REMOTE_ERROR)
    for unreachable in (TKO, CONNECT_ERROR, CONNECT_TIMEOUT):
        assert tried(route, GET, [unreachable, HIT]) == ([1, 2], HIT)


@pytest.mark.parametrize(
    ("value", "rate", "burst"),
    [
        ({"rate": 0.25}, 0.25, 1000.0),
        ({"rate": 2, "burst": 0}, 1.0, 1.0),
        ({"rate": -1, "burst": 5.5}, 0.0, 5.5),
    ],
)
def test_failover_limit_defaults_and_clamps(value: object, rate: float, burst: float) -> None:
    limit = parse_failover_limit(value)
    assert (limit.rate, limit.burst) == (rate, burst)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"burst": 5}, "rate not found"),
        ({"rate": "0.5"}, "rate is not a number"),
        ({"rate": 0.5, "brust": 1}, "unknown key 'brust' (known: rate, burst)"),
        ([0.5], "failover limit is not an object, got an array"),
    ],
)
def test_failover_limit_refused(value: object, message: str) -> None:
    with pytest.raises(Invalid) as raised:
        parse_failover_limit(value)
    assert str(raised.value) == message


def test_least_failures_policy_tries_max_tries_children_the_least_failing_first() -> None:
    policy = parse_failover_policy({"type": "LeastFailuresPolicy", "max_tries": 3})
    route = FailoverRoute(destinations(4), failover_policy=policy)
    # In child order at first; 2 and 3 fail once each, 4 is not tried.
    assert tried(route, GET, [TIMEOUT, TIMEOUT, TIMEOUT]) == ([1, 2, 3], TIMEOUT)
    # Child 1 always goes first; 4 (no errors) now comes before 2 and 3.
    assert tried(route, GET, [TIMEOUT, HIT]) == ([1, 4], HIT)
    # 4 fails once, 2 a second time: errors 2:2, 3:1, 4:1.
    assert tried(route, GET, [TIMEOUT, TIMEOUT, TIMEOUT]) == ([1, 4, 2], TIMEOUT)
    # 3 and 4 tie (child order), 2 last; 3 answers well, which resets its count...
    assert tried(route, GET, [TIMEOUT, HIT]) == ([1, 3], HIT)
    # ...so 3 (0 errors) leads 4 (1) and 2 (2).
    assert tried(route, GET, [TIMEOUT, TIMEOUT, TIMEOUT])[0] == [1, 3, 4]


def test_deterministic_order_policy_follows_the_key_with_a_growing_salt() -> None:
    policy = parse_failover_policy(
        {"type": "DeterministicOrderPolicy", "max_tries": 3, "max_error_tries": 3,
         "ignore_normal_reply_index": True}
    )  # fmt: skip
    route = FailoverRoute(destinations(6), failover_policy=policy)
    ports, _ = tried(route, GET, [TIMEOUT, TIMEOUT, TIMEOUT])
    expected = [0]
    salt = 1
    while len(expected) < 3:
        salt += 1
        index = ch3(routing_key(b"k") + str(salt).encode(), 6)
        if index not in expected:
            expected.append(index)
    assert ports == [index + 1 for index in expected]
    assert tried(route, GET, [TIMEOUT, TIMEOUT, TIMEOUT])[0] == ports  # the same every time


@pytest.mark.parametrize(
    ("replies", "tried_children", "final"),
    [
        ([TIMEOUT, REMOTE_ERROR, HIT], 2, REMOTE_ERROR),
        # mcrouter's isTkoOrHardTkoResult: an unreachable server costs no try.
        ([TKO, TIMEOUT, CONNECT_ERROR, HIT], 4, HIT),
        ([CONNECT_TIMEOUT, CONNECT_ERROR, TIMEOUT, HIT], 4, HIT),
        ([TKO, TIMEOUT, TIMEOUT, HIT], 3, TIMEOUT),
    ],
)
def test_deterministic_order_policy_stops_after_max_error_tries_unreachable_aside(
    replies: list[Reply], tried_children: int, final: Reply
) -> None:
    policy = parse_failover_policy(
        {"type": "DeterministicOrderPolicy", "max_tries": 4, "max_error_tries": 2}
    )
    route = FailoverRoute(destinations(5), failover_policy=policy)
    ports, reply = tried(route, GET, replies)
    assert (len(ports), reply) == (tried_children, final)


def test_deterministic_order_policy_exclude_errors_do_not_count() -> None:
    policy = parse_failover_policy(
        {"type": "DeterministicOrderPolicy", "max_tries": 3, "max_error_tries": 1,
         "exclude_errors": ["timeout"]}
    )  # fmt: skip
    route = FailoverRoute(destinations(4), failover_policy=policy)
    assert tried(route, GET, [TIMEOUT, TIMEOUT, HIT])[1] is HIT
    assert tried(route, GET, [REMOTE_ERROR, HIT])[1] is REMOTE_ERROR


def test_salted_failover_skips_the_server_the_pool_picked() -> None:
    pool = PoolSpec("A", tuple(ServerSpec("127.0.0.1", port) for port in range(1, 5)))
    policy = parse_failover_policy(
        {"type": "DeterministicOrderPolicy", "max_tries": 4, "max_error_tries": 4}
    )
    route = SaltedFailoverRoute(pool, failover_policy=policy)
    for key in (b"a", b"b", b"c", b"d", b"e"):
        ports, _ = tried(route, request(b"get " + key + b"\r\n"), [TIMEOUT] * 4)
        assert sorted(ports) == [1, 2, 3, 4]
        normal = ports[0]
        # The pool's own pick is never tried a second time as a plain server.
        assert ports[1:].count(normal) == 0, (key, ports)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"type": "LeastFailuresPolicy"}, "LeastFailuresPolicy must specify 'max_tries' field"),
        ({"type": "LeastFailuresPolicy", "max_tries": 0}, "max_tries: expected an integer in"),
        (
            {"type": "DeterministicOrderPolicy", "max_tries": 2},
            "DeterministicOrderPolicy must specify 'max_error_tries' field",
        ),
        (
            {
                "type": "DeterministicOrderPolicy",
                "max_tries": 2,
                "max_error_tries": 1,
                "hash": {"hash_func": "Crc32"},
            },
            "Unknown hash function Crc32",
        ),
    ],
)
def test_failover_policy_refused(value: object, message: str) -> None:
    with pytest.raises(Invalid) as raised:
        parse_failover_policy(value)
    assert str(raised.value).startswith(message)


def test_an_unknown_policy_type_is_the_plain_order() -> None:
    assert parse_failover_policy({"type": "SomeOtherPolicy", "max_tries": 1}) is None


MISS_ROWS = [
    # (return_best_on_error, request, replies, children tried, reply)
    pytest.param(False, GET, [HIT], [1], HIT, id="hit-at-once"),
    pytest.param(False, GET, [MISS, TIMEOUT, HIT], [1, 2, 3], HIT, id="misses-and-errors-go-on"),
    pytest.param(False, GET, [MISS, MISS, TIMEOUT], [1, 2, 3], TIMEOUT, id="none-the-last"),
    pytest.param(True, GET, [MISS, TIMEOUT, TIMEOUT], [1, 2, 3], MISS, id="best-a-miss"),
    pytest.param(True, GET, [TIMEOUT, MISS, TIMEOUT], [1, 2, 3], MISS, id="best-later-miss"),
    pytest.param(False, DELETE, [NOT_FOUND, DELETED], [1, 2], DELETED, id="deletes-too"),
    pytest.param(False, request(b"mg k v\r\n"), [MISS, HIT], [1, 2], HIT, id="meta-get"),
    pytest.param(False, SET, [TIMEOUT], [1], TIMEOUT, id="updates-first-child-only"),
    pytest.param(False, INCR, [NOT_FOUND], [1], NOT_FOUND, id="arithmetic-first-child-only"),
]


@pytest.mark.parametrize(("best", "req", "replies", "ports", "expected"), MISS_ROWS)
def test_miss_failover(
    best: bool, req: Request, replies: list[Reply], ports: list[int], expected: Reply
) -> None:
    route = MissFailoverRoute(destinations(3), return_best_on_error=best)
    assert tried(route, req, replies) == (ports, expected)


EXPTIME_ROWS = [
    # (failover_exptime, request, exptime sent to the failover child)
    pytest.param(60, b"set k 0 0 1\r\nv\r\n", b"60", id="never-expires-becomes-60"),
    pytest.param(60, b"set k 0 3600 1\r\nv\r\n", b"60", id="longer-is-capped"),
    pytest.param(60, b"set k 0 10 1\r\nv\r\n", b"10", id="shorter-kept"),
    pytest.param(0, b"set k 0 3600 1\r\nv\r\n", b"3600", id="zero-no-cap"),
    pytest.param(60, b"touch k 0\r\n", b"60", id="touch"),
]


@pytest.mark.parametrize(("failover_exptime", "wire", "sent_exptime"), EXPTIME_ROWS)
def test_failover_with_exptime_caps_the_failover_childrens_exptime(
    failover_exptime: int, wire: bytes, sent_exptime: bytes
) -> None:
    normal, *failover = destinations(3)
    route = FailoverWithExptimeRoute(normal, tuple(failover), failover_exptime)
    ctx = FakeContext()
    req = request(wire)
    route.route(req, ctx)
    assert ctx.sent[0].request is req  # the normal child gets the request as it is
    ctx.sent[0].answer(TIMEOUT)
    failed_over = ctx.sent[1].request
    assert port_of(ctx.sent[1]) == 2
    index = 1 if req.op.name != "TOUCH" else 0
    assert failed_over.args[index] == sent_exptime


def test_failover_with_exptime_leaves_deletes_alone_and_takes_failover_errors() -> None:
    normal, *failover = destinations(2)
    route = FailoverWithExptimeRoute(
        normal, tuple(failover), failover_errors=parse_failover_errors({"deletes": ["timeout"]})
    )
    ctx = FakeContext()
    route.route(DELETE, ctx)
    ctx.sent[0].answer(TIMEOUT)
    assert ctx.sent[1].request == DELETE
    assert tried(route, DELETE, [REMOTE_ERROR]) == ([1], REMOTE_ERROR)


def test_plain_failover_keeps_the_whole_multiget_path() -> None:
    assert FailoverRoute(destinations(2))._plain
    errors = parse_failover_errors(["timeout"])
    assert not FailoverRoute(destinations(2), failover_errors=errors)._plain
    assert Result.TIMEOUT in errors.gets


# -- DeterministicOrderPolicy with failure domains ------------------------------------


def _in_domains(*domains: int) -> tuple[DestinationRoute, ...]:
    """Children on ports 1, 2, ..., each server in the failure domain given."""
    return tuple(
        DestinationRoute(ServerSpec("127.0.0.1", port, failure_domain=domain))
        for port, domain in enumerate(domains, start=1)
    )


def _domain_policy(enabled: bool, tries: int = 3) -> FailoverOrder | None:
    return parse_failover_policy(
        {"type": "DeterministicOrderPolicy", "max_tries": tries, "max_error_tries": tries,
         "ignore_normal_reply_index": True, "enable_failure_domains": enabled}
    )  # fmt: skip


def test_without_a_tko_failure_domains_change_nothing() -> None:
    children = _in_domains(1, 1, 2, 2, 3, 3)
    plain = FailoverRoute(children, failover_policy=_domain_policy(False))
    aware = FailoverRoute(children, failover_policy=_domain_policy(True))
    for key in (b"a", b"b", b"c", b"d"):
        get = request(b"get " + key + b"\r\n")
        assert tried(aware, get, [TIMEOUT] * 3) == tried(plain, get, [TIMEOUT] * 3)


def test_after_a_tko_children_in_the_failed_domain_are_skipped() -> None:
    # Whatever child the plain order tries second, put it in child 0's domain: after
    # child 0's TKO it is skipped; after a timeout (not a TKO) it is not.
    for key in (b"a", b"b", b"c", b"d", b"e"):
        get = request(b"get " + key + b"\r\n")
        plain = FailoverRoute(_in_domains(*range(1, 7)), failover_policy=_domain_policy(False))
        second = tried(plain, get, [TIMEOUT] * 3)[0][1]
        domains = [port for port in range(1, 7)]
        domains[second - 1] = 1  # child 0 (port 1) is in domain 1
        aware = FailoverRoute(_in_domains(*domains), failover_policy=_domain_policy(True))
        ports, _ = tried(aware, get, [TKO, TIMEOUT, TIMEOUT])
        assert second not in ports and len(ports) == 3, (key, ports)
        assert tried(aware, get, [TIMEOUT, TIMEOUT, TIMEOUT])[0][1] == second
        # Without enable_failure_domains the domains are not looked at.
        unaware = FailoverRoute(_in_domains(*domains), failover_policy=_domain_policy(False))
        assert tried(unaware, get, [TKO, TIMEOUT, TIMEOUT])[0][1] == second


def test_servers_without_a_domain_are_never_skipped() -> None:
    children = _in_domains(0, 0, 0, 0, 0)
    plain = FailoverRoute(children, failover_policy=_domain_policy(False))
    aware = FailoverRoute(children, failover_policy=_domain_policy(True))
    assert tried(aware, GET, [TKO, TKO, TIMEOUT]) == tried(plain, GET, [TKO, TKO, TIMEOUT])


def test_when_every_child_is_in_a_failed_domain_failover_still_goes_on() -> None:
    # mcrouter's fail-safe: after 75 draws a failed domain is taken after all.
    aware = FailoverRoute(_in_domains(7, 7, 7, 7, 7), failover_policy=_domain_policy(True, 4))
    ports, reply = tried(aware, GET, [TKO, TKO, TKO, HIT])
    assert len(set(ports)) == 4 and reply is HIT


def test_a_pool_childs_tko_fails_the_domain_of_the_server_it_picked() -> None:
    servers = tuple(
        ServerSpec("127.0.0.1", port, failure_domain=domain)
        for port, domain in zip(range(1, 5), (10, 10, 20, 20), strict=True)
    )
    policy = parse_failover_policy(
        {"type": "DeterministicOrderPolicy", "max_tries": 3, "max_error_tries": 3,
         "enable_failure_domains": True}
    )  # fmt: skip
    route = SaltedFailoverRoute(PoolSpec("A", servers), failover_policy=policy)
    domain_of = {server.port: server.failure_domain for server in servers}
    for key in (b"a", b"b", b"c", b"d", b"e", b"f"):
        ports, _ = tried(route, request(b"get " + key + b"\r\n"), [TKO, TIMEOUT, TIMEOUT])
        failed = domain_of[ports[0]]
        # Both next tries avoid the failed domain: they are the other domain's servers.
        assert [domain_of[port] for port in ports[1:]] == [30 - failed] * 2, (key, ports)


def test_enable_failure_domains_must_be_a_bool() -> None:
    with pytest.raises(Invalid) as raised:
        parse_failover_policy(
            {"type": "DeterministicOrderPolicy", "max_tries": 2, "max_error_tries": 1,
             "enable_failure_domains": 1}
        )  # fmt: skip
    assert str(raised.value) == "enable_failure_domains: expected true or false, got 1"


# failover_tag: the keys each child got, by row (mcrouter's setRequestFailover).
LONG = b"k" * 236 + b"|#|x"  # 240 bytes: with the 11-byte tag, 251
TAG_ROWS = [
    # (failover_tag, key sent, replies, keys the children got)
    pytest.param(True, b"a|#|b", [TIMEOUT, HIT], [b"a|#|b", b"a|#|b:failover=1"], id="tagged"),
    pytest.param(True, b"a|#|b", [HIT], [b"a|#|b"], id="no-failover-no-tag"),
    pytest.param(True, b"ab", [TIMEOUT, HIT], [b"ab", b"ab"], id="no-hash-stop-no-tag"),
    pytest.param(False, b"a|#|b", [TIMEOUT, HIT], [b"a|#|b", b"a|#|b"], id="off"),
    pytest.param(
        True, b"a|#|b", [TIMEOUT, TKO, HIT],
        [b"a|#|b", b"a|#|b:failover=1", b"a|#|b:failover=1"], id="every-failover-child",
    ),
    pytest.param(True, LONG, [TIMEOUT, HIT], [LONG, LONG], id="over-250-bytes-no-tag"),
    pytest.param(
        True, LONG[1:], [TIMEOUT, HIT], [LONG[1:], LONG[1:] + b":failover=1"], id="250-bytes"
    ),
    pytest.param(
        True, b"/a/b/x|#|y", [TIMEOUT, HIT], [b"x|#|y", b"x|#|y:failover=1"],
        id="routing-prefix-stripped-first",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("tag", "key", "replies", "keys"), TAG_ROWS)
def test_failover_tag_marks_keys_sent_to_failover_children(
    tag: bool, key: bytes, replies: list[Reply], keys: list[bytes]
) -> None:
    route = FailoverRoute(destinations(3), failover_tag=tag)
    ctx = FakeContext()
    pending = route.route(request(b"get " + key + b"\r\n"), ctx)
    for sent, reply in zip(ctx.sent, replies, strict=False):
        sent.answer(reply)
    assert [sent.request.key for sent in ctx.sent] == keys
    assert pending.reply is not None and pending.reply.result is replies[len(keys) - 1].result


def test_failover_tag_is_not_seen_by_the_client() -> None:
    route = FailoverRoute(destinations(2), failover_tag=True)
    ctx = FakeContext()
    pending = route.route(request(b"get a|#|b\r\n"), ctx)
    ctx.sent[0].answer(TIMEOUT)
    ctx.sent[1].answer(Reply(Result.FOUND, b"VALUE a|#|b:failover=1 5 1\r\nv\r\nEND\r\n"))
    assert pending.reply is not None
    assert pending.reply.raw == b"VALUE a|#|b 5 1\r\nv\r\nEND\r\n"
    meta = route.route(request(b"mg a|#|b k v\r\n"), ctx)
    ctx.sent[2].answer(TIMEOUT)
    ctx.sent[3].answer(Reply(Result.FOUND, b"VA 1 ka|#|b:failover=1\r\nv\r\n"))
    assert ctx.sent[3].request.key == b"a|#|b:failover=1"
    assert meta.reply is not None and meta.reply.raw == b"VA 1 ka|#|b\r\nv\r\n"


def test_failover_tag_follows_the_failover_policy_order() -> None:
    policy = parse_failover_policy({"type": "LeastFailuresPolicy", "max_tries": 3})
    route = FailoverRoute(destinations(3), failover_policy=policy, failover_tag=True)
    ctx = FakeContext()
    route.route(request(b"get a|#|b\r\n"), ctx)
    ctx.sent[0].answer(TIMEOUT)
    assert [sent.request.key for sent in ctx.sent] == [b"a|#|b", b"a|#|b:failover=1"]


def test_failover_with_exptime_route_tags_its_failover() -> None:
    """test_get_failover_with_failover_tag.json: FailoverWithExptimeRoute reads the
    tag as mcrouter's makeFailoverWithExptimeRoute does (the FailoverRoute options)."""
    normal, gut = destinations(2)
    route = FailoverWithExptimeRoute(normal, (gut,), 3, failover_tag=True)
    ctx = FakeContext()
    route.route(request(b"set a|#|b 0 0 1\r\nv\r\n"), ctx)
    ctx.sent[0].answer(CONNECT_ERROR)
    assert ctx.sent[1].request.key == b"a|#|b:failover=1"
    assert ctx.sent[1].request.args[1] == b"3"  # the failover exptime still applies
