"""mcrouter's `test_deterministic_failover.py`, replayed against this proxy.

As in `test_mcrouter_pytests.py` (whose helpers these use): mcrouter's configs with
their ports made the test's servers', mcrouter's flags, keys and expected stats. Its
`SleepServer`s (they read requests and never reply) are fault servers that do the
same, so each server's first request times out and, with `--timeouts-until-tko=1`,
leaves it soft TKO for the rest of the test (its probes are never answered either).
Which servers a key reaches is then fixed by DeterministicOrderPolicy's hashing, so
the running counts after each key are mcrouter's own. mcrouter's test sleeps a second
after each get; here the get's reply (after its timeouts) is waited for instead, and
a shorter `--server-timeout` keeps the test quick.

Not replayed: `TestDeterministicFailoverNoFailure`, `TestDeterministicFailoverAllSleepServers`
and `TestDeterministicFailoverSmallerFailoverPool` (their configs reach servers over
mcrouter's own binary protocol, which this proxy does not speak:
tests/data/mcrouter-configs/README.md).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import test_mcrouter_pytests
from conftest import Conn, FaultServer
from test_mcrouter_pytests import McClient

#: The sibling module's fixture, made this module's too (pytest finds it by name).
start_mcrouter = test_mcrouter_pytests.start_mcrouter

FaultServerFactory = Callable[[Callable[[Conn], None]], FaultServer]

#: mcrouter's flags, and a server timeout short enough for 23 servers' first timeouts.
FLAGS = ("--timeouts-until-tko=1", "--num-proxies=1", "--server-timeout", "300")


def never_answer(conn: Conn) -> None:
    """mcrouter's SleepServer: reads whatever comes and never replies."""
    conn.wait_closed()


def sleep_servers(fault_server: FaultServerFactory, count: int) -> list[int]:
    return [fault_server(never_answer).port for _ in range(count)]


def key(i: int) -> str:
    return f"key_{13 * i}_hYgGEs_{i}_kBVq9Z_{71 * i}"


#: Per key, the running (failover_policy_result_error, failover_policy_tko_error,
#: failover_num_collisions[, failover_num_failed_domain_collisions]) mcrouter expects.
SAME_POOL = [
    (3, 0, 1), (6, 0, 3), (9, 2, 4), (12, 3, 5), (15, 5, 6),
    (17, 14, 10), (19, 23, 12), (21, 32, 21), (21, 43, 26), (23, 52, 30),
]  # fmt: skip
SHARED_CONFIG = [
    (3, 0, 1), (6, 0, 3), (9, 2, 4), (12, 3, 5), (15, 5, 6), (18, 9, 7), (20, 18, 9),
    (20, 29, 18),
]  # fmt: skip
FAILURE_DOMAINS = [
    (3, 0, 1, 0), (6, 0, 3, 0), (9, 2, 3, 1), (12, 3, 4, 1), (15, 5, 4, 2), (18, 13, 5, 14),
    (20, 22, 5, 21), (21, 32, 5, 81),
]  # fmt: skip

CASES = [
    # (mcrouter's test class, config, route prefix, expected, keys before all fail)
    pytest.param("test_deterministic_failover2", "", SAME_POOL, 5, id="SamePool"),
    pytest.param("test_deterministic_failover3", "/Route/A/", SHARED_CONFIG, 6, id="SharedConfig"),
    pytest.param(
        "test_deterministic_failover4", "/Route/A/", FAILURE_DOMAINS, 6, id="FailureDomains"
    ),
]


@pytest.mark.parametrize(("config", "prefix", "expected", "first_all_failed"), CASES)
def test_deterministic_failover_all_sleep_servers(
    fault_server: FaultServerFactory,
    start_mcrouter: Callable[..., McClient],
    config: str,
    prefix: str,
    expected: list[tuple[int, ...]],
    first_all_failed: int,
) -> None:
    """test_deterministic_failover.py TestDeterministicFailoverAllSleepServers{SamePool,
    SharedConfig,FailureDomains}: every server sleeps; the failover counts key by key."""
    args = (*FLAGS, f"--route-prefix={prefix}") if prefix else FLAGS
    mcr = start_mcrouter(config, sleep_servers(fault_server, 23), *args)
    for i, wanted in enumerate(expected):
        reply = mcr.get(key(i))
        assert isinstance(reply, str) and reply.startswith("SERVER_ERROR"), reply
        stats = mcr.stats("all")
        got = [
            int(stats["failover_policy_result_error"]),
            int(stats["failover_policy_tko_error"]),
            int(stats["failover_num_collisions"]),
        ]
        if len(wanted) == 4:
            got.append(int(stats["failover_num_failed_domain_collisions"]))
        assert tuple(got) == wanted, f"key {i}"
        assert int(stats["failover_all_failed_count"]) == max(0, i - first_all_failed + 1)
