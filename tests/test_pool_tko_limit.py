"""A pool's `tko_tracker`: at most so many of its servers TKO, then fail open.

In memory, the limit and the trackers it governs (a destination double records what
the tracker asks of it); end to end, a pool of servers that refuse connections, with
and without the limit; and the config keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Proxy, connect, free_port, pool_config
from test_faults import CONNECT_ERROR, TKO_CONNECT_ERROR
from test_health import server_line, state_of

from mcrouter_trio.config import ConfigError, load_config
from mcrouter_trio.config._servers import PoolDefaults, parse_pool
from mcrouter_trio.hashing import make_selector
from mcrouter_trio.messages import Result
from mcrouter_trio.routing._specs import PoolSpec, ServerSpec, TkoLimitSpec
from mcrouter_trio.upstream._health import HealthSettings, PoolTkoLimit, TkoRegistry

ProxyFactory = Callable[..., Proxy]

# Steps: "+" a server fails (admitted as TKO or not), "-" a counted server recovers.
# Each row: upper, lower, then (step, expected admit for "+", fail_open after the step).
LIMIT_CASES = [
    (1, 1, [("+", True, False), ("+", False, True), ("+", False, True), ("-", None, False)]),
    (
        2,
        1,
        [
            ("+", True, False),
            ("+", True, False),
            ("+", False, True),  # the third enters fail-open, unmarked
            ("-", None, True),  # two TKO were counted: above lower, still open
            ("+", False, True),  # while open, nobody is marked
            ("-", None, False),  # one TKO left at the recovery: at lower, closed again
            ("+", True, False),
        ],
    ),
    (3, 3, [("+", True, False), ("+", True, False), ("-", None, False), ("+", True, False)]),
]


@pytest.mark.parametrize(("upper", "lower", "steps"), LIMIT_CASES)
def test_the_limit_admits_up_to_upper_then_fails_open_until_lower(
    upper: int, lower: int, steps: list[tuple[str, bool | None, bool]]
) -> None:
    limit = PoolTkoLimit("A", TkoLimitSpec(upper, lower))
    for step, admitted, fail_open in steps:
        if step == "+":
            assert limit.admit("127.0.0.1:1") is admitted
        else:
            limit.release()
        assert limit.fail_open is fail_open
    assert limit.tko >= 0


class DestinationDouble:
    """What a TkoTracker calls on a destination, recorded."""

    def __init__(self) -> None:
        self.probing = 0

    def start_probing(self) -> None:
        self.probing += 1

    def refresh_refusal(self) -> None:
        pass

    def watch_replies(self) -> None:
        pass


def pool(name: str, ports: list[int], limit: TkoLimitSpec | None) -> PoolSpec:
    servers = tuple(ServerSpec("127.0.0.1", port) for port in ports)
    return PoolSpec(name, servers, tko_limit=limit)


def test_trackers_of_a_limited_pool_stop_marking_tko_and_resume_after_recovery() -> None:
    registry = TkoRegistry(HealthSettings())
    registry.limit_pools([pool("A", [1, 2, 3], TkoLimitSpec(1, 1)), pool("B", [4], None)])
    trackers = [registry.tracker(f"127.0.0.1:{port}") for port in (1, 2, 3, 4)]
    doubles = [DestinationDouble() for _ in trackers]
    for tracker, double in zip(trackers, doubles, strict=True):
        tracker.record_connect_failure(double, Result.CONNECT_ERROR)  # type: ignore[arg-type]
    assert [tracker.state for tracker in trackers] == ["hard_tko", "", "", "hard_tko"]
    assert [double.probing for double in doubles] == [1, 0, 0, 1]
    trackers[0].probe_answered(doubles[0], 1)  # type: ignore[arg-type]
    assert registry.pool_limits["A"].fail_open is False
    trackers[2].record_connect_failure(doubles[2], Result.CONNECT_ERROR)  # type: ignore[arg-type]
    assert trackers[2].state == "hard_tko"


def test_a_new_config_without_the_limit_lifts_it() -> None:
    registry = TkoRegistry(HealthSettings())
    registry.limit_pools([pool("A", [1, 2], TkoLimitSpec(1, 1))])
    tracker = registry.tracker("127.0.0.1:2")
    assert tracker.pool_limit is not None
    registry.limit_pools([pool("A", [1, 2], None)])
    assert registry.tracker("127.0.0.1:2") is tracker
    assert registry.trackers["127.0.0.1:2"].pool_limit is None
    assert not registry.pool_limits


# -- config -------------------------------------------------------------------------------

CONFIG_CASES: list[tuple[object, TkoLimitSpec | str]] = [
    ({"num_tko_threshold_upper": 3, "num_tko_threshold_lower": 1}, TkoLimitSpec(3, 1)),
    ({"percent_tko_threshold_upper": 50, "percent_tko_threshold_lower": 25}, TkoLimitSpec(5, 2)),
    (
        {
            "num_tko_threshold_upper": 4,
            "percent_tko_threshold_upper": 90,
            "num_tko_threshold_lower": 2,
        },
        TkoLimitSpec(4, 2),
    ),
    ({"num_tko_threshold_upper": 3}, "both tko threshold upper and lower must be configured"),
    ({"percent_tko_threshold_upper": 5, "num_tko_threshold_lower": 1}, "must be configured"),
    ({"num_tko_threshold_upper": 1, "num_tko_threshold_lower": 2}, "greater than or equal"),
    ({"num_tko_threshold_upper": "3", "num_tko_threshold_lower": 1}, "expected an integer"),
    ({"num_tko_threshold_upper": 3, "num_tko_threshold_lower": 1, "max": 2}, "extra fields"),
    ([], "expected an object"),
]


@pytest.mark.parametrize(("value", "expected"), CONFIG_CASES)
def test_tko_tracker_config(value: object, expected: TkoLimitSpec | str) -> None:
    servers = [f"127.0.0.1:{port}" for port in range(5000, 5010)]  # ten servers
    spec, problems = parse_pool("A", {"servers": servers, "tko_tracker": value}, PoolDefaults(), {})
    if isinstance(expected, str):
        assert len(problems) == 1 and problems[0][0] == ("tko_tracker",)
        assert expected in problems[0][1]
    else:
        assert problems == [] and spec.tko_limit == expected


def test_tko_tracker_errors_name_the_json_path() -> None:
    config = {"pools": {"A": {"servers": ["127.0.0.1:1"], "tko_tracker": {}}}, "route": "Pool|A"}
    with pytest.raises(ConfigError, match=r"\$\.pools\.A\.tko_tracker"):
        load_config(json.dumps(config))


# -- end to end ---------------------------------------------------------------------------


def states(proxy: Proxy, addresses: list[str]) -> list[str]:
    return [state_of(server_line(proxy, address)) for address in addresses]


@pytest.mark.parametrize("limited", [True, False])
def test_a_pool_fails_open_once_its_limit_of_tko_servers_is_reached(
    limited: bool, proxy_factory: ProxyFactory
) -> None:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]  # nobody listens
    pool_keys: dict[str, Any] = {}
    if limited:
        pool_keys["tko_tracker"] = {"num_tko_threshold_upper": 1, "num_tko_threshold_lower": 1}
    proxy = proxy_factory(pool_config(*addresses, **pool_keys), "-r", "600000")
    select = make_selector("Ch3", 3)
    keys = {select(b"k%d" % i): b"k%d" % i for i in range(100)}
    with connect(proxy.port) as client:
        for server in range(3):
            assert client.call(b"get " + keys[server] + b"\r\n") == CONNECT_ERROR
        again = [client.call(b"get " + keys[server] + b"\r\n") for server in range(3)]
        stats = client.call(b"stats all\r\n", b"END\r\n")
    # Entered once (by the second server), not again by the third; nothing recovered.
    assert b"STAT num_fail_open_state_entered %d\r\n" % limited in stats
    assert b"STAT num_fail_open_state_exited 0\r\n" in stats
    if limited:
        # The first server is TKO; the other two are not (the pool failed open):
        # their requests still try, and get the connect error itself.
        assert again[0] == TKO_CONNECT_ERROR and again[1:] == [CONNECT_ERROR] * 2
        assert [state.split()[0] for state in states(proxy, addresses)] == [
            "hard_tko", "down", "down",
        ]  # fmt: skip
        assert "pool A fails open: 1 servers TKO already" in proxy.log()
    else:
        assert again == [TKO_CONNECT_ERROR] * 3
        assert all(state.startswith("hard_tko") for state in states(proxy, addresses))
