"""Replay verdicts from the ledger, and the ledger record round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connector.contract.events import OrderStatusChanged
from connector.core.ledger import Delivery, PartitionLedger, Verdict, delivery_of, judge

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(seq: int | None, status: str = "shipped", *, at: datetime = T0) -> OrderStatusChanged:
    return OrderStatusChanged(
        event_id=f"o1-{seq}-{status}", occurred_at=at, order_id="o1", status=status, sequence=seq
    )


def verdict(e: OrderStatusChanged, last: Delivery | None, **kw: object) -> Verdict:
    opts: dict[str, object] = {
        "provider_kind": "meta",
        "now": T0,
        "max_age": None,
        "guard": "enforce",
        **kw,
    }
    return judge(e, last, **opts)  # type: ignore[arg-type]


def test_duplicate_stale_expired_and_guard() -> None:
    last = delivery_of(event(3))
    assert verdict(event(3), last) is Verdict.DUPLICATE
    assert verdict(event(2, "processing"), last) is Verdict.STALE
    assert verdict(event(4, "completed"), last) is Verdict.SEND
    old = event(5, at=T0 - timedelta(days=30))
    assert verdict(old, last, max_age=timedelta(days=7)) is Verdict.EXPIRED
    done = delivery_of(event(4, "completed"))
    assert verdict(event(5), done) is Verdict.INVALID_TRANSITION
    assert verdict(event(5), done, guard="warn") is Verdict.SEND
    assert verdict(event(5), done, provider_kind="zonos") is Verdict.SEND


def test_stale_by_event_time_without_sequences() -> None:
    last = delivery_of(event(None, at=T0))
    assert verdict(event(None, "processing", at=T0 - timedelta(minutes=1)), last) is Verdict.STALE
    assert verdict(event(None, "completed", at=T0 + timedelta(minutes=1)), last) is Verdict.SEND


def test_ledger_record_round_trips_through_load() -> None:
    ledger = PartitionLedger()
    value = ledger.record("o1", "meta:1:ref", delivery_of(event(3)))
    restored = PartitionLedger()
    restored.load(b"o1", value)
    assert restored.last("o1", "meta:1:ref") == delivery_of(event(3))
    restored.load(b"o1", None)
    assert restored.last("o1", "meta:1:ref") is None
