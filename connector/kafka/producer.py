"""Typed wrappers around aiokafka's producer: idempotent (sends return a broker-ack future) and
transactional (outcomes and input offsets committed together). Publishes that cannot succeed by
retrying are translated here, once, into ``PublishRefusedError`` (``ProducerFailedError`` when
a partition's idempotent sequence broke); ``error_record_limit`` says how
large an error record may be. Nothing else imports aiokafka."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    BrokerResponseError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from connector.contract.records import MIN_ERROR_RECORD_BYTES
from connector.errors import ProducerFailedError, PublishRefusedError
from connector.kafka.connection import client_kwargs
from connector.kafka.consumer import TP
from connector.kafka.partitioner import CachedPartitioner
from connector.kafka.record_sink import OutgoingRecord, RecordSink

if TYPE_CHECKING:
    from connector.config import KafkaSettings

_MAX_BATCH_SIZE: Final = 256 * 1024

#: A record batch's header (61 bytes) plus aiokafka's upper bound for one record's own framing
#: (21 bytes: length, attributes, timestamp and offset deltas): how aiokafka sizes a send against
#: ``max_request_size``, and an upper bound of what the broker compares to ``max.message.bytes``.
RECORD_BATCH_OVERHEAD: Final = 61 + 21
_VALUE_LENGTH_ROOM: Final = 5  # the value's length, a varint
#: Room ``error_record_limit`` leaves for an error record's key (the order id: at most 256
#: characters, so 1 KiB of UTF-8, plus its length) and for its headers (a traceparent and names).
ERROR_RECORD_KEY_ROOM: Final = 1024 + 5
ERROR_RECORD_HEADERS_ROOM: Final = 1024


def error_record_limit(
    topic_max: int,
    producer_max: int,
    *,
    key_room: int = ERROR_RECORD_KEY_ROOM,
    headers_room: int = ERROR_RECORD_HEADERS_ROOM,
) -> int:
    """The ``max_bytes`` for ``connector.contract.records.bounded_error_record``.

    ``topic_max`` is the errors topic's ``max.message.bytes`` (``KafkaAdmin.max_message_bytes``),
    ``producer_max`` the producer's ``kafka.max_request_size``. What is left after the batch and
    record framing, ``key_room`` (the key with its length) and ``headers_room`` is the value's
    budget: a value of exactly that size, with a key and headers within their rooms, is accepted
    (tests/integration/test_publish_limits.py). Raises ``ValueError`` (a configuration problem)
    when that leaves less than ``MIN_ERROR_RECORD_BYTES``.
    """
    limit = (
        min(topic_max, producer_max)
        - RECORD_BATCH_OVERHEAD
        - _VALUE_LENGTH_ROOM
        - key_room
        - headers_room
    )
    if limit < MIN_ERROR_RECORD_BYTES:
        raise ValueError(
            f"max.message.bytes {topic_max} and max_request_size {producer_max} leave {limit}"
            f" bytes for an error record; at least {MIN_ERROR_RECORD_BYTES} are needed"
        )
    return limit


def is_refused(exc: BaseException) -> bool:
    """Whether a publish failure cannot succeed by sending again with this producer.

    aiokafka retries retriable broker errors itself (an idempotent producer never expires a
    batch), so a broker error that reaches the ack is not retriable: the record is too large
    (``MessageSizeTooLargeError``, also raised before sending), invalid (``CorruptRecordException``,
    ``InvalidTimestampError``; codes aiokafka does not know, such as INVALID_RECORD, arrive as
    ``UnknownError``), not authorised (``TopicAuthorizationFailedError``, ...), or the producer's
    own sequence for the partition is broken (``OutOfOrderSequenceNumber``: after the broker
    refused a batch, every later batch of that partition is refused too). Connection trouble and
    timeouts are ``KafkaError`` but not ``BrokerResponseError``: not refusals. A broken sequence
    is translated to ``ProducerFailedError`` instead (``translated_publish_error``): no record of
    that partition can be written again by this producer.
    """
    if isinstance(exc, ProducerFenced):
        return True
    return isinstance(exc, BrokerResponseError) and not exc.retriable


def _refusal(exc: BaseException, topic: str) -> PublishRefusedError:
    refused = PublishRefusedError(f"publish to {topic!r} refused: {type(exc).__name__}: {exc}")
    refused.__cause__ = exc
    return refused


def _producer_failed(exc: BaseException, topic: str) -> ProducerFailedError:
    failed = ProducerFailedError(
        f"publish to {topic!r} failed: {type(exc).__name__}: a partition's idempotent sequence"
        " broke (an earlier record was refused by the broker); a restart makes a new producer"
    )
    failed.__cause__ = exc
    return failed


def _failed(exc: BaseException) -> asyncio.Future[object]:
    fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    fut.set_exception(exc)
    return fut


def translated_publish_error(ack: asyncio.Future[object], topic: str) -> asyncio.Future[object]:
    """A future that resolves like ``ack``, with refusals raised as ``PublishRefusedError`` and
    a broken partition sequence as ``ProducerFailedError`` (nothing more can be written there)."""
    out: asyncio.Future[object] = ack.get_loop().create_future()

    def relay(done: asyncio.Future[object]) -> None:
        if out.done():
            return
        if done.cancelled():
            out.cancel()
            return
        exc = done.exception()
        if exc is None:
            out.set_result(done.result())
        elif isinstance(exc, OutOfOrderSequenceNumber):
            out.set_exception(_producer_failed(exc, topic))
        elif is_refused(exc):
            out.set_exception(_refusal(exc, topic))
        else:
            out.set_exception(exc)

    ack.add_done_callback(relay)
    return out


def idempotent_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """What both producers share: idempotence (acks=all), batching, the connection.

    A batch never exceeds ``max_request_size``, so when that is at or below every written
    topic's ``max.message.bytes`` the broker never refuses a batch for its size.
    """
    return {
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "max_request_size": settings.max_request_size,
        "max_batch_size": min(_MAX_BATCH_SIZE, settings.max_request_size),
        "compression_type": None,
        "partitioner": CachedPartitioner(),
        **client_kwargs(settings),
    }


class _Producer(RecordSink):
    """What both producers share: the aiokafka producer's life cycle."""

    def __init__(self, settings: KafkaSettings, **options: Any) -> None:
        self._settings = settings
        self._options = options
        self._client: AIOKafkaProducer | None = None

    @property
    def max_request_size(self) -> int:
        return self._settings.max_request_size

    def limit_request_size(self, max_request_size: int) -> None:
        """Lower ``max_request_size`` (to what the written topics accept, read at start);
        only before ``start``: aiokafka fixes it when the client is built."""
        if self._client is not None:
            raise RuntimeError("limit_request_size must be called before start")
        if max_request_size < self._settings.max_request_size:
            self._settings = self._settings.model_copy(
                update={"max_request_size": max_request_size}
            )

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._client is None:
            raise RuntimeError("the producer is not started")
        return self._client

    async def start(self) -> None:
        # Built here, not in __init__: the limits read at start decide max_request_size, and
        # a client that was built but never started makes aiokafka warn.
        self._client = AIOKafkaProducer(**self._options, **idempotent_kwargs(self._settings))
        await self._client.start()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.stop()


class KafkaProducer(_Producer):
    """Idempotent (acks=all) producer. ``send`` enqueues and returns the ack future.

    A record that can never be published makes the ack future raise ``PublishRefusedError``
    (``send`` itself does not raise it): one over ``max_request_size`` at once, without
    reaching the broker; one the broker refuses when it answers.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)

    async def _publish(self, record: OutgoingRecord) -> asyncio.Future[object]:
        topic, value, key, headers, partition, _ = record
        try:
            ack: asyncio.Future[object] = await self._producer.send(
                topic, value=value, key=key, headers=headers, partition=partition
            )
        except KafkaError as exc:
            if is_refused(exc):  # over max_request_size: refused before anything was sent
                return _failed(_refusal(exc, topic))
            raise
        return translated_publish_error(ack, topic)

    async def flush(self) -> None:
        if self._client is not None:
            await self._client.flush()


class TransactionFailedError(RuntimeError):
    """A transaction could not be committed; nothing of it is visible to read_committed readers.

    Fatal for the process: its in-memory progress includes outcomes that were never committed.
    """


class TransactionalProducer(_Producer):
    """Buffers sends and writes them with the input offsets in one Kafka transaction.

    ``send`` only buffers (its future is already resolved: the record counts as published
    once the transaction that holds it commits). ``commit_transaction(offsets)`` writes the
    buffer and ``offsets`` (sent to the transaction for ``group_id``) atomically. A record over
    ``max_request_size`` is not buffered: its future raises ``PublishRefusedError`` at once, so
    it can never fail a whole transaction.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str,
        group_id: str,
        transaction_timeout_ms: int = 30_000,
    ) -> None:
        super().__init__(
            settings,
            transactional_id=transactional_id,
            transaction_timeout_ms=transaction_timeout_ms,
        )
        self._group_id = group_id
        self._pending: list[OutgoingRecord] = []
        # Per input partition, the offset below which outcomes may be written (committed).
        self._released: dict[TP, int] = {}
        self._failed: BaseException | None = None
        self.transactions = 0

    async def start(self) -> None:
        """Start; the broker fences any earlier producer with this id and aborts its open txn."""
        await super().start()

    async def _publish(self, record: OutgoingRecord) -> asyncio.Future[object]:
        if self._failed is not None:
            raise TransactionFailedError("an earlier transaction failed") from self._failed
        topic, value, key, headers, _, _ = record
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
        if size > self.max_request_size:
            return _failed(
                PublishRefusedError(
                    f"publish to {topic!r} refused: the record is {size} bytes with its"
                    f" framing, over max_request_size {self.max_request_size}"
                )
            )
        self._pending.append(record)
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def flush(self) -> None:
        """Nothing to do: records become visible only through ``commit_transaction``."""

    def discard_held(self, partitions: set[TP]) -> None:
        """Drop held outcomes of revoked partitions: their offsets were never committed, so
        the partitions' next owner produces them again."""
        self._pending = [
            p for p in self._pending if p.source is None or p.source[0] not in partitions
        ]
        for tp in partitions:
            self._released.pop(tp, None)

    async def commit_transaction(self, offsets: dict[TP, int]) -> None:
        """Write ``offsets`` and the buffered records they cover in one transaction.

        An outcome is written only together with (or after) the offset that covers its input
        record: an outcome of a record above the commit point stays buffered, or a crash
        would leave it visible while its input is processed again (two outcomes).
        """
        # Split before the first await: offsets were computed from records buffered until now.
        self._released.update(offsets)
        released = self._released
        batch: list[OutgoingRecord] = []
        held: list[OutgoingRecord] = []
        for item in self._pending:
            src = item.source
            if src is None or src[1] < released.get(src[0], -1):
                batch.append(item)
            else:
                held.append(item)
        self._pending = held
        if self._failed is not None:
            raise TransactionFailedError("an earlier transaction failed") from self._failed
        if not batch and not offsets:
            return
        producer = self._producer
        try:
            async with producer.transaction():
                for topic, value, key, headers, partition, _ in batch:
                    await producer.send(
                        topic, value=value, key=key, headers=headers, partition=partition
                    )
                if offsets:
                    await producer.send_offsets_to_transaction(
                        {TopicPartition(*tp): off for tp, off in offsets.items()}, self._group_id
                    )
        except Exception as exc:
            self._failed = exc
            raise TransactionFailedError(f"transaction failed: {type(exc).__name__}") from exc
        self.transactions += 1
