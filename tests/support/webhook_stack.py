"""A running connector with its web server (real broker, sandbox providers) for webhook tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anyio
import orjson
from prometheus_client.parser import text_string_to_metric_families

from connector.app import ConnectorApp
from connector.config import ConnectorConfig, KafkaSettings, TopicNames
from connector.dev.demo import DEMO_ACCOUNTS, sandbox_accounts
from connector.dev.sandbox.config import SandboxConfig
from connector.dev.sandbox.server import SandboxServer
from connector.kafka.consumer import read_topic
from connector.kafka.producer import KafkaProducer
from tests.support.topics import apply_spec_topics

META_VERIFY_TOKEN = "it-verify-token"
ZAPI_HOOK_TOKEN = "it-zapi-hook-token"


def connector_config(
    bootstrap: str,
    group: str,
    topics: TopicNames,
    sandbox: SandboxServer,
    **overrides: Any,
) -> ConnectorConfig:
    creds = sandbox.config.credentials
    raw: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "session_timeout_ms": 6000},
        "topics": topics.model_dump(),
        "accounts": sandbox_accounts(sandbox.provider_url, sandbox.config, max_in_flight=8),
        "limits": {"commit_interval_s": 0.2, "drain_timeout_s": 5},
        # Send what the provider will refuse: these tests need Meta's asynchronous 2046/2047
        # (the guard would stop them before sending) and every event sent (no coalescing).
        "delivery": {"transition_guard": "off", "coalesce_providers": []},
        "retry": {"max_attempts": 3, "base_s": 0.05, "max_elapsed_s": 5},
        "server": {"port": 0, "kafka_check_interval_s": 0.3, "kafka_check_timeout_s": 1.0,
                   "lag_interval_s": 0.3},
        "webhooks": {
            "meta": {"app_secret": creds.meta_app_secret.get_secret_value(),
                     "verify_token": META_VERIFY_TOKEN},
            "ycloud": {"secret": creds.ycloud_webhook_secret.get_secret_value()},
            "zapi": [{"account": DEMO_ACCOUNTS["zapi"], "token": ZAPI_HOOK_TOKEN}],
        },
    }  # fmt: skip
    raw.update(overrides)
    return ConnectorConfig.model_validate(raw)


def event(order_id: str, seq: int, status: str, provider: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"{order_id}-e{seq}",
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
        "order_id": order_id,
        "status": status,
        "sequence": seq,
        "account": DEMO_ACCOUNTS[provider],
        "recipient": {"phone": "+5511987654321", "locale": "pt_BR"},
        "order": {
            "currency": "BRL",
            "items": [{"product_id": "sku-1", "name": "Mug", "amount": "10.00", "quantity": 1}],
        },
        "whatsapp": {"reference_id": f"ref.{order_id}"},
        "zapi": {
            "message_id": f"msg-{order_id}",
            "reference_id": f"zref-{order_id}",
            "order_request_id": f"req-{order_id}",
        },
    }
    body.update(extra)
    return body


async def produce(
    kafka: KafkaSettings,
    topic: str,
    events: list[tuple[dict[str, Any], Mapping[str, str]]],
) -> None:
    """Produce in order (one order per key), each with its headers; wait for every ack."""
    producer = KafkaProducer(kafka)
    await producer.start()
    try:
        acks = [
            await producer.send(
                topic,
                orjson.dumps(body),
                key=body["order_id"].encode(),
                headers=[(k, v.encode()) for k, v in headers.items()],
            )
            for body, headers in events
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def read_json(
    kafka: KafkaSettings, topic: str, expected: int | None, *, deadline_s: float = 30.0
) -> list[dict[str, Any]]:
    records = await read_topic(
        kafka, topic, expected=expected, idle_timeout_s=1.5, deadline_s=deadline_s
    )
    return [orjson.loads(r.value or b"null") for r in records]


@dataclass
class Running:
    app: ConnectorApp
    sandbox: SandboxServer
    kafka: KafkaSettings
    topics: TopicNames
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.app.web_url

    async def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as ``name{label=value,...}`` -> value (labels sorted)."""
        async with self.http.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
        return out


def total(samples: Mapping[str, float], name: str, **labels: str) -> float:
    want = [f"{k}={v}" for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if key.split("{", 1)[0] == name and all(w in key for w in want)
    )


@contextlib.asynccontextmanager
async def running_connector(
    bootstrap: str,
    prefix: str,
    *,
    sandbox_config: SandboxConfig | None = None,
    status_reports: list[str] | None = None,
) -> AsyncIterator[Running]:
    topics = await apply_spec_topics(bootstrap, prefix)
    async with SandboxServer(sandbox_config or SandboxConfig()) as sandbox:
        config = connector_config(bootstrap, f"{prefix}group", topics, sandbox)
        app = ConnectorApp(config)
        runner = asyncio.create_task(app.run())
        try:
            with anyio.fail_after(30):
                await app.started.wait()
            sandbox.set_config(
                {
                    "webhooks": {
                        "meta_url": f"{app.web_url}/webhooks/meta",
                        "ycloud_url": f"{app.web_url}/webhooks/ycloud",
                        "status_reports": status_reports or [],
                    }
                }
            )
            async with aiohttp.ClientSession() as http:
                yield Running(app, sandbox, config.kafka, topics, http)
        finally:
            app.request_stop()
            with anyio.fail_after(30):
                await runner
