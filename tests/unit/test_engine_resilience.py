"""The engine at the edges (issue 10): records keyed by something other than their order id,
error records cut to the errors topic's budget and keyed within it, a publish outage that
pauses dispatch, and the commit-stall signals."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time

import anyio
import orjson

from connector.config import DeliverySettings, LimitSettings, RoutingSettings, TopicNames
from connector.contract.records import MIN_ERROR_RECORD_BYTES
from connector.core.ordering import OffsetTracker
from connector.core.retry import RetryPolicy
from connector.delivery.engine import Engine
from connector.delivery.jobs import Buffers, PartitionProgress, PartitionState
from connector.delivery.outcomes import MAX_OUTCOME_KEY_BYTES, PublishWatch
from connector.kafka.consumer import TP, ConsumedRecord
from tests.support.engine_fakes import (
    INPUT,
    FakeProvider,
    FakeSender,
    FakeSink,
    FakeSource,
    event_bytes,
    make_engine,
    run_until,
)


def _record(p: int, offset: int, key: bytes | None, value: bytes) -> ConsumedRecord:
    return ConsumedRecord(INPUT, p, offset, key, value, (), 0)


def _engine(source: FakeSource, sink: FakeSink, sender: FakeSender, **delivery: object) -> Engine:
    return Engine(
        source=source,
        sink=sink,
        sender=sender,
        providers={"acct": FakeProvider()},
        routing=RoutingSettings(),
        topics=TopicNames(input=INPUT, results="res", errors="err"),
        limits=LimitSettings(commit_interval_s=0.01, drain_timeout_s=2),
        retry=RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.01, max_elapsed_s=5),
        rand=random.Random(5).random,
        delivery=DeliverySettings(**delivery),  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ key mismatch


def _mismatched() -> dict[int, list[ConsumedRecord]]:
    records = [
        _record(0, 0, b"o1", event_bytes("o1", 1)),
        _record(0, 1, b"customer-7", event_bytes("o1", 2)),  # keyed by customer
        _record(0, 2, None, event_bytes("o1", 3)),  # no key at all
        _record(0, 3, b"o1", event_bytes("o1", 4)),
    ]
    return {0: records}


async def test_a_record_keyed_by_something_else_is_a_key_mismatch_error_by_default() -> None:
    parts = _mismatched()
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender()
    await run_until(_engine(source, sink, sender), source, sink, 4)
    assert sender.seen == [("o1", "o1-1"), ("o1", "o1-4")]
    errors = sink.by_topic("err")
    assert [(e["event_id"], e["error_class"]) for e in errors] == [
        ("o1-2", "key_mismatch"),
        ("o1-3", "key_mismatch"),
    ]
    assert all(e["order_id"] == "o1" and "delivery.key_mismatch" in e["reason"] for e in errors)
    assert [r["event_id"] for r in sink.by_topic("res")] == ["o1-1", "o1-4"]
    assert source.commits == {TP(INPUT, 0): 4}


async def test_key_mismatch_accept_sends_them_in_input_order() -> None:
    parts = _mismatched()
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender()
    await run_until(_engine(source, sink, sender, key_mismatch="accept"), source, sink, 4)
    assert sender.seen == [("o1", f"o1-{n}") for n in range(1, 5)]
    assert sink.by_topic("err") == []


# ------------------------------------------------------------------ error records fit


async def test_error_records_are_cut_to_the_budget_and_a_huge_key_is_cut() -> None:
    huge_value = b"{" + b"x" * 300_000  # invalid JSON, far over the budget
    huge_key = b"k" * 100_000
    parts = {0: [_record(0, 0, huge_key, huge_value), _record(0, 1, b"o1", event_bytes("o1", 1))]}
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender()
    engine = make_engine(source, sink, sender)
    engine.limit_error_records(MIN_ERROR_RECORD_BYTES * 2)
    await run_until(engine, source, sink, 2)
    [(_, value, key)] = [r for r in sink.records if r[0] == "err"]
    assert len(value) <= MIN_ERROR_RECORD_BYTES * 2
    assert key == huge_key[:MAX_OUTCOME_KEY_BYTES]
    body = json.loads(value)
    assert body["error_class"] == "invalid_event"
    assert body["original_value_truncated"] is True
    assert body["original_value_size"] == len(huge_value)
    kept = base64.b64decode(body["original_value"])
    assert kept
    assert huge_value.startswith(kept)
    assert source.commits == {TP(INPUT, 0): 2}


class _RefusingErrors(FakeSink):
    """Refuses every error record larger than ``limit`` bytes, like the broker would."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.refused = 0

    async def admit(
        self, topic: str, value: bytes, key: bytes | None
    ) -> asyncio.Future[object] | None:
        from connector.errors import PublishRefusedError

        if topic == "err" and len(value) > self.limit:
            self.refused += 1
            raise PublishRefusedError(f"MessageSizeTooLargeError: {len(value)} bytes")
        return None


async def test_a_refused_error_record_falls_back_once_to_the_minimal_record() -> None:
    value = b"{" + b"y" * 200_000
    parts = {0: [_record(0, 0, b"o9", value)]}
    source, sink, sender = FakeSource(parts), _RefusingErrors(limit=4096), FakeSender()
    engine = make_engine(source, sink, sender)  # no budget set: the full record goes first
    await run_until(engine, source, sink, 1)
    assert sink.refused == 1
    [body] = sink.by_topic("err")
    assert body["error_class"] == "invalid_event"
    assert body["reason"].startswith("outcome refused by the broker (MessageSizeTooLargeError")
    assert body["original_value"] == ""
    assert body["original_value_size"] == len(value)
    assert body["original_key"] is None
    assert engine.failure is None
    assert source.commits == {TP(INPUT, 0): 1}


# ------------------------------------------------------------------ publish outage


class _OutageSink(FakeSink):
    """Acks nothing while ``down`` is set (the futures resolve once it clears)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = asyncio.Event()
        self.up.set()
        self._waiting: list[asyncio.Future[object]] = []

    async def admit(
        self, topic: str, value: bytes, key: bytes | None
    ) -> asyncio.Future[object] | None:
        if self.up.is_set():
            return None
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()

        async def later() -> None:
            await self.up.wait()
            self.records.append((topic, value, key))
            fut.set_result(None)

        task = asyncio.create_task(later())
        fut.add_done_callback(lambda _: task)  # keep the task referenced
        return fut


async def test_a_publish_outage_pauses_dispatch_and_readiness_until_acks_resume() -> None:
    # One order, so its events go one after another (each ~20 ms at the provider): when the
    # outage is noticed, most of them still wait in the lane.
    records = [_record(0, i, b"o0", event_bytes("o0", i + 1)) for i in range(45)]
    source, sink = FakeSource({0: records[:5]}), _OutageSink()
    sender = FakeSender(max_latency=0.04)
    engine = make_engine(
        source,
        sink,
        sender,
        limits=LimitSettings(commit_interval_s=0.01, drain_timeout_s=2, publish_outage_s=0.3),
    )
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    try:
        with anyio.fail_after(10):
            while len(sink.records) < 5:
                await asyncio.sleep(0.01)
        assert engine.publish_outage_s is None
        sink.up.clear()  # the broker stops acknowledging
        source.partitions[0].extend(records[5:])
        started = time.monotonic()
        with anyio.fail_after(10):
            while engine.publish_outage_s is None:
                await asyncio.sleep(0.01)
        assert time.monotonic() - started >= 0.3
        assert TP(INPUT, 0) in source.paused_set
        await asyncio.sleep(0.05)  # a request already under way may finish
        sent = len(sender.seen)
        await asyncio.sleep(0.5)  # anything sent now would be a message with no outcome
        assert len(sender.seen) == sent, "a provider request started during the outage"
        assert sent < 40
        sink.up.set()  # acks resume
        with anyio.fail_after(10):
            while len(sink.records) < 45:
                await asyncio.sleep(0.01)
        assert engine.publish_outage_s is None
        assert TP(INPUT, 0) not in source.paused_set
    finally:
        engine.request_stop()
        with anyio.fail_after(10):
            await task
    assert sender.seen == [("o0", f"o0-{n}") for n in range(1, 46)]
    assert source.commits == {TP(INPUT, 0): 45}


def test_the_publish_watch_measures_waiting_without_acks() -> None:
    watch = PublishWatch()
    assert watch.stalled_s(100.0) == 0.0
    watch.begin(10.0)
    watch.begin(11.0)
    assert watch.stalled_s(15.0) == 5.0  # since publishing started waiting
    watch.acked(16.0)
    watch.end()
    assert watch.stalled_s(18.0) == 2.0  # since the last ack
    watch.end()
    assert watch.stalled_s(30.0) == 0.0  # nothing waits


# ------------------------------------------------------------------ commit stall


async def test_a_stuck_record_shows_as_oldest_pending_age_and_a_still_commit_point() -> None:
    gate = asyncio.Event()

    class StuckSender(FakeSender):
        async def send(self, request, *, timeout):  # type: ignore[no-untyped-def]
            if orjson.loads(request.content)["event"] == "o1-1":
                await gate.wait()
            return await super().send(request, timeout=timeout)

    parts = {
        0: [_record(0, 0, b"o1", event_bytes("o1", 1))]
        + [_record(0, i, f"p{i}".encode(), event_bytes(f"p{i}", 1)) for i in range(1, 10)]
    }
    source, sink, sender = FakeSource(parts), FakeSink(), StuckSender()
    engine = make_engine(source, sink, sender)
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    try:
        with anyio.fail_after(10):
            while len(sink.records) < 9:
                await asyncio.sleep(0.01)
        first = engine.progress()[TP(INPUT, 0)]
        await asyncio.sleep(0.3)
        later = engine.progress()[TP(INPUT, 0)]
        assert later.oldest_pending_s >= 0.3
        assert later.point_stalled_s >= first.point_stalled_s + 0.25
        gate.set()
        with anyio.fail_after(10):
            while len(sink.records) < 10:
                await asyncio.sleep(0.01)
        done = engine.progress()[TP(INPUT, 0)]
        assert done.oldest_pending_s == 0.0
        assert done.point_stalled_s == 0.0
    finally:
        gate.set()
        engine.request_stop()
        with anyio.fail_after(10):
            await task


def test_partition_progress_counts_only_while_records_wait() -> None:
    state = PartitionState(TP(INPUT, 0), OffsetTracker(0))
    buffers = Buffers()
    assert state.progress(100.0) == PartitionProgress(0.0, 0.0)
    buffers.take(state, 0, 10)
    state.tracker.track(0)
    buffers.done(state, 0)
    assert state.progress(200.0) == PartitionProgress(0.0, 0.0)  # idle for a long time...
    state.tracker.track(1)
    buffers.take(state, 1, 10)
    # ...then a record arrives: the commit point (1) did not change, the stall starts now.
    assert state.progress(201.0).point_stalled_s == 1.0
    state.tracker.track(2)
    buffers.take(state, 2, 10)
    buffers.done(state, 2)
    assert state.progress(205.0).point_stalled_s == 5.0  # 2 is done, 1 still pins the point
    buffers.done(state, 1)
    assert state.progress(206.0) == PartitionProgress(0.0, 0.0)
    assert not state.taken or state.taken[0][0] >= 3
