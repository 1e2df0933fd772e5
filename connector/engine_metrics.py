"""``EngineObserver`` backed by ``ConnectorMetrics``: the engine's hooks become Prometheus series.

Cheap and non-raising by contract; it holds no state of its own beyond the metrics.
"""

from __future__ import annotations

from connector.kafka.consumer import TP
from connector.metrics import ConnectorMetrics


class EngineMetrics:
    """Implements ``connector.engine.EngineObserver``."""

    def __init__(self, metrics: ConnectorMetrics) -> None:
        self.metrics = metrics

    def record_consumed(self, tp: TP) -> None:
        self.metrics.record_consumed(tp.topic, tp.partition)

    def outcome(self, provider: str, account: str, outcome: str) -> None:
        self.metrics.outcome(provider, account, outcome)

    def retry(self, provider: str, account: str, rate_limited: bool) -> None:
        self.metrics.retry(provider, account)
        if rate_limited:
            # The provider throttled us and named a wait: counted as a "retry_after" wait.
            self.metrics.rate_limit_waits.labels(provider, account, "retry_after").inc()

    def rate_limit_wait(self, provider: str, account: str, seconds: float) -> None:
        self.metrics.rate_limit_wait(provider, account, "account", seconds)

    def request_started(self, provider: str) -> None:
        self.metrics.inflight_requests.labels(provider).inc()

    def request_latency(self, provider: str, seconds: float) -> None:
        self.metrics.inflight_requests.labels(provider).dec()
        self.metrics.observe_provider_request(provider, seconds)

    def commit_latency(self, seconds: float) -> None:
        self.metrics.observe_commit(seconds)

    def gauges(
        self,
        *,
        in_flight: int,
        open_lanes: int,
        buffered_records: int,
        buffered_bytes: int,
        paused_partitions: int,
    ) -> None:
        m = self.metrics
        m.open_lanes.set(open_lanes)
        m.buffered_records.set(buffered_records)
        m.buffered_bytes.set(buffered_bytes)
        m.paused_partitions.set(paused_partitions)
