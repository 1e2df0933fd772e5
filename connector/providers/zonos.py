"""Zonos/iGlobal adapter: ``updateVendorOrderStatus``. Pure: builds the request and classifies
the answer (errors arrive as HTTP 200 ``{"error": ...}``); never sends or logs. The API secret
travels in the request body: it never appears in an outcome, an exception or a repr.

API page followed (see docs/providers.md):
- https://docs.zonos.com/ (Checkout REST API, "update order status": updateVendorOrderStatus)

Status mapping (canonical -> ``orderStatus``), overridable per account with ``status_map``:

    pending            skip (gap: pending is Zonos-owned)
    processing         VENDOR_PREPARING_ORDER
    partially_shipped  skip (gap: map to VENDOR_SHIPMENT_READY or "error" if preferred)
    shipped            VENDOR_END_OF_DAY_COMPLETE (VERIFY: Zonos has no plain "shipped")
    completed          VENDOR_END_OF_DAY_COMPLETE
    canceled           VENDOR_CANCELLATION_REQUEST (a request to cancel, not a cancel)

Labels printed has two spellings (request definition vs status table); ``labels_printed_status``
picks the one sent, and an event's ``native_status`` may use either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, ClassVar, Final, Literal

import httpx
import orjson
from pydantic import Field, SecretStr

from connector.contract.events import CanonicalStatus, OrderStatusChanged
from connector.errors import InvalidFieldError, MissingFieldError
from connector.providers.account import SKIP, AccountAdapter, AccountSettings
from connector.providers.base import BuiltRequest, OutcomeKind, ProviderOutcome
from connector.providers.classify import (
    by_http_status,
    clip,
    json_object,
)
from connector.providers.request import JSON_CONTENT_TYPE, Endpoint

LABELS_PRINTED: Final = "VENDOR_LABELS_PRINTED"
LABELS_PRINTED_DATE: Final = "VENDOR_LABELS_PRINTED_DATE"
# Blocking states the order leaves by itself (fraud review, hold, label processing): retry later.
TRANSIENT_BLOCKS: Final = frozenset(
    {"IGLOBAL_FRAUD_REVIEW", "IGLOBAL_ORDER_ON_HOLD", "IGLOBAL_LABELS_PROCESSING"}
)
TERMINAL_BLOCKS: Final = frozenset(
    {"VENDOR_END_OF_DAY_COMPLETE", "VENDOR_CANCELLATION_REQUEST", "IGLOBAL_ORDER_CANCELLED"}
)
BLOCKED_RETRY_AFTER_S: Final = 3600.0  # such states last hours
_BLOCKED_BY = re.compile(r"while in status:\s*([A-Za-z0-9_]+)")

# Stable fragments of Zonos's HTTP-200 error texts (lower-cased), checked in this order.
# (fragment, outcome kind, error_code). Texts: see tests/unit/test_classification.py.
_PERMANENT_FRAGMENTS: Final = (
    ("has been cancelled", "order_cancelled"),
    ("cannot parse input", "cannot_parse_input"),
    ("parameter required", "missing_parameter"),
    ("is required", "missing_parameter"),
    ("is not a valid orderid", "invalid_order_id"),
    ("unable to retrieve order", "order_not_found"),
    ("invalid status", "invalid_status"),
    ("is not a valid order status", "invalid_status"),
    ("unable to update order status", "status_not_settable"),
)
ERROR_FRAGMENTS: Final[tuple[tuple[str, OutcomeKind, str], ...]] = (
    ("already has current status", OutcomeKind.ALREADY_DONE, "already_current_status"),
    ("invalid security credentials", OutcomeKind.CONFIGURATION, "invalid_credentials"),
    ("unable to process updatevendororderstatus", OutcomeKind.RETRYABLE, "unable_to_process"),
    *((fragment, OutcomeKind.PERMANENT, code) for fragment, code in _PERMANENT_FRAGMENTS),
)

# The vendor statuses a store may set: pending is Zonos-owned and partially_shipped has none
# (skips by default; VENDOR_SHIPMENT_READY may be mapped to it).
ZONOS_STATUS_MAP: Final[Mapping[CanonicalStatus, str]] = MappingProxyType(
    {
        CanonicalStatus.PENDING: SKIP,
        CanonicalStatus.PROCESSING: "VENDOR_PREPARING_ORDER",
        CanonicalStatus.PARTIALLY_SHIPPED: SKIP,
        CanonicalStatus.SHIPPED: "VENDOR_END_OF_DAY_COMPLETE",
        CanonicalStatus.COMPLETED: "VENDOR_END_OF_DAY_COMPLETE",
        CanonicalStatus.CANCELED: "VENDOR_CANCELLATION_REQUEST",
    }
)


class ZonosAccount(AccountSettings):
    """A Zonos/iGlobal store. The secret is sent in the request body."""

    # Open vocabulary: Zonos adds statuses over time; any upper-case identifier may be mapped.
    NATIVE_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"^[A-Z][A-Z0-9_]*$")
    DEFAULT_STATUS_MAP: ClassVar[Mapping[CanonicalStatus, str]] = ZONOS_STATUS_MAP

    provider: Literal["zonos"] = "zonos"
    base_url: str = "https://api.iglobalstores.com"
    store: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]
    secret: SecretStr
    labels_printed_status: Literal["VENDOR_LABELS_PRINTED", "VENDOR_LABELS_PRINTED_DATE"] = (
        LABELS_PRINTED
    )


class ZonosProvider(AccountAdapter[ZonosAccount]):
    """Sends ``updateVendorOrderStatus`` to Zonos/iGlobal and reads its HTTP-200 errors."""

    kind: ClassVar[str] = "zonos"
    __slots__ = ("_endpoint", "_prefix", "_secret")

    def __init__(self, settings: ZonosAccount) -> None:
        spelling = settings.labels_printed_status
        super().__init__(
            settings,
            sender=settings.store,
            secrets=[settings.secret.get_secret_value()],
            aliases={LABELS_PRINTED: spelling, LABELS_PRINTED_DATE: spelling},
        )
        self._endpoint = Endpoint(
            f"{settings.base_url}/v1/updateVendorOrderStatus",
            [("Accept", "application/json"), JSON_CONTENT_TYPE],
        )
        self._secret = settings.secret
        self._prefix = settings.store + "-"

    def _order_ref(self, event: OrderStatusChanged) -> str:
        """The order number without this store's prefix (``999-1001`` and ``1001`` are one)."""
        order_id = event.zonos.order_id if event.zonos is not None else event.order_id
        return order_id[len(self._prefix) :] if order_id.startswith(self._prefix) else order_id

    def build_request(self, event: OrderStatusChanged) -> BuiltRequest | ProviderOutcome:
        status = self._status.resolve(event)
        if isinstance(status, ProviderOutcome):
            return status
        refs = event.zonos
        if refs is None:
            raise MissingFieldError(
                "missing required field 'zonos.order_id'", field="zonos.order_id"
            )
        store = self._settings.store
        if refs.store is not None and refs.store != store:
            raise InvalidFieldError(
                f"invalid field 'zonos.store': event is for store {refs.store[:40]!r} but account "
                f"'{self._settings.name}' serves store {store!r}",
                field="zonos.store",
            )
        body = {
            "store": store,
            "secret": self._secret.get_secret_value(),
            "orderId": refs.order_id,
            "orderStatus": status,
        }
        return BuiltRequest(self._endpoint.post(orjson.dumps(body)))

    def _classify(self, response: httpx.Response, attempt: int) -> ProviderOutcome:
        status = response.status_code
        if status in (406, 415):
            return ProviderOutcome(
                OutcomeKind.PERMANENT,
                http_status=status,
                detail=f"zonos {status}: Accept/Content-Type refused (client bug)",
            )
        if not 200 <= status < 300:
            return by_http_status(response, provider=self.kind)
        body = json_object(response)
        if body is None:
            return ProviderOutcome(
                OutcomeKind.RETRYABLE,
                http_status=status,
                detail="zonos answered 200 without a JSON object: outcome unknown",
            )
        error = body.get("error")
        if error is None:
            success = body.get("success")
            return ProviderOutcome(
                OutcomeKind.DELIVERED,
                http_status=status,
                detail=clip(str(success)) if success is not None else None,
            )
        text = str(error)
        return classify_zonos_error(text, http_status=status)


def classify_zonos_error(text: str, *, http_status: int | None = 200) -> ProviderOutcome:
    """Classify one Zonos ``error`` text by its stable fragments (callers scrub the detail)."""
    detail = clip(f"zonos: {text}")
    lowered = text.lower()
    blocked = _BLOCKED_BY.search(text)
    if "cannot be moved" in lowered and blocked is not None:
        blocker = blocked.group(1).upper()
        if blocker in TRANSIENT_BLOCKS:
            return ProviderOutcome(
                OutcomeKind.RETRYABLE,
                http_status=http_status,
                error_code=f"blocked:{blocker}",
                detail=detail,
                retry_after=BLOCKED_RETRY_AFTER_S,
            )
        # Terminal blockers, and any blocker Zonos adds later: never spam retries.
        return ProviderOutcome(
            OutcomeKind.PERMANENT,
            http_status=http_status,
            error_code=f"blocked:{blocker}",
            detail=detail,
        )
    for fragment, kind, code in ERROR_FRAGMENTS:
        if fragment in lowered:
            return ProviderOutcome(
                kind,
                http_status=http_status,
                error_code=code,
                detail=detail,
                retry_after=None,
            )
    return ProviderOutcome(
        OutcomeKind.PERMANENT,
        http_status=http_status,
        error_code="unrecognised_error",
        detail=detail,
    )


__all__ = [
    "LABELS_PRINTED",
    "LABELS_PRINTED_DATE",
    "TERMINAL_BLOCKS",
    "TRANSIENT_BLOCKS",
    "ZONOS_STATUS_MAP",
    "ZonosAccount",
    "ZonosProvider",
    "classify_zonos_error",
]
