"""Transactional vs plain publishing throughput, in the same run, through the whole connector.

For each mode: fresh topics (same events), the connector against the sandbox (no latency,
no faults, coalescing off so every event is sent), timed from start to the last outcome.
Modes alternate for ``--rounds`` rounds. Prints JSON with events/s per mode and the ratio.

    python -m benchmarks.txn_throughput --events 6000 --rounds 2 [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid

from benchmarks.harness import broker
from connector.app import ConnectorApp
from connector.config import ConnectorConfig, KafkaSettings, TopicNames
from connector.contract.events import OrderStatusChanged
from connector.contract.topics import load_spec
from connector.dev.demo import DEMO_ACCOUNTS, produce, sandbox_accounts
from connector.dev.sandbox.config import SandboxConfig
from connector.dev.sandbox.server import SandboxServer
from connector.dev.workload import WorkloadSpec, build_orders, interleave
from connector.kafka.admin import apply_topics
from connector.logs import configure_logging


async def _one(
    bootstrap: str,
    sandbox: SandboxServer,
    cfg: SandboxConfig,
    events: list[OrderStatusChanged],
    transactional: bool,
) -> float:
    prefix = f"bench-{uuid.uuid4().hex[:6]}."
    await apply_topics(bootstrap, load_spec(), dry_run=False, prefix=prefix, replication_factor=1)
    topics = TopicNames(
        input=f"{prefix}order.status.changed",
        results=f"{prefix}order.status.results",
        errors=f"{prefix}order.status.errors",
        ledger=f"{prefix}order.status.ledger",
    )
    kafka = KafkaSettings(bootstrap_servers=bootstrap, group_id=f"{prefix}g")
    await produce(kafka, topics.input, events)
    config = ConnectorConfig.model_validate(
        {
            "kafka": kafka.model_dump(),
            "topics": topics.model_dump(),
            "accounts": sandbox_accounts(sandbox.provider_url, cfg, max_in_flight=256),
            "limits": {"commit_interval_s": 0.1, "max_poll_records": 2000},
            "server": {"enabled": False},
            "delivery": {
                "coalesce_providers": [],
                "transactional": transactional,
                "transactional_id": f"{prefix}txn",
            },
        }
    )
    app = ConnectorApp(config)
    started = time.monotonic()
    runner = asyncio.create_task(app.run())
    total = len(events)
    while app.engine.stats.results + app.engine.stats.errors < total:
        if runner.done():
            runner.result()
        await asyncio.sleep(0.01)
    # Outcomes count only once committed: wait for the final commit/transaction.
    while app.engine.commit_pending:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    app.request_stop()
    await runner
    return total / elapsed


async def bench(bootstrap: str, events_wanted: int, rounds: int) -> dict[str, object]:
    accounts = {"zapi": DEMO_ACCOUNTS["zapi"], "zonos": DEMO_ACCOUNTS["zonos"]}
    scripts = build_orders(
        WorkloadSpec(orders=events_wanted // 3, accounts=accounts, events_per_order=3)
    )
    events = list(interleave(scripts))
    cfg = SandboxConfig()
    rates: dict[str, list[float]] = {"plain": [], "transactional": []}
    async with SandboxServer(cfg) as sandbox:
        for _ in range(rounds):
            for mode in ("plain", "transactional"):
                rates[mode].append(
                    await _one(bootstrap, sandbox, cfg, events, mode == "transactional")
                )
    plain = statistics.median(rates["plain"])
    txn = statistics.median(rates["transactional"])
    return {
        "benchmark": "txn_throughput",
        "events": len(events),
        "rounds": rounds,
        "plain_events_per_s": [round(r) for r in rates["plain"]],
        "transactional_events_per_s": [round(r) for r in rates["transactional"]],
        "median_plain": round(plain),
        "median_transactional": round(txn),
        "ratio_transactional_to_plain": round(txn / plain, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.txn_throughput")
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args(argv)
    configure_logging(level="error", secrets=(), json=False, stream=sys.stderr)
    with broker(bootstrap=args.bootstrap) as bootstrap:
        print(json.dumps(asyncio.run(bench(bootstrap, args.events, args.rounds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
