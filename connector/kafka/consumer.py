"""Typed wrapper around aiokafka's consumer: records, assignment, pause/resume and commits.

Only this package imports aiokafka. Rebalance callbacks are forwarded to a typed handler and
awaited before the member rejoins (aiokafka's eager protocol revokes everything each time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from connector.kafka.connection import client_kwargs

if TYPE_CHECKING:
    from connector.config import KafkaSettings


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int


RebalanceCallback = Callable[[set[TP]], Awaitable[None]]


def consumed_records(batches: Mapping[Any, Iterable[Any]]) -> list[ConsumedRecord]:
    """aiokafka's ``getmany`` answer (records by partition) as one list of plain records."""
    out: list[ConsumedRecord] = []
    for tp, records in batches.items():
        topic, partition = tp.topic, tp.partition
        out.extend(
            ConsumedRecord(topic, partition, r.offset, r.key, r.value, r.headers, r.timestamp)
            for r in records
        )
    return out


def groupless_consumer(
    settings: KafkaSettings,
    topic: str,
    *,
    fetch_max_wait_ms: int,
    isolation_level: str = "read_uncommitted",
) -> AIOKafkaConsumer:
    """A consumer without a group: aiokafka assigns every partition, reading from the start."""
    return AIOKafkaConsumer(
        topic,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        fetch_max_wait_ms=fetch_max_wait_ms,
        **client_kwargs(settings),
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoked: RebalanceCallback, on_assigned: RebalanceCallback) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        await self._on_revoked({TP(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        await self._on_assigned({TP(tp.topic, tp.partition) for tp in assigned})


class CommitRejectedError(Exception):
    """The group rebalanced under us; the commit was not applied (the next owner re-reads)."""


class KafkaUnreachableError(Exception):
    """No broker answered a metadata request in time."""


class KafkaConsumer:
    """A group member with manual commits. Call ``getmany`` continuously, even when paused."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topics: Sequence[str],
        group_id: str,
        on_revoked: RebalanceCallback,
        on_assigned: RebalanceCallback,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        self._topics = list(topics)
        self._listener = _Listener(on_revoked, on_assigned)
        self._consumer = AIOKafkaConsumer(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            session_timeout_ms=settings.session_timeout_ms,
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 3),
            fetch_max_bytes=settings.fetch_max_bytes,
            max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
            fetch_max_wait_ms=100,
            isolation_level=isolation_level,
            **client_kwargs(settings),
        )

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(self._topics, listener=self._listener)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[ConsumedRecord]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return consumed_records(batches)

    def assignment(self) -> set[TP]:
        return {TP(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def pause(self, partitions: Iterable[TP]) -> None:
        tps = [TopicPartition(*tp) for tp in partitions]
        if tps:
            self._consumer.pause(*tps)

    def resume(self, partitions: Iterable[TP]) -> None:
        tps = [TopicPartition(*tp) for tp in partitions]
        if tps:
            self._consumer.resume(*tps)

    async def position(self, tp: TP) -> int:
        """The offset of the next record ``getmany`` will return for an assigned partition."""
        return int(await self._consumer.position(TopicPartition(*tp)))

    def paused(self) -> set[TP]:
        return {TP(tp.topic, tp.partition) for tp in self._consumer.paused()}

    async def commit(self, offsets: dict[TP, int]) -> None:
        """Commit explicit offsets; raises CommitRejectedError when a rebalance got there first."""
        if not offsets:
            return
        try:
            await self._consumer.commit(
                {TopicPartition(*tp): OffsetAndMetadata(off, "") for tp, off in offsets.items()}
            )
        except (CommitFailedError, IllegalStateError) as exc:
            raise CommitRejectedError(str(exc)) from exc

    async def ping(self, timeout_s: float) -> None:
        """Ask the cluster for metadata (one round trip); raise KafkaUnreachableError if none
        of the known brokers answers within ``timeout_s``. Used by the readiness check."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._consumer.topics()
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnreachableError(type(exc).__name__) from None

    async def topic_names(self, timeout_s: float) -> set[str]:
        """Every topic the cluster shows us (raises KafkaUnreachableError)."""
        try:
            async with asyncio.timeout(timeout_s):
                return set(await self._consumer.topics())
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnreachableError(type(exc).__name__) from None

    async def lag(self) -> dict[TP, int]:
        """Records between the group's committed offset and the high watermark, per assigned
        partition (what ``consumer_lag`` says): records fetched but not finished count, so a
        record that pins the commit point shows as lag. Before any commit, the partition's
        beginning stands for the committed offset."""
        out: dict[TP, int] = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            try:
                committed = await self._consumer.committed(tp)
                if committed is None:
                    committed = (await self._consumer.beginning_offsets([tp]))[tp]
            except (IllegalStateError, KafkaError):
                continue
            out[TP(tp.topic, tp.partition)] = max(0, high - committed)
        return out


async def read_topic(
    settings: KafkaSettings,
    topic: str,
    *,
    expected: int | None = None,
    idle_timeout_s: float = 5.0,
    deadline_s: float = 120.0,
    isolation_level: str = "read_uncommitted",
    on_batch: Callable[[list[ConsumedRecord]], None] | None = None,
) -> list[ConsumedRecord]:
    """Read ``topic`` from the beginning without a group (tests, demo, replay tools).

    Stops when ``expected`` records were read, when nothing arrived for ``idle_timeout_s``
    (only when ``expected`` is None), or at ``deadline_s``.
    """
    consumer = groupless_consumer(
        settings, topic, fetch_max_wait_ms=100, isolation_level=isolation_level
    )
    await consumer.start()
    out: list[ConsumedRecord] = []
    loop = asyncio.get_running_loop()
    started = last = loop.time()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5_000)
            now = loop.time()
            batch = consumed_records(batches)
            if batch:
                last = now
                out.extend(batch)
                if on_batch is not None:
                    on_batch(batch)
            if expected is not None and len(out) >= expected:
                break
            if expected is None and now - last >= idle_timeout_s:
                break
            if now - started >= deadline_s:
                break
    finally:
        await consumer.stop()
    return out
