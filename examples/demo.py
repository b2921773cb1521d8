"""Start local memcached servers and mcrouter-trio on one of the example configs.

    python examples/demo.py [replicated-pool|random-two-pools|warmup-ha|multi-cluster|
                             shadowing|weibo-keymap] [--port 5000]

The servers listed in the example's config.json are started on loopback, then the
proxy; the script prints how to connect and runs until Ctrl-C, then stops all.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
SCENARIOS = (
    "replicated-pool",
    "random-two-pools",
    "warmup-ha",
    "multi-cluster",
    "shadowing",
    "weibo-keymap",
)
#: The -R a scenario's proxy runs with (a config with `routes` needs one of its aliases).
ROUTE_PREFIX = {"multi-cluster": "/east/web/"}


def wait_for(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    for _ in range(200):
        if process.poll() is not None:
            sys.exit(f"demo: {name} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"demo: nothing listening on port {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="replicated-pool", choices=SCENARIOS)
    parser.add_argument("--port", type=int, default=5000, help="proxy port (default 5000)")
    args = parser.parse_args()
    memcached = shutil.which("memcached")
    if memcached is None:
        sys.exit("demo: memcached is not installed; apt-get install -y memcached")
    config = EXAMPLES / args.scenario / "config.json"
    ports = sorted({int(p) for p in re.findall(r'"127\.0\.0\.1:(\d+)"', config.read_text())})
    user = ["-u", "root"] if os.geteuid() == 0 else []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            server = subprocess.Popen(
                [memcached, *user, "-l", "127.0.0.1", "-p", str(port), "-U", "0"]
            )
            processes.append(server)
            wait_for(port, server, "memcached")
            print(f"memcached listening on 127.0.0.1:{port}")
        prefix = ROUTE_PREFIX.get(args.scenario, "/././")
        proxy = subprocess.Popen(
            [sys.executable, "-m", "mcrouter_trio", "-p", str(args.port), "-f", str(config),
             "-R", prefix]
        )  # fmt: skip
        processes.append(proxy)
        wait_for(args.port, proxy, "mcrouter-trio")
        print(f"\nmcrouter-trio is routing with {config.relative_to(EXAMPLES.parent)}")
        print(f"connect with:  telnet 127.0.0.1 {args.port}   (or: nc 127.0.0.1 {args.port})")
        print("then try:      set greeting 0 0 5 / hello / get greeting / stats")
        print("Ctrl-C stops the proxy and the memcached servers.")
        proxy.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
