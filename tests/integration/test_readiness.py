"""/readyz follows the broker: unready (naming kafka_connected) while it is stopped, ready again
once it is back. Uses its own LocalKafka so stopping it disturbs no other test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import anyio
import pytest

from connector.app import ConnectorApp
from connector.dev.devbroker import LocalKafka
from connector.dev.sandbox.server import SandboxServer
from tests.support.topics import apply_spec_topics
from tests.support.webhook_stack import connector_config


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    broker = LocalKafka()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/readyz") as response:
        return response.status, await response.json()


async def wait_readyz(
    http: aiohttp.ClientSession, url: str, status: int, timeout_s: float
) -> dict[str, Any]:
    with anyio.fail_after(timeout_s):
        while True:
            got, body = await readyz(http, url)
            if got == status:
                return body
            await anyio.sleep(0.1)


async def test_readyz_turns_unready_when_the_broker_stops_and_ready_when_it_returns(
    own_broker: LocalKafka, unique_name: Callable[[str], str]
) -> None:
    bootstrap = own_broker.bootstrap_servers
    prefix = unique_name("ready") + "."
    topics = await apply_spec_topics(bootstrap, prefix)
    async with SandboxServer() as sandbox, aiohttp.ClientSession() as http:
        app = ConnectorApp(connector_config(bootstrap, f"{prefix}group", topics, sandbox))
        runner = asyncio.create_task(app.run())
        try:
            with anyio.fail_after(30):
                await app.started.wait()
            url = app.web_url
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200
            body = await wait_readyz(http, url, 200, 30)
            assert body["checks"]["kafka_connected"]["ok"] is True
            assert body["checks"]["partitions_assigned"]["ok"] is True

            await asyncio.to_thread(own_broker.stop, keep_data=True)
            body = await wait_readyz(http, url, 503, 20)
            assert "kafka_connected" in body["failing"]
            assert "no broker answered" in body["checks"]["kafka_connected"]["detail"]
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200  # alive: a broker outage is not a restart reason

            await asyncio.to_thread(own_broker.start)
            body = await wait_readyz(http, url, 200, 60)
            assert body["failing"] == []
        finally:
            app.request_stop()
            with anyio.fail_after(60):
                await runner
