"""Re-assert (guard ``reassert``, issue 11): after an ambiguous older request, the order's newer
request goes at once and the newest status is sent once more when the settle window has passed,
so a late original cannot be the last thing the provider processes. One extra message per such
order, counted; never on replay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import anyio

from connector.config import DeliverySettings, LimitSettings, RoutingSettings, TopicNames
from connector.core.ledger import Delivery, PartitionLedger
from connector.core.retry import RetryPolicy
from connector.delivery.engine import Engine
from connector.delivery.ports import NullObserver
from connector.errors import TransportFailure
from connector.kafka.consumer import ConsumedRecord
from tests.support.engine_fakes import (
    INPUT,
    FakeProvider,
    FakeSink,
    FakeSource,
    FlakySender,
    event_bytes,
)

WINDOW = 0.3


class Extras(NullObserver):
    def __init__(self) -> None:
        self.extra: list[tuple[str, str]] = []

    def extra_message(self, provider: str, account: str, reason: str) -> None:
        self.extra.append((account, reason))


def _record(order: str, seq: int, status: str, offset: int) -> ConsumedRecord:
    value = event_bytes(order, seq, status=status)
    return ConsumedRecord(INPUT, 0, offset, order.encode(), value, (), 0)


def _timeout() -> TransportFailure:
    return TransportFailure("timeout: no answer", kind="timeout", written=True)


@asynccontextmanager
async def _engine(
    records: list[ConsumedRecord],
    sender: FlakySender,
    *,
    guard: str = "reassert",
    ledger: PartitionLedger | None = None,
) -> AsyncIterator[tuple[Engine, FakeSink, Extras]]:
    source, sink, observer = FakeSource({0: records}), FakeSink(), Extras()

    async def load(partitions: set[int]) -> dict[int, PartitionLedger]:
        return {0: ledger or PartitionLedger()}

    limits = LimitSettings(
        commit_interval_s=0.01, drain_timeout_s=2, settle_window_s=WINDOW,
        late_guard={"fake": guard},  # type: ignore[dict-item]
    )  # fmt: skip
    engine = Engine(
        source=source, sink=sink, sender=sender, providers={"acct": FakeProvider()},
        routing=RoutingSettings(),
        topics=TopicNames(input=INPUT, results="res", errors="err", ledger="ledger"),
        limits=limits, observer=observer,
        retry=RetryPolicy(max_attempts=5, base_s=0.001, cap_s=0.01, max_elapsed_s=5),
        ledger_loader=load if ledger is not None else None,
        delivery=DeliverySettings() if ledger is not None else None,
    )  # fmt: skip
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    try:
        with anyio.fail_after(10):
            while len(sink.by_topic("res")) + len(sink.by_topic("err")) < len(records):
                await asyncio.sleep(0.005)
        yield engine, sink, observer
    finally:
        engine.request_stop()
        with anyio.fail_after(10):
            await task


async def test_the_newer_status_goes_at_once_and_is_re_sent_after_the_window() -> None:
    records = [_record("o1", 1, "processing", 0), _record("o1", 2, "shipped", 1)]
    sender = FlakySender({"o1-1": [_timeout()]})
    async with _engine(records, sender) as (engine, sink, observer):
        with anyio.fail_after(5):
            while len(sender.started.get("o1-2", [])) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(WINDOW)  # nothing more comes
        flow = engine.flow
    outcomes = {r["event_id"]: r["outcome"] for r in sink.by_topic("res")}
    assert outcomes == {"o1-1": "superseded", "o1-2": "accepted"}  # one outcome each
    first, again = sender.started["o1-2"]
    assert first - sender.started["o1-1"][0] < WINDOW  # not held
    assert again - sender.started["o1-1"][0] >= WINDOW  # re-sent once the window passed
    assert len(sender.started["o1-1"]) == 1
    assert flow.reasserted == 1
    assert observer.extra == [("acct", "reassert")]


async def test_a_newer_request_before_the_window_ends_takes_the_re_assert_over() -> None:
    records = [
        _record("o2", 1, "processing", 0),
        _record("o2", 2, "shipped", 1),
        _record("o2", 3, "shipped", 2),
    ]
    sender = FlakySender({"o2-1": [_timeout()]})
    async with _engine(records, sender) as (engine, _, _):
        with anyio.fail_after(5):
            while len(sender.started.get("o2-3", [])) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(WINDOW)
        reasserted = engine.flow.reasserted
    assert len(sender.started["o2-2"]) == 1  # its re-assert went to the newer o2-3
    assert len(sender.started["o2-3"]) == 2
    assert reasserted == 1


async def test_with_the_hold_guard_nothing_is_re_sent() -> None:
    records = [_record("o3", 1, "processing", 0), _record("o3", 2, "shipped", 1)]
    sender = FlakySender({"o3-1": [_timeout()]})
    async with _engine(records, sender, guard="hold") as (engine, _, observer):
        await asyncio.sleep(2 * WINDOW)
        reasserted = engine.flow.reasserted
    assert len(sender.started["o3-2"]) == 1
    assert sender.started["o3-2"][0] - sender.started["o3-1"][0] >= WINDOW  # held instead
    assert reasserted == 0
    assert observer.extra == []


async def test_a_replay_never_re_asserts() -> None:
    """Replayed history that the ledger knows was delivered sends nothing, so nothing is
    re-asserted either (no customer spam on replay)."""
    ledger = PartitionLedger()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    ledger.record("o4", "fake:o4", Delivery("o4-2", 2, "shipped", at))
    records = [_record("o4", 1, "processing", 0), _record("o4", 2, "shipped", 1)]
    sender = FlakySender({"o4-1": [_timeout()]})
    async with _engine(records, sender, ledger=ledger) as (engine, sink, observer):
        await asyncio.sleep(2 * WINDOW)
        reasserted = engine.flow.reasserted
    assert sender.started == {}
    assert {r["outcome"] for r in sink.by_topic("res")} <= {"skipped_stale", "skipped_duplicate"}
    assert reasserted == 0
    assert observer.extra == []


async def test_a_re_assert_is_dropped_when_its_request_ends_with_a_permanent_error() -> None:
    """The newer request went at once (a re-assert registered for it) and was refused for
    good: nothing was sent, so there is nothing to re-assert. The registration must not linger
    and fire when the same event comes again after the window (a redrive, a duplicate record):
    by then no older request can land, and a re-send would be an extra message."""
    records = [_record("o5", 1, "processing", 0), _record("o5", 2, "shipped", 1)]
    sender = FlakySender({"o5-1": [_timeout()]})
    sender.script["o5-2"] = [400]  # permanent on its first (only) try
    async with _engine(records, sender) as (engine, sink, observer):
        await asyncio.sleep(WINDOW)  # A's settle window passes
        records.append(_record("o5", 2, "shipped", 2))  # the same event again (redrive)
        with anyio.fail_after(5):
            while len(sink.by_topic("res")) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(WINDOW)  # a lingering re-assert would fire now (its time passed)
        records.append(_record("o5", 3, "completed", 3))  # the order keeps flowing
        with anyio.fail_after(5):
            while len(sink.by_topic("res")) < 3:
                await asyncio.sleep(0.01)
        await asyncio.sleep(WINDOW)
        reasserted = engine.flow.reasserted
        pending = engine.flow.pending_reasserts
    results = [(r["event_id"], r["outcome"]) for r in sink.by_topic("res")]
    errors = [(r["event_id"], r["error_class"]) for r in sink.by_topic("err")]
    assert results == [("o5-1", "superseded"), ("o5-2", "accepted"), ("o5-3", "accepted")]
    assert [e for e, _ in errors] == ["o5-2"]  # one outcome per input record (4 records)
    assert len(sender.started["o5-2"]) == 2  # the refused send and the redriven one, no re-send
    assert len(sender.started["o5-3"]) == 1
    assert reasserted == 0
    assert pending == 0
    assert observer.extra == []
