"""How a record leaves: its outcome record (result or error), built in one place, and published
until the broker acknowledges it. Durability is reported through ``on_durable``; this module
never touches offsets, lanes or slots.

``Outcomes.settle`` is total: a record that cannot be built becomes an ``internal_error``
record, a record the broker refuses for good becomes a minimal error record (once), and only
when even that is refused, or the producer cannot write any more, does it report a fatal
failure (``on_fatal``). Error records are cut to ``error_record_max_bytes`` (read from the
errors topic at start); outcomes are keyed by the event's order id, or by the input key cut to
``MAX_OUTCOME_KEY_BYTES`` when the event did not decode. ``PublishWatch`` says for how long
publishing has not been acknowledged while outcomes wait (a publish outage).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from connector.contract.records import (
    ErrorRecord,
    ResultOutcome,
    ResultRecord,
    SourceCoordinates,
    bounded_error_record,
    encode_bytes,
    minimal_error_record,
    original_headers,
    result_record_bytes,
)
from connector.core.ledger import delivery_of
from connector.core.redaction import SecretScrubber, mask_key, mask_phones_in_text
from connector.errors import ErrorClass, ProducerFailedError, PublishRefusedError
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
AcceptedHook = Callable[[ResultRecord], Awaitable[None]]
_MAX_DETAIL = 300
_MAX_ID = 256
#: An outcome's key when the event did not decode is the input key, cut to this many bytes: a
#: huge input key must not make its error record unpublishable (the errors topic's budget
#: leaves 1 KiB for the key, ``connector.kafka.producer.ERROR_RECORD_KEY_ROOM``).
MAX_OUTCOME_KEY_BYTES = 1024


class PublishWatch:
    """How long outcomes have waited for an acknowledgement while none arrived.

    ``begin``/``end`` bracket each outcome's settling (building, hooks, publishing until the
    ack), ``acked`` marks each acknowledgement. ``stalled_s(now)`` is 0 while nothing waits or
    acks keep arriving; otherwise the time since the later of the last ack and the moment
    outcomes started waiting.
    """

    __slots__ = ("_last_ack", "_pending", "_waiting_since")

    def __init__(self) -> None:
        self._pending = 0
        self._waiting_since = 0.0
        self._last_ack = 0.0

    def begin(self, now: float) -> None:
        if self._pending == 0:
            self._waiting_since = now
        self._pending += 1

    def end(self) -> None:
        self._pending = max(0, self._pending - 1)

    def acked(self, now: float) -> None:
        self._last_ack = now

    @property
    def pending(self) -> int:
        return self._pending

    def stalled_s(self, now: float) -> float:
        if self._pending == 0:
            return 0.0
        return max(0.0, now - max(self._last_ack, self._waiting_since))


def internal(
    exc: BaseException,
    stage: str,
    scrubber: SecretScrubber,
    *,
    event: OrderStatusChanged | None = None,
    provider: Provider | None = None,
) -> Ending:
    """An ``internal_error`` ending for ``exc`` raised at ``stage``: the exception type and a
    short detail, secrets scrubbed and phone numbers masked."""
    text = mask_phones_in_text(scrubber.scrub_text(str(exc)))
    detail = f"{stage}: {type(exc).__name__}: {text}"
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    return Ending(error=ErrorClass.INTERNAL_ERROR, detail=detail, event=event, provider=provider)


@dataclass(slots=True, eq=False)
class Outcomes:
    """Builds and publishes outcome records; calls ``on_durable(state, offset)`` on the ack."""

    sink: RecordSink
    ledger_sink: RecordSink
    topics: TopicNames
    observer: EngineObserver
    stats: EngineStats
    _: KW_ONLY
    scrubber: SecretScrubber
    on_durable: Callable[[PartitionState, int], None]
    on_fatal: Callable[[BaseException], None]
    on_accepted: AcceptedHook | None = None
    original_value: OriginalValuePolicy | None = None
    _failures: int = field(default=0, init=False)
    #: The largest error record (bytes) the errors topic and producer take; None: no cut.
    error_record_max_bytes: int | None = field(default=None, init=False)
    watch: PublishWatch = field(default_factory=PublishWatch, init=False)

    async def settle(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        ending: Ending,
        job: Job | None,
        after_enqueue: Callable[[], None] | None = None,
    ) -> None:
        """Publish the outcome of ``record`` until acknowledged. Never raises (but cancels):
        ``after_enqueue`` runs exactly once, when an outcome is handed to the producer."""
        # From here until it returns, the outcome waits for the broker (the accepted hook
        # writes a correlation record and waits for it too): what the publish watch measures.
        self.watch.begin(time.monotonic())
        try:
            await self._settle(state, record, ending, job, _Once(after_enqueue))
        finally:
            self.watch.end()

    async def _settle(
        self, state: PartitionState, record: ConsumedRecord, ending: Ending, job: Job | None,
        once: _Once,
    ) -> None:  # fmt: skip
        ending, topic, value, ledger_update, result = self._prepare(record, ending, job)
        if result is not None and result.provider_message_id and self.on_accepted:
            try:
                await self.on_accepted(result)
            except Exception:
                log.exception("accepted_hook_failed")
        headers = trace_headers(ending, job)
        refused = await self._try(state, record, topic, value, ledger_update, once, headers)
        if refused is None:
            return
        try:
            value = self._minimal(record, ending, job, refused)
            await self.publish(
                state, record, self.topics.errors, value, after_enqueue=once, headers=headers
            )
        except Exception as exc:
            # Not even a minimal error record can be written: stop rather than stall.
            log.exception("fallback_refused", partition=record.partition, offset=record.offset)
            self.on_fatal(exc)

    def _prepare(
        self, record: ConsumedRecord, ending: Ending, job: Job | None
    ) -> tuple[Ending, str, bytes | None, LedgerUpdate | None, ResultRecord | None]:
        """The record to publish: ``ending``'s, else an internal_error (None: none builds)."""
        stage = "ledger"
        try:
            ledger_update = ledger_update_of(job, ending, self.topics.ledger)
            stage = "record"
            topic, value, result = self.build(record, ending, job)
        except Exception as exc:
            event, provider = (job.event, job.provider) if job else (ending.event, ending.provider)
            ending = internal(exc, stage, self.scrubber, event=event, provider=provider)
        else:
            return ending, topic, value, ledger_update, result
        try:
            topic, value, _ = self.build(record, ending, job)
        except Exception:
            return ending, self.topics.errors, None, None, None
        return ending, topic, value, None, None

    async def _try(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        topic: str,
        value: bytes | None,
        ledger_update: LedgerUpdate | None,
        once: _Once,
        headers: list[tuple[str, bytes]] | None,
    ) -> PublishRefusedError | None:
        """Publish; the refusal when the record cannot be written as it is."""
        if value is None:
            return PublishRefusedError("the outcome record could not be built")
        try:
            await self.publish(
                state, record, topic, value, ledger_update=ledger_update, after_enqueue=once,
                headers=headers,
            )  # fmt: skip
        except PublishRefusedError as exc:
            log.warning(
                "outcome_refused", topic=topic, error=str(exc), partition=record.partition,
                offset=record.offset,
            )  # fmt: skip
            return exc
        except ProducerFailedError as exc:
            # Nothing this producer sends there can succeed: stop (a restart re-reads it).
            log.error("producer_failed", topic=topic, error=str(exc), offset=record.offset)  # noqa: TRY400
            self.on_fatal(exc)
        return None

    def build(
        self, record: ConsumedRecord, ending: Ending, job: Job | None
    ) -> tuple[str, bytes, ResultRecord | None]:
        """The topic, value and (for results the accepted hook needs) the record of ``ending``;
        counts it."""
        event, provider = (job.event, job.provider) if job else (ending.event, ending.provider)
        if ending.result is None:
            error = self._protected(record, self._error(record, ending, job))
            limit = self.error_record_max_bytes
            value = (
                error.to_bytes() if limit is None else bounded_error_record(error, max_bytes=limit)
            )
            topic, result = self.topics.errors, None
            self.stats.errors += 1
        else:
            fields = self._result(record, ending, job, event, provider)
            topic, value = self.topics.results, result_record_bytes(**fields)
            result = None
            if self.on_accepted is not None and fields["provider_message_id"]:
                result = ResultRecord.model_construct(
                    **{**fields, "source": SourceCoordinates(
                        topic=record.topic, partition=record.partition, offset=record.offset
                    )}
                )  # fmt: skip
            self.stats.results += 1
        kind, account = (provider.kind, provider.account) if provider else ("none", "none")
        self.observer.outcome(kind, account, ending.name)
        return topic, value, result

    @staticmethod
    def _result(
        record: ConsumedRecord,
        ending: Ending,
        job: Job | None,
        event: OrderStatusChanged | None,
        provider: Provider | None,
    ) -> dict[str, Any]:
        """The fields of the result record (``result_record_bytes`` writes its JSON directly:
        building the model and serialising it cost about 3% of an event's CPU)."""
        assert ending.result is not None
        answer = ending.answer
        latency = None
        if answer is not None:
            since = job.consumed_at if job is not None else time.monotonic()
            latency = round((time.monotonic() - since) * 1000, 3)
        return {
            "event_id": event.event_id if event else None,
            "order_id": event.order_id if event else _key_text(record.key),
            "outcome": ending.result,
            "provider": provider.kind if provider else None,
            "account": provider.account if provider else None,
            "provider_message_id": answer.message_id if answer else None,
            "http_status": answer.http_status if answer else None,
            "provider_error_code": answer.error_code if answer else None,
            "attempts": job.attempts if job else 0,
            "latency_ms": latency,
            "source": (record.topic, record.partition, record.offset),
            "traceparent": event.traceparent if event else None,
            "detail": ending.detail if ending.detail is not None or not answer else answer.detail,
            "recorded_at": datetime.now(UTC),
        }

    def _protected(self, record: ConsumedRecord, error: ErrorRecord) -> ErrorRecord:
        """``errors.original_value``: the kept input value redacted or encrypted (personal data)."""
        if self.original_value is None or record.value is None:
            return error
        kept, protection = self.original_value.protect(record.value)
        if protection is None:
            return error
        return error.model_copy(
            update={"original_value": encode_bytes(kept), "original_value_protection": protection}
        )

    @staticmethod
    def _error(record: ConsumedRecord, ending: Ending, job: Job | None) -> ErrorRecord:
        assert ending.error is not None
        event, provider = (job.event, job.provider) if job else (ending.event, ending.provider)
        answer = ending.answer
        error = ErrorRecord(
            event_id=event.event_id if event else None,
            order_id=event.order_id if event else _key_text(record.key),
            error_class=ending.error,
            reason=ending.detail or ending.error.value,
            provider=provider.kind if provider else None,
            account=provider.account if provider else (event.account if event else None),
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

    @staticmethod
    async def _ledger_ack(ack: asyncio.Future[object], record: ConsumedRecord) -> None:
        """A refused ledger entry does not hold back the outcome already sent after it (that
        would make two outcomes); a replay may then send the event again."""
        try:
            await asyncio.shield(ack)
        except PublishRefusedError as exc:
            log.warning(
                "ledger_entry_refused", error=str(exc), partition=record.partition,
                offset=record.offset,
            )  # fmt: skip

    @staticmethod
    def _minimal(
        record: ConsumedRecord, ending: Ending, job: Job | None, refused: BaseException
    ) -> bytes:
        """The error record to write when the full outcome was refused:
        ``minimal_error_record`` of it (ids clipped, no original key or headers, the value
        described by size and SHA-256; re-drive from the source coordinates)."""
        event, provider = (job.event, job.provider) if job else (ending.event, ending.provider)
        reason = f"outcome refused by the broker ({refused}); original record not kept"
        if ending.detail:
            reason = f"{reason} | {ending.detail}"
        full = ErrorRecord.model_construct(
            event_id=event.event_id if event else None,
            order_id=event.order_id if event else _key_text(record.key),
            error_class=ending.error or ErrorClass.INTERNAL_ERROR,
            reason=reason,
            provider=provider.kind if provider else None,
            account=provider.account if provider else event.account if event else None,
            attempts=job.attempts if job else 0,
            source=SourceCoordinates(
                topic=record.topic, partition=record.partition, offset=record.offset
            ),
            original_value=encode_bytes(record.value),
        )
        return minimal_error_record(full).to_bytes()

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
        Transient errors are retried with backoff; ``PublishRefusedError`` and
        ``ProducerFailedError`` are raised.
        """
        key = outcome_key(record)
        once = after_enqueue if isinstance(after_enqueue, _Once) else _Once(after_enqueue)
        while not await self._publish_once(
            state, record, topic, value, key, ledger_update, once, headers
        ):
            pass
        self.watch.acked(time.monotonic())
        self._failures = 0
        self.on_durable(state, record.offset)

    async def _publish_once(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        topic: str,
        value: bytes,
        key: bytes | None,
        ledger_update: LedgerUpdate | None,
        after_enqueue: _Once,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> bool:
        """One try: True once acknowledged, False after a transient failure (backed off)."""
        try:
            if ledger_update is not None:
                ledger_topic, ledger_key, ledger_value = ledger_update
                ledger_fut = await self.ledger_sink.send(
                    ledger_topic,
                    ledger_value,
                    key=ledger_key,
                    partition=record.partition,
                    source=(state.tp, record.offset),
                )
            fut = await self.sink.send(
                topic, value, key=key, headers=headers, source=(state.tp, record.offset)
            )
            after_enqueue()  # at most once, however many tries
            if ledger_update is not None:
                await self._ledger_ack(ledger_fut, record)
            await asyncio.shield(fut)
        except (asyncio.CancelledError, PublishRefusedError, ProducerFailedError):
            raise  # sending the same bytes again cannot succeed
        except Exception as exc:
            self._failures += 1
            log.exception("publish_failed", topic=topic, error=type(exc).__name__)
            await asyncio.sleep(min(5.0, 0.1 * self._failures))
            return False
        return True


def trace_headers(ending: Ending, job: Job | None) -> list[tuple[str, bytes]] | None:
    """The Kafka headers of an outcome record: the event's ``traceparent`` (W3C trace context),
    so tracing tools that read headers follow an event into its result or error record."""
    event = job.event if job is not None else ending.event
    if event is None or not event.traceparent:
        return None
    return [("traceparent", event.traceparent.encode("ascii"))]


class _Once:
    """Calls ``fn`` at most once; a failure is logged, never raised into the publish loop."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[], None] | None) -> None:
        self._fn = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            try:
                fn()
            except Exception:
                log.exception("after_enqueue_failed")


def ledger_update_of(job: Job | None, ending: Ending, topic: str | None) -> LedgerUpdate | None:
    """The ledger entry a provider's success adds (None: nothing to remember)."""
    if job is None or ending.answer is None or not ending.answer.kind.is_success:
        return None
    ledger = job.state.ledger
    if ledger is None or not topic:
        return None
    order_id, target = job.event.order_id, job.lane[1]
    targets = ledger.targets(order_id)
    previous = targets.get(target)
    try:
        value = ledger.record(order_id, target, delivery_of(job.event))
    except Exception:
        # Forget what could not be written, or every later entry of the order fails too.
        if previous is None:
            targets.pop(target, None)
        else:
            targets[target] = previous
        raise
    return (topic, order_id.encode(), value)


def outcome_key(record: ConsumedRecord) -> bytes | None:
    """The key of ``record``'s outcome: the input key, cut to ``MAX_OUTCOME_KEY_BYTES``.

    A record whose event decoded has a key equal to its order id (``key_mismatch`` refuses
    others by default) or, accepted anyway, keeps the producer's key so its outcomes share
    the partition scheme of its input. Only an undecodable record's key can be huge.
    """
    key = record.key
    if key is None or len(key) <= MAX_OUTCOME_KEY_BYTES:
        return key
    return key[:MAX_OUTCOME_KEY_BYTES]


def _clip(text: str | None, limit: int = _MAX_ID) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def key_mismatch(record: ConsumedRecord, event: OrderStatusChanged) -> Ending:
    """A record keyed by something other than its order id: Kafka orders records per key, so
    this order's events may arrive in any order (``delivery.key_mismatch: accept`` sends them
    anyway, for producers that key by customer)."""
    key = "no key" if record.key is None else f"a {len(record.key)}-byte key"
    detail = (
        f"record key is not the event's order_id ({key}); Kafka orders records per key, so "
        "this order's events are not ordered (delivery.key_mismatch: accept sends them anyway)"
    )
    return Ending(error=ErrorClass.KEY_MISMATCH, detail=detail, event=event)
