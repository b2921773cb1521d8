"""A short version of `nox -s fuzz` (tests/fuzzing.py): the same checks, fewer inputs.

The parser and the reply framer get generated and mutated input in one piece and in
random reads and must frame it the same way; a live proxy shares five seconds
between 20 hostile clients and checking clients, which must see only their own
replies and no error, while the proxy stays up and within its memory bound.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import pool_config
from fuzzing import LIVE_RSS_GROWTH_KIB, fuzz_framer, fuzz_parser, live_run


@pytest.mark.parametrize("seed", [1, 2])
def test_the_request_parser_frames_hostile_input_alike_in_any_reads(seed: int) -> None:
    fuzz_parser(3000, seed)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_reply_framer_frames_hostile_replies_alike_in_any_reads(seed: int) -> None:
    fuzz_framer(5000, seed)


def test_hostile_clients_do_not_disturb_checking_clients(
    memcached: Any, proxy_factory: Any
) -> None:
    proxy = proxy_factory(pool_config(memcached.address))
    failures, counts, growth = live_run(proxy.port, proxy.process.pid, 5.0, seed=7)
    assert proxy.process.poll() is None, proxy.log()
    assert failures == []
    assert all(counts), counts  # every checking client was served all along
    assert growth <= LIVE_RSS_GROWTH_KIB
