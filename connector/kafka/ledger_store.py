"""Restores the delivery ledger from its compacted topic (``connector.kafka.startup`` checks
at start that it exists and is co-partitioned with the input).

Reads with a group-less consumer (``assign``, never ``subscribe``) from the beginning to the
end offset taken at the start of the load. Owns no ledger rules; those are in
``connector.core.ledger``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from connector.core.ledger import PartitionLedger
from connector.kafka.connection import client_kwargs

if TYPE_CHECKING:
    from connector.config import KafkaSettings

log = structlog.get_logger("connector.core.ledger")


class LedgerReader:
    """A long-lived group-less consumer that restores ledger partitions on demand."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._topic = topic
        self._consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Ledger updates may be written in transactions: never restore an aborted one.
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            **client_kwargs(settings),
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def load(self, partitions: Iterable[int]) -> dict[int, PartitionLedger]:
        """Read each ledger partition from its beginning to its current end offset."""
        tps = [TopicPartition(self._topic, p) for p in sorted(set(partitions))]
        ledgers = {tp.partition: PartitionLedger() for tp in tps}
        if not tps:
            return ledgers
        started = time.monotonic()
        consumer = self._consumer
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        for tp in tps:
            if tp in remaining and await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
        records = 0
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=50_000)
            for tp, batch in batches.items():
                ledger = ledgers[tp.partition]
                load = ledger.load
                for r in batch:
                    if r.key is not None:
                        load(r.key, r.value)
                records += len(batch)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        consumer.assign([])
        log.info(
            "ledger_loaded",
            partitions=[tp.partition for tp in tps],
            records=records,
            orders=sum(len(x) for x in ledgers.values()),
            seconds=round(time.monotonic() - started, 3),
        )
        return ledgers
