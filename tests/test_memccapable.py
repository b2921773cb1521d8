"""libmemcached's protocol checker, memccapable, against memcached and through the proxy.

memccapable sends `version` first and picks which replies to expect from the number
it reads (1.6 and later answer `version foo` and `quit foo` differently from older
servers), then runs every text-protocol command with and without `noreply`. The proxy
must pass every test that memcached itself passes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

import pytest
from conftest import Memcached, Proxy, pool_config

ProxyFactory = Callable[..., Proxy]

_PASSED = re.compile(r"^(ascii \S.*?)\s+\[pass\]$", re.MULTILINE)


def _memccapable(port: int) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the ascii tests on `port`: the process and the names of the tests passed."""
    binary = shutil.which("memccapable")
    if binary is None:
        pytest.skip("memccapable is not installed: apt-get install -y libmemcached-tools")
    result = subprocess.run(
        [binary, "-a", "-v", "-t", "5", "-h", "127.0.0.1", "-p", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, _PASSED.findall(result.stdout)


def test_memccapable_passes_through_the_proxy(
    memcached: Memcached, proxy_factory: ProxyFactory
) -> None:
    direct, passed_direct = _memccapable(memcached.port)
    assert direct.returncode == 0, direct.stdout + direct.stderr
    assert passed_direct, f"memccapable ran no test against memcached: {direct.stdout!r}"

    # memccapable flushes between tests; mcrouter refuses flush_all unless asked to.
    proxy = proxy_factory(pool_config(memcached.address), "--enable-flush-cmd")
    routed, passed_routed = _memccapable(proxy.port)
    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert "All tests passed" in routed.stdout
    assert passed_routed == passed_direct
