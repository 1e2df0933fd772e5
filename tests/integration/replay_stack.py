"""Test support for replay integration tests: topics, connector config, sandbox and readers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import orjson

from connector.app import ConnectorApp
from connector.config import ConnectorConfig, KafkaSettings, TopicNames
from connector.contract.topics import load_spec
from connector.dev.demo import sandbox_accounts
from connector.dev.sandbox.config import SandboxConfig
from connector.dev.sandbox.server import SandboxServer
from connector.kafka.admin import apply_topics
from connector.kafka.consumer import ConsumedRecord, read_topic


def quiet_sandbox() -> SandboxConfig:
    """No faults, no latency, no provider rate limits: counts stay exact."""
    return SandboxConfig.model_validate(
        {
            "limits": {
                "meta_per_sender": {"per_second": 0},
                "ycloud_send_directly_per_sender": {"per_second": 0},
            }
        }
    )


async def make_topics(bootstrap: str, prefix: str) -> TopicNames:
    """The repository's topic contracts (12 partitions, ledger co-partitioned) under ``prefix``."""
    await apply_topics(bootstrap, load_spec(), dry_run=False, prefix=prefix, replication_factor=1)
    return TopicNames(
        input=f"{prefix}order.status.changed",
        results=f"{prefix}order.status.results",
        errors=f"{prefix}order.status.errors",
        ledger=f"{prefix}order.status.ledger",
    )


def connector_config(
    bootstrap: str,
    group: str,
    topics: TopicNames,
    sandbox: SandboxServer,
    sandbox_config: SandboxConfig,
    **delivery: Any,
) -> ConnectorConfig:
    return ConnectorConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
            "topics": topics.model_dump(),
            "accounts": sandbox_accounts(sandbox.provider_url, sandbox_config),
            "limits": {"commit_interval_s": 0.2, "drain_timeout_s": 5, "max_poll_records": 5000},
            "retry": {"max_attempts": 6, "max_elapsed_s": 20, "base_s": 0.05},
            "server": {"enabled": False},
            "delivery": delivery,
        }
    )


async def run_until_outcomes(
    config: ConnectorConfig, expected: int, timeout: float = 90
) -> ConnectorApp:
    """Run a connector in-process until ``expected`` new outcomes are published, then stop it."""
    app = ConnectorApp(config)
    runner = asyncio.create_task(app.run())
    try:
        with anyio.fail_after(timeout):
            while app.engine.stats.results + app.engine.stats.errors < expected:
                if runner.done():
                    runner.result()
                await asyncio.sleep(0.05)
            # Give the commit loop a beat to write the final offsets.
            while app.engine.commit_pending:
                await asyncio.sleep(0.05)
    finally:
        app.request_stop()
        await runner
    return app


async def read_all(
    kafka: KafkaSettings, topic: str, expected: int, *, isolation_level: str = "read_uncommitted"
) -> list[dict[str, Any]]:
    records: list[ConsumedRecord] = await read_topic(
        kafka, topic, expected=expected, deadline_s=60, isolation_level=isolation_level
    )
    return [orjson.loads(r.value or b"{}") for r in records]


def sent_per_event(sandbox: SandboxServer) -> Counter[str]:
    return Counter(r.event_id for r in sandbox.requests() if r.event_id is not None)


OutcomeCount = Callable[[list[dict[str, Any]]], Counter[str]]


def outcomes(results: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["outcome"] for r in results)
