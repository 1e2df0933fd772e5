"""Totality: whatever fails at whichever stage, every input record gets exactly one outcome
record, no order stays blocked, and every partition's commit point reaches the end.

A parametrised matrix: for each stage (decode, route, build, send, classify, ledger, record
build, publish) and several seeds, random records of random orders are marked to fail there.
"""

from __future__ import annotations

import random
from collections import Counter

import anyio
import pytest

import connector.delivery.engine as engine_module
from connector.config import DeliverySettings, LimitSettings, RoutingSettings, TopicNames
from connector.core.ledger import PartitionLedger
from connector.core.retry import RetryPolicy
from connector.delivery.engine import Engine
from connector.errors import ProducerFailedError
from connector.kafka.consumer import TP, ConsumedRecord
from tests.support.engine_fakes import INPUT, FakeSource, assert_in_input_order, run_engine_until
from tests.support.engine_faults import (
    STAGES,
    FaultyLedger,
    FaultyProvider,
    FaultyProviders,
    FaultySender,
    RefusingSink,
    faulty_decode,
    marked_event,
)

# What an internal_error record's reason says for a fault at each stage: the stage and the
# exception type (a refused outcome is replaced by a minimal record that says so).
REASONS = {
    "decode": ("decode: InjectedFault",),
    "route": ("route: InjectedFault",),
    "build": ("build: InjectedFault",),
    "send": ("send: AccountConfigError", "send: InjectedFault"),
    "classify": ("classify: InjectedFault",),
    "ledger": ("ledger: InjectedFault",),
    "record": ("record: PydanticSerializationError", "record: TypeError"),  # model / orjson
    "publish": ("outcome refused by the broker (MessageSizeTooLargeError",),
}
TOPICS = TopicNames(input=INPUT, results="res", errors="err", ledger="ledger")


def workload(
    seed: int, stage: str, partitions: int = 3, orders: int = 40
) -> tuple[dict[int, list[ConsumedRecord]], dict[str, str]]:
    """Random orders of 1-5 events, interleaved; about one record in five is marked."""
    rng = random.Random(seed)
    parts: dict[int, list[ConsumedRecord]] = {p: [] for p in range(partitions)}
    pending = {f"o{n}": rng.randint(1, 5) for n in range(orders)}
    seqs = dict.fromkeys(pending, 0)
    marked: dict[str, str] = {}  # event id -> stage
    while pending:
        order = rng.choice(sorted(pending))
        seqs[order] += 1
        seq = seqs[order]
        fault = stage if rng.random() < 0.2 else None
        if fault:
            marked[f"{order}-{seq}"] = fault
        p = int(order[1:]) % partitions
        value = marked_event(order, seq, fault)
        parts[p].append(ConsumedRecord(INPUT, p, len(parts[p]), order.encode(), value, (), 0))
        pending[order] -= 1
        if not pending[order]:
            del pending[order]
    return parts, marked


async def load_ledgers(partitions: set[int]) -> dict[int, PartitionLedger]:
    return {p: FaultyLedger() for p in partitions}


def make(
    source: FakeSource,
    sink: RefusingSink,
    sender: FaultySender,
    delivery: DeliverySettings | None = None,
) -> Engine:
    return Engine(
        source=source,
        sink=sink,
        sender=sender,
        providers=FaultyProviders({"acct": FaultyProvider()}),
        routing=RoutingSettings(),
        topics=TOPICS,
        limits=LimitSettings(commit_interval_s=0.01, drain_timeout_s=2),
        retry=RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.01, max_elapsed_s=5),
        delivery=delivery or DeliverySettings(),
        ledger_loader=load_ledgers,
        rand=random.Random(7).random,
    )


def outcomes(sink: RefusingSink) -> list[dict[str, object]]:
    return [*sink.by_topic("res"), *sink.by_topic("err")]


def coordinates(records: list[dict[str, object]]) -> Counter[tuple[int, int]]:
    found: Counter[tuple[int, int]] = Counter()
    for r in records:
        source = r["source"]
        assert isinstance(source, dict)
        found[(source["partition"], source["offset"])] += 1
    return found


async def run_to_the_end(
    engine: Engine,
    source: FakeSource,
    sink: RefusingSink,
    parts: dict[int, list[ConsumedRecord]],
) -> list[dict[str, object]]:
    """Run ``engine`` until every record has its outcome and every commit point reached the
    end; return the outcome records after checking there is exactly one per input record."""
    total = sum(len(r) for r in parts.values())
    ends = {TP(INPUT, p): len(r) for p, r in parts.items()}
    await run_engine_until(
        engine,
        source,
        lambda: len(coordinates(outcomes(sink))) >= total and source.commits == ends,
        timeout_s=20,
    )
    assert engine.failure is None
    records = outcomes(sink)
    every = {(p, r.offset) for p, rs in parts.items() for r in rs}
    assert coordinates(records) == Counter(dict.fromkeys(every, 1))  # exactly one each
    assert source.commits == ends  # every commit point reached the end
    return records


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("stage", STAGES)
async def test_a_fault_at_any_stage_still_gives_every_record_exactly_one_outcome(
    stage: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "decode_event", faulty_decode)
    parts, marked = workload(seed, stage)
    assert marked, "the workload must mark some records"
    FaultyLedger.marked = {e for e, s in marked.items() if s == "ledger"}
    publish_marked = {e for e, s in marked.items() if s == "publish"}
    source = FakeSource(parts)
    sink = RefusingSink(refuse=publish_marked.__contains__)
    sender = FaultySender(seed=seed)
    records = await run_to_the_end(make(source, sink, sender), source, sink, parts)
    by_event = {r["event_id"]: r for r in records if r["event_id"] is not None}
    for event_id, fault in marked.items():
        if fault == "decode":
            continue  # nothing of the event is known; its coordinates were checked above
        record = by_event[event_id]
        assert record["error_class"] == "internal_error", (event_id, record)
        assert record["order_id"] == event_id.rsplit("-", 1)[0]
        assert record["account"] == ("route-fault" if fault == "route" else "acct")
        if fault not in {"route", "decode"}:
            assert record["provider"] == "fake"
        assert any(reason in str(record["reason"]) for reason in REASONS[fault]), record
    decoded_faults = [r for r in sink.by_topic("err") if r["event_id"] is None]
    assert len(decoded_faults) == sum(1 for s in marked.values() if s == "decode")
    assert all(r["error_class"] == "internal_error" for r in decoded_faults)
    assert all(str(r["reason"]).startswith(REASONS["decode"][0]) for r in decoded_faults)
    # No order stayed blocked: every unmarked event was sent and accepted, in order.
    accepted = {r["event_id"] for r in sink.by_topic("res") if r["outcome"] == "accepted"}
    unmarked = {f"{o.decode()}-{s}" for o, s in _keys_and_seqs(parts)} - set(marked)
    assert unmarked <= accepted
    assert_in_input_order(sender.seen)


@pytest.mark.parametrize("seed", range(3))
async def test_a_build_fault_on_a_coalescing_account_ends_at_intake_and_supersedes_nothing(
    seed: int,
) -> None:
    """Where the account coalesces, the request is built at intake: an event whose build fails
    ends there (``internal_error``) and never supersedes the events queued before it, so each
    order's last buildable event is still sent."""
    parts, marked = workload(seed, "build")
    source = FakeSource(parts)
    sink = RefusingSink(refuse=lambda _: False)
    sender = FaultySender(seed=seed)
    engine = make(source, sink, sender, DeliverySettings(coalesce={"acct": True}))
    records = await run_to_the_end(engine, source, sink, parts)
    by_event = {r["event_id"]: r for r in records}
    for event_id in marked:
        assert by_event[event_id]["error_class"] == "internal_error"
        assert str(by_event[event_id]["reason"]).startswith("build: InjectedFault")
    last_unmarked: dict[str, int] = {}
    for key, seq in _keys_and_seqs(parts):
        if f"{key.decode()}-{seq}" not in marked:
            last_unmarked[key.decode()] = max(seq, last_unmarked.get(key.decode(), 0))
    for order, seq in last_unmarked.items():
        assert by_event[f"{order}-{seq}"]["outcome"] == "accepted", by_event[f"{order}-{seq}"]
    assert_in_input_order(sender.seen)


def _keys_and_seqs(parts: dict[int, list[ConsumedRecord]]) -> list[tuple[bytes, int]]:
    import orjson

    out = []
    for records in parts.values():
        for r in records:
            assert r.key is not None
            assert r.value is not None
            out.append((r.key, orjson.loads(r.value)["sequence"]))
    return out


async def test_a_refused_fallback_stops_the_engine_with_a_failure() -> None:
    parts, _ = workload(seed=11, stage="publish", partitions=1, orders=3)
    source = FakeSource(parts)
    sink = RefusingSink(refuse=lambda _: True, refuse_topic="err")  # nothing can be written
    engine = make(source, sink, FaultySender())
    await engine.on_assigned(source.assignment())
    with anyio.fail_after(10):
        await engine.run()  # returns by itself: the failure stopped it
    assert engine.failure is not None
    assert source.commits.get(TP(INPUT, 0), 0) == 0  # nothing is committed past it


async def test_a_producer_that_cannot_write_any_more_stops_the_engine() -> None:
    parts, _ = workload(seed=12, stage="publish", partitions=1, orders=3)
    source = FakeSource(parts)
    sink = RefusingSink(refuse=lambda _: True, error=ProducerFailedError)
    engine = make(source, sink, FaultySender())
    await engine.on_assigned(source.assignment())
    with anyio.fail_after(10):
        await engine.run()  # returns by itself
    assert isinstance(engine.failure, ProducerFailedError)
    assert sink.by_topic("err") == []  # no fallback: nothing written through that producer
