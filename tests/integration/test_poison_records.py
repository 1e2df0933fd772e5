"""Poison records between valid events of the same orders, end to end with the real broker
(issue 10): produced with aiokafka directly, each one gets its outcome, the valid events after
them reach the provider in order, the commit point reaches the end, and a restart sends
nothing twice.

The poison: an ``event_id`` with a control character, a sequence of 2^64, a ~1 MiB value
(the input topic accepts it; its error record must still fit the errors topic), a valid event
keyed by something other than its order id, and an invalid record with a 100 KB key.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from connector.app import ConnectorApp
from connector.config import TopicNames
from connector.dev.sandbox.server import SandboxServer
from connector.kafka.admin import ensure_topic
from connector.kafka.consumer import read_topic
from connector.kafka.group_offsets import committed_offsets, partition_bounds
from tests.support.pipeline import Pipeline, outcome_counts, quiet_sandbox
from tests.support.webhook_stack import event

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
STATUSES = ("processing", "shipped", "completed")
# (order id, provider): two WhatsApp orders and two Z-API orders, on two partitions.
ORDERS = [("po-a", "meta"), ("po-b", "zapi"), ("po-c", "ycloud"), ("po-d", "zapi")]


def _event(order: str, seq: int, status: str, provider: str, **extra: Any) -> dict[str, Any]:
    return event(order, seq, status, provider, payment_status="paid", **extra)


def _valid(order: str, provider: str, seq: int) -> tuple[bytes, bytes]:
    return order.encode(), orjson.dumps(_event(order, seq, STATUSES[seq - 1], provider))


def _stream() -> tuple[list[tuple[bytes | None, bytes]], dict[str, Any]]:
    """The records in produce order, and what each poison record is expected to become."""
    records: list[tuple[bytes | None, bytes]] = []
    expect: dict[str, Any] = {"invalid_event": 0, "key_mismatch": 0, "big": 0, "huge_key": 0}
    for n, (order, provider) in enumerate(ORDERS):
        key = order.encode()
        records.append(_valid(order, provider, 1))
        ctrl = _event(order, 90, "processing", provider, event_id=f"{order}-ctrl\u0001id")
        records.append((key, orjson.dumps(ctrl)))
        expect["invalid_event"] += 1
        records.append(_valid(order, provider, 2))
        huge_seq = orjson.dumps(_event(order, 91, "shipped", provider)).replace(
            b'"sequence":91', b'"sequence":18446744073709551616'
        )
        assert b"18446744073709551616" in huge_seq
        records.append((key, huge_seq))
        expect["invalid_event"] += 1
        wrong_key = _event(order, 92, "shipped", provider, event_id=f"{order}-wrong-key")
        records.append((b"customer-" + key, orjson.dumps(wrong_key)))
        expect["key_mismatch"] += 1
        if n % 2 == 0:
            # About 1 MiB that is not an event: its error record (base64, +33 %) must be cut.
            records.append((key, b"{" + bytes([65 + n]) * (MIB - 4096)))
            expect["invalid_event"] += 1
            expect["big"] += 1
        records.append(_valid(order, provider, 3))
    records.insert(3, (b"K" * 100_000, b"not an event"))
    expect["invalid_event"] += 1
    expect["huge_key"] = 1
    return records, expect


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_request_size=3 * MIB
    )
    await producer.start()
    try:
        for key, value in records:  # one at a time: the order within each key is the point
            await (await producer.send(topic, value=value, key=key))
    finally:
        await producer.stop()


async def _committed(pipe: Pipeline, group: str) -> dict[int, int] | None:
    try:
        return await committed_offsets(pipe.kafka, group, pipe.topics.input)
    except KafkaError:  # the group's coordinator is not there yet
        return None


async def _run_until_committed(
    pipe: Pipeline, app: ConnectorApp, end: dict[int, int], group: str
) -> None:
    task = asyncio.create_task(app.run())
    try:
        with anyio.fail_after(120):
            while await _committed(pipe, group) != end:
                if task.done():
                    task.result()  # raises what ended the app
                    pytest.fail(f"the connector stopped early: {app.engine.failure!r}")
                await asyncio.sleep(0.5)
    finally:
        app.request_stop()
        with anyio.fail_after(30):
            await task
    assert app.engine.failure is None


async def test_poison_records_get_outcomes_and_valid_events_flow_in_order(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topics = TopicNames(
        input=unique_name("poison-in"),
        results=unique_name("poison-results"),
        errors=unique_name("poison-errors"),
        ledger=unique_name("poison-ledger"),
    )
    # The input topic accepts records up to 2 MiB; the others keep the broker's 1 MiB default.
    await ensure_topic(
        kafka_bootstrap, topics.input, partitions=2, configs={"max.message.bytes": str(2 * MIB)}
    )
    for name in (topics.results, topics.errors):
        await ensure_topic(kafka_bootstrap, name, partitions=2)
    assert topics.ledger is not None
    await ensure_topic(
        kafka_bootstrap, topics.ledger, partitions=2, configs={"cleanup.policy": "compact"}
    )
    records, expect = _stream()
    config = quiet_sandbox()
    async with SandboxServer(config) as sandbox:
        group = unique_name("poison-group")
        pipe = Pipeline(kafka_bootstrap, topics, group, sandbox, config, 2)
        await _produce(kafka_bootstrap, topics.input, records)
        _, end = await partition_bounds(pipe.kafka, topics.input)
        assert sum(end.values()) == len(records)

        app = ConnectorApp(pipe.config())
        await _run_until_committed(pipe, app, end, group)
        assert app.publish_limits is not None
        assert app.publish_limits.max_request_size <= MIB + 12  # the written topics' limit
        results, errors = await pipe.outcomes(len(records), deadline_s=60)

        # Every input record has exactly one outcome.
        per_source = outcome_counts(results, errors)
        assert len(per_source) == len(records)
        assert set(per_source.values()) == {1}
        valid_ids = {f"{o}-e{s}" for o, _ in ORDERS for s in (1, 2, 3)}
        assert {r["event_id"] for r in results} == valid_ids
        assert {r["outcome"] for r in results} <= {"accepted", "delivered"}
        kinds = Counter(e["error_class"] for e in errors)
        assert kinds == {
            "invalid_event": expect["invalid_event"],
            "key_mismatch": expect["key_mismatch"],
        }, errors
        assert {e["event_id"] for e in errors if e["error_class"] == "key_mismatch"} == {
            f"{o}-wrong-key" for o, _ in ORDERS
        }
        cut = [e for e in errors if e["original_value_truncated"]]
        assert len(cut) == expect["big"]
        for e in cut:
            assert e["original_value_size"] == MIB - 4096 + 1
            assert 0 < len(base64.b64decode(e["original_value"])) < MIB - 4096 + 1
        # Error records are keyed by the input key cut to 1 KiB: the 100 KB key fits too.
        raw_errors = await read_topic(pipe.kafka, topics.errors, expected=len(errors))
        assert max(len(r.key or b"") for r in raw_errors) == 1024
        [huge] = [orjson.loads(r.value or b"") for r in raw_errors if r.key == b"K" * 1024]
        assert base64.b64decode(huge["original_key"]) == b"K" * 100_000
        assert huge["error_class"] == "invalid_event"

        # Only the valid events reached the provider, each once, in order per order.
        sent = [(r.order_ref, r.event_id) for r in sandbox.requests()]
        sent_ids = [event_id for _, event_id in sent]
        assert Counter(sent_ids) == dict.fromkeys(valid_ids, 1)
        for order, _ in ORDERS:
            mine = [event_id for event_id in sent_ids if event_id.startswith(f"{order}-e")]
            assert mine == [f"{order}-e1", f"{order}-e2", f"{order}-e3"]

        # A restart that re-reads everything (its commits lost: a new group) sends nothing
        # again: the ledger knows every delivery, and the poison records fail before sending.
        before = len(sandbox.requests())
        regroup = unique_name("poison-regroup")
        again = ConnectorApp(pipe.config(kafka={"group_id": regroup}))
        await _run_until_committed(pipe, again, end, regroup)
        assert len(sandbox.requests()) == before
        assert again.engine.stats.consumed == len(records)
        results, errors = await pipe.outcomes(len(records), deadline_s=60)
        second = [r for r in results if r["outcome"] not in ("accepted", "delivered")]
        # Skipped: the ledger knows each delivery (the older events of an order as stale).
        assert {r["outcome"] for r in second} <= {"skipped_duplicate", "skipped_stale"}
        assert Counter(r["event_id"] for r in second) == dict.fromkeys(valid_ids, 1)
