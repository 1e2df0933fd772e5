"""Paused templates park their events (never fail them) and resume them in order: from the
provider's pause outcome (Meta 132015/132016), from template webhooks, and by probing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import orjson

from connector.config import LimitSettings, RoutingSettings, TopicNames
from connector.core.retry import RetryPolicy
from connector.delivery.engine import Engine
from connector.kafka.consumer import TP, ConsumedRecord
from tests.support.engine_fakes import (
    INPUT,
    FakeSink,
    FakeSource,
    TemplateProvider,
    TemplateSender,
)

RESULTS, ERRORS = TopicNames().results, TopicNames().errors


def record(offset: int, order: str, template: str) -> ConsumedRecord:
    value = orjson.dumps(
        {
            "event_id": f"{order}-{offset}",
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            "order_id": order,
            "status": "processing",
            "account": "acct",
            "description": template,
        }
    )
    return ConsumedRecord(INPUT, 0, offset, order.encode(), value, (), 0)


def build(
    records: list[ConsumedRecord], probe_s: float = 60.0
) -> tuple[Engine, FakeSink, TemplateSender, FakeSource]:
    source = FakeSource({0: records})
    sink = FakeSink()
    sender = TemplateSender()
    engine = Engine(
        source=source,
        sink=sink,
        sender=sender,  # type: ignore[arg-type]
        providers={"acct": TemplateProvider()},
        routing=RoutingSettings(),
        topics=TopicNames(input=INPUT),
        limits=LimitSettings(commit_interval_s=0.01, template_probe_interval_s=probe_s),
        retry=RetryPolicy(max_attempts=3, max_elapsed_s=5, base_s=0.01, cap_s=0.05, jitter=0),
    )
    return engine, sink, sender, source


async def wait(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await asyncio.sleep(0.005)  # polling under a deadline


async def test_pause_outcome_parks_the_template_and_a_webhook_resumes_it_in_order() -> None:
    records = [
        record(0, "o1", "paused_tpl"),
        record(1, "o1", "paused_tpl"),  # same order: waits behind the parked one
        record(2, "o2", "paused_tpl"),
        record(3, "o3", "other_tpl"),  # another template keeps flowing
    ]
    engine, sink, sender, source = build(records)
    await engine.on_assigned({TP(INPUT, 0)})
    task = asyncio.create_task(engine.run())
    try:
        await wait(lambda: engine.held_templates and len(sink.by_topic(RESULTS)) == 1)
        assert engine.held_templates == {("paused_tpl", "pt_BR"): "132015:"}
        assert sink.by_topic(ERRORS) == []
        assert [r["event_id"] for r in sink.by_topic(RESULTS)] == ["o3-3"]
        # o1-1 never reached the provider: its lane waits behind the parked o1-0.
        assert "o1-1" not in sender.sent
        assert source.commits.get(TP(INPUT, 0), 0) == 0  # parked offsets hold the watermark

        sender.paused = False
        engine.release_template("paused_tpl", None, reason="APPROVED")
        await wait(lambda: len(sink.by_topic(RESULTS)) == 4)
        assert engine.held_templates == {}
        assert sink.by_topic(ERRORS) == []
        done = [r["event_id"] for r in sink.by_topic(RESULTS)]
        assert done.index("o1-0") < done.index("o1-1")
        await wait(lambda: source.commits.get(TP(INPUT, 0)) == 4)
    finally:
        engine.request_stop()
        await task


async def test_webhook_pause_parks_before_sending_and_a_probe_resumes() -> None:
    engine, sink, sender, _ = build([record(0, "o1", "paused_tpl")], probe_s=0.05)
    sender.paused = False  # the provider already accepts again; only the probe can tell
    engine.hold_template("paused_tpl", None, "meta template PAUSED")
    await engine.on_assigned({TP(INPUT, 0)})
    task = asyncio.create_task(engine.run())
    try:
        await wait(lambda: len(sink.by_topic(RESULTS)) == 1)
        assert engine.held_templates == {}
        assert sender.sent == ["o1-0"]  # parked first, then sent exactly once by the probe
    finally:
        engine.request_stop()
        await task
