"""The command line as a user runs it: `python -m mcrouter_trio ...` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcrouter_trio import __version__

EXIT_BAD_CONFIG = 3

VALID_CONFIG = """\
// mcrouter's JSON dialect: comments and trailing commas are fine.
{
  "pools": {
    "A": { "servers": [ "127.0.0.1:11211", "127.0.0.1:11212", ] },
  },
  "route": "PoolRoute|A",
}
"""


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcrouter_trio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_validate_config_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(VALID_CONFIG)
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_validate_config_rejects_an_unknown_route_type(tmp_path: Path) -> None:
    path = tmp_path / "typo.json"
    path.write_text(
        '{"pools": {"A": {"servers": ["127.0.0.1:11211"]}},\n'
        ' "route": {"type": "PoolRute", "pool": "A"}}\n'
    )
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG
    assert "unknown route type 'PoolRute' @ $.route" in result.stderr
    assert str(path) in result.stderr
    assert "valid" not in result.stdout


def test_validate_config_names_every_problem_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "problems.json"
    path.write_text(
        '{"pools": {"A": {"servers": ["127.0.0.1:notaport"]}},\n'
        ' "route": {"type": "AllSyncRoute", "children": ["PoolRoute|A", "PoolRoute|B"]}}\n'
    )
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG
    assert "$.pools.A.servers[0]" in result.stderr
    assert "unknown pool 'B'" in result.stderr
    assert "$.route.children[1]" in result.stderr


def test_validate_config_rejects_broken_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"pools": {"A": {"servers": ["127.0.0.1:11211"]}}, "route": ')
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(path) in result.stderr


def test_validate_config_run_mode_still_rejects_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "typo.json"
    path.write_text('{"route": "PoolRute|A"}')
    result = run("--validate-config=run", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG  # an invalid config still stops it


def test_config_str_is_validated_too() -> None:
    result = run("--validate-config", "--config-str", '{"route": "NullRoute"}')
    assert result.returncode == 0, result.stderr
    result = run("--validate-config", "--config-str", '{"route": "NoSuchRoute"}')
    assert result.returncode == EXIT_BAD_CONFIG
    assert "NoSuchRoute" in result.stderr


def test_version_flag() -> None:
    for flag in ("-V", "--version"):
        result = run(flag)
        assert result.returncode == 0
        assert result.stdout.strip() == f"mcrouter-trio {__version__}"


def test_default_config_without_f_is_valid() -> None:
    result = run("--validate-config")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_help_lists_the_flags() -> None:
    result = run("--help")
    assert result.returncode == 0
    for flag in (
        "-p",
        "--port",
        "--listen-addresses",
        "-f",
        "--config-file",
        "--config-str",
        "-t",
        "--server-timeout",
        "--enable-flush-cmd",
        "--max-value-size",
        "--max-conns",
        "--max-client-outstanding-reqs",
        "--graceful-shutdown-timeout",
        "--validate-config",
        "-L",
        "--log-path",
        "-V",
        "--version",
    ):
        assert f" {flag}" in result.stdout, flag


def test_unreadable_config_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-config.json"
    result = run("--validate-config", "-f", str(missing))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr

    directory = tmp_path / "a-directory.json"
    directory.mkdir()
    result = run("--validate-config", "-f", str(directory))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(directory) in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_config_file_stops_the_server_too(tmp_path: Path) -> None:
    missing = tmp_path / "gone.json"
    result = run("-p", "0", "--listen-addresses", "127.0.0.1", "-f", str(missing))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(missing) in result.stderr


def test_non_utf8_config_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"route": "NullRoute", "x": "caf\xe9"}')
    result = run("--validate-config", "-f", str(path))
    assert result.returncode == EXIT_BAD_CONFIG
    assert str(path) in result.stderr
