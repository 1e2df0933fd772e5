"""Port fakes for engine tests: an in-memory consumer (``FakeSource``), producer
(``FakeSink``), HTTP sender (``FakeSender``) and provider, plus workload builders.

They implement the engine's ports (``connector.delivery.ports``) and nothing private.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

import anyio
import httpx
import orjson
from yarl import URL

from connector.config import LimitSettings, RoutingSettings, TopicNames
from connector.contract.events import OrderStatusChanged
from connector.contract.outbound import PlainRequest
from connector.core.retry import RetryPolicy
from connector.delivery.engine import Engine
from connector.kafka.consumer import TP, ConsumedRecord
from connector.kafka.record_sink import OutgoingRecord, RecordSink
from connector.providers.base import BuiltRequest, OutcomeKind, ProviderOutcome

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

    def build_request(self, event: OrderStatusChanged) -> BuiltRequest | ProviderOutcome:
        return BuiltRequest(
            PlainRequest(
                "POST",
                URL(f"http://fake.invalid/{self._account}/send"),
                (),
                orjson.dumps({"order": event.order_id, "event": event.event_id}),
            )
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

    async def send(self, request: PlainRequest, *, timeout: float) -> httpx.Response:
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


class FlakySender(FakeSender):
    """Raises the scripted exceptions for an event id (one per attempt) before answering, and
    notes when each attempt of an event began (``started``, monotonic)."""

    def __init__(self, raises: dict[str, list[Exception]]) -> None:
        super().__init__()
        self.raises = raises
        self.started: dict[str, list[float]] = {}

    async def send(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        event = orjson.loads(request.content)["event"]
        self.started.setdefault(event, []).append(time.monotonic())
        pending = self.raises.get(event)
        if pending:
            raise pending.pop(0)
        return await super().send(request, timeout=timeout)


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


class FakeSink(RecordSink):
    """A producer that acks every record at once and keeps each record and its headers.

    Variants override ``admit`` instead of restating ``send``: raise to refuse a record,
    return a future to ack it their own way, or None to keep and ack it here.
    """

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None]] = []
        self.headers: list[tuple[str, list[tuple[str, bytes]]]] = []

    async def _publish(self, record: OutgoingRecord) -> asyncio.Future[object]:
        topic, value, key = record.topic, record.value, record.key
        self.headers.append((topic, record.headers or []))
        taken = await self.admit(topic, value, key)
        if taken is not None:
            return taken
        self.records.append((topic, value, key))
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def admit(
        self, topic: str, value: bytes, key: bytes | None
    ) -> asyncio.Future[object] | None:
        return None

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
    await run_engine_until(engine, source, lambda: len(sink.records) >= total)


async def run_engine_until(
    engine: Engine, source: FakeSource, done: Callable[[], bool], *, timeout_s: float = 30
) -> None:
    """Assign ``source``'s partitions, run ``engine`` until ``done()`` (at most ``timeout_s``),
    then stop it and wait for its drain, also when the wait failed."""
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    try:
        with anyio.fail_after(timeout_s):
            while not done():
                await asyncio.sleep(0.005)
    finally:
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


class TemplateProvider:
    """Sends a Meta-shaped template body; template ``paused_tpl`` answers 132015 while paused."""

    kind: ClassVar[str] = "meta"

    def __init__(self) -> None:
        self.settings = FakeSettings()

    @property
    def account(self) -> str:
        return "acct"

    def target_key(self, event: OrderStatusChanged) -> str:
        return event.order_id

    def build_request(self, event: OrderStatusChanged) -> BuiltRequest | ProviderOutcome:
        template = event.description or "tpl"
        body = {
            "event": event.event_id,
            "template": {
                "name": template,
                "language": {"policy": "deterministic", "code": "pt_BR"},
            },
        }
        request = PlainRequest("POST", URL("http://fake.invalid/send"), (), orjson.dumps(body))
        return BuiltRequest(request, template=(template, "pt_BR"))

    def classify(self, response: httpx.Response, *, attempt: int) -> ProviderOutcome:
        if response.status_code == 200:
            return ProviderOutcome(OutcomeKind.ACCEPTED, message_id="m", http_status=200)
        return ProviderOutcome(
            OutcomeKind.PERMANENT, http_status=400, error_code="132015", pause_template=True
        )


class TemplateSender:
    def __init__(self) -> None:
        self.paused = True
        self.sent: list[str] = []

    async def send(self, request: PlainRequest, *, timeout: float) -> httpx.Response:
        body = orjson.loads(request.content)
        self.sent.append(body["event"])
        status = 400 if self.paused and body["template"]["name"] == "paused_tpl" else 200
        return httpx.Response(status, request=request)

    async def aclose(self) -> None:
        pass
