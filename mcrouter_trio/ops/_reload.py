"""Online reconfiguration: watch the config, rebuild the route tree, swap it in one step.

The config watcher task lives in the serving nursery. It waits for a change to the
config file or any file it imports (`@import`) (inotify through `watchfiles`, on the files'
directories, so the symlink swaps of a Kubernetes ConfigMap are seen too) or for a
reload request (SIGHUP), waits `--reconfiguration-delay-ms` for the writer to finish
(more changes in that time make one reload), then loads the config in a worker
thread, away from the request path. A config that loads becomes a new `RouteTree`,
swapped in with one assignment (`Router.swap`): requests in flight finish on the old
tree, destinations whose connection identity is unchanged keep their connections and
counters, and those no longer used close once idle. A config that does not load is
logged with every problem and its JSON path, counted in `config_failures`, and the
old one keeps serving. Content that did not change (an editor touching the file)
reloads nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import trio

from mcrouter_trio.config import ConfigError, ProxyConfig

log = logging.getLogger("mcrouter_trio.ops")
# watchfiles logs every batch of changes at INFO; the reloads are logged here.
logging.getLogger("watchfiles").setLevel(logging.WARNING)


@attrs.define
class ConfigStatus:
    """What `stats` says of the config: when it was loaded, tried, and how often it failed."""

    #: Wall-clock seconds when the config now serving was loaded.
    loaded_at: float = attrs.field(factory=time.time)
    last_attempt: float = attrs.field(factory=time.time)
    last_success: float = attrs.field(factory=time.time)
    failures: int = 0
    reloads: int = 0
    #: Hex MD5 of the config text now serving.
    md5: str = ""


def files_digest(paths: Sequence[str | os.PathLike[str]]) -> str | None:
    """One MD5 over the files' contents; None if one cannot be read right now."""
    digest = hashlib.md5(usedforsecurity=False)
    for path in paths:
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            return None
    return digest.hexdigest()


def watched_names(files: Sequence[Path]) -> frozenset[str]:
    """The paths whose changes may change `files`: each file and every link on its way.

    A Kubernetes ConfigMap mounts `config.json -> ..data/config.json`, and an update
    swaps the `..data` link: its events are on `..data`, not on `config.json`.
    """
    names: set[str] = set()
    for file in files:
        path = Path(os.path.abspath(file))
        for _ in range(40):  # a link loop is not followed for ever
            names.add(str(path))
            if not path.is_symlink():
                break
            path = Path(os.path.abspath(path.parent / os.readlink(path)))
            names.update(str(parent) for parent in path.parents)
    return frozenset(names)


class ConfigWatcher:
    """Reloads the config when its files change or a reload is requested."""

    def __init__(
        self,
        load: Callable[[], ProxyConfig],
        apply: Callable[[ProxyConfig], None],
        files: Sequence[str | os.PathLike[str]],
        status: ConfigStatus,
        *,
        loaded_digest: str | None,
        delay: float = 1.0,
    ) -> None:
        """`loaded_digest`: `files_digest(files)` taken before the serving config was read."""
        self._load = load
        self._apply = apply
        self._files = [Path(file) for file in files]
        self._status = status
        self._delay = delay
        self._requested = trio.Event()
        self._digest = loaded_digest
        self._watch_scope = trio.CancelScope()

    def request_reload(self) -> None:
        """Reload after the delay even if no file changed (SIGHUP)."""
        self._requested.set()

    def watch_imports(self, imports: Sequence[str]) -> None:
        """Also watch the files the serving config imports (`@import`)."""
        files = [*self._files[:1], *(Path(path) for path in imports)]
        if files != self._files:
            self._files = files
            # The contents the serving config was read from, now with its imports.
            self._digest = files_digest(files)
            self._watch_scope.cancel()  # the watch restarts on the new directories

    async def run(self) -> None:
        """Watch and reload until cancelled."""
        async with trio.open_nursery() as nursery:
            if self._files:
                nursery.start_soon(self._keep_watching)
            while True:
                await self._requested.wait()
                # Let the writer finish; whatever else changes meanwhile is one reload.
                await trio.sleep(self._delay)
                self._requested = trio.Event()
                await self.reload()

    async def _keep_watching(self) -> None:
        while True:
            self._watch_scope = trio.CancelScope()
            with self._watch_scope:
                await self._watch_files()

    async def _watch_files(self) -> None:
        from watchfiles import awatch  # imported here: only a watching proxy needs it

        directories = sorted({str(file.absolute().parent) for file in self._files})

        def relevant(_change: object, path: str) -> bool:
            # Other files in the directory (a log file next to the config) are not ours.
            return path in watched_names(self._files) or Path(path).name.startswith("..")

        # Every second without events yields too: the contents are compared then as well,
        # which catches a change made before the watch began (and is mcrouter's fallback).
        changes = awatch(
            *directories,
            watch_filter=relevant,
            debounce=50,
            recursive=False,
            yield_on_timeout=True,
            rust_timeout=1000,
        )
        async for _changes in changes:
            digest = files_digest(self._files)
            if digest is not None and digest != self._digest:
                self._requested.set()

    async def reload(self) -> bool:
        """Load the config now and swap it in if it loads; whether it did."""
        status = self._status
        status.last_attempt = time.time()
        digest = files_digest(self._files)
        try:
            config = await trio.to_thread.run_sync(self._load)
        except ConfigError as exc:
            status.failures += 1
            log.error("config reload failed; the previous config keeps serving:\n%s", exc)
            return False
        except OSError as exc:
            status.failures += 1
            log.error("config reload failed; the previous config keeps serving: %s", exc)
            return False
        self._apply(config)
        self._digest = digest
        self.watch_imports(config.imports)
        status.reloads += 1
        status.loaded_at = status.last_success = time.time()
        status.md5 = config.md5
        log.info("config reloaded (md5 %s, %d servers)", config.md5, len(config.servers))
        return True
