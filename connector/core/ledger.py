"""The delivery ledger: per order and provider target, what was last delivered, and the replay
verdicts (duplicate, stale, expired, invalid transition) computed from it. Pure: no I/O, no clock.

Loading and publishing the compacted ledger topic live in ``connector.kafka.ledger_store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

import orjson

from connector.contract.events import OrderStatusChanged

LEDGER_SCHEMA_VERSION: Final = 1

# Providers whose order_status template refuses anything after a terminal status (Meta 2046).
TERMINAL_GUARDED_PROVIDERS: Final = frozenset({"meta", "ycloud"})
TERMINAL_STATUSES: Final = frozenset({"completed", "canceled"})

GuardMode = Literal["enforce", "warn", "off"]


class Verdict(StrEnum):
    """What to do with an event before it is sent."""

    SEND = "send"
    DUPLICATE = "skipped_duplicate"  # this event id (or its sequence) was already delivered
    STALE = "skipped_stale"  # older than what was already delivered for the target
    EXPIRED = "expired"  # older than the configured maximum age
    INVALID_TRANSITION = "invalid_transition"  # the provider would reject it (guard: enforce)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The last event delivered to one provider target of an order."""

    event_id: str
    sequence: int | None
    status: str | None
    occurred_at: datetime

    def to_json(self) -> dict[str, object]:
        return {
            "event_id": self.event_id,
            "sequence": self.sequence,
            "status": self.status,
            "occurred_at": self.occurred_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Delivery:
        seq = data.get("sequence")
        status = data.get("status")
        return cls(
            event_id=str(data["event_id"]),
            sequence=int(seq) if isinstance(seq, int) else None,
            status=str(status) if status is not None else None,
            occurred_at=datetime.fromisoformat(str(data["occurred_at"])),
        )


def delivery_of(event: OrderStatusChanged) -> Delivery:
    status = event.status.value if event.status is not None else event.native_status
    return Delivery(event.event_id, event.sequence, status, event.occurred_at)


def encode_order_entry(order_id: str, targets: dict[str, Delivery]) -> bytes:
    """The ledger record value for one order: every target's last delivery (compaction keeps
    only the newest record per order id, so each record carries the whole order)."""
    return orjson.dumps(
        {
            "v": LEDGER_SCHEMA_VERSION,
            "order_id": order_id,
            "targets": {t: d.to_json() for t, d in targets.items()},
        }
    )


def decode_order_entry(value: bytes) -> dict[str, Delivery]:
    data = orjson.loads(value)
    return {t: Delivery.from_json(d) for t, d in data.get("targets", {}).items()}


class PartitionLedger:
    """The ledger of one input partition, keyed by order id.

    Loaded records are kept as raw bytes and decoded on first lookup: a restore then costs
    one dict store per record, and only the orders that are seen again are ever decoded.
    """

    __slots__ = ("_decoded", "_raw")

    def __init__(self) -> None:
        self._raw: dict[str, bytes] = {}
        self._decoded: dict[str, dict[str, Delivery]] = {}

    def __len__(self) -> int:
        return len(self._raw.keys() | self._decoded.keys())

    def load(self, key: bytes, value: bytes | None) -> None:
        """Apply one ledger record (a ``None`` value is a tombstone: forget the order)."""
        order_id = key.decode("utf-8", "replace")
        self._decoded.pop(order_id, None)
        if value is None:
            self._raw.pop(order_id, None)
        else:
            self._raw[order_id] = value

    def targets(self, order_id: str) -> dict[str, Delivery]:
        found = self._decoded.get(order_id)
        if found is None:
            raw = self._raw.pop(order_id, None)
            found = decode_order_entry(raw) if raw is not None else {}
            self._decoded[order_id] = found
        return found

    def last(self, order_id: str, target: str) -> Delivery | None:
        return self.targets(order_id).get(target)

    def record(self, order_id: str, target: str, delivery: Delivery) -> bytes:
        """Remember ``delivery`` and return the ledger record value to publish for the order."""
        targets = self.targets(order_id)
        targets[target] = delivery
        return encode_order_entry(order_id, targets)


def is_older(event: OrderStatusChanged, last: Delivery) -> bool:
    """By sequence when both have one, else by event time."""
    if event.sequence is not None and last.sequence is not None:
        return event.sequence < last.sequence
    return event.occurred_at < last.occurred_at


def judge(
    event: OrderStatusChanged,
    last: Delivery | None,
    *,
    provider_kind: str,
    now: datetime,
    max_age: timedelta | None,
    guard: GuardMode,
) -> Verdict:
    """The replay verdict for ``event`` given the target's last delivery.

    Precedence: duplicate, stale, expired, invalid transition. A same-sequence event with a
    different id counts as a duplicate (a re-publication of a delivered step).
    """
    if last is not None:
        if event.event_id == last.event_id:
            return Verdict.DUPLICATE
        if event.sequence is not None and event.sequence == last.sequence:
            return Verdict.DUPLICATE
        if is_older(event, last):
            return Verdict.STALE
    if max_age is not None and now - event.occurred_at > max_age:
        return Verdict.EXPIRED
    if guard == "enforce" and would_be_rejected(provider_kind, last):
        return Verdict.INVALID_TRANSITION
    return Verdict.SEND


def would_be_rejected(provider_kind: str, last: Delivery | None) -> bool:
    """Meta and YCloud refuse any order_status after completed or canceled (Meta error 2046)."""
    return (
        provider_kind in TERMINAL_GUARDED_PROVIDERS
        and last is not None
        and last.status in TERMINAL_STATUSES
    )


__all__ = [
    "LEDGER_SCHEMA_VERSION",
    "Delivery",
    "GuardMode",
    "PartitionLedger",
    "Verdict",
    "decode_order_entry",
    "delivery_of",
    "encode_order_entry",
    "is_older",
    "judge",
    "would_be_rejected",
]
