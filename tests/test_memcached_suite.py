"""memcached's own test suite (its t/*.t, from the 1.6.18 tag) run through the proxy.

Each case runs one of memcached's Perl test files with
`tests/memcached_t/ProxiedMemcached.pm` loaded first: every server the file starts
is a real memcached with the file's server arguments and `python -m mcrouter_trio`
in front of it (a PoolRoute of that memcached; a few files also with a pool of
two, and over TLS to memcached -Z), and the file's sockets talk to the proxy. A
case passes when every subtest passes, except the subtests listed against the
file: those check something the proxy answers itself by design (its own `stats`,
`slabs`), and they must fail, so that a list gone stale is noticed. Files that
cannot apply to a proxy are listed as skipped, with the reason.
tests/memcached_t/README.md has the provenance.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from _pki import make_pki

SUITE = Path(__file__).parent / "memcached_t"
#: One file's longest run here is about 15 s (getset.t, 37991 subtests).
FILE_TIMEOUT = 180

_STATS = "the proxy answers `stats` with its own counters, not memcached's"
_STATS_SETTINGS = "`stats settings` is answered by the proxy with no lines (README: Stats groups)"
_STATS_SLABS = "`stats slabs` is answered by the proxy with no lines (README: Stats groups)"
_STATS_ITEMS = "`stats items` is answered by the proxy with no lines (README: Stats groups)"

#: The files run, each with the subtests (by number) that check what the proxy
#: answers itself, and why.
KNOWN_DIFFERENCES: dict[str, dict[int, str]] = {
    "00-startup.t": {5: _STATS_SETTINGS, 7: _STATS_SETTINGS, 9: _STATS_SETTINGS,
                     11: _STATS_SETTINGS},
    "bogus-commands.t": {},
    "cas.t": {},
    "chunked-items.t": {},
    "dash-M.t": {2: f"store_no_memory: {_STATS}"},
    "evictions.t": {},
    "flags.t": {},
    "flush-all.t": {},
    "getandtouch.t": {},
    "getset.t": {},
    "incrdecr.t": {},
    "issue_104.t": {5: f"get_hits: {_STATS}", 6: f"get_misses: {_STATS}"},
    "issue_108.t": {},
    "issue_14.t": {},
    "issue_152.t": {},
    "issue_163.t": {4: _STATS_ITEMS},
    "issue_183.t": {2: _STATS_ITEMS, 5: _STATS_ITEMS},
    "issue_192.t": {},
    "issue_22.t": {43: _STATS_ITEMS, 84: _STATS_ITEMS},
    "issue_29.t": {2: _STATS_SLABS, 4: _STATS_SLABS},
    "issue_3.t": {},
    "issue_41.t": {},
    "issue_42.t": {11: _STATS_SLABS},
    "issue_61.t": {7: f"conn_yields: {_STATS}"},
    "issue_68.t": {},
    "issue_70.t": {},
    "item_size_max.t": {1: _STATS_SETTINGS, 4: _STATS_SETTINGS, 5: _STATS_SETTINGS,
                        6: _STATS_SETTINGS, 7: _STATS_SETTINGS},
    "malicious-commands.t": {},
    "metaget.t": {},
    "multiversioning.t": {},
    "noreply.t": {},
    "quit.t": {},
    "strtol-testing.t": {2: "`slabs automove` is a command for one memcached: the proxy "
                            "does not forward `slabs` and answers ERROR, as to any command "
                            "it does not route"},
    "touch.t": {},
}  # fmt: skip

_STATS_ONLY = "checks nothing but memcached's own `stats` lines; the proxy answers its own"
_BINARY = "binary protocol: the proxy speaks the text protocol only, as mcrouter's ASCII listener"
_TLS = "memcached's -Z TLS server options; the proxy's TLS listener is tested in test_tls*.py"
_EXTSTORE = "extstore internals, observable only through memcached's own stats"

#: memcached's other test files, and why they are not run through the proxy.
SKIPPED: dict[str, str] = {
    "64bit.t": _STATS_ONLY,
    "ascii-auth.t": "memcached's -Y authfile: authentication of memcached's own clients",
    "binary-extstore.t": _BINARY,
    "binary-get.t": _BINARY,
    "binary-sasl.t": _BINARY,
    "binary.t": _BINARY,
    "chunked-extstore.t": _EXTSTORE,
    "conn-limits.t": "read_buf_mem_limit closes memcached's own client connections; the "
                     "proxy's clients are not memcached's",
    "daemonize.t": "memcached's -d and pid file",
    "dyn-maxbytes.t": "`cache_memlimit` and slab stats: the proxy checks cache_memlimit and "
                      "answers it without touching a server (README)",
    "error-extstore.t": _EXTSTORE,
    "expirations.t": "moves memcached's clock with `debugtime`, which only a debug build "
                     "(memcached-debug) has; it fails against the packaged memcached too",
    "extstore-buckets.t": _EXTSTORE,
    "extstore-jbod.t": _EXTSTORE,
    "extstore.t": _EXTSTORE,
    "idle-timeout.t": "memcached's idle_timeout closes memcached's own idle clients; the "
                      "proxy keeps its clients (--client-timeout is its own)",
    "issue_50.t": _BINARY,
    "issue_67.t": "memcached's listening options (-p/-U/-s) and its startup",
    "issue_140.t": "skipped by memcached itself",
    "issue_260.t": "skipped by memcached itself",
    "line-lengths.t": "checks the line lengths of memcached's doc/protocol.txt",
    "lru-crawler.t": "LRU crawler commands and stats: memcached internals",
    "lru-maintainer.t": "LRU maintainer: memcached internals, seen through its stats",
    "lru.t": "finds which items were evicted from memcached's `stats` evictions, which "
             "the proxy does not have",
    "maxconns.t": "memcached's -c limit on its own clients; the proxy has --max-conns",
    "misbehave.t": "memcached's seccomp drop_privileges",
    "proxy.t": "memcached's own proxy (proxy_config)",
    "refhang.t": "skipped by memcached itself; slab internals",
    "restart.t": "memcached's restart files (-e)",
    "shutdown.t": "`shutdown` is refused by the proxy (README: Protocol behaviour), "
                  "whatever memcached's -A says",
    "slabhang.t": "slab rebalancing internals",
    "slabs-reassign-chunked.t": "slab rebalancing internals",
    "slabs-reassign2.t": "slab rebalancing internals",
    "slabs_reassign.t": "slab rebalancing internals",
    "ssl_cert_refresh.t": _TLS,
    "ssl_ports.t": _TLS,
    "ssl_proto_version.t": _TLS,
    "ssl_session_resumption.t": _TLS,
    "ssl_settings.t": _TLS,
    "ssl_verify_modes.t": _TLS,
    "stats-conns.t": "`stats conns`: memcached's own connections",
    "stats-detail.t": "`stats detail dump` is each server's own; the proxy answers no lines",
    "stats.t": _STATS_ONLY,
    "udp.t": "UDP: the proxy listens on TCP only",
    "unixsocket.t": "memcached's unix socket listener (-s)",
    "watcher.t": "memcached's log watchers",
    "watcher_connid.t": "memcached's log watchers",
    "whitespace.t": "checks the whitespace of memcached's C sources in a git checkout",
}  # fmt: skip

_RESULT = re.compile(r"^(not )?ok (\d+)\b", re.MULTILINE)
_PLAN = re.compile(r"^1\.\.(\d+)", re.MULTILINE)


@attrs.frozen
class TapRun:
    """What one test file reported: its plan and the numbers of its failed subtests."""

    planned: int | None
    seen: frozenset[int]
    failed: frozenset[int]

    @classmethod
    def parse(cls, output: str) -> TapRun:
        results = [(bool(not_ok), int(number)) for not_ok, number in _RESULT.findall(output)]
        plan = _PLAN.search(output)
        return cls(
            planned=int(plan.group(1)) if plan else None,
            seen=frozenset(number for _, number in results),
            failed=frozenset(number for failed, number in results if failed),
        )


def _run_perl_test(name: str, env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    perl = shutil.which("perl")
    if perl is None or subprocess.run([perl, "-MTest::More", "-e", "1"]).returncode:
        pytest.skip("perl (with Test::More) is not installed: apt-get install -y perl")
    if shutil.which("memcached") is None:
        pytest.skip("memcached is not installed: apt-get install -y memcached")
    env = {
        **os.environ,
        "MEMCACHED_BIN": shutil.which("memcached") or "memcached",
        "MCROUTER_TRIO_PYTHON": sys.executable,
        **env_overrides,
    }
    # A session of its own, so that a file which hangs is killed with the memcached
    # and proxy processes it started.
    process = subprocess.Popen(
        [perl, f"-I{SUITE}", "-MProxiedMemcached", f"t/{name}"],
        cwd=SUITE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=FILE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{name} did not finish within {FILE_TIMEOUT} s:\n{output[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def _failure_report(output: str, numbers: set[int]) -> str:
    """The TAP lines and diagnostics of the first ten of the given subtests, shortened."""
    blocks = re.split(r"(?m)^(?=(?:not )?ok \d+)", output)
    chosen = [block for block in blocks if (m := _RESULT.match(block)) and int(m[2]) in numbers]
    return "\n".join(block[:1500] for block in chosen[:10])


def _check_test_file(name: str, **env_overrides: str) -> None:
    """Run `name` (the shim's environment variables in `env_overrides`) and judge it."""
    run = _run_perl_test(name, env_overrides)
    tap = TapRun.parse(run.stdout)
    assert tap.planned is not None, f"{name} printed no plan:\n{run.stdout[-4000:]}"
    missing = set(range(1, tap.planned + 1)) - tap.seen
    assert not missing, (
        f"{name} stopped early: {len(missing)} of {tap.planned} subtests never ran"
        f"\n{run.stdout[-4000:]}"
    )
    expected = set(KNOWN_DIFFERENCES[name])
    unexpected = set(tap.failed) - expected
    assert not unexpected, (
        f"{name}: {len(unexpected)} subtests failed through the proxy, the first:\n"
        + _failure_report(run.stdout, unexpected)
    )
    now_passing = expected - tap.failed
    assert not now_passing, (
        f"{name}: subtests {sorted(now_passing)} are listed as known differences but "
        "passed: update KNOWN_DIFFERENCES"
    )
    # Test::More exits with the number of failed subtests: nothing died after them.
    assert run.returncode == len(expected), run.stdout[-4000:]


@pytest.mark.parametrize("name", sorted(KNOWN_DIFFERENCES))
def test_memcached_test_file_passes_through_the_proxy(name: str) -> None:
    _check_test_file(name)


#: Files whose keys, multi-gets, pipelines or flush_all a pool of two servers splits
#: between them: the proxy must still answer as one memcached would.
TWO_SERVER_FILES = ["cas.t", "flush-all.t", "getandtouch.t", "incrdecr.t", "metaget.t",
                    "noreply.t"]  # fmt: skip


@pytest.mark.parametrize("name", TWO_SERVER_FILES)
def test_memcached_test_file_passes_through_a_two_server_pool(name: str) -> None:
    _check_test_file(name, MEMCACHED_T_SERVERS="2")


#: Files with large values, pipelines and multi-gets, run with the proxy talking TLS to
#: memcached -Z: the TLS client path, and single gets batched (--batch-gets' default).
TLS_FILES = ["getset.t", "metaget.t", "noreply.t", "cas.t", "issue_70.t"]


@pytest.mark.parametrize("name", TLS_FILES)
def test_memcached_test_file_passes_through_the_proxy_over_tls(name: str, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    _check_test_file(
        name,
        MEMCACHED_T_SERVER_ARGS=f"-Z -o ssl_chain_cert={pki.server_cert},ssl_key={pki.server_key}",
        MEMCACHED_T_SERVER_MECH="ascii:ssl",
        MCROUTER_TRIO_ARGS=f"--pem-ca-path {pki.ca_file} --ssl-verify-peers",
    )


@pytest.mark.parametrize("name", sorted(SKIPPED))
def test_memcached_test_file_not_run(name: str) -> None:
    pytest.skip(f"{name}: {SKIPPED[name]}")


def test_every_copied_test_file_is_run() -> None:
    copied = {path.name for path in (SUITE / "t").glob("*.t")}
    assert copied == set(KNOWN_DIFFERENCES)
    assert not copied & set(SKIPPED)
    for variant in (TWO_SERVER_FILES, TLS_FILES):
        assert set(variant) <= copied
        assert not any(KNOWN_DIFFERENCES[name] for name in variant)


def test_tap_parse_reads_plan_and_failures() -> None:
    output = "1..3\nok 1 - a\nnot ok 2 - b\n#   Failed test 'b'\nok 3\n"
    assert TapRun.parse(output) == TapRun(3, frozenset({1, 2, 3}), frozenset({2}))
    assert TapRun.parse("ok 1\nnot ok 2\n# died\n").planned is None
