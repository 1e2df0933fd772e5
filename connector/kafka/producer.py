"""Typed wrapper around aiokafka's idempotent producer: sends return a broker-ack future."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer

from connector.kafka.connection import client_kwargs

if TYPE_CHECKING:
    from connector.config import KafkaSettings


class KafkaProducer:
    """Idempotent (acks=all) producer. ``send`` enqueues and returns the ack future."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = AIOKafkaProducer(
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            max_batch_size=256 * 1024,
            compression_type=None,
            **client_kwargs(settings),
        )

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
    ) -> asyncio.Future[object]:
        """Hand a record to the batcher; the returned future resolves when the broker acks."""
        fut: asyncio.Future[object] = await self._producer.send(
            topic,
            value=value,
            key=key,
            headers=list(headers) if headers else None,
            partition=partition,
        )
        return fut

    async def flush(self) -> None:
        await self._producer.flush()
