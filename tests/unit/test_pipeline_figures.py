"""The pipeline benchmark's figures: ordering violations, loss, duplicates and CPU windows."""

from __future__ import annotations

from benchmarks.harness import ResourceSampler, Workload
from benchmarks.pipeline import build_workload, delivery_figures, percentile, prefix_of


def _workload() -> Workload:
    meta = {
        "a-e1": ("a", 1),
        "a-e2": ("a", 2),
        "a-e3": ("a", 3),
        "b-e1": ("b", 1),
        "b-e2": ("b", 2),
    }
    records = [(m[0].encode(), eid.encode()) for eid, m in meta.items()]
    return Workload(records=records, meta=meta, order_ids=["a", "b"])


def _request(seq: int, event_id: str, at: float) -> dict[str, object]:
    return {"seq": seq, "event_id": event_id, "received_at": at}


def test_in_order_delivery_has_no_violations_loss_or_duplicates() -> None:
    workload = _workload()
    produced = dict.fromkeys(workload.meta, 100.0)
    requests = [
        _request(1, "a-e1", 100.010),
        _request(2, "b-e1", 100.020),
        _request(3, "a-e2", 100.030),
        _request(4, "b-e2", 100.040),
        _request(5, "a-e3", 100.050),
    ]
    figures = delivery_figures(workload, produced, requests, set(workload.meta))
    assert figures["ordering_violations"] == 0
    assert figures["lost"] == 0
    assert figures["duplicate_deliveries"] == 0
    assert figures["provider_requests"] == 5
    assert figures["produce_to_provider_ms"]["p50"] == 30.0
    assert figures["produce_to_provider_ms"]["max"] == 50.0


def test_arrival_order_not_log_position_decides_violations() -> None:
    workload = _workload()
    produced = dict.fromkeys(workload.meta, 0.0)
    # Listed out of order on purpose: seq (arrival) says a-e2 came before a-e1.
    requests = [
        _request(2, "a-e1", 1.0),
        _request(1, "a-e2", 1.0),
        _request(3, "a-e3", 1.0),
        _request(4, "b-e1", 1.0),
        _request(5, "b-e1", 1.0),  # a retry: duplicate, not a violation
        _request(6, "x-e9", 1.0),  # not ours
    ]
    outcomes = {"a-e1", "a-e2", "a-e3", "b-e1"}
    figures = delivery_figures(workload, produced, requests, outcomes)
    assert figures["ordering_violations"] == 1
    assert figures["orders_with_violations"] == 1
    assert figures["duplicate_deliveries"] == 1
    assert figures["unexpected_requests"] == 1
    assert figures["events_without_request"] == 1  # b-e2
    assert figures["events_without_outcome"] == 1  # b-e2
    assert figures["lost"] == 1


def test_an_event_with_an_outcome_but_no_request_is_not_lost() -> None:
    workload = _workload()
    produced = dict.fromkeys(workload.meta, 0.0)
    requests = [_request(i, eid, 1.0) for i, eid in enumerate(["a-e1", "a-e2", "b-e1"], 1)]
    figures = delivery_figures(workload, produced, requests, set(workload.meta))
    assert figures["events_without_request"] == 2
    assert figures["lost"] == 0


def test_percentile_picks_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile([], 0.5) is None


def test_cpu_between_samples_is_interpolated() -> None:
    sampler = ResourceSampler(pid=0)
    sampler.samples = [(10.0, 1.0, 0), (11.0, 2.0, 0), (13.0, 6.0, 0)]
    assert sampler.cpu_at(9.0) == 1.0
    assert sampler.cpu_at(10.5) == 1.5
    assert sampler.cpu_at(12.0) == 4.0
    assert sampler.cpu_at(20.0) == 6.0


def test_workload_prefix_keeps_whole_orders_and_sequences() -> None:
    workload = build_workload(events=200, orders=20, seed=3)
    assert len(workload.records) == 200
    part = prefix_of(workload, 4)
    assert len(part.records) == 40
    assert set(part.order_ids) == {oid for oid, _ in part.meta.values()}
    for order_id in part.order_ids:
        sequences = [seq for oid, seq in part.meta.values() if oid == order_id]
        assert sequences == list(range(1, 11))
