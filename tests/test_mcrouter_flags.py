"""mcrouter's command line: its flags accepted, implemented, noticed or refused."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Memcached, Proxy, connect, pool_config, stats_on

from mcrouter_trio.cli import build_parser, load
from mcrouter_trio.ops._mcrouter_flags import (
    NO_EFFECT,
    UNSUPPORTED,
    McrouterFlag,
    Unsupported,
    check_mcrouter_flags,
    log_ignored_flags,
)

ProxyFactory = Callable[..., Proxy]
README = Path(__file__).parent.parent / "README.md"
NO_EFFECT_FLAGS = [flag for group in NO_EFFECT.values() for flag in group]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_production_command_line_starts_and_serves(
    memcached: Memcached, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    proxy = proxy_factory(
        pool_config(f"127.0.0.1:{memcached.port}"),
        "--num-proxies", "2",
        "--stats-root", str(tmp_path),
        "--debug-fifo-root", str(tmp_path / "fifos"),
        "--config-dump-root", str(tmp_path / "config"),
        "--debug-fifo-root", str(tmp_path / "fifos"),  # twice: still one notice
        "--keepalive-count", "5", "-i", "30", "-I", "120",
        "--retry-timeout", "5000",
        "--timeouts-until-tko", "10",
        "--target-max-inflight-requests", "100",
        "--big-value-split-threshold", "0",
        "--disable-failure-logging",
        "--test-mode=0",
        "--constantly-reload-configs=false",
        "--fibers-max-pool-size", "1000",
        "-v", "1",
    )  # fmt: skip
    with connect(proxy.port) as client:
        assert client.call(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        assert client.call(b"get k\r\n", b"END\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
        assert "--debug-fifo-root" in stats_on(client)["commandargs"]
    log = proxy.log()
    for name in (
        "debug-fifo-root", "config-dump-root", "keepalive-count", "keepalive-interval",
        "keepalive-idle", "target-max-inflight-requests", "disable-failure-logging",
        "test-mode", "constantly-reload-configs", "fibers-max-pool-size",
    ):  # fmt: skip
        assert log.count(f"--{name}: accepted for mcrouter's sake, no effect") == 1, name
    assert "--big-value-split-threshold: accepted" not in log  # mcrouter's default: exact


def test_a_flag_mcrouter_never_had_fails() -> None:
    result = run("-p", "1", "--no-such-flag")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--unix-domain-sock", "/tmp/mc.sock"], "--unix-domain-sock: Unix sockets"),
        (["--group-remote-errors"], "--group-remote-errors: not implemented"),
        (["--acl-checker-enforce=1"], "access checks are not implemented"),
        (["--cross-region-timeout-ms", "50"], "set server_timeout on pools"),
    ],
)
def test_a_flag_that_would_change_what_clients_get_is_refused(
    args: list[str], message: str
) -> None:
    result = run("-p", "1", *args)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("flag", NO_EFFECT_FLAGS, ids=lambda flag: flag.name)
def test_each_no_effect_flag_is_accepted_and_noticed_once(
    flag: McrouterFlag, caplog: pytest.LogCaptureFixture
) -> None:
    name = flag.name
    given = [f"--{name}"] if flag.toggle else [f"--{name}", "7"]
    args = build_parser().parse_args(["-p", "1", *given, *given])
    with caplog.at_level(logging.INFO, logger="mcrouter_trio"):
        log_ignored_flags(args)
    notices = [r.getMessage() for r in caplog.records if "no effect" in r.getMessage()]
    assert len(notices) == 1
    assert notices[0].startswith(f"--{name}: accepted")


@pytest.mark.parametrize("unsupported", UNSUPPORTED, ids=lambda u: u.flag.name)
def test_each_unsupported_flag_is_accepted_at_mcrouters_default(unsupported: Unsupported) -> None:
    default = sorted(unsupported.defaults)[0]
    given = f"--{unsupported.flag.name}={default}"
    parser = build_parser()
    args = parser.parse_args(["-p", "1", given])
    check_mcrouter_flags(parser, args)  # no SystemExit


def test_readme_flags_table_names_every_mcrouter_flag() -> None:
    text = README.read_text()
    for flag in [*NO_EFFECT_FLAGS, *(u.flag for u in UNSUPPORTED)]:
        assert f"`--{flag.name}`" in text, flag.name


@pytest.mark.parametrize(
    ("argv", "level"),
    [([], 0), (["-v"], 1), (["-vv"], 2), (["-v", "-v"], 2), (["-v", "2"], 2), (["-v", "0"], 0)],
)
def test_verbosity_as_mcrouter_and_as_a_count(argv: list[str], level: int) -> None:
    assert build_parser().parse_args(["-p", "1", *argv]).verbosity == level


def test_bad_verbosity_fails() -> None:
    result = run("-p", "1", "-v", "loud")
    assert result.returncode == 2
    assert "not a level" in result.stderr


def test_additional_config_params_add_to_config_params() -> None:
    config = '{"pools": {"A": {"servers": ["127.0.0.1:%PORT%"]}}, "route": "ErrorRoute|%WHY%"}'
    args = build_parser().parse_args(
        ["-p", "1", "--config-str", config, "--config-params", "PORT:1,WHY:a",
         "--additional-config-params", "WHY:b"]
    )  # fmt: skip
    loaded = load(args, host_id=1)
    assert loaded.pools["A"].servers[0].port == 1
    assert "ErrorRoute" in repr(loaded.route) and "'b'" in repr(loaded.route)


def test_retry_timeout_is_the_initial_probe_delay() -> None:
    args = build_parser().parse_args(["-p", "1", "--retry-timeout", "2500"])
    assert args.probe_timeout_initial == 2500


def test_ignored_flags_stay_out_of_the_namespace_unless_given() -> None:
    args = build_parser().parse_args(["-p", "1"])
    assert not any(hasattr(args, flag.dest) for flag in NO_EFFECT_FLAGS)
