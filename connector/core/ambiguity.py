"""Ambiguous outcomes: what to do when a request may have reached the provider but got no answer.

Pure decisions for the engine; no clock, no I/O. The invariant they protect, customer-facing:
**the last message a provider processes for an order is the order's newest status.** A timeout
or connection loss after the request was written (``TransportFailure.written``) is not a failure:
the provider may process that request later, after newer statuses of the same order. Rules and
the per-provider choices: ``docs/providers.md`` ("Ambiguous outcomes").

The engine keeps, per order lane, ``settle_until``: until when an ambiguous request of the order
may still land. ``decide_ambiguous`` says what to do with the ambiguous request and moves that
time; ``gate_next`` says when the order's next (newer) request may leave; ``refusal_is_late_echo``
says whether a provider's "invalid transition" refusal is the harmless echo of a late request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from connector.errors import DeliveryError, TransportFailure

__all__ = [
    "PROVIDER_TRAITS",
    "AmbiguityAction",
    "AmbiguityDecision",
    "Gate",
    "LateGuard",
    "ProviderTraits",
    "decide_ambiguous",
    "gate_next",
    "is_ambiguous",
    "refusal_is_late_echo",
    "traits_for",
]


class LateGuard(StrEnum):
    """How a newer request is kept from being overtaken by a late ambiguous one."""

    HOLD = "hold"  # the newer request waits until the settle window has passed: no extra message
    REASSERT = "reassert"  # it goes now; the newest status is sent again after the window


class AmbiguityAction(StrEnum):
    RETRY = "retry"  # send the same request again (it is the order's newest, or the key dedups)
    SUPERSEDE = "supersede"  # drop it: a newer status of the order is queued and goes instead


@dataclass(frozen=True, slots=True)
class ProviderTraits:
    """What a provider offers against late duplicates; statuses are provider-native, as sent.

    ``idempotency_key``: the provider deduplicates a resend of the same request, so a retry and
    a late original are one message. ``refuses_after``: once the provider holds one of these
    statuses it refuses any other (Meta 2046 after completed/canceled; Zonos "cannot be moved
    ... while in status" for its terminal states), so an older request landing late bounces.
    ``same_status_is_noop``: sending the status the order already has changes nothing the
    customer sees (Zonos answers "already has current status"). ``settle_window_s``: how long
    after the client gave up a written request may still be processed.
    """

    idempotency_key: bool = False
    refuses_after: frozenset[str] = frozenset()
    same_status_is_noop: bool = False
    settle_window_s: float = 20.0
    guard: LateGuard = LateGuard.HOLD

    def __post_init__(self) -> None:
        if not (self.settle_window_s >= 0 and math.isfinite(self.settle_window_s)):
            raise ValueError(f"settle_window_s must be finite and >= 0, got {self.settle_window_s}")


_WHATSAPP_TERMINAL: Final = frozenset({"completed", "canceled"})

#: The per-provider choice (docs/providers.md, "Ambiguous outcomes"). No provider we target has
#: an idempotency key (PROVIDERS.md, cross-provider fact 3).
PROVIDER_TRAITS: Final[dict[str, ProviderTraits]] = {
    "meta": ProviderTraits(refuses_after=_WHATSAPP_TERMINAL),
    "ycloud": ProviderTraits(refuses_after=_WHATSAPP_TERMINAL),  # Meta's rules behind YCloud
    "zapi": ProviderTraits(),  # no documented transition rule: every late request would land
    "zonos": ProviderTraits(
        refuses_after=frozenset({"VENDOR_END_OF_DAY_COMPLETE", "VENDOR_CANCELLATION_REQUEST"}),
        same_status_is_noop=True,
    ),
}


def traits_for(
    provider_kind: str,
    *,
    settle_window_s: float | None = None,
    guard: LateGuard | None = None,
) -> ProviderTraits:
    """The provider's traits (unknown providers: none), with account overrides applied."""
    traits = PROVIDER_TRAITS.get(provider_kind, ProviderTraits())
    if settle_window_s is not None:
        traits = replace(traits, settle_window_s=settle_window_s)
    if guard is not None:
        traits = replace(traits, guard=guard)
    return traits


def is_ambiguous(error: DeliveryError) -> bool:
    """Whether a failed attempt may still be processed: no answer, but the request went out."""
    return isinstance(error, TransportFailure) and error.written


@dataclass(frozen=True, slots=True)
class AmbiguityDecision:
    """What to do with an ambiguous request, and until when the order's next one is at risk.

    ``settle_until`` replaces the lane's previous value (it is never earlier). ``extra_message``
    is True when the action may cost the customer a second copy of a status (a retry whose
    original lands too): count it.
    """

    action: AmbiguityAction
    settle_until: float | None
    extra_message: bool


def decide_ambiguous(
    *,
    now: float,
    newer_queued: bool,
    status: str,
    traits: ProviderTraits,
    settle_until: float | None = None,
) -> AmbiguityDecision:
    """Decide for a request of ``status`` whose attempt just ended ambiguous at ``now``.

    ``newer_queued``: a newer status of the same order is already waiting in its lane.
    ``settle_until``: the lane's current value (from earlier ambiguous attempts), if any.

    * With an idempotency key the request is retried: the provider makes the original and the
      retry one message, and once the retry is answered nothing of it can land later.
    * Otherwise, when a newer status is queued, the ambiguous request is superseded (retrying it
      would show the customer an out-of-date status) and the newer one is gated by
      ``gate_next`` until the window has passed.
    * Otherwise it is the order's newest status and is retried: if the original lands too the
      customer sees the same status twice (``extra_message``), which keeps the invariant.
    """
    if traits.idempotency_key:
        return AmbiguityDecision(AmbiguityAction.RETRY, settle_until, extra_message=False)
    window_end = now + traits.settle_window_s
    until = window_end if settle_until is None else max(settle_until, window_end)
    if newer_queued:
        return AmbiguityDecision(AmbiguityAction.SUPERSEDE, until, extra_message=False)
    noop = traits.same_status_is_noop or status in traits.refuses_after
    return AmbiguityDecision(AmbiguityAction.RETRY, until, extra_message=not noop)


@dataclass(frozen=True, slots=True)
class Gate:
    """When the order's next request may leave and, under ``REASSERT``, when to resend.

    ``reassert_at`` is set when the request goes before the window has passed: at that time the
    engine sends the order's newest status again, unless a still newer request was sent after
    the window (which then is the last one the provider processes anyway).
    """

    send_at: float
    reassert_at: float | None = None


def gate_next(
    *, now: float, settle_until: float | None, next_status: str, traits: ProviderTraits
) -> Gate:
    """When a request of ``next_status`` (newer than any ambiguous one of its order) may go."""
    if settle_until is None or now >= settle_until or next_status in traits.refuses_after:
        # nothing can land later, or what lands later bounces off next_status
        return Gate(now)
    if traits.guard is LateGuard.HOLD:
        return Gate(settle_until)
    return Gate(now, reassert_at=settle_until)


def refusal_is_late_echo(
    *,
    refused_status: str,
    newest_status: str,
    refused_is_newest: bool,
    newest_was_ambiguous: bool,
    traits: ProviderTraits,
    provider_status: str | None = None,
) -> bool:
    """Whether an "invalid transition" refusal (Meta 2046, Zonos "cannot be moved") is harmless.

    It is when the provider already holds the order's newest status, so what it refused can only
    be a late copy: an older request of the order landing after the newest
    (``refused_is_newest`` False), or the resend of the newest whose ambiguous original landed
    first (``newest_was_ambiguous``). ``provider_status`` is the status the provider says the
    order is in (Zonos: "while in status: B"); without it (Meta's webhook) the provider is known
    to hold ``newest_status`` only when that status refuses anything after it.
    """
    if refused_is_newest and not newest_was_ambiguous:
        return False  # the newest status itself was refused on its only write: a real error
    if provider_status is not None:
        return provider_status == newest_status
    return newest_status in traits.refuses_after
