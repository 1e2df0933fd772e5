"""Sans-I/O state of the sandbox: order state machines, token buckets, scripted rules, the
accepted-request log and answer counters.

Pure and synchronous: no sockets, no asyncio, no clocks read here (callers pass ``now``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from connector.core.ratelimit import PairLimiter
from connector.dev.sandbox.config import RateLimit, Rule, TemplateStatusChange

META_STATUSES = frozenset(
    {"pending", "processing", "partially_shipped", "shipped", "completed", "canceled"}
)
META_TERMINAL = frozenset({"completed", "canceled"})
META_INVALID_TRANSITION = 2046
META_CANCEL_REFUSED = 2047

ZONOS_ALL_STATUSES = frozenset(
    {
        "IGLOBAL_FRAUD_REVIEW",
        "IGLOBAL_ORDER_IN_PROCESS",
        "IGLOBAL_ORDER_ON_HOLD",
        "IGLOBAL_ORDER_CANCELLED",
        "IGLOBAL_LABELS_PROCESSING",
        "VENDOR_PREPARING_ORDER",
        "VENDOR_SHIPMENT_READY",
        "VENDOR_LABELS_PRINTED",
        "VENDOR_LABELS_PRINTED_DATE",
        "VENDOR_CANCELLATION_REQUEST",
        "VENDOR_END_OF_DAY_COMPLETE",
    }
)
# A vendor cannot change the status while the order is in one of these (Zonos status table).
ZONOS_BLOCKING = frozenset(
    {
        "IGLOBAL_LABELS_PROCESSING",
        "IGLOBAL_ORDER_ON_HOLD",
        "IGLOBAL_FRAUD_REVIEW",
        "IGLOBAL_ORDER_CANCELLED",
        "VENDOR_CANCELLATION_REQUEST",
        "VENDOR_END_OF_DAY_COMPLETE",
    }
)

PaymentStatus = Literal["unpaid", "pending", "paid"]


def meta_transition_error(current: str | None, new: str, payment: str) -> int | None:
    """Meta's order_status rules: None when allowed, else 2046 (invalid transition) or 2047
    (cancel refused because a payment succeeded or is pending). An unseen order is pending."""
    cur = current or "pending"
    if cur in META_TERMINAL:
        return META_INVALID_TRANSITION
    if cur != "pending" and new == "pending":
        return META_INVALID_TRANSITION
    if new == "canceled" and payment in ("paid", "pending"):
        return META_CANCEL_REFUSED
    return None


@dataclass(slots=True)
class OrderState:
    status: str | None = None
    payment_status: str | None = None


class OrderBook:
    """Per-order state by (provider, order key). Cleared by reset."""

    __slots__ = ("_orders",)

    def __init__(self) -> None:
        self._orders: dict[tuple[str, str], OrderState] = {}

    def get(self, provider: str, key: str) -> OrderState | None:
        return self._orders.get((provider, key))

    def ensure(self, provider: str, key: str) -> OrderState:
        state = self._orders.get((provider, key))
        if state is None:
            state = self._orders[(provider, key)] = OrderState()
        return state

    def __len__(self) -> int:
        return len(self._orders)

    def clear(self) -> None:
        self._orders.clear()


class TokenBuckets:
    """One token bucket per key (sender, or sender+recipient pair)."""

    __slots__ = ("_buckets", "capacity", "rate")

    _PRUNE_ABOVE = 200_000

    def __init__(self, limit: RateLimit) -> None:
        self.rate = limit.per_second
        self.capacity = limit.capacity
        self._buckets: dict[object, list[float]] = {}

    def take(self, key: object, now: float) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._PRUNE_ABOVE:
                self._prune(now)
            self._buckets[key] = [self.capacity - 1.0, now]
            return 0.0
        tokens = min(self.capacity, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full_after = self.capacity / self.rate
        stale = [k for k, (_, last) in self._buckets.items() if now - last >= full_after]
        for key in stale:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class PairLimits:
    """Meta's pair limit per (provider, sender, recipient): ``PairLimiter``'s rule, no margin."""

    __slots__ = ("_limiter",)

    def __init__(self, limit: RateLimit) -> None:
        period = 1.0 / limit.per_second if limit.enabled else 1.0
        self._limiter = PairLimiter(period_s=period, burst=int(limit.capacity), margin_s=0.0)

    def take(self, key: object, now: float) -> float:
        """Take the pair's message: 0.0 when allowed, else the seconds until it would be."""
        if self._limiter.try_acquire(key, now):
            return 0.0
        return max(1e-3, self._limiter.available_at(key, now) - now)

    def __len__(self) -> int:
        return len(self._limiter)


@dataclass(slots=True)
class ProcessedStatus:
    """The last status the sandbox applied to one order (what the customer saw last)."""

    status: str
    seq: int
    late: bool


@dataclass(slots=True)
class _ActiveRule:
    rule: Rule
    remaining: int


class RuleBook:
    """Scripted answers, consumed first-added first-matched."""

    __slots__ = ("_rules",)

    def __init__(self) -> None:
        self._rules: list[_ActiveRule] = []

    def __bool__(self) -> bool:
        return bool(self._rules)

    def add(self, rule: Rule) -> None:
        self._rules.append(_ActiveRule(rule, rule.count))

    def match(self, provider: str, key: str | None) -> Rule | None:
        for entry in self._rules:
            rule = entry.rule
            if rule.provider is not None and rule.provider != provider:
                continue
            if rule.key is not None and rule.key != key:
                continue
            entry.remaining -= 1
            if entry.remaining <= 0:
                self._rules.remove(entry)
            return rule
        return None

    def snapshot(self) -> list[dict[str, object]]:
        return [{**e.rule.model_dump(), "remaining": e.remaining} for e in self._rules]

    def clear(self) -> None:
        self._rules.clear()


@dataclass(slots=True)
class RecordedRequest:
    """One accepted request. ``outcome`` is "accepted" or "failed:<code>" when the provider
    accepted it but reports a failure asynchronously (Meta 2046/2047, YCloud queued errors)."""

    seq: int
    provider: str
    endpoint: str
    account: str
    target: str
    order_ref: str
    status: str
    event_id: str | None
    message_id: str | None
    traceparent: str | None
    received_at: float
    outcome: str = "accepted"


@dataclass(slots=True)
class RequestLog:
    """Accepted requests in arrival order, numbered from 1. Keeps at most about ``capacity``
    entries (trimmed in chunks of an eighth, so appends stay O(1) amortised)."""

    capacity: int
    _items: list[RecordedRequest] = field(default_factory=list)
    _next_seq: int = 1

    def next_seq(self) -> int:
        seq = self._next_seq
        self._next_seq = seq + 1
        return seq

    def append(self, record: RecordedRequest) -> None:
        items = self._items
        items.append(record)
        if len(items) > self.capacity + max(1, self.capacity // 8):
            del items[: len(items) - self.capacity]

    @property
    def total(self) -> int:
        return self._next_seq - 1

    @property
    def first_seq(self) -> int:
        return self._items[0].seq if self._items else self._next_seq

    @property
    def dropped(self) -> int:
        return self.first_seq - 1

    def __len__(self) -> int:
        return len(self._items)

    def since(self, seq: int, limit: int | None = None) -> list[RecordedRequest]:
        """Records with a sequence number greater than ``seq``, oldest first."""
        start = max(0, seq + 1 - self.first_seq)
        end = None if limit is None else start + max(0, limit)
        return self._items[start:end]

    def clear(self) -> None:
        self._items.clear()
        self._next_seq = 1


class AnswerCounters:
    """Counts of every request by provider and answer label ("200", "400:130429", "reset")."""

    __slots__ = ("by_provider",)

    def __init__(self) -> None:
        self.by_provider: dict[str, dict[str, int]] = {}

    def add(self, provider: str, label: str) -> None:
        counts = self.by_provider.get(provider)
        if counts is None:
            counts = self.by_provider[provider] = {}
        counts[label] = counts.get(label, 0) + 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {p: dict(c) for p, c in self.by_provider.items()}

    def clear(self) -> None:
        self.by_provider.clear()


TEMPLATE_STATUSES = frozenset(
    {"APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED", "IN_APPEAL", "DELETED"}
)


@dataclass(slots=True)
class SandboxTemplate:
    """One template variant created through Meta's or YCloud's template API."""

    provider: str
    waba_id: str
    name: str
    language: str
    category: str
    sub_category: str | None
    components: list[Any]
    status: str
    template_id: str

    def as_dict(self) -> dict[str, Any]:
        """The template as ``GET /_sandbox/templates`` lists it: without its components, the
        id under ``id``."""
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "components"}
        shown["id"] = shown.pop("template_id")
        return shown


class TemplateBook:
    """Templates per (provider, WABA, name, language), in creation order.

    ``(name, language) in book`` asks whether any WABA has it (what ``meta_require_templates``
    checks: a send names a phone number, not a WABA).
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, str, str, str], SandboxTemplate] = {}

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return self.status_of(*key) is not None if isinstance(key, tuple) else False

    def add(self, template: SandboxTemplate) -> bool:
        """Store a new variant; False (nothing stored) when it already exists."""
        key = (template.provider, template.waba_id, template.name, template.language)
        if key in self._items:
            return False
        self._items[key] = template
        return True

    def create_order_status(
        self,
        provider: str,
        waba_id: str,
        name: str,
        language: str,
        sub_category: str | None,
        components: list[Any],
        template_id: str,
    ) -> SandboxTemplate | None:
        """A new order-status variant, UTILITY and approved at once (the sandbox reviews
        nothing); None (nothing stored) when it already exists."""
        template = SandboxTemplate(
            provider,
            waba_id,
            name,
            language,
            "UTILITY",
            sub_category,
            components,
            "APPROVED",
            template_id,
        )
        return template if self.add(template) else None

    def listing(self, provider: str, waba_id: str | None = None) -> list[SandboxTemplate]:
        return [
            t
            for t in self._items.values()
            if t.provider == provider and (waba_id is None or t.waba_id == waba_id)
        ]

    def all(self) -> list[SandboxTemplate]:
        return list(self._items.values())

    def status_of(self, name: str, language: str, provider: str | None = None) -> str | None:
        for template in self._items.values():
            if (
                template.name == name
                and template.language == language
                and (provider is None or template.provider == provider)
            ):
                return template.status
        return None

    def set_status(self, change: TemplateStatusChange) -> int:
        """Move the variants ``change`` names to its status; how many matched."""
        changed = 0
        for template in self._items.values():
            if template.name != change.name:
                continue
            if change.language is not None and template.language != change.language:
                continue
            if change.provider is not None and template.provider != change.provider:
                continue
            template.status = change.status
            changed += 1
        return changed

    def clear(self) -> None:
        self._items.clear()
