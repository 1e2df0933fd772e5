"""The one producer seam: what the delivery engine and the webhook side need to publish a record.

Declared here, beside the producers that implement it, so ``delivery/`` and ``webhooks/`` share
it without importing each other. No aiokafka here: only the shape of ``send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from connector.kafka.consumer import TP


class RecordSink(Protocol):
    """A producer: ``send`` enqueues one record and returns the future of the broker's ack.

    ``source`` (the input record's coordinates) matters only to the transactional producer,
    which writes an outcome in the transaction that commits its input offset.
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
    ) -> asyncio.Future[object]: ...
