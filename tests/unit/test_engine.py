"""The engine against in-memory Kafka and HTTP fakes: ordering, retries, errors, commits.

Integration tests repeat the important cases against the real broker and the sandbox; these
run in milliseconds and explore many interleavings.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

import anyio
import httpx
import orjson
import pytest

from connector.config import LimitSettings, RoutingSettings, TopicNames
from connector.contract.events import OrderStatusChanged
from connector.core.retry import RetryPolicy
from connector.delivery.engine import Engine
from connector.kafka.consumer import TP, ConsumedRecord
from connector.providers.base import OutcomeKind, ProviderOutcome

INPUT = "in"


@dataclass
class FakeSettings:
    max_in_flight: int = 1000
    rate_per_second: float | None = None
    request_timeout_s: float = 5.0


class FakeProvider:
    kind: ClassVar[str] = "fake"

    def __init__(self, account: str = "acct", settings: FakeSettings | None = None) -> None:
        self._account = account
        self.settings = settings or FakeSettings()

    @property
    def account(self) -> str:
        return self._account

    def target_key(self, event: OrderStatusChanged) -> str:
        return f"fake:{event.order_id}"

    def build_request(self, event: OrderStatusChanged) -> httpx.Request | ProviderOutcome:
        return httpx.Request(
            "POST",
            f"http://fake.invalid/{self._account}/send",
            content=orjson.dumps({"order": event.order_id, "event": event.event_id}),
        )

    def classify(self, response: httpx.Response, *, attempt: int) -> ProviderOutcome:
        code = response.status_code
        if code == 200:
            return ProviderOutcome(OutcomeKind.ACCEPTED, message_id="m", http_status=code)
        if code == 429:
            return ProviderOutcome(OutcomeKind.RETRYABLE, http_status=code, retry_after=0.01)
        if code >= 500:
            return ProviderOutcome(OutcomeKind.RETRYABLE, http_status=code)
        if code == 401:
            return ProviderOutcome(OutcomeKind.CONFIGURATION, http_status=code, detail="auth")
        return ProviderOutcome(OutcomeKind.PERMANENT, http_status=code, detail="bad")


class FakeSender:
    """Answers per event id from a script (default 200) after a small random latency."""

    def __init__(self, seed: int = 1, max_latency: float = 0.003) -> None:
        self.seen: list[tuple[str, str]] = []  # (order id, event id) in arrival order
        self.script: dict[str, list[int]] = {}
        self.in_flight_per_order: dict[str, int] = defaultdict(int)
        self.overlap = 0
        self._rng = random.Random(seed)
        self._max_latency = max_latency

    async def send(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        body = orjson.loads(request.content)
        order, event = body["order"], body["event"]
        self.in_flight_per_order[order] += 1
        if self.in_flight_per_order[order] > 1:
            self.overlap += 1
        try:
            self.seen.append((order, event))
            await asyncio.sleep(self._rng.random() * self._max_latency)
            answers = self.script.get(event)
            status = answers.pop(0) if answers else 200
            return httpx.Response(status, request=request)
        finally:
            self.in_flight_per_order[order] -= 1

    async def aclose(self) -> None:
        pass


@dataclass
class FakeSource:
    partitions: dict[int, list[ConsumedRecord]]
    positions: dict[int, int] = field(default_factory=dict)
    paused_set: set[TP] = field(default_factory=set)
    commits: dict[TP, int] = field(default_factory=dict)
    max_paused_seen: int = 0

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[ConsumedRecord]:
        out: list[ConsumedRecord] = []
        for p, records in self.partitions.items():
            if TP(INPUT, p) in self.paused_set:
                continue
            pos = self.positions.get(p, 0)
            take = records[pos : pos + max(1, max_records - len(out))]
            self.positions[p] = pos + len(take)
            out.extend(take)
            if len(out) >= max_records:
                break
        if not out:
            await asyncio.sleep(timeout_ms / 1000 / 10)
        await asyncio.sleep(0)
        return out

    def assignment(self) -> set[TP]:
        return {TP(INPUT, p) for p in self.partitions}

    def pause(self, partitions: Iterable[TP]) -> None:
        self.paused_set |= set(partitions)
        self.max_paused_seen = max(self.max_paused_seen, len(self.paused_set))

    def resume(self, partitions: Iterable[TP]) -> None:
        self.paused_set -= set(partitions)

    async def commit(self, offsets: dict[TP, int]) -> None:
        for tp, off in offsets.items():
            assert off >= self.commits.get(tp, 0), "commits never go backwards"
            self.commits[tp] = off


class FakeSink:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None]] = []

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        source: tuple[TP, int] | None = None,
    ) -> asyncio.Future[object]:
        self.records.append((topic, value, key))
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def flush(self) -> None:
        pass

    def by_topic(self, topic: str) -> list[dict[str, object]]:
        return [orjson.loads(v) for t, v, _ in self.records if t == topic]


def event_bytes(order: str, seq: int, *, status: str = "processing") -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{order}-{seq}",
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            "order_id": order,
            "status": status,
            "sequence": seq,
            "account": "acct",
        }
    )


def make_partitions(
    orders: int, events_per_order: int, partitions: int, seed: int = 3
) -> dict[int, list[ConsumedRecord]]:
    rng = random.Random(seed)
    pending = {f"o{n}": 0 for n in range(orders)}
    out: dict[int, list[ConsumedRecord]] = {p: [] for p in range(partitions)}
    while pending:
        order = rng.choice(list(pending))
        seq = pending[order] + 1
        p = hash(order) % partitions
        out[p].append(
            ConsumedRecord(INPUT, p, len(out[p]), order.encode(), event_bytes(order, seq), (), 0)
        )
        if seq == events_per_order:
            del pending[order]
        else:
            pending[order] = seq
    return out


def make_engine(
    source: FakeSource,
    sink: FakeSink,
    sender: FakeSender,
    *,
    limits: LimitSettings | None = None,
    retry: RetryPolicy | None = None,
    providers: dict[str, FakeProvider] | None = None,
) -> Engine:
    return Engine(
        source=source,
        sink=sink,
        sender=sender,
        providers=providers or {"acct": FakeProvider()},
        routing=RoutingSettings(),
        topics=TopicNames(input=INPUT, results="res", errors="err"),
        limits=limits or LimitSettings(commit_interval_s=0.01, drain_timeout_s=2),
        retry=retry or RetryPolicy(max_attempts=5, base_s=0.001, cap_s=0.01, max_elapsed_s=5),
        rand=random.Random(5).random,
    )


async def run_until(engine: Engine, source: FakeSource, sink: FakeSink, total: int) -> None:
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    with anyio.fail_after(30):
        while len(sink.records) < total:
            await asyncio.sleep(0.005)
    engine.request_stop()
    with anyio.fail_after(10):
        await task


def assert_in_input_order(seen: list[tuple[str, str]]) -> None:
    last: dict[str, int] = {}
    for order, event in seen:
        seq = int(event.rsplit("-", 1)[1])
        # A retry re-sends the same event; the next one never goes before it.
        assert seq >= last.get(order, 0), f"{order}: {event} after seq {last[order]}"
        last[order] = seq


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
    engine = make_engine(source, sink, sender)
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
            peak = max(peak, engine._buffered_records)
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


class ConcurrencyProbe(FakeSender):
    """A sender that also records the most requests in flight, overall and per account."""

    def __init__(self, latency: dict[str, float]) -> None:
        super().__init__()
        self._latency = latency
        self.now: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.total_now = 0
        self.total_peak = 0
        self.finished_at: dict[str, float] = {}

    async def send(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        account = request.url.path.split("/")[1]
        self.now[account] += 1
        self.total_now += 1
        self.peak[account] = max(self.peak[account], self.now[account])
        self.total_peak = max(self.total_peak, self.total_now)
        try:
            await asyncio.sleep(self._latency[account])
            return httpx.Response(200, request=request)
        finally:
            self.now[account] -= 1
            self.total_now -= 1
            self.finished_at[account] = asyncio.get_running_loop().time()


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
