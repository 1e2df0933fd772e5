"""The one producer seam: what the delivery engine and the webhook side need to publish a record.

Declared here, beside the producers that implement it, so ``delivery/`` and ``webhooks/`` share
it without importing each other. No aiokafka here: only ``send`` and the record it hands on.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from connector.kafka.consumer import TP


class OutgoingRecord(NamedTuple):
    """One record to publish, as ``RecordSink.send`` hands it to an implementation."""

    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]] | None
    partition: int | None  # None: the producer's partitioner picks it from the key
    # The input record this is the outcome of (only the transactional producer uses it).
    source: tuple[TP, int] | None


class RecordSink(ABC):
    """A producer: ``send`` enqueues one record and returns the future of the broker's ack.

    ``send`` is declared once, here; an implementation publishes the ``OutgoingRecord`` it
    builds (``_publish``). ``source`` (the input record's coordinates) matters only to the
    transactional producer, which writes an outcome in the transaction that commits its input
    offset.
    """

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
        listed = list(headers) if headers else None
        return await self._publish(OutgoingRecord(topic, value, key, listed, partition, source))

    @abstractmethod
    async def _publish(self, record: OutgoingRecord) -> asyncio.Future[object]:
        """Enqueue ``record``; the future resolves once it counts as published."""
