"""Ledger restore time: N orders on one ledger partition, loaded as on partition assignment.

Writes N ledger records (one per order, the real record shape) to a fresh one-partition
compacted topic, then times ``LedgerReader.load`` reading it to the end. Prints JSON.

    python -m benchmarks.ledger_load --orders 1000000 [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime

from benchmarks.harness import broker
from connector.config import KafkaSettings
from connector.contract.topics import TopicSpec
from connector.core.ledger import Delivery, encode_order_entry
from connector.kafka.admin import KafkaAdmin
from connector.kafka.ledger_store import LedgerReader
from connector.kafka.producer import KafkaProducer
from connector.logs import configure_logging


async def _fill(kafka: KafkaSettings, topic: str, orders: int) -> float:
    producer = KafkaProducer(kafka)
    await producer.start()
    started = time.monotonic()
    try:
        now = datetime.now(UTC)
        pending = []
        for n in range(orders):
            order = f"ord-{n:08d}"
            value = encode_order_entry(
                order,
                {f"meta:106540352242922:ref.{order}": Delivery(f"{order}-e3", 3, "shipped", now)},
            )
            pending.append(await producer.send(topic, value, key=order.encode(), partition=0))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def bench(bootstrap: str, orders: int) -> dict[str, object]:
    topic = f"bench-ledger-{uuid.uuid4().hex[:8]}"
    async with KafkaAdmin(bootstrap) as admin:
        await admin.create_topics(
            [
                TopicSpec(
                    logical_name=topic,
                    role="state",
                    key="order id",
                    name=topic,
                    partitions=1,
                    replication_factor=1,
                    configs={"cleanup.policy": "compact"},
                )
            ]
        )
        await admin.wait_for_topics([topic])
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    fill_s = await _fill(kafka, topic, orders)
    reader = LedgerReader(kafka, topic)
    await reader.start()
    try:
        started = time.monotonic()
        ledgers = await reader.load({0})
        load_s = time.monotonic() - started
        probe = f"ord-{orders // 2:08d}"
        looked = ledgers[0].last(probe, f"meta:106540352242922:ref.{probe}")
    finally:
        await reader.stop()
    assert looked is not None
    assert looked.event_id == f"{probe}-e3"
    return {
        "benchmark": "ledger_load",
        "orders": orders,
        "partitions": 1,
        "loaded_orders": len(ledgers[0]),
        "fill_seconds": round(fill_s, 2),
        "load_seconds": round(load_s, 2),
        "orders_per_second": round(orders / load_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger_load")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", default=None, help="existing broker; else one is started")
    args = parser.parse_args(argv)
    # Logs go to stderr: stdout carries only the JSON result.
    configure_logging(level="warning", json=False, stream=sys.stderr)
    with broker(bootstrap=args.bootstrap) as bootstrap:
        print(json.dumps(asyncio.run(bench(bootstrap, args.orders))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
