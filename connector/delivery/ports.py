"""The engine's edge: what it needs from the consumer, the producers, the ledger store and the
metrics. Protocols only (plus the null observer); Kafka itself stays in ``connector.kafka``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from connector.kafka.record_sink import RecordSink

if TYPE_CHECKING:
    from connector.core.ledger import PartitionLedger
    from connector.kafka.consumer import TP, ConsumedRecord

__all__ = [
    "EngineObserver",
    "EngineStats",
    "LedgerLoader",
    "NullObserver",
    "RecordSink",
    "RecordSource",
    "TransactionCommitter",
]


class RecordSource(Protocol):
    """What the engine needs from the consumer."""

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[ConsumedRecord]: ...
    def assignment(self) -> set[TP]: ...
    def pause(self, partitions: Iterable[TP]) -> None: ...
    def resume(self, partitions: Iterable[TP]) -> None: ...
    async def commit(self, offsets: dict[TP, int]) -> None: ...


class TransactionCommitter(Protocol):
    """A transactional sink: everything sent since the last call, plus ``offsets``, is
    committed atomically. Raises when the transaction failed (nothing of it is visible)."""

    async def commit_transaction(self, offsets: dict[TP, int]) -> None: ...

    def discard_held(self, partitions: set[TP]) -> None:
        """Forget outcomes held back for ``partitions`` (revoked: their next owner redoes them)."""
        ...


LedgerLoader = Callable[[set[int]], Awaitable[dict[int, "PartitionLedger"]]]


@dataclass(frozen=True, slots=True)
class LoadGauges:
    """The engine's load, sampled after every poll: one value, so the observer seam, its null
    object and the Prometheus adapter do not each repeat the same keyword list."""

    in_flight: int
    open_lanes: int
    buffered_records: int
    buffered_bytes: int
    paused_partitions: int


class EngineObserver(Protocol):
    """Metrics hooks; every method must be cheap and must not raise.

    Each hook does nothing here, so an explicit subclass watches only what it overrides
    (``NullObserver``); ``EngineMetrics`` implements them all without subclassing.
    """

    def record_consumed(self, tp: TP) -> None:
        return

    def outcome(self, provider: str, account: str, outcome: str) -> None:
        return

    def retry(self, provider: str, account: str, rate_limited: bool) -> None:
        return

    def rate_limit_wait(self, provider: str, account: str, seconds: float) -> None:
        return

    def limiter_wait(self, provider: str, account: str, limiter: str, seconds: float) -> None:
        """A send waited for ``limiter`` (``pair``: Meta's pair rule; ``settle``: an ambiguous
        older request of the order may still land)."""
        return

    def account_outage(self, provider: str, account: str, in_outage: bool) -> None:
        return

    def adaptive_rate(self, provider: str, account: str, rate: float) -> None:
        return

    def ambiguous(self, provider: str, account: str, action: str) -> None:
        return

    def extra_message(self, provider: str, account: str, reason: str) -> None:
        """A send that may show the customer a status twice (``retry``: the newest status
        retried after an ambiguous attempt; ``reassert``: the newest status sent once more)."""
        return

    def request_started(self, provider: str) -> None:
        return

    def request_latency(self, provider: str, seconds: float) -> None:
        return

    def commit_latency(self, seconds: float) -> None:
        return

    def gauges(self, load: LoadGauges) -> None:
        return


class NullObserver(EngineObserver):
    """An observer that ignores everything; subclass it to watch only what you need."""


@dataclass(slots=True)
class EngineStats:
    """Counters the engine keeps for tests, benchmarks and the replay report."""

    consumed: int = 0
    results: int = 0
    errors: int = 0
    sent_requests: int = 0
    retries: int = 0
    commits: int = 0
    outage_parks: int = 0  # attempts that failed in an account outage and parked (no budget)
