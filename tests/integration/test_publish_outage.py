"""A publish outage pauses dispatch (issue 10): while the broker cannot acknowledge outcomes for
longer than ``limits.publish_outage_s``, no new provider request goes out and /readyz fails
``outcomes_publishable``; when it is back, the rest is sent in order. Uses its own LocalKafka so
stopping it disturbs no other test.

With the broker stopped, aiokafka's ``send`` also waits (for metadata), which holds each lane
by itself; that the pause alone stops dispatch while the producer still takes records is shown
by tests/unit/test_engine_resilience.py (acks that never come)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from connector.app import ConnectorApp
from connector.dev.demo import produce
from connector.dev.devbroker import LocalKafka
from connector.dev.sandbox.server import SandboxServer
from tests.support.pipeline import outcome_counts, quiet_sandbox
from tests.support.topics import apply_spec_topics
from tests.support.webhook_stack import connector_config, event, read_json

pytestmark = pytest.mark.integration

ORDERS = [f"out-{n}" for n in range(4)]
EVENTS_PER_ORDER = 40


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    broker = LocalKafka()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def _readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/readyz") as response:
        return response.status, await response.json()


async def test_a_publish_outage_pauses_provider_requests_until_the_broker_is_back(
    own_broker: LocalKafka, unique_name: Callable[[str], str]
) -> None:
    bootstrap = own_broker.bootstrap_servers
    prefix = unique_name("outage") + "."
    topics = await apply_spec_topics(bootstrap, prefix)
    # Each request takes 150 ms, one order's events go one after another: when the broker
    # stops, most of each order's events still wait in its lane.
    sandbox_config = quiet_sandbox(latency={"kind": "fixed", "ms": 150})
    async with SandboxServer(sandbox_config) as sandbox, aiohttp.ClientSession() as http:
        config = connector_config(
            bootstrap,
            f"{prefix}group",
            topics,
            sandbox,
            limits={"commit_interval_s": 0.2, "drain_timeout_s": 5, "publish_outage_s": 2.0},
        )
        total = len(ORDERS) * EVENTS_PER_ORDER
        items = [
            (o.encode(), orjson.dumps(event(o, s, "processing", "zapi", payment_status="paid")))
            for s in range(1, EVENTS_PER_ORDER + 1)
            for o in ORDERS
        ]
        await produce(config.kafka, topics.input, items)
        app = ConnectorApp(config)
        runner = asyncio.create_task(app.run())
        try:
            with anyio.fail_after(30):
                await app.started.wait()
                while len(sandbox.requests()) < 8:
                    await asyncio.sleep(0.05)
            url = app.web_url

            await asyncio.to_thread(own_broker.stop, keep_data=True)
            with anyio.fail_after(30):
                while True:
                    status, body = await _readyz(http, url)
                    if "outcomes_publishable" in body["failing"]:
                        break
                    await asyncio.sleep(0.1)
            assert status == 503
            assert "dispatch paused" in body["checks"]["outcomes_publishable"]["detail"]
            await asyncio.sleep(0.5)  # a request under way when the outage was noticed ends
            paused_at = len(sandbox.requests())
            assert paused_at < total / 2
            await asyncio.sleep(3.0)
            assert len(sandbox.requests()) == paused_at, "a request went out during the outage"
            status, body = await _readyz(http, url)
            assert "outcomes_publishable" in body["failing"]

            await asyncio.to_thread(own_broker.start)
            with anyio.fail_after(120):
                while True:
                    status, body = await _readyz(http, url)
                    if status == 200:
                        break
                    await asyncio.sleep(0.2)
            with anyio.fail_after(120):
                while True:  # every record's outcome (a rebalance may add repeats)
                    results = await read_json(config.kafka, topics.results, expected=None)
                    errors = await read_json(config.kafka, topics.errors, expected=None)
                    if len(outcome_counts(results, errors)) >= total:
                        break
        finally:
            app.request_stop()
            with anyio.fail_after(60):
                await runner
    assert app.engine.failure is None
    assert len(outcome_counts(results, errors)) == total
    assert errors == []
    first: dict[str, list[int]] = {o: [] for o in ORDERS}
    seen: set[str] = set()
    for request in sandbox.requests():
        if request.event_id and request.event_id not in seen:
            seen.add(request.event_id)
            order, seq = request.event_id.rsplit("-e", 1)
            first[order].append(int(seq))
    assert first == {o: list(range(1, EVENTS_PER_ORDER + 1)) for o in ORDERS}
