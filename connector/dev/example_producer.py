"""An example upstream for docker-compose and staging: produce a realistic stream of
``order.status.changed`` events (plus a few invalid records) to a running connector's input
topic, then wait until every record has its outcome on the results or errors topic.

    python -m connector.dev.example_producer --bootstrap-servers kafka:9092 --orders 40

Exit 0 when every record got an outcome before the deadline, 1 otherwise. It only produces and
reads; the connector, the provider sandbox and the topics must already be running and applied.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from typing import Any

from connector.config import KafkaSettings, TopicNames
from connector.contract.events import OrderStatusChanged
from connector.dev.demo import DEMO_ACCOUNTS, Progress, invalid_records, produce, summary
from connector.dev.workload import WorkloadSpec, build_orders, interleave
from connector.kafka.consumer import ConsumedRecord, read_topic


class _RunProgress(Progress):
    """Counts only this run's records (order ids carry the run's seed), so a second run against
    the same topics waits for its own outcomes."""

    def __init__(self, expected: int, order_prefix: str) -> None:
        super().__init__(expected)
        self._prefix = order_prefix

    def _ours(self, batch: list[ConsumedRecord]) -> list[ConsumedRecord]:
        return [
            r for r in batch if (r.key or b"").decode(errors="replace").startswith(self._prefix)
        ]

    def on_results(self, batch: list[ConsumedRecord]) -> None:
        super().on_results(self._ours(batch))

    def on_errors(self, batch: list[ConsumedRecord]) -> None:
        super().on_errors(self._ours(batch))


async def produce_and_wait(
    kafka: KafkaSettings, topics: TopicNames, *, orders: int, seed: int, deadline_s: float
) -> int:
    scripts = build_orders(
        WorkloadSpec(orders=orders, accounts=DEMO_ACCOUNTS, seed=seed, invalid_transition_share=0)
    )
    prefix = f"ord-{seed}-"
    # The demo's broken inputs, keyed per run (an undecodable record's outcome carries its key).
    bad = [
        (f"{prefix}broken-{i}".encode(), value) for i, (_, value) in enumerate(invalid_records())
    ]
    records: list[OrderStatusChanged | tuple[bytes | None, bytes]] = [*interleave(scripts), *bad]
    started = time.monotonic()
    total = await produce(kafka, topics.input, records)
    print(f"produced {total} records for {orders} orders ({len(bad)} invalid) to {topics.input}")
    progress = _RunProgress(total, prefix)
    readers = asyncio.gather(
        *(
            read_topic(
                kafka,
                topic,
                expected=None,
                idle_timeout_s=1e9,
                deadline_s=deadline_s,
                on_batch=on_batch,
            )
            for topic, on_batch in (
                (topics.results, progress.on_results),
                (topics.errors, progress.on_errors),
            )
        )
    )
    try:
        while progress.done < total and time.monotonic() - started < deadline_s:
            await asyncio.sleep(1.0)
            print(
                f"  {time.monotonic() - started:5.1f}s  outcomes {progress.done}/{total}  "
                f"on {topics.results}: {len(progress.results)}  "
                f"on {topics.errors}: {len(progress.errors)}",
                flush=True,
            )
    finally:
        readers.cancel()
        await asyncio.gather(readers, return_exceptions=True)
    print(summary(progress, time.monotonic() - started))
    if progress.done < total:
        print(f"timed out: {progress.done}/{total} outcomes after {deadline_s:.0f}s")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector.dev.example_producer")
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--orders", type=int, default=40)
    parser.add_argument("--seed", type=int, default=None, help="default: a random run id")
    parser.add_argument("--deadline-s", type=float, default=60.0)
    names: dict[str, Any] = TopicNames().model_dump()
    for logical in ("input", "results", "errors"):
        parser.add_argument(f"--{logical}-topic", default=names[logical])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # first-second leader moves
    topics = TopicNames(
        input=args.input_topic, results=args.results_topic, errors=args.errors_topic
    )
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap_servers, group_id="example-producer")
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    return asyncio.run(
        produce_and_wait(kafka, topics, orders=args.orders, seed=seed, deadline_s=args.deadline_s)
    )


if __name__ == "__main__":
    sys.exit(main())
