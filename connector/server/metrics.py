"""Prometheus metrics of one connector process, on a registry it owns (never the global one).

Labels are bounded: provider, account, topic, partition, outcome and fixed reason words only;
never order ids, event ids, message ids or free text. It must not start a server.
"""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata
from typing import Final

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds. Provider calls run from a few ms (sandbox) to the client timeout.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The help text of every metric, by name; the label names are given where each is created.
_HELP: Final[dict[str, str]] = {
    "records_consumed": "Input records read from Kafka.",
    "outcomes": "Final outcomes of events, by provider account and outcome or error class.",
    "retries": "Provider request retries scheduled.",
    "rate_limit_waits": "Times a send waited for a rate limiter.",
    "rate_limit_wait_seconds": "Seconds spent waiting for rate limiters.",
    "inflight_requests": "Provider requests currently in flight.",
    "account_outage": "1 while the account is in outage mode (its sends park; one probe).",
    "account_outages": "Times the account entered outage mode.",
    "adaptive_rate": "The account's current adaptive send rate, messages per second.",
    "ambiguous_attempts": "Attempts that ended without an answer after the request was written.",
    "extra_messages": "Sends that may show a customer a status twice (ambiguous retry, reassert).",
    "open_lanes": "Per-order lanes holding unfinished records.",
    "buffered_records": "Records held in memory, not yet finished.",
    "buffered_bytes": "Bytes of records held in memory, not yet finished.",
    "paused_partitions": "Input partitions paused for back-pressure.",
    "consumer_lag": "Records between the committed offset and the partition end.",
    "oldest_pending_record_age_seconds": (
        "Age of the oldest input record taken in whose outcome is not yet acknowledged "
        "(0 when none waits); it pins the partition's commit point."
    ),
    "commit_point_stalled_seconds": (
        "How long the partition's commit point has not moved while records wait."
    ),
    "publish_outage": "1 while dispatch is paused because outcomes cannot be published.",
    "commit_latency_seconds": "Time to commit offsets (or a transaction).",
    "provider_request_seconds": "Provider HTTP request duration.",
    "webhooks_received": "Webhook requests received.",
    "webhooks_rejected": "Webhook requests rejected, by fixed reason word.",
    "webhook_reports": "Status reports taken from webhooks and handed on.",
    "webhook_duplicates": "Webhook items recognised as provider retries and dropped.",
    "webhook_template_changes": "Template status changes received.",
    "invalid_events": "Input records rejected as invalid, by error kind.",
    "build_info": "Always 1; the labels say which connector and Python version is running.",
}


def connector_version() -> str:
    """The installed package's version (``unknown`` when run from an uninstalled tree)."""
    try:
        return metadata.version("order-status-connector")
    except metadata.PackageNotFoundError:
        return "unknown"


class ConnectorMetrics:
    """Every metric the connector exports. Update through the methods (which fix the label
    names) or the public attributes; ``render()`` returns the Prometheus text format."""

    def __init__(self, *, namespace: str = "connector") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._namespace = namespace
        counter, gauge, histogram = self._counter, self._gauge, self._histogram
        self.records_consumed = counter("records_consumed", "topic", "partition")
        self.outcomes = counter("outcomes", "provider", "account", "outcome")
        self.retries = counter("retries", "provider", "account")
        self.rate_limit_waits = counter("rate_limit_waits", "provider", "account", "limiter")
        self.rate_limit_wait_seconds = counter(
            "rate_limit_wait_seconds", "provider", "account", "limiter"
        )
        self.inflight_requests = gauge("inflight_requests", "provider")
        self.account_outage = gauge("account_outage", "provider", "account")
        self.account_outages = counter("account_outages", "provider", "account")
        self.adaptive_rate = gauge("adaptive_rate", "provider", "account")
        self.ambiguous_attempts = counter("ambiguous_attempts", "provider", "account", "action")
        self.extra_messages = counter("extra_messages", "provider", "account", "reason")
        self.open_lanes = gauge("open_lanes")
        self.buffered_records = gauge("buffered_records")
        self.buffered_bytes = gauge("buffered_bytes")
        self.paused_partitions = gauge("paused_partitions")
        self.consumer_lag = gauge("consumer_lag", "topic", "partition")
        self.oldest_pending_age = gauge("oldest_pending_record_age_seconds", "topic", "partition")
        self.commit_point_stalled = gauge("commit_point_stalled_seconds", "topic", "partition")
        self.publish_outage = gauge("publish_outage")
        self.commit_latency = histogram("commit_latency_seconds", _COMMIT_BUCKETS)
        self.provider_request_latency = histogram(
            "provider_request_seconds", _REQUEST_BUCKETS, "provider"
        )
        self.webhooks_received = counter("webhooks_received", "provider")
        self.webhooks_rejected = counter("webhooks_rejected", "provider", "reason")
        self.webhook_reports = counter("webhook_reports", "provider", "status")
        self.webhook_duplicates = counter("webhook_duplicates", "provider")
        self.webhook_template_changes = counter("webhook_template_changes", "provider", "event")
        self.invalid_events = counter("invalid_events", "topic", "kind")
        self.build_info = gauge("build_info", "version", "python")
        self.build_info.labels(connector_version(), platform.python_version()).set(1)
        # process_* (CPU, memory, file descriptors), python_info and python_gc_*: the standard
        # collectors, registered on this registry too (the global one is never served).
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    def _counter(self, name: str, *labels: str) -> Counter:
        return Counter(name, _HELP[name], labels, namespace=self._namespace, registry=self.registry)

    def _gauge(self, name: str, *labels: str) -> Gauge:
        return Gauge(name, _HELP[name], labels, namespace=self._namespace, registry=self.registry)

    def _histogram(self, name: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
        return Histogram(
            name, _HELP[name], labels,
            namespace=self._namespace, registry=self.registry, buckets=buckets,
        )  # fmt: skip

    # --- Kafka side -----------------------------------------------------------------------

    def record_consumed(self, topic: str, partition: int, count: int = 1) -> None:
        self.records_consumed.labels(topic, str(partition)).inc(count)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def set_partition_progress(
        self, topic: str, partition: int, *, oldest_pending_s: float, point_stalled_s: float
    ) -> None:
        self.oldest_pending_age.labels(topic, str(partition)).set(oldest_pending_s)
        self.commit_point_stalled.labels(topic, str(partition)).set(point_stalled_s)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop per-partition series after a revocation, so stale values are not reported."""
        for gauge in (self.consumer_lag, self.oldest_pending_age, self.commit_point_stalled):
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition))

    def observe_commit(self, seconds: float) -> None:
        self.commit_latency.observe(seconds)

    def invalid_event(self, topic: str, kind: str) -> None:
        """``kind`` is a fixed word such as the error class name, never the reason text."""
        self.invalid_events.labels(topic, kind).inc()

    # --- engine / provider side -----------------------------------------------------------

    def outcome(self, provider: str, account: str, outcome: str) -> None:
        self.outcomes.labels(provider, account, outcome).inc()

    def retry(self, provider: str, account: str) -> None:
        self.retries.labels(provider, account).inc()

    def rate_limit_wait(self, provider: str, account: str, limiter: str, seconds: float) -> None:
        self.rate_limit_waits.labels(provider, account, limiter).inc()
        self.rate_limit_wait_seconds.labels(provider, account, limiter).inc(max(seconds, 0.0))

    def observe_provider_request(self, provider: str, seconds: float) -> None:
        self.provider_request_latency.labels(provider).observe(seconds)

    # --- webhooks --------------------------------------------------------------------------

    def webhook_received(self, provider: str) -> None:
        self.webhooks_received.labels(provider).inc()

    def webhook_rejected(self, provider: str, reason: str) -> None:
        self.webhooks_rejected.labels(provider, reason).inc()

    def webhook_report(self, provider: str, status: str) -> None:
        self.webhook_reports.labels(provider, status).inc()

    def webhook_duplicate(self, provider: str, count: int = 1) -> None:
        self.webhook_duplicates.labels(provider).inc(count)

    def webhook_template_change(self, provider: str, event: str) -> None:
        self.webhook_template_changes.labels(provider, event).inc()

    # --- exposition ------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
