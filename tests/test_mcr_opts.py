"""`%mcr_opts-<option>%`: mcrouter's integer and toggle options, as the config sees them.

mcrouter (`ProxyConfigBuilder.cpp` `buildGlobalParams`) renders each option with
`folly::to<std::string>`: integers in decimal, toggles `1`/`0`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from conftest import Proxy, connect

from mcrouter_trio.cli import build_parser, load
from mcrouter_trio.config import load_config
from mcrouter_trio.ops._mcrouter_options import MCROUTER_OPTIONS, mcrouter_option_values

ProxyFactory = Callable[..., Proxy]


def options(*argv: str) -> dict[str, str]:
    return mcrouter_option_values(build_parser().parse_args(["-p", "5000", *argv]))


def test_without_flags_every_option_has_mcrouters_default() -> None:
    values = options()
    assert len(values) == len(MCROUTER_OPTIONS) == 91
    assert values["num_proxies"] == "1"
    assert values["server_timeout_ms"] == "1000"
    assert values["fibers_stack_size"] == "24576"
    assert values["max_dumped_config_age"] == "43200"
    assert values["tcp_rto_min"] == "-1"
    assert values["disable_tko_tracking"] == "0"
    assert values["enable_failure_logging"] == "1"
    assert values["client_queue_size"] == "1024"  # no flag: always the default


@pytest.mark.parametrize(
    ("argv", "name", "value"),
    [
        # Flags the proxy implements.
        (["--num-proxies", "3"], "num_proxies", "3"),
        (["-t", "250"], "server_timeout_ms", "250"),
        (["--timeouts-until-tko", "7"], "failures_until_tko", "7"),
        (["--probe-timeout-initial", "500"], "probe_delay_initial_ms", "500"),
        (["--big-value-split-threshold", "4096"], "big_value_split_threshold", "4096"),
        (["--disable-tko-tracking"], "disable_tko_tracking", "1"),
        (["--asynclog-disable"], "asynclog_disable", "1"),
        # Flags accepted without effect still give their value to the config.
        (["--fibers-stack-size", "65536"], "fibers_stack_size", "65536"),
        (["-K", "5"], "keepalive_cnt", "5"),
        (["--test-mode"], "test_mode", "1"),
        (["--test-mode=0"], "test_mode", "0"),
        # A bare toggle flips the default; a value sets it.
        (["--disable-failure-logging"], "enable_failure_logging", "0"),
        (["--disable-fibers-use-guard-pages"], "fibers_use_guard_pages", "0"),
        (["--disable-fibers-use-guard-pages=1"], "fibers_use_guard_pages", "1"),
    ],
)
def test_a_flag_sets_its_option(argv: list[str], name: str, value: str) -> None:
    assert options(*argv)[name] == value


def test_options_are_global_params_and_user_params_win_over_them() -> None:
    text = json.dumps(
        {
            "route": "ErrorRoute|%mcr_opts-num_proxies% %mcr_opts-disable_tko_tracking%",
            "mine": "%mcr_opts-big_value_batch_size%",
        }
    )
    config = load_config(
        text,
        mcrouter_options={
            "num_proxies": "4",
            "disable_tko_tracking": "1",
            "big_value_batch_size": "10",
        },
        config_params={"mcr_opts-big_value_batch_size": "mine"},
    )
    assert config.preprocessed == {"route": "ErrorRoute|4 1", "mine": "mine"}
    assert config.global_params["mcr_opts-num_proxies"] == "4"


def test_the_command_line_reaches_the_config() -> None:
    config_text = '{"route": "ErrorRoute|%mcr_opts-server_timeout_ms%/%mcr_opts-test_mode%"}'
    args = build_parser().parse_args(
        ["-p", "5000", "--config-str", config_text, "-t", "300", "--test-mode"]
    )
    assert load(args, host_id=0).preprocessed["route"] == "ErrorRoute|300/1"


def test_a_running_proxy_expands_its_options_and_knows_its_addresses(
    proxy_factory: ProxyFactory,
) -> None:
    route = {
        "type": "ErrorRoute",
        "vars": {"here": "@str(@isLocalIp(127.0.0.1))", "away": "@str(@isLocalIp(192.0.2.1))"},
        "response": "opts %mcr_opts-server_timeout_ms% %mcr_opts-disable_tko_tracking%"
        " %here% %away%",
    }
    proxy = proxy_factory({"route": route}, "-t", "250", "--disable-tko-tracking")
    with connect(proxy.port) as client:
        assert client.call(b"get k\r\n") == b"SERVER_ERROR opts 250 1 1 0\r\n"
