"""Reads every partition of one topic from the beginning and keeps following it, without a
consumer group (state topics such as ``order.status.correlation``). Only moves records.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from connector.kafka.connection import client_kwargs
from connector.kafka.consumer import ConsumedRecord

if TYPE_CHECKING:
    from connector.config import KafkaSettings


class TopicMissingError(RuntimeError):
    """The topic to follow does not exist (run ``topics apply``)."""


class TopicTail:
    """``await start()`` assigns every partition at the beginning; ``run()`` hands each batch
    to ``on_batch`` until ``stop()``. ``caught_up`` turns True once the end seen at start is
    reached."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        on_batch: Callable[[list[ConsumedRecord]], None],
    ) -> None:
        self.topic = topic
        self._on_batch = on_batch
        self._consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=200,
            **client_kwargs(settings),
        )
        self._ends: dict[TopicPartition, int] = {}
        self.caught_up = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        try:
            tps = await self._partitions()
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
            ends = await self._consumer.end_offsets(tps)
            self._ends = {tp: end for tp, end in ends.items() if end > 0}
            self.caught_up = not self._ends
        except BaseException:
            await self._consumer.stop()
            raise
        self._task = asyncio.create_task(self._run(), name=f"tail-{self.topic}")

    async def _partitions(self) -> list[TopicPartition]:
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            await self._consumer.topics()  # refresh metadata once
            partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise TopicMissingError(f"topic {self.topic} does not exist")
        return [TopicPartition(self.topic, p) for p in sorted(partitions)]

    async def _run(self) -> None:
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=5_000)
            except KafkaError:
                await asyncio.sleep(1.0)  # the broker is away; the client reconnects
                continue
            batch = [
                ConsumedRecord(
                    r.topic, r.partition, r.offset, r.key, r.value, r.headers, r.timestamp
                )
                for records in batches.values()
                for r in records
            ]
            if batch:
                self._on_batch(batch)
            if not self.caught_up:
                for tp, end in list(self._ends.items()):
                    with contextlib.suppress(KafkaError):
                        if await self._consumer.position(tp) >= end:
                            del self._ends[tp]
                self.caught_up = not self._ends

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._consumer.stop()
