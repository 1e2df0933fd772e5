"""Prometheus metrics of one connector process, on a registry it owns (never the global one).

Labels are bounded: provider, account, topic, partition, outcome and fixed reason words only;
never order ids, event ids, message ids or free text. It must not start a server.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds. Provider calls run from a few ms (sandbox) to the client timeout.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ConnectorMetrics:
    """Every metric the connector exports. Update through the methods (which fix the label
    names) or the public attributes; ``render()`` returns the Prometheus text format."""

    def __init__(self, *, namespace: str = "connector") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ns, reg = namespace, self.registry
        self.records_consumed = Counter(
            "records_consumed", "Input records read from Kafka.",
            ["topic", "partition"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.outcomes = Counter(
            "outcomes", "Final outcomes of events, by provider account and outcome or error class.",
            ["provider", "account", "outcome"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.retries = Counter(
            "retries", "Provider request retries scheduled.",
            ["provider", "account"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.rate_limit_waits = Counter(
            "rate_limit_waits", "Times a send waited for a rate limiter.",
            ["provider", "account", "limiter"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.rate_limit_wait_seconds = Counter(
            "rate_limit_wait_seconds", "Seconds spent waiting for rate limiters.",
            ["provider", "account", "limiter"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.inflight_requests = Gauge(
            "inflight_requests", "Provider requests currently in flight.",
            ["provider"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.open_lanes = Gauge(
            "open_lanes", "Per-order lanes holding unfinished records.",
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.buffered_records = Gauge(
            "buffered_records", "Records held in memory, not yet finished.",
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.buffered_bytes = Gauge(
            "buffered_bytes", "Bytes of records held in memory, not yet finished.",
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.paused_partitions = Gauge(
            "paused_partitions", "Input partitions paused for back-pressure.",
            namespace=ns, registry=reg,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "consumer_lag", "Records between the committed offset and the partition end.",
            ["topic", "partition"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.commit_latency = Histogram(
            "commit_latency_seconds", "Time to commit offsets (or a transaction).",
            namespace=ns, registry=reg, buckets=_COMMIT_BUCKETS,
        )  # fmt: skip
        self.provider_request_latency = Histogram(
            "provider_request_seconds", "Provider HTTP request duration.",
            ["provider"], namespace=ns, registry=reg, buckets=_REQUEST_BUCKETS,
        )  # fmt: skip
        self.webhooks_received = Counter(
            "webhooks_received", "Webhook requests received.",
            ["provider"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.webhooks_rejected = Counter(
            "webhooks_rejected", "Webhook requests rejected, by fixed reason word.",
            ["provider", "reason"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.webhook_reports = Counter(
            "webhook_reports", "Status reports taken from webhooks and handed on.",
            ["provider", "status"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.webhook_duplicates = Counter(
            "webhook_duplicates", "Webhook items recognised as provider retries and dropped.",
            ["provider"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.webhook_template_changes = Counter(
            "webhook_template_changes", "Template status changes received.",
            ["provider", "event"], namespace=ns, registry=reg,
        )  # fmt: skip
        self.invalid_events = Counter(
            "invalid_events", "Input records rejected as invalid, by error kind.",
            ["topic", "kind"], namespace=ns, registry=reg,
        )  # fmt: skip

    # --- Kafka side -----------------------------------------------------------------------

    def record_consumed(self, topic: str, partition: int, count: int = 1) -> None:
        self.records_consumed.labels(topic, str(partition)).inc(count)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop per-partition series after a revocation, so stale lag is not reported."""
        with contextlib.suppress(KeyError):
            self.consumer_lag.remove(topic, str(partition))

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
