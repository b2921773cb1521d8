"""`--metrics-port`: the stats as Prometheus metrics, rendered from the counter table.

Every metric comes from `PROXY_STATS` or `SERVER_STATS` (`counters.py`), read through
the same sums over `--num-proxies` workers as `stats` and `stats servers`, so nothing
is declared twice. The mapping, applied to the tables by `FAMILIES`:

- a numeric proxy stat `x` is `mcrouter_x` (a counter is exposed as `mcrouter_x_total`,
  as a count even where `stats` shows it per second); mcrouter's per-second twins of
  `_count` stats (`result_error` of `result_error_count`, ...) are left out;
- the requests per command (`cmd_get`, ...) are one counter, `mcrouter_requests_total`,
  labelled `command` (`get`, `meta_get`, ...);
- the text stats (`version`, `commandargs`) are the labels of `mcrouter_info`;
- a server stat `x` is `mcrouter_server_x`, labelled by the server (`server`
  host:port, `protocol`, `security` plain or ssl, `timeout_ms`: what tells two
  destinations apart), plus `mcrouter_server_up` and `mcrouter_server_tko` from its state;
- each destination's latency counts (`Destination.latencies`) are the histogram
  `mcrouter_server_latency_seconds`, and all of them added up are
  `mcrouter_all_servers_latency_seconds` (the `avg_latency_us` of `stats servers` is
  left out: the histogram's `_sum` over `_count` is that mean).

The endpoint is a Trio task of its own (`serve_metrics`): a small HTTP/1.1 responder
that answers one request per connection. With `--num-proxies N` only the first worker
serves it (as it writes the stats files); the numbers it shows are summed over every
worker, as `stats` shows them there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from mcrouter_trio.counters import LATENCY_BOUNDS, PROXY_STATS, SERVER_STATS, Kind, Latencies, Stat

if TYPE_CHECKING:
    from mcrouter_trio.ops._stats import ProxyStats
    from mcrouter_trio.routing._specs import ServerSpec
    from mcrouter_trio.upstream._destination import Destination

log = logging.getLogger(__name__)

PREFIX: Final = "mcrouter"
SERVER_LABELS: Final = ("server", "protocol", "security", "timeout_ms")
#: How long a client may take to send its request head, and how long that head may be.
_REQUEST_TIMEOUT: Final = 10.0
_MAX_HEAD: Final = 8192


@attrs.frozen
class Family:
    """One metric as a dashboard sees it: its name, type, labels and help."""

    name: str
    """Without the `_total` a counter's samples carry, or the `_info` an info's do."""
    type: str
    """`counter`, `gauge`, `info` or `histogram`."""
    help: str
    labels: tuple[str, ...] = ()

    @property
    def sample_name(self) -> str:
        """The name of its samples in the text format (a histogram's, without suffix)."""
        suffix = {"counter": "_total", "info": "_info"}.get(self.type, "")
        return self.name + suffix

    @property
    def sample_names(self) -> tuple[str, ...]:
        """Every name its samples have in the text format."""
        if self.type == "histogram":
            return tuple(self.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        return (self.sample_name,)


def _metric_type(stat: Stat) -> str:
    return "counter" if stat.kind is Kind.COUNTER else "gauge"


_TEXT_STATS: Final = tuple(stat for stat in PROXY_STATS if stat.text)
_COMMAND_STATS: Final = tuple(stat for stat in PROXY_STATS if stat.op is not None)
#: A `rate_of` stat is left out: its `_count` twin is the counter, whose `rate()` it is.
_NUMERIC_STATS: Final = tuple(
    stat for stat in PROXY_STATS if not stat.text and stat.op is None and stat.rate_of is None
)

INFO: Final = Family(
    f"{PREFIX}", "info", "the proxy: " + "; ".join(s.help for s in _TEXT_STATS),
    tuple(s.name for s in _TEXT_STATS),
)  # fmt: skip
REQUESTS: Final = Family(
    f"{PREFIX}_requests", "counter", "requests received, per command", ("command",)
)
SERVER_UP: Final = Family(
    f"{PREFIX}_server_up", "gauge", "1 while the proxy is connected to the server", SERVER_LABELS
)
SERVER_TKO: Final = Family(
    f"{PREFIX}_server_tko",
    "gauge",
    "1 while the server is TKO (requests to it fail fast until a probe succeeds)",
    SERVER_LABELS,
)
SERVER_LATENCY: Final = Family(
    f"{PREFIX}_server_latency_seconds",
    "histogram",
    "seconds from a request's write to the server to its reply read back complete",
    SERVER_LABELS,
)
ALL_SERVERS_LATENCY: Final = Family(
    f"{PREFIX}_all_servers_latency_seconds",
    "histogram",
    "the same, every server's replies together",
)
#: Server stats that are not metrics of their own: the mean the histograms give.
_NOT_METRICS: Final = frozenset({"avg_latency_us"})
PROXY_FAMILIES: Final = {
    stat.name: Family(f"{PREFIX}_{stat.name}", _metric_type(stat), stat.help)
    for stat in _NUMERIC_STATS
}
SERVER_FAMILIES: Final = {
    stat.name: Family(f"{PREFIX}_server_{stat.name}", _metric_type(stat), stat.help, SERVER_LABELS)
    for stat in SERVER_STATS
    if stat.name not in _NOT_METRICS
}
#: Every metric `/metrics` shows, in the order it shows them.
FAMILIES: Final = (
    INFO,
    *PROXY_FAMILIES.values(),
    REQUESTS,
    *SERVER_FAMILIES.values(),
    SERVER_UP,
    SERVER_TKO,
    SERVER_LATENCY,
    ALL_SERVERS_LATENCY,
)
#: The `le` label of each bucket (`0.0001`, ..., `10.0`, as Prometheus' clients write bounds).
_BUCKET_LABELS: Final = (*(repr(bound) for bound in LATENCY_BOUNDS), "+Inf")


def command_label(stat: Stat) -> str:
    """`cmd_meta_get` → `meta_get`."""
    return stat.name.removeprefix("cmd_")


def _family(family: Family) -> Any:
    labels = list(family.labels)
    if family.type == "counter":
        return CounterMetricFamily(family.name, family.help, labels=labels)
    if family.type == "info":
        return InfoMetricFamily(family.name, family.help, labels=[])
    if family.type == "histogram":
        return HistogramMetricFamily(family.name, family.help, labels=labels)
    return GaugeMetricFamily(family.name, family.help, labels=labels)


def add_histogram(metric: HistogramMetricFamily, labels: list[str], latencies: Latencies) -> None:
    """Add one histogram's samples: cumulative bucket counts, as Prometheus wants them."""
    buckets = []
    total = 0
    for label, count in zip(_BUCKET_LABELS, latencies.counts, strict=True):
        total += count
        buckets.append((label, float(total)))
    metric.add_metric(labels, buckets, latencies.sum)


def server_labels(server: ServerSpec) -> list[str]:
    return [server.address, server.protocol, server.mech, str(server.timeout_ms)]


class StatsCollector:
    """A prometheus_client collector reading the proxy's stats at each scrape."""

    def __init__(self, stats: ProxyStats, destinations: Mapping[ServerSpec, Destination]) -> None:
        self._stats = stats
        self._destinations = destinations

    def collect(self) -> Iterable[Metric]:
        destinations = self._destinations
        totals = self._stats.totals(destinations)
        info = _family(INFO)
        info.add_metric([], {stat.name: str(totals[stat.name]) for stat in _TEXT_STATS})
        yield info
        for name, family in PROXY_FAMILIES.items():
            metric = _family(family)
            metric.add_metric([], float(totals[name]))
            yield metric
        requests = _family(REQUESTS)
        for stat in _COMMAND_STATS:
            requests.add_metric([command_label(stat)], float(totals[stat.name]))
        yield requests
        servers, latencies = self._stats.server_sums(destinations)
        metrics = {name: _family(family) for name, family in SERVER_FAMILIES.items()}
        up, tko = _family(SERVER_UP), _family(SERVER_TKO)
        server_latency = _family(SERVER_LATENCY)
        every_latency = Latencies()
        for server, values in sorted(servers.items(), key=lambda item: item[0].address):
            labels = server_labels(server)
            for name, metric in metrics.items():
                metric.add_metric(labels, float(values[name]))
            dest = destinations[server]
            up.add_metric(labels, 1.0 if dest.state == "up" else 0.0)
            tracker = dest.tracker
            tko.add_metric(labels, 1.0 if tracker and tracker.refusal is not None else 0.0)
            add_histogram(server_latency, labels, latencies[server])
            every_latency.add(latencies[server])
        yield from metrics.values()
        yield up
        yield tko
        yield server_latency
        all_servers_latency = _family(ALL_SERVERS_LATENCY)
        add_histogram(all_servers_latency, [], every_latency)
        yield all_servers_latency


def registry_for(
    stats: ProxyStats, destinations: Mapping[ServerSpec, Destination]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, destinations))
    return registry


def metrics_markdown() -> str:
    """The table of `docs/metrics.md`: every metric, its type, labels and help."""
    rows = ["| metric | type | labels | what it is |", "|---|---|---|---|"]
    for family in FAMILIES:
        labels = ", ".join(f"`{label}`" for label in family.labels)
        if family is INFO:
            labels = ", ".join(f"`{stat.name}`" for stat in _TEXT_STATS)
        rows.append(f"| `{family.sample_name}` | {family.type} | {labels} | {family.help} |")
    commands = ", ".join(f"`{command_label(stat)}`" for stat in _COMMAND_STATS)
    rows.append("")
    rows.append(f"`command` is one of {commands}.")
    bounds = ", ".join(f"`{label}`" for label in _BUCKET_LABELS)
    rows.append("")
    rows.append(
        "A histogram's samples are `<metric>_bucket` (one per bucket, labelled `le`, its"
        f" upper bound in seconds: {bounds}), `<metric>_sum` (seconds) and `<metric>_count`."
    )
    return "\n".join(rows) + "\n"


async def serve_metrics(
    render: Callable[[], bytes],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer `GET /metrics` on `host:port` (every interface if `host` is empty)."""
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    task_status.started(listeners)

    async def answer(stream: trio.SocketStream) -> None:
        await _answer(stream, render)

    await trio.serve_listeners(answer, listeners)


async def _answer(stream: trio.SocketStream, render: Callable[[], bytes]) -> None:
    """One request, one response, then the connection closes."""
    try:
        async with stream:
            with trio.move_on_after(_REQUEST_TIMEOUT):
                head = await _read_head(stream)
                if head is not None:
                    await stream.send_all(_response(head, render))
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the scraper went away; nothing to answer


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > _MAX_HEAD:
            return data  # answered 400 below, having no complete request line
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
    return data


def _response(head: bytes, render: Callable[[], bytes]) -> bytes:
    words = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(words) != 3 or not words[2].startswith(b"HTTP/"):
        return _http(400, b"Bad Request", b"bad request\n")
    method, target = words[0], words[1]
    if method not in (b"GET", b"HEAD"):
        return _http(405, b"Method Not Allowed", b"only GET and HEAD\n", allow=True)
    path = target.split(b"?", 1)[0]
    if path == b"/metrics":
        body = render()
        return _http(200, b"OK", body, CONTENT_TYPE_LATEST, head_only=method == b"HEAD")
    if path == b"/":
        body = b"mcrouter-trio: metrics are at /metrics\n"
        return _http(200, b"OK", body, head_only=method == b"HEAD")
    return _http(404, b"Not Found", b"not found: the metrics are at /metrics\n")


def _http(
    status: int,
    reason: bytes,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    head_only: bool = False,
    allow: bool = False,
) -> bytes:
    headers: Sequence[bytes] = [
        b"HTTP/1.1 %d %s" % (status, reason),
        b"Content-Type: " + content_type.encode(),
        b"Content-Length: %d" % len(body),
        b"Connection: close",
        *([b"Allow: GET, HEAD"] if allow else []),
    ]
    return b"\r\n".join(headers) + b"\r\n\r\n" + (b"" if head_only else body)


def renderer(
    stats: ProxyStats, destinations: Mapping[ServerSpec, Destination]
) -> Callable[[], bytes]:
    """What `/metrics` answers, read anew at each scrape."""
    registry = registry_for(stats, destinations)
    return lambda: generate_latest(registry)
