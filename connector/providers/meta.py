"""Meta WhatsApp Cloud API adapter: ``order_status`` template (default) or interactive message.

Pure: builds the ``httpx.Request`` and classifies the answer; never sends, never logs.
API pages followed (see docs/providers.md):
- https://developers.facebook.com/docs/whatsapp/cloud-api/payments-api/payments-in/orders
  (order status template, 2046/2047), .../payments-api/payments-br/orders (pending in Brazil)
- https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
- https://developers.facebook.com/docs/whatsapp/throughput and .../messaging-limits (131056, 4^X)

Status mapping (canonical -> ``order.status``), overridable per account with ``status_map``:

    pending            skip (gap: set by ``order_details``; Brazil accepts "pending": map it)
    processing         processing
    partially_shipped  partially_shipped
    shipped            shipped
    completed          completed
    canceled           canceled   (Meta answers 2047 by webhook if the order is paid)

ChatArchitect and other Meta-compatible endpoints: set ``base_url``, ``api_version`` ("" drops
the version segment) and ``auth_scheme="basic"`` with ``basic_username``; see docs/providers.md.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final, Literal

import httpx
import orjson
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from connector.contract.events import CanonicalStatus, OrderStatusChanged
from connector.errors import InvalidFieldError, MissingFieldError
from connector.providers.account import SKIP, AccountAdapter, AccountSettings, SettingsT
from connector.providers.base import BuiltRequest, OutcomeKind, ProviderOutcome, TemplateKey
from connector.providers.classify import (
    as_code,
    by_http_status,
    clip,
    json_object,
    retry_after,
)
from connector.providers.request import JSON_CONTENT_TYPE, Endpoint, recipient_phone

META_STATUSES: Final = frozenset(s.value for s in CanonicalStatus)
DESCRIPTION_LIMIT: Final = 120
REFERENCE_ID = re.compile(r"[A-Za-z0-9_.-]{1,35}")

# --- Meta error codes (support/error-codes). Retryable codes map to a fixed wait, None (the
# --- engine's backoff policy) or PAIR_RATE (4**attempt seconds, Meta's rule for 131056).
PAIR_RATE: Final = -1.0
PAIR_RATE_CODE: Final = 131056
MAX_PAIR_EXPONENT: Final = 8  # 4**8 s = 18 h: beyond that the retry budget has long run out
RETRYABLE_CODES: Final[dict[int, float | None]] = {
    130429: None,  # throughput limit reached (per sender)
    PAIR_RATE_CODE: PAIR_RATE,  # pair rate limit: same sender -> same recipient too fast
    4: 60.0,  # application request limit: minutes
    80007: 60.0,  # WABA rate limit: minutes
    131057: 60.0,  # account in maintenance mode: about a minute
    131000: None,  # something went wrong (temporary)
    131016: None,  # service unavailable
    133004: None,  # server temporarily unavailable
    2: None,  # API service temporarily unavailable
}
PAUSE_TEMPLATE_CODES: Final = frozenset({132015, 132016})  # template paused / disabled
PERMANENT_CODES: Final = frozenset(
    {
        100,  # invalid parameter
        33,  # parameter value not valid (e.g. unknown phone number id)
        131008,  # required parameter missing
        131009,  # parameter value not valid
        131026,  # message undeliverable
        131047,  # re-engagement: 24 h window closed (interactive variant)
        131051,  # unsupported message type
        132000,  # template parameter count mismatch
        132001,  # template does not exist (name/language)
        132005,  # translated text too long
        132007,  # template format character policy violated
        132012,  # template parameter format mismatch
        133010,  # phone number not registered
    }
    | PAUSE_TEMPLATE_CODES
)
CONFIGURATION_CODES: Final = frozenset({0, 3, 10, 190} | set(range(200, 300)))
# Asynchronous webhook errors (never in a send response): 2046 invalid transition, 2047 refused
# cancel. Exported for the webhook side.
INVALID_TRANSITION_CODE: Final = 2046
CANCEL_REFUSED_CODE: Final = 2047


def meta_code_outcome(
    code: int,
    *,
    attempt: int,
    http_status: int | None,
    detail: str,
    header_retry_after: float | None = None,
) -> ProviderOutcome | None:
    """Classify a Meta error code (also used for YCloud's ``whatsappApiError``); None if unknown."""
    code_text = str(code)
    if code in RETRYABLE_CODES:
        wait = RETRYABLE_CODES[code]
        if header_retry_after is not None:
            wait = header_retry_after
        elif wait == PAIR_RATE:
            wait = float(4 ** min(max(attempt, 0), MAX_PAIR_EXPONENT))
        return ProviderOutcome(
            OutcomeKind.RETRYABLE,
            http_status=http_status,
            error_code=code_text,
            detail=detail,
            retry_after=wait,
        )
    if code in PERMANENT_CODES:
        return ProviderOutcome(
            OutcomeKind.PERMANENT,
            http_status=http_status,
            error_code=code_text,
            detail=detail,
            pause_template=code in PAUSE_TEMPLATE_CODES,
        )
    if code in CONFIGURATION_CODES:
        return ProviderOutcome(
            OutcomeKind.CONFIGURATION, http_status=http_status, error_code=code_text, detail=detail
        )
    return None


# Meta's order_status vocabulary; YCloud forwards the same template component. ``pending`` is
# not sendable in India (the initial state comes from order_details), so it is a skip by default.
WHATSAPP_STATUS_MAP: Final[Mapping[CanonicalStatus, str]] = MappingProxyType(
    {
        CanonicalStatus.PENDING: SKIP,
        CanonicalStatus.PROCESSING: "processing",
        CanonicalStatus.PARTIALLY_SHIPPED: "partially_shipped",
        CanonicalStatus.SHIPPED: "shipped",
        CanonicalStatus.COMPLETED: "completed",
        CanonicalStatus.CANCELED: "canceled",
    }
)


class MetaAccount(AccountSettings):
    """A Meta WhatsApp Cloud API sender (one business phone number)."""

    NATIVE_STATUSES: ClassVar[frozenset[str] | None] = META_STATUSES
    DEFAULT_STATUS_MAP: ClassVar[Mapping[CanonicalStatus, str]] = WHATSAPP_STATUS_MAP

    provider: Literal["meta"] = "meta"
    base_url: str = "https://graph.facebook.com"
    api_version: str = "v21.0"
    phone_number_id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")]
    access_token: SecretStr
    template_name: str | None = None
    language: str = "en_US"
    variant: Literal["template", "interactive"] = "template"
    interactive_body_text: str = "Your order status has been updated."
    auth_scheme: Literal["bearer", "basic"] = "bearer"
    # HTTP Basic user (e.g. a ChatArchitect app id); required when auth_scheme is "basic".
    basic_username: str | None = Field(default=None, validate_default=True)
    rate_per_second: Annotated[float, Field(gt=0)] | None = 80.0
    # The WhatsApp Business Account owning the templates (``templates ensure``/``status``).
    waba_id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")] | None = None

    @field_validator("basic_username", mode="after")
    @classmethod
    def _basic_needs_user(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field validator so an error message never shows the account (and its token).
        if info.data.get("auth_scheme") == "basic" and not value:
            raise ValueError("auth_scheme 'basic' needs basic_username (the token is the password)")
        return value


def order_status_order(status: str, description: str | None) -> dict[str, str]:
    """The ``order`` object (status + optional description, cut to Meta's 120 characters)."""
    if description is None or description == "":
        return {"status": status}
    if len(description) > DESCRIPTION_LIMIT:
        description = description[: DESCRIPTION_LIMIT - 1] + "…"
    return {"status": status, "description": description}


def order_status_template(
    name: str, language: str, reference_id: str, order: dict[str, str]
) -> dict[str, Any]:
    """The ``template`` object with the ``order_status`` component (Meta and YCloud)."""
    return {
        "name": name,
        "language": {"policy": "deterministic", "code": language},
        "components": [
            {
                "type": "order_status",
                "parameters": [
                    {
                        "type": "order_status",
                        "order_status": {"reference_id": reference_id, "order": order},
                    }
                ],
            }
        ],
    }


def whatsapp_reference_id(event: OrderStatusChanged) -> str:
    refs = event.whatsapp
    if refs is None:
        raise MissingFieldError(
            "missing required field 'whatsapp.reference_id'", field="whatsapp.reference_id"
        )
    ref = refs.reference_id
    if REFERENCE_ID.fullmatch(ref) is None:
        raise InvalidFieldError(
            "invalid field 'whatsapp.reference_id': at most 35 characters of [A-Za-z0-9_.-]",
            field="whatsapp.reference_id",
        )
    return ref


def whatsapp_order_ref(event: OrderStatusChanged) -> str:
    """The order as WhatsApp knows it (``reference_id``); the order id for an event without
    WhatsApp refs, so a lane key never fails (building its request does)."""
    return event.whatsapp.reference_id if event.whatsapp is not None else event.order_id


def template_identity(
    event: OrderStatusChanged, default_name: str | None, default_language: str
) -> tuple[str, str]:
    refs = event.whatsapp
    name = (refs.template_name if refs is not None else None) or default_name
    if not name:
        raise MissingFieldError(
            "missing required field 'whatsapp.template_name' (and the account sets no "
            "template_name)",
            field="whatsapp.template_name",
        )
    language = (refs.template_language if refs is not None else None) or default_language
    return name, language


def meta_authorization(settings: MetaAccount) -> str:
    """The ``Authorization`` header value for a Meta (or Meta-compatible) account."""
    token = settings.access_token.get_secret_value()
    if settings.auth_scheme == "basic":
        pair = f"{settings.basic_username}:{token}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return f"Bearer {token}"


def meta_api_root(settings: MetaAccount) -> str:
    """``base_url`` plus the API version segment (none when ``api_version`` is empty)."""
    version = settings.api_version.strip("/")
    return "/".join([settings.base_url] + ([version] if version else []))


class WhatsAppAdapter(AccountAdapter[SettingsT]):
    """Meta and YCloud: the order as WhatsApp knows it; ``build_request`` maps the status and
    hands the reference id and the ``order_status`` order object to ``_order_request``."""

    __slots__ = ()

    def _order_ref(self, event: OrderStatusChanged) -> str:
        return whatsapp_order_ref(event)

    def build_request(self, event: OrderStatusChanged) -> BuiltRequest | ProviderOutcome:
        status = self._status.resolve(event)
        if isinstance(status, ProviderOutcome):
            return status
        order = order_status_order(status, event.description)
        return self._order_request(event, whatsapp_reference_id(event), order)

    def _order_request(
        self, event: OrderStatusChanged, reference_id: str, order: dict[str, str]
    ) -> BuiltRequest:
        """The send for a mapped status: ``order`` is the ``order_status`` order object."""
        raise NotImplementedError


class MetaCloudProvider(WhatsAppAdapter[MetaAccount]):
    """Sends ``order_status`` updates through the Meta WhatsApp Cloud API (or a compatible BSP)."""

    kind: ClassVar[str] = "meta"
    __slots__ = ("_endpoint",)

    def __init__(self, settings: MetaAccount) -> None:
        url = "/".join([meta_api_root(settings), settings.phone_number_id, "messages"])
        token = settings.access_token.get_secret_value()
        auth = meta_authorization(settings)
        super().__init__(
            settings, sender=settings.phone_number_id, secrets=[token, auth.split(" ", 1)[1]]
        )
        self._endpoint = Endpoint(url, [("Authorization", auth), JSON_CONTENT_TYPE])

    def _order_request(
        self, event: OrderStatusChanged, reference_id: str, order: dict[str, str]
    ) -> BuiltRequest:
        settings = self._settings
        to = recipient_phone(event)[1:]  # Meta takes digits only
        body: dict[str, Any]
        template: TemplateKey | None = None
        if settings.variant == "template":
            name, language = template_identity(event, settings.template_name, settings.language)
            template = (name, language)
            body = {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "template",
                "template": order_status_template(name, language, reference_id, order),
                "biz_opaque_callback_data": event.event_id,
            }
        else:
            body = {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "interactive",
                "interactive": {
                    "type": "order_status",
                    "body": {"text": event.description or settings.interactive_body_text},
                    "action": {
                        "name": "review_order",
                        "parameters": {"reference_id": reference_id, "order": order},
                    },
                },
                "biz_opaque_callback_data": event.event_id,
            }
        return BuiltRequest(self._endpoint.post(orjson.dumps(body)), template=template)

    def _classify(self, response: httpx.Response, attempt: int) -> ProviderOutcome:
        status = response.status_code
        body = json_object(response)
        if 200 <= status < 300:
            return _accepted(status, body)
        error = body.get("error") if body is not None else None
        if isinstance(error, dict):
            code = as_code(error.get("code"))
            message = str(error.get("message") or "")
            subcode = as_code(error.get("error_subcode"))
            details = error.get("error_data")
            detail_text = details.get("details") if isinstance(details, dict) else None
            detail = clip(
                f"meta error {error.get('code')}"
                + (f"/{subcode}" if subcode is not None else "")
                + f": {message}"
                + (f" ({detail_text})" if detail_text else "")
            )
            if code is not None:
                outcome = meta_code_outcome(
                    code,
                    attempt=attempt,
                    http_status=status,
                    detail=detail,
                    header_retry_after=retry_after(response),
                )
                if outcome is not None:
                    return outcome
            return by_http_status(
                response,
                provider=self.kind,
                detail=detail,
                error_code=str(code) if code is not None else None,
            )
        return by_http_status(response, provider=self.kind)


def _accepted(status: int, body: dict[str, Any] | None) -> ProviderOutcome:
    message_id: str | None = None
    message_status: str | None = None
    messages = body.get("messages") if body is not None else None
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        first = messages[0]
        if isinstance(first.get("id"), str):
            message_id = first["id"]
        if isinstance(first.get("message_status"), str):
            message_status = first["message_status"]
    if message_id is None:
        detail = "meta accepted the request but returned no message id"
    elif message_status is not None and message_status != "accepted":
        detail = f"meta message_status: {clip(message_status, 60)}"
    else:
        detail = None
    return ProviderOutcome(
        OutcomeKind.ACCEPTED, message_id=message_id, http_status=status, detail=detail
    )


__all__ = [
    "CANCEL_REFUSED_CODE",
    "CONFIGURATION_CODES",
    "INVALID_TRANSITION_CODE",
    "PERMANENT_CODES",
    "RETRYABLE_CODES",
    "MetaAccount",
    "MetaCloudProvider",
    "WhatsAppAdapter",
    "meta_api_root",
    "meta_authorization",
    "meta_code_outcome",
    "order_status_order",
    "order_status_template",
]
