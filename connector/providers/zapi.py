"""Z-API adapter: ``order-status-update`` re-sending the full order with every update.
Pure: builds the request and classifies the answer; never sends or logs. The instance token is
part of the URL path, so requests built here hide it from ``repr``: never log a Z-API URL.

API pages followed (see docs/providers.md):
- https://developer.z-api.io/en/message/order-status-update (request, 200/405/415)
- https://developer.z-api.io/en/security/client-token (Client-Token header)

Status mapping (canonical -> ``orderStatus``), overridable per account with ``status_map``:

    pending            pending
    processing         processing
    partially_shipped  skip (gap: Z-API has no such status; map to "processing" to send it with
                       ``partially_shipped_message`` as text, or to "error")
    shipped            shipped
    completed          completed
    canceled           canceled
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final, Literal

import httpx
import orjson
from pydantic import Field, SecretStr

from connector.contract.events import CanonicalStatus, OrderStatusChanged
from connector.errors import MissingFieldError
from connector.providers.account import SKIP, AccountAdapter, AccountSettings
from connector.providers.base import BuiltRequest, OutcomeKind, ProviderOutcome
from connector.providers.classify import (
    by_http_status,
    clip,
    json_object,
    retry_after,
)
from connector.providers.request import JSON_CONTENT_TYPE, Endpoint, recipient_phone

ZAPI_STATUSES: Final = frozenset({"pending", "processing", "shipped", "completed", "canceled"})
# Z-API has no partially_shipped: a skip by default (or map it, with partially_shipped_message).
ZAPI_STATUS_MAP: Final[Mapping[CanonicalStatus, str]] = MappingProxyType(
    {
        CanonicalStatus.PENDING: "pending",
        CanonicalStatus.PROCESSING: "processing",
        CanonicalStatus.PARTIALLY_SHIPPED: SKIP,
        CanonicalStatus.SHIPPED: "shipped",
        CanonicalStatus.COMPLETED: "completed",
        CanonicalStatus.CANCELED: "canceled",
    }
)
_PATH_SEGMENT = r"^[A-Za-z0-9_-]+$"


def _decimal_as_json_number(value: object) -> orjson.Fragment:
    """orjson ``default``: Decimal amounts become exact JSON numbers (Z-API wants numbers)."""
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f"))
    raise TypeError(f"cannot serialise {type(value).__name__}")


class ZApiAccount(AccountSettings):
    """A Z-API instance (one phone-linked WhatsApp Business session)."""

    NATIVE_STATUSES: ClassVar[frozenset[str] | None] = ZAPI_STATUSES
    DEFAULT_STATUS_MAP: ClassVar[Mapping[CanonicalStatus, str]] = ZAPI_STATUS_MAP

    provider: Literal["zapi"] = "zapi"
    base_url: str = "https://api.z-api.io"
    instance_id: Annotated[str, Field(pattern=_PATH_SEGMENT)]
    instance_token: SecretStr  # part of the URL path
    client_token: SecretStr
    # Text sent as ``message`` when a partially_shipped event is mapped to another status
    # (status_map: {partially_shipped: processing}) and carries no description of its own.
    partially_shipped_message: str | None = "Part of your order has been shipped."


class ZApiProvider(AccountAdapter[ZApiAccount]):
    """Sends Z-API ``order-status-update`` requests with the whole order re-sent each time."""

    kind: ClassVar[str] = "zapi"
    __slots__ = ("_endpoint",)

    def __init__(self, settings: ZApiAccount) -> None:
        token = settings.instance_token.get_secret_value()
        client = settings.client_token.get_secret_value()
        super().__init__(settings, sender=settings.instance_id, secrets=[token, client])
        self._endpoint = Endpoint(
            f"{settings.base_url}/instances/{settings.instance_id}/token/{token}"
            "/order-status-update",
            [("Client-Token", client), JSON_CONTENT_TYPE],
        )

    def _order_ref(self, event: OrderStatusChanged) -> str:
        return event.zapi.reference_id if event.zapi is not None else event.order_id

    def build_request(self, event: OrderStatusChanged) -> BuiltRequest | ProviderOutcome:
        status = self._status.resolve(event)
        if isinstance(status, ProviderOutcome):
            return status
        phone = recipient_phone(event)[1:]  # digits only, country code first
        refs = event.zapi
        if refs is None:
            raise MissingFieldError(
                "missing required field 'zapi.message_id' (and zapi.reference_id, "
                "zapi.order_request_id)",
                field="zapi.message_id",
            )
        if event.payment_status is None:
            raise MissingFieldError(
                "missing required field 'payment_status'", field="payment_status"
            )
        order = event.order
        if order is None:
            raise MissingFieldError("missing required field 'order'", field="order")
        order_body: dict[str, Any] = {
            "currency": order.currency,
            "products": [
                {
                    "productId": item.product_id,
                    "name": item.name,
                    "value": item.amount,
                    "quantity": item.quantity,
                    "isCustomItem": item.is_custom_item,
                }
                for item in order.items
            ],
        }
        if order.discount is not None:
            order_body["discount"] = order.discount
        if order.tax is not None:
            order_body["tax"] = order.tax
        if order.shipping is not None:
            order_body["shipping"] = order.shipping
        body: dict[str, Any] = {
            "phone": phone,
            "messageId": refs.message_id,
            "referenceId": refs.reference_id,
            "orderRequestId": refs.order_request_id,
            "orderStatus": status,
            "paymentStatus": event.payment_status.value,
            "order": order_body,
        }
        message = event.description
        if not message and event.status is CanonicalStatus.PARTIALLY_SHIPPED:
            message = self._settings.partially_shipped_message
        if message:
            body["message"] = message
        return BuiltRequest(
            self._endpoint.post(orjson.dumps(body, default=_decimal_as_json_number))
        )

    def _classify(self, response: httpx.Response, attempt: int) -> ProviderOutcome:
        status = response.status_code
        body = json_object(response)
        error = body.get("error") if body is not None else None
        error_text = clip(str(error)) if error is not None else None
        detail = f"z-api {status}: {error_text}" if error_text else None
        if 200 <= status < 300:
            ids = body or {}
            message_id = next(
                (ids[k] for k in ("messageId", "id", "zaapId") if isinstance(ids.get(k), str)),
                None,
            )
            if message_id is None and error_text is not None:
                return ProviderOutcome(OutcomeKind.PERMANENT, http_status=status, detail=detail)
            return ProviderOutcome(
                OutcomeKind.ACCEPTED,
                message_id=message_id,
                http_status=status,
                detail=None if message_id else "z-api accepted the request but returned no id",
            )
        if error_text is not None and "client-token" in error_text.lower():
            return ProviderOutcome(
                OutcomeKind.CONFIGURATION,
                http_status=status,
                error_code="client_token",
                detail=detail,
            )
        if status == 429:
            return ProviderOutcome(
                OutcomeKind.RETRYABLE,
                http_status=status,
                detail=detail,
                retry_after=retry_after(response),
            )
        if status == 405:
            detail = detail or "z-api 405: wrong HTTP method (client bug)"
        elif status == 415:
            detail = detail or "z-api 415: missing or wrong Content-Type (client bug)"
        return by_http_status(response, provider=self.kind, detail=detail)


__all__ = ["ZAPI_STATUSES", "ZAPI_STATUS_MAP", "ZApiAccount", "ZApiProvider"]
