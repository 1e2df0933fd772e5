"""Typed wrappers around aiokafka's producer: idempotent (sends return a broker-ack future) and
transactional (outcomes and input offsets committed together). Nothing else imports aiokafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors

from connector.errors import ProducerFailedError, PublishRefusedError
from connector.kafka.connection import client_kwargs
from connector.kafka.consumer import TP

if TYPE_CHECKING:
    from connector.config import KafkaSettings


def _idempotent_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """What both producers share: idempotence (acks=all), batching, the connection."""
    return {
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
        **client_kwargs(settings),
    }


# Errors that sending the same bytes again cannot cure: too large, malformed, not authorised.
# Decided by class (aiokafka marks them non-retriable), translated to PublishRefusedError here.
_REFUSED: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
)


def _refused(exc: BaseException) -> PublishRefusedError:
    refused = PublishRefusedError(f"{type(exc).__name__}: {exc}")
    refused.__cause__ = exc
    return refused


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, _REFUSED):
        return _refused(exc)
    if isinstance(exc, kafka_errors.OutOfOrderSequenceNumber):
        failed = ProducerFailedError(
            f"{type(exc).__name__}: a partition's idempotent sequence broke (an earlier "
            "record was refused by the broker); a restart makes a new producer"
        )
        failed.__cause__ = exc
        return failed
    return exc


def _translated(ack: asyncio.Future[Any]) -> asyncio.Future[object]:
    """``ack``, with a refusal raised as ``PublishRefusedError`` and a broken sequence as
    ``ProducerFailedError`` (a callback, not a task: this runs once per record)."""
    out: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    def done(fut: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if fut.cancelled():
            out.cancel()
            return
        exc = fut.exception()
        if exc is None:
            out.set_result(fut.result())
        else:
            out.set_exception(_translate(exc))

    ack.add_done_callback(done)
    return out


class KafkaProducer:
    """Idempotent (acks=all) producer. ``send`` enqueues and returns the ack future; a record
    the broker refuses for good raises ``PublishRefusedError`` (from ``send`` or the ack)."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = AIOKafkaProducer(**_idempotent_kwargs(settings))

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        source: tuple[TP, int] | None = None,
    ) -> asyncio.Future[object]:
        """Hand a record to the batcher; the returned future resolves when the broker acks.

        ``source`` (the input record's coordinates) matters only to the transactional producer.
        """
        try:
            fut: asyncio.Future[Any] = await self._producer.send(
                topic,
                value=value,
                key=key,
                headers=list(headers) if headers else None,
                partition=partition,
            )
        except _REFUSED as exc:
            raise _refused(exc) from exc
        return _translated(fut)

    async def flush(self) -> None:
        await self._producer.flush()


class TransactionFailedError(RuntimeError):
    """A transaction could not be committed; nothing of it is visible to read_committed readers.

    Fatal for the process: its in-memory progress includes outcomes that were never committed.
    """


_Pending = tuple[
    str, bytes, bytes | None, list[tuple[str, bytes]] | None, int | None, tuple[TP, int] | None
]


class TransactionalProducer:
    """Buffers sends and writes them with the input offsets in one Kafka transaction.

    ``send`` only buffers (its future is already resolved: the record counts as published
    once the transaction that holds it commits). ``commit_transaction(offsets)`` writes the
    buffer and ``offsets`` (sent to the transaction for ``group_id``) atomically.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str,
        group_id: str,
        transaction_timeout_ms: int = 30_000,
    ) -> None:
        self._group_id = group_id
        self._producer = AIOKafkaProducer(
            transactional_id=transactional_id,
            transaction_timeout_ms=transaction_timeout_ms,
            **_idempotent_kwargs(settings),
        )
        self._pending: list[_Pending] = []
        # Per input partition, the offset below which outcomes may be written (committed).
        self._released: dict[TP, int] = {}
        self._failed: BaseException | None = None
        self.transactions = 0

    async def start(self) -> None:
        """Start; the broker fences any earlier producer with this id and aborts its open txn."""
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        source: tuple[TP, int] | None = None,
    ) -> asyncio.Future[object]:
        if self._failed is not None:
            raise TransactionFailedError("an earlier transaction failed") from self._failed
        self._pending.append(
            (topic, value, key, list(headers) if headers else None, partition, source)
        )
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def flush(self) -> None:
        """Nothing to do: records become visible only through ``commit_transaction``."""

    def discard_held(self, partitions: set[TP]) -> None:
        """Drop held outcomes of revoked partitions: their offsets were never committed, so
        the partitions' next owner produces them again."""
        self._pending = [p for p in self._pending if p[5] is None or p[5][0] not in partitions]
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
        batch: list[_Pending] = []
        held: list[_Pending] = []
        for item in self._pending:
            src = item[5]
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
