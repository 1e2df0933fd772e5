"""Transition refusals: which provider answers mean "the order cannot go back to that status".

Pure reading of plain values (an outcome's error code, a webhook's error code); no I/O. Whether
a refusal is the harmless echo of a late request is decided with the engine's per-order state
(``connector.core.ambiguity.refusal_is_late_echo`` via ``connector.delivery.flow``), never here.

* Meta (and YCloud, Meta behind it): error **2046** "New order status was not correctly
  transitioned", only by webhook (``meta.INVALID_TRANSITION_CODE``). Meta does not say which
  status the order is in.
* Zonos: HTTP 200 ``{"error": "... cannot be moved to order status: A while in status: B"}`` with
  B terminal (``zonos.TERMINAL_BLOCKS``), classified as ``blocked:<B>``: the order is in B.
  Transient blockers (fraud review, hold, label processing) are not refusals of going back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

from connector.providers.meta import INVALID_TRANSITION_CODE
from connector.providers.zonos import TERMINAL_BLOCKS

__all__ = ["TransitionRefusal", "sent_status", "transition_refusal"]

_WHATSAPP: Final = frozenset({"meta", "ycloud"})
_BLOCKED: Final = "blocked:"


@dataclass(frozen=True, slots=True)
class TransitionRefusal:
    """A provider refused a status change. ``provider_status``: the status the provider says
    the order is in (Zonos names it; Meta does not: None)."""

    provider_status: str | None = None


def transition_refusal(
    provider_kind: str, error_code: str | int | None
) -> TransitionRefusal | None:
    """The refusal ``error_code`` stands for, or None when it is no refusal of going back.

    ``error_code`` as ``ProviderOutcome.error_code`` or a webhook error carries it (Meta's
    numeric codes as strings or ints)."""
    if error_code is None:
        return None
    code = str(error_code).strip()
    if provider_kind in _WHATSAPP:
        return TransitionRefusal() if code == str(INVALID_TRANSITION_CODE) else None
    if provider_kind == "zonos" and code.startswith(_BLOCKED):
        status = code[len(_BLOCKED) :].upper()
        return TransitionRefusal(status) if status in TERMINAL_BLOCKS else None
    return None


def sent_status(provider_kind: str, body: bytes | None) -> str | None:
    """The provider-native status a built request carries, where the engine does not know it
    from the event: Zonos's ``orderStatus`` (what "while in status: B" is compared with).
    None for other providers (Meta's and YCloud's canonical statuses are their native ones)
    and for a body that cannot be read."""
    if provider_kind != "zonos" or not body:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    status = parsed.get("orderStatus") if isinstance(parsed, dict) else None
    return status if isinstance(status, str) else None
