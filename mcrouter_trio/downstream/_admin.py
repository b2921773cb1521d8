"""mcrouter's admin keys: `get __mcrouter__.<command>[(args)]`, answered by the proxy.

A plain `get` of a key starting `__mcrouter__.` is never forwarded; the answer is a hit
whose value is the command's output, and a failing command's value is
`ERROR: <message>` (mcrouter's `ServiceInfo`). The commands, as mcrouter has them:
`version`, `config_age`, `config_file`, `config_md5_digest`, `config_sources_info`,
`preprocessed_config` (the config serving now, its macros and imports expanded),
`options`, `options(name)`, `hostid`, `verbosity[(N)]`, `pools`,
`failure_domains(pool)`, `global_params`, `get_bucket(key)`, `route(op,key)` and
`route_handles(op,key)`; `route` and `route_handles` also take a request in JSON
in place of the key (see `_admin_request.py`).

`route` routes a request built from `op` and `key` through the route tree with a
recording context, as mcrouter does: every send is recorded and answered with the
command's "nothing happened" reply (a miss, `NOT_STORED`), so failover stops at the
first server that would be asked, unless that server is down, which answers as a
down server does and is not recorded, and the request fails over as it would. Sends
in the background (warm-up refills, ...) are recorded too. Nothing reaches a server.
`get_bucket` routes a `get` the same way and reports, for each bucketized pool
(mcrouter's McBucketRoute) the request reaches, the bucket its key falls in.
`route` and `route_handles` answer for the worker that answers (with `--num-proxies`,
LatestRoute's `thread_local_failover` picks servers per worker).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Final

import attrs

from mcrouter_trio import SERVER_VERSION
from mcrouter_trio.config._jsonc import ConfigError, loads_jsonc
from mcrouter_trio.counters import ProxyCounters
from mcrouter_trio.downstream._admin_request import (
    ROUTABLE_OPS,
    AdminError,
    admin_request,
)
from mcrouter_trio.hashing import ch3, routing_key
from mcrouter_trio.messages import Op, Pending, Reply, Request, Result
from mcrouter_trio.ops._reload import ConfigStatus
from mcrouter_trio.routing._base import DeleteSpool, Route, default_reply
from mcrouter_trio.routing._combinators import Background
from mcrouter_trio.routing._registry import REGISTRY, load_handles
from mcrouter_trio.routing._specs import PoolSpec, ServerSpec
from mcrouter_trio.routing._timers import Timer, TimerQueue
from mcrouter_trio.routing._tree import RouteTree
from mcrouter_trio.routing.handles.bigvalue import BigValueRoute
from mcrouter_trio.routing.handles.destination import DestinationRoute, split_routing_prefix
from mcrouter_trio.routing.handles.hash import PoolRoute
from mcrouter_trio.routing.handles.simple import LoggingRoute

ADMIN_PREFIX: Final = b"__mcrouter__."
#: What a send to a down server answers (the route then fails over as it would).
_SERVER_DOWN: Final = Reply(Result.TKO, b"SERVER_ERROR Server unavailable. Reason: tko\r\n")
#: What a route's tenant column shows: memcache requests carry no tenant id.
_NO_TENANT: Final = "null"


@attrs.define
class AdminInfo:
    """What the admin commands report that the route tree does not hold."""

    #: The config file's path; None when the config was given inline.
    config_file: str | None
    #: The config text as it is now (read afresh from the file, as mcrouter does).
    config_text: Callable[[], str]
    #: Every option by mcrouter's internal name, in the order `options` lists them.
    options: Mapping[str, str]
    host_id: int
    status: ConfigStatus = attrs.field(factory=ConfigStatus)
    verbosity: int = 0
    #: The preprocessor's global parameters (`%default-route%`, `%hostid%`, ...).
    global_params: Mapping[str, object] = attrs.field(factory=dict)


class AdminCommands:
    """Answers `get __mcrouter__.*` from the proxy's own state."""

    def __init__(self, info: AdminInfo) -> None:
        self.info = info
        self._commands: dict[str, Callable[[RouteTree, list[str]], str]] = {
            "version": lambda _tree, _args: SERVER_VERSION,
            "config_age": lambda _tree, _args: str(int(time.time() - info.status.loaded_at)),
            "config_file": self._config_file,
            "config_md5_digest": self._md5,
            "config_sources_info": lambda tree, _args: _pretty(self.sources_info(tree)),
            "preprocessed_config": self._preprocessed,
            "options": self._options,
            "hostid": lambda _tree, _args: str(info.host_id),
            "verbosity": self._verbosity,
            "pools": lambda tree, _args: _pretty(_pool_names(tree.pools)),
            "failure_domains": _failure_domains,
            "global_params": lambda _tree, _args: _pretty(dict(info.global_params)),
            "get_bucket": _get_bucket,
        }

    def answer(
        self,
        key: bytes,
        tree: RouteTree,
        is_down: Callable[[ServerSpec], bool],
        worker_index: int = 0,
    ) -> Reply:
        """The reply to `get <key>`, `key` starting with `ADMIN_PREFIX`.

        `worker_index` is the answering worker's (what `route` routes as).
        """
        command, args = _parse(key[len(ADMIN_PREFIX) :].decode("utf-8", "replace"))
        try:
            if command == "route":
                op, routed_key = _route_args("route", args)
                addresses = route_addresses(tree, op, routed_key, is_down, worker_index)
                text = "\r\n".join(addresses)
            elif command == "route_handles":
                op, routed_key = _route_args("route_handles", args)
                text = route_handles(tree, op, routed_key, worker_index).removesuffix("\n")
            else:
                handler = self._commands.get(command)
                if handler is None:
                    raise AdminError(f"unknown command: {command}")
                text = handler(tree, args).removesuffix("\n")
        except AdminError as exc:
            text = f"ERROR: {exc}"
        value = text.encode()
        head = b"VALUE %s 0 %d\r\n" % (key, len(value))
        return Reply(Result.FOUND, head + value + b"\r\nEND\r\n")

    def sources_info(self, tree: RouteTree) -> dict[str, object]:
        """`config_sources_info` (and the stats file of that name)."""
        info: dict[str, object] = {"mcrouter_config": tree.md5}
        if self.info.config_file is not None:
            info["config_file"] = self.info.config_file
        return info

    def _config_file(self, _tree: RouteTree, _args: list[str]) -> str:
        if self.info.config_file is None:
            raise AdminError("no config file found!")
        return self.info.config_file

    def _md5(self, tree: RouteTree, _args: list[str]) -> str:
        if not tree.md5:
            raise AdminError("no config md5 digest found!")
        return tree.md5

    def _preprocessed(self, tree: RouteTree, _args: list[str]) -> str:
        if tree.preprocessed:
            return _pretty(tree.preprocessed)  # macros and imports expanded
        try:
            text = self.info.config_text()
        except OSError as exc:
            raise AdminError(f"Can not load config from {self.info.config_file}") from exc
        try:
            return _pretty(loads_jsonc(text))
        except ConfigError as exc:
            raise AdminError(f"Can not parse config: {exc}") from exc

    def _options(self, _tree: RouteTree, args: list[str]) -> str:
        options = self.info.options
        if len(args) > 1:
            raise AdminError("options: 0 or 1 args expected")
        if args:
            if args[0] not in options:
                raise AdminError(f"options: option {args[0]} not found")
            return options[args[0]]
        return "".join(f"{name} {value}\n" for name, value in options.items())

    def _verbosity(self, _tree: RouteTree, args: list[str]) -> str:
        if len(args) > 1:
            raise AdminError(f"expected at most 1 argument, got {len(args)}")
        if not args:
            return str(self.info.verbosity)
        try:
            new = int(args[0])
        except ValueError as exc:
            raise AdminError(f"Invalid leading character: {args[0]!r}") from exc
        before, self.info.verbosity = self.info.verbosity, new
        return f"{before} -> {new}"


def _parse(text: str) -> tuple[str, list[str]]:
    """`cmd(a,b)` → ("cmd", ["a", "b"]); `route`'s second argument keeps its commas."""
    open_at = text.find("(")
    if open_at < 0 or not text.endswith(")"):
        return text, []
    command, inner = text[:open_at], text[open_at + 1 : -1]
    if not inner:
        return command, []
    if command.startswith("route"):
        op, comma, key = inner.partition(",")
        return command, [op, key] if comma else []
    return command, inner.split(",")


def _route_args(command: str, args: list[str]) -> tuple[Op, bytes]:
    if len(args) != 2:
        raise AdminError(f"{command}: 2 args expected")
    op = ROUTABLE_OPS.get(args[0])
    if op is None:
        raise AdminError(f"route: unknown request {args[0]}")
    return op, args[1].encode("utf-8", "surrogateescape")


def root_for_key(tree: RouteTree, key: bytes) -> Route | None:
    """The root a key is routed from: its routing prefix's, else the default one."""
    prefix, _rest = split_routing_prefix(key)
    if prefix:
        return tree.root_for(prefix)
    return tree.default_root


class RecordingContext:
    """A routing context that sends nothing: it records where each request would go."""

    def __init__(
        self,
        host_id: int,
        is_down: Callable[[ServerSpec], bool],
        *,
        worker_index: int = 0,
        fail_all: bool = False,
    ) -> None:
        """`fail_all`: answer every send as a down server (and record it), so every
        failover target is tried."""
        self.rng = random.Random()
        self.host_id = host_id
        self.worker_index = worker_index
        self.asynclog: DeleteSpool | None = None  # a dry run spools nothing
        self.dry_run = True
        #: Counted apart, and shown nowhere: a dry run is not traffic.
        self.counters = ProxyCounters()
        self.background = Background()
        #: Each send recorded: the server and the request as it reached the server.
        self.sends: list[tuple[ServerSpec, Request]] = []
        self._is_down = is_down
        self._fail_all = fail_all
        self._timers = TimerQueue()  # never fired: only what routing does at once counts

    @property
    def servers(self) -> list[ServerSpec]:
        """The servers sent to, in the order they were."""
        return [server for server, _request in self.sends]

    def send(self, server: ServerSpec, request: Request) -> Pending:
        if self._fail_all:
            self.sends.append((server, request))
            return Pending(_SERVER_DOWN)
        if self._is_down(server):
            return Pending(_SERVER_DOWN)
        self.sends.append((server, request))
        return Pending(default_reply(request))

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self._timers.add(self.now() + delay, callback)


def route_servers(
    tree: RouteTree,
    op: Op,
    key: bytes,
    is_down: Callable[[ServerSpec], bool],
    host_id: int = 0,
    worker_index: int = 0,
) -> list[ServerSpec]:
    """The servers a request of `op` for `key` would reach now, in the order it reaches them.

    `key` may be a request in JSON (`{"key":"k","value":"v"}`, see `admin_request`).
    As the worker with `worker_index` routes it.
    """
    request = admin_request(op, key)
    root = root_for_key(tree, request.key)
    if root is None:
        return []
    ctx = RecordingContext(host_id, is_down, worker_index=worker_index)
    root.route(request, ctx)
    return ctx.servers


def route_addresses(
    tree: RouteTree,
    op: Op,
    key: bytes,
    is_down: Callable[[ServerSpec], bool],
    worker_index: int = 0,
) -> list[str]:
    """`route(op,key)`: `host:port` of each server reached (IPv6 hosts in brackets)."""
    servers = route_servers(tree, op, key, is_down, worker_index=worker_index)
    return [server.address for server in servers]


def route_handles(tree: RouteTree, op: Op, key: bytes, worker_index: int = 0) -> str:
    """`route_handles(op,key)`: the route handles the request passes, one per line.

    Indented one space per level below `proxy` and `root`, as mcrouter prints them.
    A handle is shown when the request can reach a server below it, trying every
    failover target (every send fails), so a hash shows only the server the key
    picks while a failover shows each of its targets.
    """
    request = admin_request(op, key)
    root = root_for_key(tree, request.key)
    lines = ["proxy", " root"]
    if root is None:
        return "\n".join(lines) + "\n"
    every_send_fails = RecordingContext(
        0, lambda _server: False, worker_index=worker_index, fail_all=True
    )
    root.route(request, every_send_fails)
    reached = set(every_send_fails.servers)
    places = _pool_places(tree.pools)
    for depth, node in _walk(root, 2):
        if _reaches(node, reached):
            lines.append(" " * depth + _route_name(node, places))
    return "\n".join(lines) + "\n"


def key_buckets(tree: RouteTree, key: bytes) -> list[tuple[bytes, int, str]]:
    """`get_bucket(key)`: (key, bucket, keyspace) for each bucketized pool a `get` reaches.

    mcrouter's McBucketRoute records the bucket and answers the default reply (a
    miss) without sending; here the get is routed with every send answered by a
    miss, and each send to the server a bucketized pool picks is that pool's record.
    The key is shown without its routing prefix, as mcrouter shows it.
    """
    root = root_for_key(tree, key)
    if root is None:
        return []
    bucketized = [
        node for _depth, node in _walk(root, 0) if isinstance(node, PoolRoute) and node.bucketize
    ]
    ctx = RecordingContext(0, lambda _server: False)
    root.route(Request(Op.GET, key, (key,)), ctx)
    found = []
    for server, sent in ctx.sends:
        for pool_route in bucketized:
            index = pool_route.selected_index(sent)
            if index >= 0 and pool_route.pool.slots[index] == server:
                buckets = pool_route.total_buckets or 1
                _prefix, bare_key = split_routing_prefix(sent.key)
                bucket = ch3(routing_key(sent.key), buckets)
                found.append((bare_key, bucket, pool_route.bucketization_keyspace or ""))
    return found


def _get_bucket(tree: RouteTree, args: list[str]) -> str:
    if len(args) != 1:
        raise AdminError("get_bucket: 1 arg (key) expected")
    rows = key_buckets(tree, args[0].encode("utf-8", "surrogateescape"))
    return "\r\n".join(
        f"{key.decode('utf-8', 'replace')}\t{bucket}\t{keyspace}\t{_NO_TENANT}"
        for key, bucket, keyspace in rows
    )


def _failure_domains(tree: RouteTree, args: list[str]) -> str:
    """`failure_domains(pool)`: each server's failure domain, `{"host:port": "N()"}`.

    A pool's `failure_domains` lists one per server: a number, or a name hashed
    (SpookyHash32) to one (see `config/_servers.py`); a server without one is in
    domain 0. The text in the parentheses is the domain's name from mcrouter's
    config API, always empty outside Meta. An unknown pool answers `{}`.
    """
    if len(args) != 1:
        raise AdminError("failure_domains: 1 arg expected")
    pool = tree.pools.get(args[0])
    if pool is None:
        return _pretty({})
    return _pretty({server.address: f"{server.failure_domain}()" for server in pool.servers})


def _walk(node: Route, depth: int) -> Iterator[tuple[int, Route]]:
    yield depth, node
    for child in node.targets():
        yield from _walk(child, depth + 1)


def _reaches(node: Route, servers: set[ServerSpec]) -> bool:
    if isinstance(node, DestinationRoute):
        return node.server in servers
    return any(_reaches(child, servers) for child in node.targets())


def _route_name(node: Route, places: Mapping[ServerSpec, tuple[str, int]]) -> str:
    if isinstance(node, DestinationRoute):
        pool, index = places.get(node.server, ("", 0))
        return _destination_name(node.server, pool, index, node.keep_routing_prefix)
    if isinstance(node, BigValueRoute):
        # The node --big-value-split-threshold adds: tools look for mcrouter's name.
        return (
            f"big-value|split_threshold={node.split_threshold}|batch_size={node.batch_size}"
            f"|hide_reply_flag={str(node.hide_reply_flag).lower()}"
        )
    if isinstance(node, LoggingRoute):
        return "logging"  # mcrouter's name, which tools look for (--enable-logging-route)
    load_handles()
    for name, entry in REGISTRY.items():
        if entry.cls is type(node):
            return name
    return type(node).__name__


def _destination_name(server: ServerSpec, pool: str, index: int, keep_prefix: bool) -> str:
    """mcrouter's name of a destination route (`host|pool=A|id=0|ap=...`)."""
    access_point = f"{server.address}:{server.protocol}:{server.mech}:notcompressed"
    return (
        f"host|pool={pool}|id={index}|ap={access_point}|timeout={server.timeout_ms}ms"
        f"|keep_routing_prefix={str(keep_prefix).lower()}|msb=0"
    )


def _pool_places(pools: Mapping[str, PoolSpec]) -> dict[ServerSpec, tuple[str, int]]:
    """Each server's first pool and place in it (a destination's name shows them)."""
    places: dict[ServerSpec, tuple[str, int]] = {}
    for name, pool in pools.items():
        for index, server in _server_slots(pool):
            places.setdefault(server, (name, index))
    return places


def _pool_names(pools: Mapping[str, PoolSpec]) -> dict[str, list[str]]:
    """Each pool's destinations by name; a route slot has none, its place is kept in `id`."""
    return {
        name: [
            _destination_name(server, name, index, pool.keep_routing_prefix)
            for index, server in _server_slots(pool)
        ]
        for name, pool in pools.items()
    }


def _server_slots(pool: PoolSpec) -> list[tuple[int, ServerSpec]]:
    """The pool's servers with their places in its list (as mcrouter numbers them)."""
    return [(index, slot) for index, slot in enumerate(pool.slots) if isinstance(slot, ServerSpec)]


def _pretty(value: object) -> str:
    """folly's `toPrettySortedJson`: two-space indents, keys sorted."""
    return json.dumps(value, indent=2, sort_keys=True)
