"""Reads every partition of one topic from the beginning and keeps following it, without a
consumer group (state topics such as ``order.status.correlation``). Only moves records.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from connector.kafka.consumer import ConsumedRecord, consumed_records, groupless_consumer

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
        # No group: aiokafka assigns every partition itself and starts at the earliest offset.
        self._consumer = groupless_consumer(settings, topic, fetch_max_wait_ms=200)
        self._ends: dict[TopicPartition, int] | None = None
        self.caught_up = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        try:
            await self._require_topic()
        except BaseException:
            await self._consumer.stop()
            raise
        self._task = asyncio.create_task(self._run(), name=f"tail-{self.topic}")

    async def _require_topic(self) -> None:
        if self.topic not in await self._consumer.topics():
            raise TopicMissingError(f"topic {self.topic} does not exist")

    async def _run(self) -> None:
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=5_000)
                batch = consumed_records(batches)
                if batch:
                    self._on_batch(batch)
                if not self.caught_up:
                    await self._check_caught_up()
            except KafkaError:
                await asyncio.sleep(1.0)  # the broker is away; the client reconnects

    async def _check_caught_up(self) -> None:
        if self._ends is None:
            assigned = list(self._consumer.assignment())
            if not assigned:
                return
            self._ends = dict(await self._consumer.end_offsets(assigned))
        for tp, end in list(self._ends.items()):
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
