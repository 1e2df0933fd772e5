"""YCloud adapter (a Meta BSP): the ``order_status`` template via ``sendDirectly`` (default) or
the queued endpoint. Pure: builds the request and classifies the answer; never sends or logs.

API pages followed (see docs/providers.md):
- https://docs.ycloud.com/reference/whatsapp_message-send-directly and .../whatsapp_message-send
- https://docs.ycloud.com/reference/errors (error envelope, 409 ALREADY_EXISTS, 429 Retry-After)
- https://docs.ycloud.com/reference/rate-limits

Status mapping (canonical -> ``order.status``, Meta's vocabulary), overridable per account:

    pending            skip (gap: set by ``order_details``; map to "pending" where allowed)
    processing         processing
    partially_shipped  partially_shipped
    shipped            shipped
    completed          completed
    canceled           canceled
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import httpx
import orjson
from pydantic import Field, SecretStr

from connector.contract.events import CanonicalStatus, OrderStatusChanged
from connector.providers.account import AccountSettings
from connector.providers.base import BuiltRequest, OutcomeKind, ProviderOutcome
from connector.providers.classify import (
    as_code,
    by_http_status,
    clip,
    json_object,
    retry_after,
)
from connector.providers.meta import (
    META_STATUSES,
    WHATSAPP_STATUS_MAP,
    WhatsAppAdapter,
    meta_code_outcome,
    order_status_template,
    template_identity,
)
from connector.providers.request import JSON_CONTENT_TYPE, Endpoint, recipient_phone

_E164 = r"^\+[1-9][0-9]{6,14}$"
_PATHS = {"sendDirectly": "/v2/whatsapp/messages/sendDirectly", "queued": "/v2/whatsapp/messages"}
# 403 codes that concern the whole account, not this one event: stop and alert.
_ACCOUNT_FORBIDDEN = frozenset({"FORBIDDEN", "BALANCE_INSUFFICIENT"})
_TEMPLATE_UNAVAILABLE = "WHATSAPP_TEMPLATE_UNAVAILABLE"
_CODE_SHAPE = re.compile(r"^[A-Z0-9_]{1,64}$")


class YCloudAccount(AccountSettings):
    """A YCloud WhatsApp sender (one business number on a YCloud account)."""

    NATIVE_STATUSES: ClassVar[frozenset[str] | None] = META_STATUSES
    DEFAULT_STATUS_MAP: ClassVar[Mapping[CanonicalStatus, str]] = WHATSAPP_STATUS_MAP

    provider: Literal["ycloud"] = "ycloud"
    base_url: str = "https://api.ycloud.com"
    api_key: SecretStr
    sender: Annotated[str, Field(pattern=_E164)]
    endpoint: Literal["sendDirectly", "queued"] = "sendDirectly"
    template_name: str | None = None
    language: str = "en_US"
    rate_per_second: Annotated[float, Field(gt=0)] | None = 80.0
    # The WhatsApp Business Account owning the templates (``templates ensure``/``status``).
    waba_id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")] | None = None


class YCloudProvider(WhatsAppAdapter[YCloudAccount]):
    """Sends ``order_status`` templates through YCloud; ``externalId`` carries the event id."""

    kind: ClassVar[str] = "ycloud"
    __slots__ = ("_endpoint",)

    def __init__(self, settings: YCloudAccount) -> None:
        key = settings.api_key.get_secret_value()
        super().__init__(settings, sender=settings.sender, secrets=[key])
        self._endpoint = Endpoint(
            settings.base_url + _PATHS[settings.endpoint], [JSON_CONTENT_TYPE, ("X-API-Key", key)]
        )

    def _order_request(
        self, event: OrderStatusChanged, reference_id: str, order: dict[str, str]
    ) -> BuiltRequest:
        settings = self._settings
        to = recipient_phone(event)  # YCloud takes E.164 with the plus
        name, language = template_identity(event, settings.template_name, settings.language)
        body = {
            "from": settings.sender,
            "to": to,
            "type": "template",
            "template": order_status_template(name, language, reference_id, order),
            "externalId": event.event_id,
        }
        return BuiltRequest(self._endpoint.post(orjson.dumps(body)), template=(name, language))

    def _classify(self, response: httpx.Response, attempt: int) -> ProviderOutcome:
        status = response.status_code
        body = json_object(response)
        if 200 <= status < 300:
            return self._message(status, body, attempt, response)
        error = body.get("error") if body is not None else None
        if not isinstance(error, dict):
            return by_http_status(response, provider=self.kind)
        code = error.get("code")
        code_text = str(code) if isinstance(code, str) and _CODE_SHAPE.match(code) else None
        detail = clip(f"ycloud {status} {code_text or ''}: {error.get('message') or ''}")
        wait = retry_after(response)
        meta_error = error.get("whatsappApiError")
        if isinstance(meta_error, dict):
            meta_code = as_code(meta_error.get("code"))
            if meta_code is not None:
                meta_detail = clip(
                    f"{detail} (meta {meta_code}: {meta_error.get('message') or ''})"
                )
                outcome = meta_code_outcome(
                    meta_code,
                    attempt=attempt,
                    http_status=status,
                    detail=meta_detail,
                    header_retry_after=wait,
                )
                if outcome is not None:
                    return outcome
        if status == 409 and code_text == "ALREADY_EXISTS":
            return ProviderOutcome(
                OutcomeKind.ALREADY_DONE, http_status=status, error_code=code_text, detail=detail
            )
        if status == 429:
            return ProviderOutcome(
                OutcomeKind.RETRYABLE,
                http_status=status,
                error_code=code_text,
                detail=detail,
                retry_after=wait,
            )
        if status == 401 or (status == 403 and code_text in _ACCOUNT_FORBIDDEN):
            # PROVIDERS.md lists these as permanent; they concern every send on the account
            # (bad API key, no balance), so they stop the account instead of failing one event.
            return ProviderOutcome(
                OutcomeKind.CONFIGURATION, http_status=status, error_code=code_text, detail=detail
            )
        if status in (400, 403, 404):
            return ProviderOutcome(
                OutcomeKind.PERMANENT,
                http_status=status,
                error_code=code_text,
                detail=detail,
                pause_template=code_text == _TEMPLATE_UNAVAILABLE,
            )
        return by_http_status(response, provider=self.kind, detail=detail, error_code=code_text)

    def _message(
        self, status: int, body: dict[str, Any] | None, attempt: int, response: httpx.Response
    ) -> ProviderOutcome:
        if body is None:
            return ProviderOutcome(
                OutcomeKind.ACCEPTED,
                http_status=status,
                detail="ycloud accepted the request but the answer had no message",
            )
        message_id = body.get("id") if isinstance(body.get("id"), str) else None
        state = body.get("status")
        if state == "failed":
            meta_code = as_code(body.get("errorCode"))
            detail = clip(
                f"ycloud message failed: {body.get('errorCode')} {body.get('errorMessage') or ''}"
            )
            if meta_code is not None:
                outcome = meta_code_outcome(
                    meta_code, attempt=attempt, http_status=status, detail=detail
                )
                if outcome is not None:
                    return outcome
            return ProviderOutcome(
                OutcomeKind.PERMANENT,
                message_id=message_id,
                http_status=status,
                error_code=str(meta_code) if meta_code is not None else None,
                detail=detail,
            )
        kind = OutcomeKind.DELIVERED if state in ("delivered", "read") else OutcomeKind.ACCEPTED
        note = None if message_id else "ycloud accepted the request but returned no message id"
        return ProviderOutcome(kind, message_id=message_id, http_status=status, detail=note)


__all__ = ["YCloudAccount", "YCloudProvider"]
