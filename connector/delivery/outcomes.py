"""How a record leaves: its outcome record (result or error), built in one place, and published
until the broker acknowledges it. Durability is reported through ``on_durable``; this module
never touches offsets, lanes or slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from connector.contract.records import (
    ErrorRecord,
    ResultOutcome,
    ResultRecord,
    SourceCoordinates,
    encode_bytes,
    original_headers,
)
from connector.core.ledger import delivery_of
from connector.core.redaction import mask_key
from connector.errors import ErrorClass
from connector.providers.base import OutcomeKind, ProviderOutcome

if TYPE_CHECKING:
    from connector.config import TopicNames
    from connector.contract.events import OrderStatusChanged
    from connector.core.personal_data import OriginalValuePolicy
    from connector.delivery.jobs import Job, PartitionState
    from connector.delivery.ports import EngineObserver, EngineStats
    from connector.kafka.consumer import ConsumedRecord
    from connector.kafka.record_sink import RecordSink
    from connector.providers.base import Provider

log = structlog.get_logger("connector.delivery.outcomes")

_RESULT_OF_KIND = {
    OutcomeKind.ACCEPTED: ResultOutcome.ACCEPTED,
    OutcomeKind.DELIVERED: ResultOutcome.DELIVERED,
    OutcomeKind.ALREADY_DONE: ResultOutcome.ALREADY_DONE,
    OutcomeKind.SKIPPED: ResultOutcome.SKIPPED_MAPPING,
}


@dataclass(frozen=True, slots=True)
class Ending:
    """How one record ends: a result record (``result``) or an error record (``error``).

    ``answer`` is the provider's classified answer when there was one; ``detail`` overrides
    its detail (and is an error record's reason); ``verdict`` marks a replay decision.
    ``event`` and ``provider`` say what is known of a record that never became a job.
    """

    result: ResultOutcome | None = None
    error: ErrorClass | None = None
    detail: str | None = None
    answer: ProviderOutcome | None = None
    verdict: bool = False
    event: OrderStatusChanged | None = None
    provider: Provider | None = None

    @classmethod
    def of_answer(
        cls,
        answer: ProviderOutcome,
        *,
        event: OrderStatusChanged | None = None,
        provider: Provider | None = None,
    ) -> Ending:
        """A successful (or skipped) answer: its result."""
        return cls(_RESULT_OF_KIND[answer.kind], answer=answer, event=event, provider=provider)

    @property
    def name(self) -> str:
        return self.result.value if self.result is not None else str(self.error)


LedgerUpdate = tuple[str, bytes, bytes]  # (topic, key, value)


class Outcomes:
    """Builds and publishes outcome records; calls ``on_durable(state, offset)`` on the ack."""

    def __init__(
        self,
        sink: RecordSink,
        ledger_sink: RecordSink,
        topics: TopicNames,
        observer: EngineObserver,
        stats: EngineStats,
        *,
        on_durable: Callable[[PartitionState, int], None],
        original_value: OriginalValuePolicy | None = None,
    ) -> None:
        self._sink = sink
        self._original_value = original_value
        self._ledger_sink = ledger_sink
        self._topics = topics
        self._obs = observer
        self._stats = stats
        self._on_durable = on_durable
        self._failures = 0

    def build(
        self, record: ConsumedRecord, ending: Ending, job: Job | None
    ) -> tuple[str, bytes, ResultRecord | None]:
        """The topic, value and (for results) the record of ``ending``; counts it."""
        event, provider = (job.event, job.provider) if job else (ending.event, ending.provider)
        kind, account = (provider.kind, provider.account) if provider else ("none", "none")
        self._obs.outcome(kind, account, ending.name)
        if ending.result is None:
            self._stats.errors += 1
            error = self._error(record, ending, job, event, provider)
            if self._original_value is not None and record.value is not None:
                kept, protection = self._original_value.protect(record.value)
                if protection is not None:  # errors.original_value: redact or encrypt
                    error = error.model_copy(
                        update={
                            "original_value": encode_bytes(kept),
                            "original_value_protection": protection,
                        }
                    )
            return self._topics.errors, error.to_bytes(), None
        self._stats.results += 1
        result = self._result(record, ending, job, event, provider)
        return self._topics.results, result.to_bytes(), result

    @staticmethod
    def _result(
        record: ConsumedRecord,
        ending: Ending,
        job: Job | None,
        event: OrderStatusChanged | None,
        provider: Provider | None,
    ) -> ResultRecord:
        assert ending.result is not None
        answer = ending.answer
        latency = None
        if answer is not None:
            since = job.consumed_at if job is not None else time.monotonic()
            latency = round((time.monotonic() - since) * 1000, 3)
        # Built from our own typed values: skip re-validation on the hot path.
        return ResultRecord.model_construct(
            event_id=event.event_id if event else None,
            order_id=event.order_id if event else _key_text(record.key),
            outcome=ending.result,
            provider=provider.kind if provider else None,
            account=provider.account if provider else None,
            provider_message_id=answer.message_id if answer else None,
            http_status=answer.http_status if answer else None,
            provider_error_code=answer.error_code if answer else None,
            attempts=job.attempts if job else 0,
            latency_ms=latency,
            source=SourceCoordinates(
                topic=record.topic, partition=record.partition, offset=record.offset
            ),
            traceparent=event.traceparent if event else None,
            detail=ending.detail if ending.detail is not None or not answer else answer.detail,
            recorded_at=datetime.now(UTC),
        )

    @staticmethod
    def _error(
        record: ConsumedRecord,
        ending: Ending,
        job: Job | None,
        event: OrderStatusChanged | None,
        provider: Provider | None,
    ) -> ErrorRecord:
        assert ending.error is not None
        answer = ending.answer
        error = ErrorRecord(
            event_id=event.event_id if event else None,
            order_id=event.order_id if event else _key_text(record.key),
            error_class=ending.error,
            reason=ending.detail or ending.error.value,
            provider=provider.kind if provider else None,
            account=provider.account if provider else None,
            http_status=answer.http_status if answer else None,
            provider_error_code=answer.error_code if answer else None,
            attempts=job.attempts if job else 0,
            first_attempt_at=job.first_attempt_at if job else None,
            last_attempt_at=datetime.now(UTC) if job and job.attempts else None,
            source=SourceCoordinates(
                topic=record.topic, partition=record.partition, offset=record.offset
            ),
            original_key=encode_bytes(record.key),
            original_value=encode_bytes(record.value),
            original_headers=original_headers(record.headers),
            traceparent=event.traceparent if event else None,
        )
        if ending.error is ErrorClass.INVALID_EVENT:
            log.warning(
                "invalid_event", reason=error.reason, topic=record.topic,
                partition=record.partition, offset=record.offset, key=mask_key(record.key),
            )  # fmt: skip
        else:
            log.warning(
                "delivery_failed",
                error_class=ending.error.value,
                order_id=error.order_id,
                account=error.account,
                code=error.provider_error_code,
                partition=record.partition,
                offset=record.offset,
            )
        return error

    async def publish(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        topic: str,
        value: bytes,
        *,
        ledger_update: LedgerUpdate | None = None,
        after_enqueue: Callable[[], None] | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Hand the outcome to the producer; the offset is done only when the broker acks it.

        A ledger update goes first, to the input record's partition (co-partitioned topics).
        ``headers`` go on the outcome record (``trace_headers``: the event's ``traceparent``).
        ``after_enqueue`` runs once both are queued in the producer, before the acks arrive.
        """
        while True:
            try:
                if ledger_update is not None:
                    ledger_topic, ledger_key, ledger_value = ledger_update
                    ledger_fut = await self._ledger_sink.send(
                        ledger_topic,
                        ledger_value,
                        key=ledger_key,
                        partition=record.partition,
                        source=(state.tp, record.offset),
                    )
                fut = await self._sink.send(
                    topic, value, key=record.key, headers=headers, source=(state.tp, record.offset)
                )
                if after_enqueue is not None:
                    then, after_enqueue = after_enqueue, None
                    then()
                if ledger_update is not None:
                    await asyncio.shield(ledger_fut)
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                log.exception("publish_failed", topic=topic, error=type(exc).__name__)
                await asyncio.sleep(min(5.0, 0.1 * self._failures))
                continue
            break
        self._failures = 0
        self._on_durable(state, record.offset)


def trace_headers(ending: Ending, job: Job | None) -> list[tuple[str, bytes]] | None:
    """The Kafka headers of an outcome record: the event's ``traceparent`` (W3C trace context),
    so tracing tools that read headers follow an event into its result or error record."""
    event = job.event if job is not None else ending.event
    if event is None or not event.traceparent:
        return None
    return [("traceparent", event.traceparent.encode("ascii"))]


AcceptedHook = Callable[[ResultRecord], Awaitable[None]]


def ledger_update_of(job: Job | None, ending: Ending, topic: str | None) -> LedgerUpdate | None:
    """The ledger entry a provider's success adds (None: nothing to remember)."""
    if job is None or ending.answer is None or not ending.answer.kind.is_success:
        return None
    ledger = job.state.ledger
    if ledger is None or not topic:
        return None
    order_id = job.event.order_id
    value = ledger.record(order_id, job.lane[1], delivery_of(job.event))
    return (topic, order_id.encode(), value)


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None
