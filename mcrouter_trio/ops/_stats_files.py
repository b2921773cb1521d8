"""`--stats-root`: mcrouter's stats files, rewritten every `--stats-logging-interval`.

The names and layout are mcrouter's (`McrouterLogger.cpp`), so tools that read
mcrouter's files read these. In the stats root, each named
`libmcrouter.<service>.<router>.<suffix>` (`getStatPrefix`: the service name is
`--service-name`, `mcrouter` by default; the router name is the first port):

- `stats`: the `ods` stats group as one JSON object of numbers, each key prefixed
  `libmcrouter.<service>.<router>.` (`libmcrouter.mcrouter.5000.uptime`);
- `startup_options`: every option by name, as text, and the `pid` (written once,
  then touched at every interval, as mcrouter does);
- `config_sources_info`: what `get __mcrouter__.config_sources_info` answers.

Each file is JSON with sorted keys and two-space indents, written to a temporary
file and renamed over the old one, so a reader never sees half a file. With
`--num-proxies N` the first worker writes them, from every worker's counters.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import trio

log = logging.getLogger("mcrouter_trio.ops")


def stat_prefix(service_name: str, router_name: str) -> str:
    """mcrouter's `getStatPrefix`: `libmcrouter.<service>.<router>`."""
    return f"libmcrouter.{service_name}.{router_name}"


@attrs.frozen
class StatsFiles:
    """Where and how the stats files are written."""

    root: Path
    prefix: str

    def path(self, suffix: str) -> Path:
        return self.root / f"{self.prefix}.{suffix}"

    def write_stats(self, numbers: Mapping[str, int | float]) -> None:
        self._write("stats", {f"{self.prefix}.{name}": value for name, value in numbers.items()})

    def write_startup_options(self, options: Mapping[str, str]) -> None:
        self._write("startup_options", {**options, "pid": str(os.getpid())})

    def touch_startup_options(self) -> None:
        """Its modification time now, as mcrouter touches it at every interval: a
        reader sees from each file's mtime that the proxy is alive."""
        os.utime(self.path("startup_options"))

    def write_config_sources_info(self, info: Mapping[str, object]) -> None:
        self._write("config_sources_info", info)

    def _write(self, suffix: str, value: Mapping[str, object]) -> None:
        text = json.dumps(value, indent=2, sort_keys=True) + "\n"
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{self.prefix}.{suffix}.")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path(suffix))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


async def write_stats_files(
    files: StatsFiles,
    interval: float,
    startup_options: Mapping[str, str],
    numbers: Callable[[], Mapping[str, int | float]],
    sources_info: Callable[[], Mapping[str, object]],
) -> None:
    """Write the stats files now and every `interval` seconds until cancelled.

    The values are read in the event loop (they are live counters); the files are
    written in a worker thread. A failed write is logged once per distinct error,
    and retried at the next interval (the directory may come back).
    """
    logged: set[str] = set()
    first = True
    while True:
        values, info = dict(numbers()), dict(sources_info())

        def write(
            values: dict[str, int | float] = values,
            info: dict[str, object] = info,
            first: bool = first,
        ) -> None:
            if first:
                files.write_startup_options(startup_options)
            else:
                try:
                    files.touch_startup_options()
                except FileNotFoundError:  # removed by someone: written again
                    files.write_startup_options(startup_options)
            files.write_stats(values)
            files.write_config_sources_info(info)

        try:
            await trio.to_thread.run_sync(write)
        except OSError as exc:
            if str(exc) not in logged:
                logged.add(str(exc))
                log.warning("cannot write stats files in %s: %s", files.root, exc)
        else:
            first = False
        await trio.sleep(interval)
