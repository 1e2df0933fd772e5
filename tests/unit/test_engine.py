"""The engine against in-memory Kafka and HTTP fakes: ordering, retries, errors, commits.

Integration tests repeat the important cases against the real broker and the sandbox; these
run in milliseconds and explore many interleavings.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import anyio
import orjson
import pytest
from structlog.testing import capture_logs

from connector.config import (
    DeliverySettings,
    LimitSettings,
    OutageSettings,
    RoutingSettings,
    TopicNames,
)
from connector.core.ledger import Delivery, PartitionLedger
from connector.core.retry import RetryPolicy
from connector.delivery.engine import Engine
from connector.errors import TransportFailure
from connector.kafka.consumer import TP, ConsumedRecord
from tests.support.engine_fakes import (
    INPUT,
    ConcurrencyProbe,
    FakeProvider,
    FakeSender,
    FakeSettings,
    FakeSink,
    FakeSource,
    FlakySender,
    assert_in_input_order,
    event_bytes,
    make_engine,
    make_partitions,
    run_until,
)


async def test_many_orders_keep_per_order_order_and_commit_everything() -> None:
    parts = make_partitions(orders=300, events_per_order=5, partitions=4)
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender()
    engine = make_engine(source, sink, sender)
    await run_until(engine, source, sink, 1500)
    assert_in_input_order(sender.seen)
    assert sender.overlap == 0, "two requests of one order were in flight at once"
    results = sink.by_topic("res")
    assert len(results) == 1500
    assert len({r["event_id"] for r in results}) == 1500
    assert source.commits == {TP(INPUT, p): len(r) for p, r in parts.items()}


async def test_retries_block_only_their_lane_and_keep_order() -> None:
    parts = make_partitions(orders=50, events_per_order=4, partitions=2)
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender()
    for n in range(0, 50, 5):
        sender.script[f"o{n}-2"] = [500, 503, 429]
    # Outage mode off: 30 transient answers within a second would open the account's breaker,
    # and attempts in an outage spend no budget (tests/unit/test_engine_flow.py covers that).
    limits = LimitSettings(
        commit_interval_s=0.01, drain_timeout_s=2, outage=OutageSettings(enabled=False)
    )
    engine = make_engine(source, sink, sender, limits=limits)
    await run_until(engine, source, sink, 200)
    assert_in_input_order(sender.seen)
    results = sink.by_topic("res")
    assert len(results) == 200
    retried = [r for r in results if r["attempts"] == 4]
    assert len(retried) == 10
    assert engine.stats.retries == 30


async def test_exhausted_and_permanent_errors_go_to_errors_topic_and_lane_moves_on() -> None:
    parts = make_partitions(orders=20, events_per_order=3, partitions=2)
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender()
    sender.script["o1-1"] = [500] * 10  # exhausts 5 attempts
    sender.script["o2-2"] = [400]  # permanent
    engine = make_engine(source, sink, sender)
    await run_until(engine, source, sink, 60)
    errors = {e["event_id"]: e for e in sink.by_topic("err")}
    assert set(errors) == {"o1-1", "o2-2"}
    assert errors["o1-1"]["error_class"] == "retries_exhausted"
    assert errors["o1-1"]["attempts"] == 5
    assert errors["o2-2"]["error_class"] == "permanent"
    assert errors["o2-2"]["original_value"]  # enough to re-drive
    assert len(sink.by_topic("res")) == 58
    # The rest of those orders were still sent, after the failed event.
    assert ("o1", "o1-2") in sender.seen
    assert ("o2", "o2-3") in sender.seen


async def test_invalid_records_become_errors_without_stopping_the_partition() -> None:
    parts = make_partitions(orders=10, events_per_order=2, partitions=1)
    recs = parts[0]
    bad = [b"not json", b'{"event_id": "x"}', event_bytes("bad", 1, status="teleported"), b""]
    mixed: list[ConsumedRecord] = []
    for i, r in enumerate(recs):
        if i % 5 == 0 and bad:
            value = bad.pop()
            mixed.append(ConsumedRecord(INPUT, 0, len(mixed), b"k", value, (("h", b"v"),), 0))
        mixed.append(ConsumedRecord(INPUT, 0, len(mixed), r.key, r.value, (), 0))
    source, sink, sender = FakeSource({0: mixed}), FakeSink(), FakeSender()
    engine = make_engine(source, sink, sender)
    await run_until(engine, source, sink, len(mixed))
    errors = sink.by_topic("err")
    assert len(errors) == 4
    assert all(e["error_class"] == "invalid_event" for e in errors)
    assert len(sink.by_topic("res")) == 20
    assert source.commits[TP(INPUT, 0)] == len(mixed)


async def test_commit_never_passes_an_unfinished_record() -> None:
    # One slow, retrying order at the start of the partition holds the commit point.
    parts = make_partitions(orders=30, events_per_order=2, partitions=1)
    first = parts[0][0]
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender()
    event_id = orjson.loads(first.value or b"{}")["event_id"]
    sender.script[event_id] = [500, 500, 500]
    engine = make_engine(
        source,
        sink,
        sender,
        retry=RetryPolicy(max_attempts=5, base_s=0.2, cap_s=0.2, max_elapsed_s=5, jitter=0),
    )
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    with anyio.fail_after(10):
        while len(sink.records) < 58:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    assert source.commits.get(TP(INPUT, 0), 0) == 0  # everything after offset 0 is done, not it
    with anyio.fail_after(10):
        while len(sink.records) < 60:
            await asyncio.sleep(0.005)
    engine.request_stop()
    await task
    assert source.commits[TP(INPUT, 0)] == 60


async def test_buffer_limit_pauses_partitions_and_memory_stays_bounded() -> None:
    parts = make_partitions(orders=400, events_per_order=5, partitions=4)
    source, sink = FakeSource(parts), FakeSink()
    sender = FakeSender(max_latency=0.002)
    limits = LimitSettings(
        max_buffered_records=100, max_poll_records=50, commit_interval_s=0.01, drain_timeout_s=2
    )
    engine = make_engine(source, sink, sender, limits=limits)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, engine.buffered_records)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    await run_until(engine, source, sink, 2000)
    watcher.cancel()
    assert source.max_paused_seen >= 1
    # One poll may overshoot the limit by at most one batch.
    assert peak <= 100 + 50
    assert_in_input_order(sender.seen)


async def test_configuration_error_parks_the_account_then_probe_resumes_it() -> None:
    parts = make_partitions(orders=5, events_per_order=2, partitions=1)
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender()
    first = orjson.loads(parts[0][0].value or b"{}")["event_id"]
    sender.script[first] = [401]
    limits = LimitSettings(commit_interval_s=0.01, drain_timeout_s=2, account_probe_interval_s=0.2)
    engine = make_engine(source, sink, sender, limits=limits)
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    with anyio.fail_after(5):
        while not engine.stopped_accounts:
            await asyncio.sleep(0.005)
    assert "acct" in engine.stopped_accounts
    with anyio.fail_after(10):
        while len(sink.records) < 10:
            await asyncio.sleep(0.005)
    assert not engine.stopped_accounts
    engine.request_stop()
    await task
    assert len(sink.by_topic("res")) == 10  # nothing dropped while the account was stopped
    assert_in_input_order(sender.seen)


@pytest.mark.parametrize("seed", range(5))
async def test_revocation_drains_commits_and_redelivery_keeps_order(seed: int) -> None:
    parts = make_partitions(orders=60, events_per_order=4, partitions=2, seed=seed)
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender(seed=seed)
    engine = make_engine(source, sink, sender)
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    with anyio.fail_after(10):
        while len(sink.records) < 50:
            await asyncio.sleep(0.001)
    revoked = {TP(INPUT, 0)}
    await engine.on_revoked(revoked)
    committed = source.commits.get(TP(INPUT, 0), 0)
    # The next owner (here: us again) restarts from the committed offset.
    source.positions[0] = committed
    await engine.on_assigned(revoked)
    with anyio.fail_after(20):
        while True:
            done = {orjson.loads(v)["event_id"] for t, v, _ in sink.records}
            if len(done) == 240:
                break
            await asyncio.sleep(0.005)
    engine.request_stop()
    await task
    assert source.commits == {TP(INPUT, p): len(r) for p, r in parts.items()}


async def test_account_and_global_limits_hold_and_a_saturated_account_does_not_block_others() -> (
    None
):
    records: list[ConsumedRecord] = []
    for n in range(200):
        account = "slow" if n % 2 else "fast"
        value = orjson.dumps(
            {
                "event_id": f"o{n}-1",
                "occurred_at": "2026-01-01T00:00:00+00:00",
                "order_id": f"o{n}",
                "status": "processing",
                "account": account,
            }
        )
        records.append(ConsumedRecord(INPUT, 0, n, f"o{n}".encode(), value, (), 0))
    source, sink = FakeSource({0: records}), FakeSink()
    sender = ConcurrencyProbe({"slow": 0.05, "fast": 0.001})
    providers = {
        "slow": FakeProvider("slow", FakeSettings(max_in_flight=2)),
        "fast": FakeProvider("fast", FakeSettings(max_in_flight=1000)),
    }
    engine = make_engine(
        source, sink, sender,
        limits=LimitSettings(max_in_flight=8, commit_interval_s=0.01, drain_timeout_s=5),
        providers=providers,
    )  # fmt: skip
    await run_until(engine, source, sink, 200)
    assert sender.peak["slow"] == 2  # its own limit, reached and never passed
    assert sender.total_peak <= 8  # the global limit
    assert sender.peak["fast"] >= 5  # the fast account used the slots the slow one could not
    # 100 slow requests, two at a time, take about 2.5 s; the fast ones were done long before.
    assert sender.finished_at["fast"] < sender.finished_at["slow"] - 1.0


async def test_a_reread_event_the_ledger_knows_is_a_duplicate_even_when_coalescing() -> None:
    # The ledger says o1-2 was delivered (a crash before the commit): reading o1-1..o1-3 again,
    # o1-2 would be superseded by o1-3 while o1-1 leaves its lane; its first outcome said it
    # was delivered, so the second must not say "superseded".
    ledger = PartitionLedger()
    ledger.record(
        "o1", "fake:o1", Delivery("o1-2", 2, "processing", datetime(2026, 1, 1, tzinfo=UTC))
    )

    async def load(partitions: set[int]) -> dict[int, PartitionLedger]:
        return {0: ledger}

    records = [
        ConsumedRecord(INPUT, 0, n, b"o1", event_bytes("o1", n + 1), (), 0) for n in range(3)
    ]
    source, sink, sender = FakeSource({0: records}), FakeSink(), FakeSender()
    engine = Engine(
        source=source,
        sink=sink,
        sender=sender,
        providers={"acct": FakeProvider()},
        routing=RoutingSettings(),
        topics=TopicNames(input=INPUT, results="res", errors="err", ledger="ledger"),
        limits=LimitSettings(commit_interval_s=0.01, drain_timeout_s=2),
        retry=RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.01, max_elapsed_s=5),
        delivery=DeliverySettings(coalesce={"acct": True}),
        ledger_loader=load,
    )
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    try:
        with anyio.fail_after(10):
            while len(sink.by_topic("res")) < 3:
                await asyncio.sleep(0.005)
    finally:
        engine.request_stop()
        await task
    outcome = {r["event_id"]: r["outcome"] for r in sink.by_topic("res")}
    assert outcome == {"o1-1": "skipped_stale", "o1-2": "skipped_duplicate", "o1-3": "accepted"}
    assert sender.seen == [("o1", "o1-3")]


async def test_error_records_name_what_is_known_and_retry_logs_name_the_failure() -> None:
    unroutable = orjson.loads(event_bytes("o9", 1))
    unroutable["account"] = "nobody"
    records = [
        ConsumedRecord(INPUT, 0, 0, b"o9", orjson.dumps(unroutable), (), 0),
        ConsumedRecord(INPUT, 0, 1, b"o1", event_bytes("o1", 1), (), 0),
        ConsumedRecord(INPUT, 0, 2, b"o2", event_bytes("o2", 1), (), 0),
    ]
    source, sink = FakeSource({0: records}), FakeSink()
    sender = FlakySender({"o1-1": [TransportFailure("timeout: no answer", kind="timeout")]})
    sender.script["o2-1"] = [503]
    engine = make_engine(source, sink, sender)
    with capture_logs() as logs:
        await run_until(engine, source, sink, 3)
    error = sink.by_topic("err")[0]
    assert error["error_class"] == "unroutable"
    assert (error["event_id"], error["order_id"], error["account"]) == ("o9-1", "o9", "nobody")
    failures = {
        e["order_id"]: e["failure"] for e in logs if e["event"] == "delivery_retry_scheduled"
    }
    assert failures == {"o1": "timeout", "o2": "5xx"}
