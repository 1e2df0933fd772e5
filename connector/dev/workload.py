"""Realistic ``order.status.changed`` streams for the demo, integration tests and benchmarks.

Pure and seeded: the same arguments give the same events. Nothing here talks to Kafka or HTTP.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from connector.contract.events import (
    CanonicalStatus,
    OrderDetails,
    OrderItem,
    OrderStatusChanged,
    PaymentStatus,
    Recipient,
    WhatsAppRefs,
    ZApiRefs,
    ZonosRefs,
)

S = CanonicalStatus
# A vendor-settable Zonos state outside the canonical six, sent as ``native_status``.
ZONOS_SHIPMENT_READY = "VENDOR_SHIPMENT_READY"

# Realistic lifecycles per provider family (every one is a valid Meta transition sequence).
_WHATSAPP_FLOWS: tuple[tuple[S, ...], ...] = (
    (S.PROCESSING, S.SHIPPED, S.COMPLETED),
    (S.PROCESSING, S.PARTIALLY_SHIPPED, S.SHIPPED, S.COMPLETED),
    (S.PROCESSING, S.SHIPPED),
    (S.PROCESSING, S.CANCELED),
)
_ZAPI_FLOWS: tuple[tuple[S, ...], ...] = (
    (S.PENDING, S.PROCESSING, S.SHIPPED, S.COMPLETED),
    (S.PROCESSING, S.SHIPPED, S.COMPLETED),
    (S.PENDING, S.CANCELED),
)
_ZONOS_FLOWS: tuple[tuple[S, ...], ...] = (
    (S.PROCESSING, S.SHIPPED),
    (S.PROCESSING, S.COMPLETED),
)


@dataclass(frozen=True, slots=True)
class OrderScript:
    """One order's events, in the order they must reach the provider."""

    order_id: str
    provider: str
    account: str
    events: tuple[OrderStatusChanged, ...]


@dataclass(slots=True)
class WorkloadSpec:
    orders: int
    accounts: Mapping[str, str]  # provider kind -> account name
    seed: int = 7
    events_per_order: int | None = None  # fixed count (cycled statuses) instead of realistic flows
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Share of WhatsApp orders that end with an extra, invalid transition (sandbox answers 2046).
    invalid_transition_share: float = 0.0


def _items(rng: random.Random, n: int) -> tuple[OrderItem, ...]:
    return tuple(
        OrderItem(
            product_id=f"sku-{rng.randrange(10_000):04d}",
            name=rng.choice(("Coffee beans 1kg", "Ceramic mug", "Grinder", "Filter papers")),
            amount=Decimal(rng.randrange(500, 20_000)) / 100,
            quantity=rng.randrange(1, 4),
        )
        for _ in range(n)
    )


def _flow(rng: random.Random, provider: str, spec: WorkloadSpec) -> tuple[S | str, ...]:
    if spec.events_per_order is not None:
        # Statuses that may follow each other any number of times on every provider.
        cycle: tuple[S | str, ...] = {
            "meta": (S.PROCESSING, S.PARTIALLY_SHIPPED, S.SHIPPED),
            "ycloud": (S.PROCESSING, S.PARTIALLY_SHIPPED, S.SHIPPED),
            "zapi": (S.PENDING, S.PROCESSING, S.SHIPPED),
        }.get(provider, (S.PROCESSING, ZONOS_SHIPMENT_READY))
        return tuple(cycle[i % len(cycle)] for i in range(spec.events_per_order))
    flows = {"meta": _WHATSAPP_FLOWS, "ycloud": _WHATSAPP_FLOWS, "zapi": _ZAPI_FLOWS}.get(
        provider, _ZONOS_FLOWS
    )
    flow = rng.choice(flows)
    if provider in ("meta", "ycloud") and rng.random() < spec.invalid_transition_share:
        flow = (
            (*flow, S.SHIPPED)
            if flow[-1] in (S.COMPLETED, S.CANCELED)
            else (*flow, S.COMPLETED, S.PROCESSING)
        )
    return flow


def build_orders(spec: WorkloadSpec) -> list[OrderScript]:
    rng = random.Random(spec.seed)
    kinds = sorted(spec.accounts)
    scripts: list[OrderScript] = []
    for n in range(spec.orders):
        provider = kinds[n % len(kinds)]
        account = spec.accounts[provider]
        order_id = f"ord-{spec.seed}-{n:06d}"
        phone = f"+55119{rng.randrange(10**7, 10**8)}"
        paid = rng.random() < 0.5
        items = _items(rng, rng.randrange(1, 3))
        t0 = spec.start + timedelta(seconds=n)
        events = []
        for seq, status in enumerate(_flow(rng, provider, spec), start=1):
            events.append(
                OrderStatusChanged(
                    event_id=f"{order_id}-e{seq}",
                    occurred_at=t0 + timedelta(minutes=seq),
                    order_id=order_id,
                    status=status if isinstance(status, S) else None,
                    native_status=None if isinstance(status, S) else status,
                    sequence=seq,
                    account=account,
                    description=f"Your order is {str(status).lower().replace('_', ' ')}",
                    payment_status=PaymentStatus.PAID if paid else PaymentStatus.PENDING,
                    recipient=Recipient(phone=phone, locale="pt_BR"),
                    order=OrderDetails(currency="BRL", items=items),
                    whatsapp=WhatsAppRefs(reference_id=f"ref.{order_id}")
                    if provider in ("meta", "ycloud")
                    else None,
                    zapi=ZApiRefs(
                        message_id=f"msg-{order_id}",
                        reference_id=f"zref-{order_id}",
                        order_request_id=f"req-{order_id}",
                    )
                    if provider == "zapi"
                    else None,
                    zonos=ZonosRefs(store="9999", order_id=f"9999-{n}")
                    if provider == "zonos"
                    else None,
                )
            )
        scripts.append(OrderScript(order_id, provider, account, tuple(events)))
    return scripts


def interleave(scripts: Sequence[OrderScript], seed: int = 11) -> Iterator[OrderStatusChanged]:
    """A random merge of the orders' event lists that keeps each order's own order."""
    rng = random.Random(seed)
    cursors = [[s.events, 0] for s in scripts if s.events]
    while cursors:
        i = rng.randrange(len(cursors))
        events, pos = cursors[i]
        assert isinstance(events, tuple)
        assert isinstance(pos, int)
        yield events[pos]
        if pos + 1 == len(events):
            cursors[i] = cursors[-1]
            cursors.pop()
        else:
            cursors[i][1] = pos + 1
