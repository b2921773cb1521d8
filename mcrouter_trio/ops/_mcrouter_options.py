"""mcrouter's integer and toggle options, which a config reads as `%mcr_opts-<name>%`.

mcrouter (`ProxyConfigBuilder.cpp` `buildGlobalParams`) gives the preprocessor
every integer and toggle option of `mcrouter_options_list.h` under its field name,
rendered as `folly::to<std::string>` does: integers in decimal, toggles `1` or
`0`. This is that list, with mcrouter's defaults and command-line flags; a flag
this proxy implements (cli.py) or accepts without effect (`_mcrouter_flags.py`)
supplies the value it was given, any other option keeps mcrouter's default.

A toggle flag given bare flips the default (`--disable-fibers-use-guard-pages`
clears `fibers_use_guard_pages`); given a value (`--test-mode=0`) it sets the
option to that value, as mcrouter's option parser does.
"""

from __future__ import annotations

import argparse
from typing import Final

import attrs

__all__ = ["MCROUTER_OPTIONS", "McrouterOption", "mcrouter_option_values"]


@attrs.frozen
class McrouterOption:
    name: str
    """The field name in mcrouter's options struct: `%mcr_opts-<name>%`."""
    default: int | bool
    """mcrouter's default; a bool makes it a toggle."""
    flag: str | None
    """The long flag that sets it, without dashes (None: not settable from the command line)."""

    def value(self, args: argparse.Namespace) -> str:
        """The option as mcrouter renders it for the config, given the parsed command line."""
        given = None if self.flag is None else getattr(args, self.flag.replace("-", "_"), None)
        if isinstance(self.default, bool):
            return "1" if _toggle(given, self.default) else "0"
        if given is None:
            return str(self.default)
        if isinstance(given, int):
            return str(given)
        text = str(given).strip()
        try:
            return str(int(text))
        except ValueError:
            return text


_TRUE: Final = frozenset({"1", "true", "yes", "on", "y"})


def _toggle(given: object, default: bool) -> bool:
    if given is None or given is False:
        return default
    if given is True or given == "":  # a store_true flag, or a bare mcrouter toggle
        return not default
    return str(given).strip().lower() in _TRUE


#: mcrouter's integer and toggle options, in `mcrouter_options_list.h` order.
MCROUTER_OPTIONS: Final = (
    McrouterOption("asynclog_disable", False, "asynclog-disable"),
    McrouterOption("use_asynclog_version2", False, "use-asynclog-version2"),
    McrouterOption("num_proxies", 1, "num-proxies"),
    McrouterOption("use_mux_io_thread_pool", False, "use-mux-io-thread-pool"),
    McrouterOption("mux_io_thread_pool_wake_up_interval_us", 100, None),
    McrouterOption("mux_io_thread_pool_idle_spin_max_us", 10, None),
    McrouterOption("client_queue_size", 1024, None),
    McrouterOption("client_queue_no_notify_rate", 0, None),
    McrouterOption("client_queue_wait_threshold_us", 0, None),
    McrouterOption("big_value_split_threshold", 0, "big-value-split-threshold"),
    McrouterOption("big_value_batch_size", 10, "big-value-batch-size"),
    McrouterOption("big_value_hide_reply_flag", False, "big-value-hide-reply-flag"),
    McrouterOption("fibers_max_pool_size", 1000, "fibers-max-pool-size"),
    McrouterOption("fibers_stack_size", 24 * 1024, "fibers-stack-size"),
    McrouterOption("fibers_record_stack_size_every", 100000, "fibers-record-stack-size-every"),
    McrouterOption("fibers_use_guard_pages", True, "disable-fibers-use-guard-pages"),
    McrouterOption("file_observer_poll_period_ms", 100, "file-observer-poll-period-ms"),
    McrouterOption(
        "file_observer_sleep_before_update_ms", 1000, "file-observer-sleep-before-update-ms"
    ),
    McrouterOption("fibers_pool_resize_period_ms", 60000, "fibers-pool-resize-period-ms"),
    McrouterOption("keepalive_cnt", 0, "keepalive-count"),
    McrouterOption("keepalive_interval_s", 60, "keepalive-interval"),
    McrouterOption("keepalive_idle_s", 300, "keepalive-idle"),
    McrouterOption("max_no_flush_event_loops", 5, "max-no-flush-event-loops"),
    McrouterOption(
        "reset_inactive_connection_interval", 60000, "reset-inactive-connection-interval"
    ),
    McrouterOption("tcp_rto_min", -1, "tcp-rto-min"),
    McrouterOption("target_max_inflight_requests", 0, "target-max-inflight-requests"),
    McrouterOption("target_max_pending_requests", 100000, "target-max-pending-requests"),
    McrouterOption("target_max_shadow_requests", 1000, "target-max-shadow-requests"),
    McrouterOption("proxy_max_inflight_requests", 0, "proxy-max-inflight-requests"),
    McrouterOption("proxy_max_inflight_shadow_requests", 0, "proxy-max-inflight-shadow-requests"),
    McrouterOption("proxy_max_throttled_requests", 0, "proxy-max-throttled-requests"),
    McrouterOption(
        "ssl_service_identity_authorization_log", False, "ssl-service-identity-authorization-log"
    ),
    McrouterOption(
        "ssl_service_identity_authorization_enforce",
        False,
        "ssl-service-identity-authorization-enforce",
    ),
    McrouterOption("enable_qos", False, "enable-qos"),
    McrouterOption("default_qos_class", 0, "default-qos-class"),
    McrouterOption("default_qos_path", 0, "default-qos-path"),
    McrouterOption("ssl_connection_cache", False, "ssl-connection-cache"),
    McrouterOption("ssl_handshake_offload", False, "ssl-handshake-offload"),
    McrouterOption("ssl_verify_peers", False, "ssl-verify-peers"),
    McrouterOption("enable_compression", False, "enable-compression"),
    McrouterOption("constantly_reload_configs", False, "constantly-reload-configs"),
    McrouterOption("disable_reload_configs", False, "disable-reload-configs"),
    McrouterOption("max_dumped_config_age", 12 * 60 * 60, "max-dumped-config-age"),
    McrouterOption("group_remote_errors", False, "group-remote-errors"),
    McrouterOption("send_invalid_route_to_default", False, "send-invalid-route-to-default"),
    McrouterOption("enable_flush_cmd", False, "enable-flush-cmd"),
    McrouterOption("disable_request_deadline_check", False, "disable-request-deadline-check"),
    McrouterOption("reconfiguration_delay_ms", 1000, "reconfiguration-delay-ms"),
    McrouterOption("reconfiguration_jitter_ms", 0, "reconfiguration-jitter-ms"),
    McrouterOption("post_reconfiguration_delay_ms", 0, "post-reconfiguration-delay-ms"),
    McrouterOption("disable_tko_tracking", False, "disable-tko-tracking"),
    McrouterOption("probe_delay_initial_ms", 10000, "probe-timeout-initial"),
    McrouterOption("probe_delay_max_ms", 60000, "probe-timeout-max"),
    McrouterOption("failures_until_tko", 3, "timeouts-until-tko"),
    McrouterOption("allow_only_gets", False, "allow-only-gets"),
    McrouterOption("server_timeout_ms", 1000, "server-timeout"),
    McrouterOption("cross_region_timeout_ms", 0, "cross-region-timeout-ms"),
    McrouterOption("cross_cluster_timeout_ms", 0, "cross-cluster-timeout-ms"),
    McrouterOption("within_cluster_timeout_ms", 0, "within-cluster-timeout-ms"),
    McrouterOption("waiting_request_timeout_ms", 0, "waiting-request-timeout-ms"),
    McrouterOption("connect_timeout_retries", 0, "connect-timeout-retries"),
    McrouterOption("jemalloc_nodump_buffers", False, "jemalloc-nodump-buffers"),
    McrouterOption("stats_logging_interval", 10000, "stats-logging-interval"),
    McrouterOption("logging_rtt_outlier_threshold_us", 0, "logging-rtt-outlier-threshold-us"),
    McrouterOption("stats_async_queue_length", 50, "stats-async-queue-length"),
    McrouterOption("enable_failure_logging", True, "disable-failure-logging"),
    McrouterOption("test_mode", False, "test-mode"),
    McrouterOption("enable_logging_route", False, "enable-logging-route"),
    McrouterOption("collect_rxmit_stats_every_hz", 0, "collect-rxmit-stats-every-hz"),
    McrouterOption("rxmit_latency_deviation_us", 0, "rxmit-latency-deviation-us"),
    McrouterOption("min_rxmit_reconnect_threshold", 0, "min-rxmit-reconnect-threshold"),
    McrouterOption("max_rxmit_reconnect_threshold", 0, "max-rxmit-reconnect-threshold"),
    McrouterOption("asynclog_port_override", 0, None),
    McrouterOption("enable_send_to_main_shard_split", True, "disable-send-to-main-shard-split"),
    McrouterOption("max_shadow_token_map_size", 1024, "max-shadow-token-map-size"),
    McrouterOption("enable_ssl_tfo", False, "enable-ssl-tfo"),
    McrouterOption("force_same_thread", False, "force-same-thread"),
    McrouterOption("thread_affinity", False, "thread-affinity"),
    McrouterOption("disable_shard_split_route", False, "disable-shard-split-route"),
    McrouterOption("enable_service_router", False, "enable-service-router"),
    McrouterOption("thrift_compression_threshold", 0, "thrift-compression-threshold"),
    McrouterOption("xdp_tx_truncate_bytes", 3072, "xdp-tx-truncate-bytes"),
    McrouterOption("enable_axonlog", False, "enable-axonlog"),
    McrouterOption(
        "external_carbon_connection_logging_enabled",
        False,
        "external-carbon-connection-logging-enabled",
    ),
    McrouterOption(
        "external_carbon_connection_log_rate_per_hour",
        3600,
        "external-carbon-connection-log-rate-per-hour",
    ),
    McrouterOption(
        "external_carbon_connection_log_max_burst", 500, "external-carbon-connection-log-max-burst"
    ),
    McrouterOption(
        "external_carbon_connection_log_sample_rate",
        10000,
        "external-carbon-connection-log-sample-rate",
    ),
    McrouterOption("proxy_cpu_interval_s", 0, "proxy-cpu-interval-s"),
    McrouterOption(
        "delete_carbon_instance_upon_init_failure", True, "delete-carbon-instance-upon-init-failure"
    ),
    McrouterOption("dump_preprocessed_config_enabled", False, "dump_preprocessed_config_enabled"),
    McrouterOption("max_preprocessed_config_history", 0, "max_preprocessed_config_history"),
)


def mcrouter_option_values(args: argparse.Namespace) -> dict[str, str]:
    """Every option's rendered value by name (`num_proxies` -> `"4"`)."""
    return {option.name: option.value(args) for option in MCROUTER_OPTIONS}
