"""Flow control wired into the engine (issue 11): account outage mode parks instead of spending
retry budgets, ambiguous attempts are superseded or retried and the order's next request waits
for the settle window, and a pair-limit refusal holds the recipient."""

from __future__ import annotations

import asyncio
import time

import httpx

from connector.config import LimitSettings, OutageSettings
from connector.core.ratelimit import TokenBucket
from connector.core.retry import RetryPolicy
from connector.delivery.engine import Engine
from connector.errors import TransportFailure
from tests.support.engine_fakes import (
    FakeProvider,
    FakeSender,
    FakeSettings,
    FakeSink,
    FakeSource,
    FlakySender,
    assert_in_input_order,
    make_engine,
    make_partitions,
    run_until,
)

# Three attempts within about 50 ms: far shorter than the outage below.
SHORT_BUDGET = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.02, max_elapsed_s=5, jitter=0)
FAST_BREAKER = OutageSettings(
    window=20, window_s=5, min_requests=5, probe_interval_s=0.05, probe_interval_cap_s=0.2
)


class DownSender(FakeSender):
    """Answers 503 to everything while ``down``; counts what it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.answered_503 = 0

    async def send(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        if self.down:
            self.answered_503 += 1
            await asyncio.sleep(0.001)
            return httpx.Response(503, request=request)
        return await super().send(request, timeout=timeout)


async def _outage_run(outage: OutageSettings) -> tuple[FakeSink, DownSender, Engine]:
    parts = make_partitions(orders=30, events_per_order=3, partitions=2)
    source, sink, sender = FakeSource(parts), FakeSink(), DownSender()
    limits = LimitSettings(commit_interval_s=0.01, drain_timeout_s=2, outage=outage)
    engine = make_engine(source, sink, sender, limits=limits, retry=SHORT_BUDGET)
    asyncio.get_running_loop().call_later(0.6, lambda: setattr(sender, "down", False))
    await run_until(engine, source, sink, 90)
    return sink, sender, engine


async def test_an_outage_parks_the_account_instead_of_spending_retry_budgets() -> None:
    sink, sender, engine = await _outage_run(FAST_BREAKER)
    assert sink.by_topic("err") == []
    assert len(sink.by_topic("res")) == 90
    assert_in_input_order(sender.seen)
    breaker = engine.flow.breakers["acct"]
    assert breaker.outages >= 1
    assert not breaker.in_outage
    assert engine.stats.outage_parks > 0
    # Parked, not hammering: far fewer 503s than events times attempts (90 x 3).
    assert sender.answered_503 < 120


async def test_without_outage_mode_the_same_outage_exhausts_retry_budgets() -> None:
    sink, _, _ = await _outage_run(FAST_BREAKER.model_copy(update={"enabled": False}))
    exhausted = [e for e in sink.by_topic("err") if e["error_class"] == "retries_exhausted"]
    assert exhausted  # the control: what outage mode prevents


def _written_timeout() -> TransportFailure:
    return TransportFailure("timeout: no answer", kind="timeout", written=True)


async def test_an_ambiguous_request_with_a_newer_status_queued_is_superseded_and_gated() -> None:
    parts = make_partitions(orders=4, events_per_order=3, partitions=1)
    source, sink = FakeSource(parts), FakeSink()
    sender = FlakySender({"o1-1": [_written_timeout()]})
    limits = LimitSettings(commit_interval_s=0.01, drain_timeout_s=2, settle_window_s=0.3)
    engine = make_engine(source, sink, sender, limits=limits)
    await run_until(engine, source, sink, 12)
    results = {r["event_id"]: r for r in sink.by_topic("res")}
    assert results["o1-1"]["outcome"] == "superseded"
    assert len(sender.started["o1-1"]) == 1  # never retried
    # o1-2 left only after the window in which the abandoned o1-1 could still land.
    assert sender.started["o1-2"][0] - sender.started["o1-1"][0] >= 0.3
    assert engine.flow.ambiguous_superseded == 1
    assert engine.flow.extra_messages == 0
    assert_in_input_order(sender.seen)


async def test_the_newest_status_is_retried_after_an_ambiguous_attempt_and_counted() -> None:
    parts = make_partitions(orders=2, events_per_order=1, partitions=1)
    source, sink = FakeSource(parts), FakeSink()
    sender = FlakySender(
        {
            "o0-1": [_written_timeout()],
            "o1-1": [TransportFailure("connect refused", kind="connect", written=False)],
        }
    )
    engine = make_engine(source, sink, sender)
    await run_until(engine, source, sink, 2)
    results = {r["event_id"]: r for r in sink.by_topic("res")}
    assert results["o0-1"]["outcome"] == "accepted"
    assert results["o1-1"]["outcome"] == "accepted"
    assert len(sender.started["o0-1"]) == 2
    # Only the written request is ambiguous; its retry may show the status twice.
    assert engine.flow.ambiguous == 1
    assert engine.flow.extra_messages == 1


class LimitedSender(FakeSender):
    """Answers 429 beyond ``per_second`` (a token bucket with a burst of 10), like a provider
    whose real limit is below the account's configured rate."""

    def __init__(self, per_second: float) -> None:
        super().__init__()
        self._bucket = TokenBucket(per_second, burst=10, now=time.monotonic())
        self.accepted = 0
        self.refused = 0

    async def send(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        if self._bucket.try_take(time.monotonic()) > 0:
            self.refused += 1
            return httpx.Response(429, request=request)
        self.accepted += 1
        return await super().send(request, timeout=timeout)


async def test_the_adaptive_rate_paces_waiting_sends_below_the_real_limit() -> None:
    parts = make_partitions(orders=250, events_per_order=1, partitions=2)
    source, sink, sender = FakeSource(parts), FakeSink(), LimitedSender(per_second=50)
    limited = FakeProvider(settings=FakeSettings(max_in_flight=64, rate_per_second=80))
    engine = make_engine(source, sink, sender, providers={"acct": limited})
    await run_until(engine, source, sink, 250)
    assert len(sink.by_topic("res")) == 250
    rate = engine.flow.rates["acct"]
    assert rate.cuts >= 1
    # A fixed 80/s against 50/s is refused about 3 times in 8; cuts apply to waiting sends.
    assert sender.refused / (sender.accepted + sender.refused) < 0.1, sender.refused


async def test_one_poison_order_never_looks_like_an_outage() -> None:
    # o0's first event is answered 503 on every attempt; everyone else succeeds.
    parts = make_partitions(orders=10, events_per_order=2, partitions=1)
    source, sink, sender = FakeSource(parts), FakeSink(), FakeSender()
    sender.script["o0-1"] = [503] * 50
    limits = LimitSettings(commit_interval_s=0.01, drain_timeout_s=2, outage=FAST_BREAKER)
    retry = RetryPolicy(max_attempts=12, base_s=0.01, cap_s=0.02, max_elapsed_s=5, jitter=0)
    engine = make_engine(source, sink, sender, limits=limits, retry=retry)
    await run_until(engine, source, sink, 20)
    errors = sink.by_topic("err")
    assert [(e["event_id"], e["error_class"]) for e in errors] == [("o0-1", "retries_exhausted")]
    assert errors[0]["attempts"] == 12
    assert engine.flow.breakers["acct"].outages == 0


class ThrottlingSender(FakeSender):
    """Answers 429 to the next ``refuse`` requests, or to everything while ``down``."""

    def __init__(self, refuse: int = 0) -> None:
        super().__init__()
        self.refuse = refuse
        self.down = False
        self.refused = 0

    async def send(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        if self.down or self.refuse > 0:
            self.refuse -= 1
            self.refused += 1
            await asyncio.sleep(0.001)
            return httpx.Response(429, request=request)
        return await super().send(request, timeout=timeout)


async def test_a_throttled_account_is_paced_not_parked() -> None:
    """The demo's scripted throttling (a run of 429s) tripped the breaker and stalled: while the
    adaptive rate can still slow down a 429 is a pacing signal, not an outage sign."""
    parts = make_partitions(orders=30, events_per_order=1, partitions=2)
    source, sink, sender = FakeSource(parts), FakeSink(), ThrottlingSender(refuse=8)
    paced = FakeProvider(settings=FakeSettings(max_in_flight=1, rate_per_second=80))
    limits = LimitSettings(commit_interval_s=0.01, drain_timeout_s=2, outage=FAST_BREAKER)
    retry = RetryPolicy(max_attempts=8, base_s=0.01, cap_s=0.05, max_elapsed_s=30, jitter=0)
    engine = make_engine(source, sink, sender, providers={"acct": paced}, limits=limits,
                         retry=retry)  # fmt: skip
    await run_until(engine, source, sink, 30)
    assert sink.by_topic("err") == []
    assert sender.refused == 8
    assert engine.flow.rates["acct"].cuts >= 5
    assert engine.flow.breakers["acct"].outages == 0
    assert engine.stats.outage_parks == 0


async def test_an_outage_that_answers_only_429_still_parks_once_the_rate_is_at_its_floor() -> None:
    # Enough events that first attempts (retries are no new evidence) still arrive at the floor.
    parts = make_partitions(orders=80, events_per_order=1, partitions=2)
    source, sink, sender = FakeSource(parts), FakeSink(), ThrottlingSender()
    sender.down = True
    paced = FakeProvider(settings=FakeSettings(max_in_flight=4, rate_per_second=500))
    limits = LimitSettings(commit_interval_s=0.01, drain_timeout_s=2, outage=FAST_BREAKER)
    retry = RetryPolicy(max_attempts=20, base_s=0.01, cap_s=0.05, max_elapsed_s=60, jitter=0)
    engine = make_engine(source, sink, sender, providers={"acct": paced}, limits=limits,
                         retry=retry)  # fmt: skip
    breaker = engine.flow.breakers["acct"]

    async def recover() -> None:
        while not breaker.in_outage:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        sender.down = False

    recovering = asyncio.create_task(recover())
    await run_until(engine, source, sink, 80)
    await recovering
    assert sink.by_topic("err") == []
    assert breaker.outages == 1
    assert engine.stats.outage_parks > 0
    rate = engine.flow.rates["acct"]
    assert rate.refused_rate is None  # the outage's 429s were forgotten when it ended
