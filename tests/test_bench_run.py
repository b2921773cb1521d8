"""bench/run_bench.py: the production-shaped route is measured next to the plain one."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import run_bench

TARGETS = ("twemproxy", "mcrouter-trio", "mcrouter-trio-prod")


@pytest.fixture(autouse=True)
def _bench_tools() -> None:
    for names in (("memcaslap", "memaslap"), ("nutcracker",), ("memcached",)):
        if run_bench.find_tool(*names) is None:
            pytest.skip(f"{names[0]} is not installed")


def run_short(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """One-second loads without warm-up; returns the exit status and the JSON document."""
    output = tmp_path / "result.json"
    argv = ["--duration", "1", "--warmup", "0", "--output", str(output)]
    argv += ["--workdir", str(tmp_path / "work")]
    # This checkout's code: the proxy inherits PYTHONPATH, as the tests' proxies do.
    argv += ["--proxy-cmd", f"{shlex.quote(sys.executable)} -m mcrouter_trio", *args]
    status = run_bench.main(argv)
    return status, json.loads(output.read_text())


def test_prod_route_is_compared_with_plain_and_twemproxy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only = [arg for target in TARGETS for arg in ("--only", target)]
    status, document = run_short(tmp_path, *only)
    table = capsys.readouterr().out
    assert status == 0, table
    results = {result["key"]: result for result in document["results"]}
    assert list(results) == list(TARGETS)
    for result in results.values():
        assert result["status"] == "ok", result["error"]
        assert result["ops_per_s"] > 0
        assert result["proxy_cpu_us_per_op"] > 0
    pairs = {(row["scenario"], row["baseline"]): row for row in document["ratios"]}
    assert set(pairs) == {
        ("mcrouter-trio", "twemproxy"),
        ("mcrouter-trio-prod", "mcrouter-trio"),
        ("mcrouter-trio-prod", "twemproxy"),
    }
    prod, plain = results["mcrouter-trio-prod"], results["mcrouter-trio"]
    ratio = pairs["mcrouter-trio-prod", "mcrouter-trio"]["proxy_cpu_per_op_ratio"]
    assert ratio == pytest.approx(prod["proxy_cpu_us_per_op"] / plain["proxy_cpu_us_per_op"])
    prod_title = run_bench.McrouterTrioProd().title
    assert f"| {prod_title} / mcrouter-trio | " in table
    assert f"| {prod_title} / twemproxy | " in table
    # The proxy ran the route of bench/prod_route.json over pools A and B.
    written = tmp_path / "work" / "mcrouter-trio-prod" / "mcrouter-trio.json"
    config = json.loads(written.read_text())
    assert config["route"] == json.loads(run_bench.PROD_ROUTE.read_text())
    assert sorted(config["pools"]) == ["A", "B"]


def test_load_reaching_the_standby_fails_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    to_standby = tmp_path / "route.json"
    to_standby.write_text('"PoolRoute|B"\n')
    status, document = run_short(
        tmp_path, "--only", "mcrouter-trio-prod", "--prod-route", str(to_standby)
    )
    capsys.readouterr()
    assert status == 1
    [result] = document["results"]
    assert result["status"] == "failed"
    assert "the load reached the standby memcached" in result["error"]
    assert "cmd_get" in result["error"]


def test_allsync_target_runs_only_when_named_and_is_compared_with_plain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "mcrouter-trio-allsync" in run_bench.OPT_IN_TARGETS
    status, document = run_short(
        tmp_path, "--only", "mcrouter-trio", "--only", "mcrouter-trio-allsync"
    )
    table = capsys.readouterr().out
    assert status == 0, table
    results = {result["key"]: result for result in document["results"]}
    assert results["mcrouter-trio-allsync"]["status"] == "ok"
    pairs = {(row["scenario"], row["baseline"]) for row in document["ratios"]}
    assert ("mcrouter-trio-allsync", "mcrouter-trio") in pairs
    written = tmp_path / "work" / "mcrouter-trio-allsync" / "mcrouter-trio.json"
    route = json.loads(written.read_text())["route"]
    assert route == {"type": "AllSyncRoute", "children": ["PoolRoute|A", "PoolRoute|B"]}
