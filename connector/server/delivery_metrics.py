"""``EngineObserver`` backed by ``ConnectorMetrics``: the engine's hooks become Prometheus series.

Cheap and non-raising by contract; it holds no state of its own beyond the metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector.errors import ErrorClass
from connector.kafka.consumer import TP
from connector.server.metrics import ConnectorMetrics

if TYPE_CHECKING:
    from connector.delivery.ports import LoadGauges

_INVALID_EVENT = ErrorClass.INVALID_EVENT.value


class EngineMetrics:
    """Implements ``connector.delivery.engine.EngineObserver``.

    The per-record hooks keep the labelled children they touch (prometheus_client's
    ``labels()`` costs more than the increment itself; label sets here are bounded).

    An ``invalid_event`` outcome also counts in ``invalid_events``, labelled with the input
    topic: the engine reports ``record_consumed`` for every record before it finds one invalid,
    and it consumes one topic. The hook carries no exception class, so ``kind`` is the error
    class of the error record (``invalid_event``).
    """

    def __init__(self, metrics: ConnectorMetrics) -> None:
        self.metrics = metrics
        self._input_topic = "unknown"  # replaced by the first consumed record's topic
        self._consumed: dict[TP, Any] = {}
        self._outcomes: dict[tuple[str, str, str], Any] = {}
        self._inflight: dict[str, Any] = {}
        self._latency: dict[str, Any] = {}
        self._rates: dict[str, Any] = {}

    def record_consumed(self, tp: TP) -> None:
        child = self._consumed.get(tp)
        if child is None:
            child = self.metrics.records_consumed.labels(tp.topic, str(tp.partition))
            self._consumed[tp] = child
            self._input_topic = tp.topic
        child.inc()

    def outcome(self, provider: str, account: str, outcome: str) -> None:
        key = (provider, account, outcome)
        child = self._outcomes.get(key)
        if child is None:
            child = self._outcomes[key] = self.metrics.outcomes.labels(provider, account, outcome)
        child.inc()
        if outcome == _INVALID_EVENT:
            self.metrics.invalid_event(self._input_topic, _INVALID_EVENT)

    def retry(self, provider: str, account: str, rate_limited: bool) -> None:
        self.metrics.retry(provider, account)
        if rate_limited:
            # The provider throttled us and named a wait: counted as a "retry_after" wait.
            self.metrics.rate_limit_waits.labels(provider, account, "retry_after").inc()

    def rate_limit_wait(self, provider: str, account: str, seconds: float) -> None:
        self.metrics.rate_limit_wait(provider, account, "account", seconds)

    def limiter_wait(self, provider: str, account: str, limiter: str, seconds: float) -> None:
        self.metrics.rate_limit_wait(provider, account, limiter, seconds)

    def account_outage(self, provider: str, account: str, in_outage: bool) -> None:
        self.metrics.account_outage.labels(provider, account).set(1 if in_outage else 0)
        if in_outage:
            self.metrics.account_outages.labels(provider, account).inc()

    def adaptive_rate(self, provider: str, account: str, rate: float) -> None:
        child = self._rates.get(account)
        if child is None:
            child = self._rates[account] = self.metrics.adaptive_rate.labels(provider, account)
        child.set(rate)

    def ambiguous(self, provider: str, account: str, action: str) -> None:
        self.metrics.ambiguous_attempts.labels(provider, account, action).inc()

    def extra_message(self, provider: str, account: str, reason: str) -> None:
        self.metrics.extra_messages.labels(provider, account, reason).inc()

    def request_started(self, provider: str) -> None:
        child = self._inflight.get(provider)
        if child is None:
            child = self._inflight[provider] = self.metrics.inflight_requests.labels(provider)
        child.inc()

    def request_latency(self, provider: str, seconds: float) -> None:
        self._inflight[provider].dec()
        child = self._latency.get(provider)
        if child is None:
            child = self.metrics.provider_request_latency.labels(provider)
            self._latency[provider] = child
        child.observe(seconds)

    def commit_latency(self, seconds: float) -> None:
        self.metrics.observe_commit(seconds)

    def gauges(self, load: LoadGauges) -> None:
        m = self.metrics
        m.open_lanes.set(load.open_lanes)
        m.buffered_records.set(load.buffered_records)
        m.buffered_bytes.set(load.buffered_bytes)
        m.paused_partitions.set(load.paused_partitions)
