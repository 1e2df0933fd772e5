"""The ``order.status.changed`` event contract: the model, decoding (plain JSON and CloudEvents) and
encoding. Pure and synchronous; it raises only ``InvalidEventError`` subclasses, never pydantic's.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal, Self

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError, SchemaSerializer, SchemaValidator

from connector.errors import (
    InvalidEventError,
    InvalidFieldError,
    MissingFieldError,
    UndecodableEventError,
    UnknownStatusError,
)

SCHEMA_VERSION: Final = 1
CLOUDEVENTS_CONTENT_TYPE: Final = "application/cloudevents+json"


class CanonicalStatus(StrEnum):
    """The six order statuses the connector understands (Meta's vocabulary, underscore spelling)."""

    PENDING = "pending"
    PROCESSING = "processing"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    COMPLETED = "completed"
    CANCELED = "canceled"


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"


_STATUS_VALUES: Final = frozenset(s.value for s in CanonicalStatus)


def normalise_status(value: object) -> object:
    """Accept ``partially-shipped`` (a typo in several provider doc tables) and any letter case."""
    if isinstance(value, str) and value not in _STATUS_VALUES:
        return value.strip().lower().replace("-", "_")
    return value


_PHONE_PUNCTUATION = re.compile(r"[\s().-]")
_PHONE = re.compile(r"\+?[0-9]{8,15}")


def _normalise_phone(value: object) -> object:
    """Store phones as E.164 (``+`` and 8-15 digits); punctuation and a missing ``+`` are fixed."""
    if not isinstance(value, str):
        return value
    compact = _PHONE_PUNCTUATION.sub("", value)
    if compact.startswith("00"):
        compact = compact[2:]
    if not _PHONE.fullmatch(compact):
        raise PydanticCustomError(
            "phone_format",
            "expected an international phone number (country code first, 8-15 digits)",
        )
    return compact if compact.startswith("+") else "+" + compact


# ---------------------------------------------------------------------------------------------
# Intake bounds: what decodes must also become a request and a record, so whatever would fail
# later (a header the HTTP client refuses, an integer orjson cannot write) is refused here, as
# ``invalid_event``, before anything is sent.

#: ``event_id`` becomes the ``X-Request-Id`` header and ``traceparent`` the ``traceparent`` header:
#: visible ASCII with inner spaces only. aiohttp refuses control characters (CR, LF, NUL, ...),
#: h11 (httpx) refuses leading or trailing whitespace, and non-ASCII header text is obsolete
#: (RFC 9110 section 5.5) and refused by some proxies.
HEADER_SAFE_PATTERN: Final = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"
_HEADER_SAFE: Final = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
#: Header values stay well below the 8 KiB header-line limit of common servers and proxies.
MAX_EVENT_ID_LENGTH: Final = 256
MAX_TRACEPARENT_LENGTH: Final = 512
#: Identifiers copied into the records we write (result, ledger, correlation; the order id is
#: also their Kafka key) or into provider target keys: bounded so those records always fit.
MAX_ID_LENGTH: Final = 256
#: Integers the connector writes back (ledger, Z-API body) go through orjson, which refuses
#: anything beyond 64 bits; signed 64-bit is also what Java consumers of the records read.
MAX_INT: Final = 2**63 - 1
#: Money: 18 digits before the point, 12 after, at most 30 in all; an exponent such as ``1e999999``
#: would otherwise be written out digit by digit in a request body.
MONEY_MAX_DIGITS: Final = 30
MONEY_DECIMAL_PLACES: Final = 12


def _header_safe(value: str) -> str:
    if not _HEADER_SAFE.fullmatch(value):
        raise PydanticCustomError(
            "header_unsafe",
            "must be visible ASCII characters and inner spaces only, no control characters"
            " and no leading or trailing space (it is sent as an HTTP header)",
        )
    return value


def _header_field(max_length: int) -> Any:
    """The field of a text that travels as an HTTP header: 1 to ``max_length`` characters, the
    header-safe pattern in the JSON schema (``_header_safe`` checks it)."""
    return Field(
        min_length=1, max_length=max_length, json_schema_extra={"pattern": HEADER_SAFE_PATTERN}
    )


def _utc_representable(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_range", "must fall between years 1 and 9999 once converted to UTC"
        ) from None
    return value


Status = Annotated[CanonicalStatus, BeforeValidator(normalise_status)]
Phone = Annotated[str, BeforeValidator(_normalise_phone)]
Money = Annotated[
    Decimal,
    Field(
        ge=0,
        allow_inf_nan=False,
        max_digits=MONEY_MAX_DIGITS,
        decimal_places=MONEY_DECIMAL_PLACES,
    ),
]
NonEmpty = Annotated[str, Field(min_length=1)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
ShortText = Annotated[str, Field(max_length=MAX_ID_LENGTH)]
EventId = Annotated[str, _header_field(MAX_EVENT_ID_LENGTH), AfterValidator(_header_safe)]
TraceParent = Annotated[str, _header_field(MAX_TRACEPARENT_LENGTH), AfterValidator(_header_safe)]
OccurredAt = Annotated[AwareDatetime, AfterValidator(_utc_representable)]

# The event models are slotted, frozen pydantic dataclasses: pydantic validates them exactly as
# it validates a ``BaseModel``, but an instance has no ``__dict__`` and no fields-set ``set``.
# A decoded event is held by every buffered record: about 0.9 KB this way, 4.6 KB as models
# (``benchmarks/buffered_record_memory.py``). Unknown keys are ignored.
_CONFIG = ConfigDict(extra="ignore")


class _Model:
    """What the event models keep of pydantic's model API: validation, the JSON schema, and
    ``model_copy`` (which does not validate)."""

    __slots__ = ()
    __pydantic_validator__: ClassVar[SchemaValidator]
    __pydantic_serializer__: ClassVar[SchemaSerializer]

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        return cls.__pydantic_validator__.validate_python(data)  # type: ignore[no-any-return]

    @classmethod
    def model_validate_json(cls, data: bytes | str) -> Self:
        return cls.__pydantic_validator__.validate_json(data)  # type: ignore[no-any-return]

    @classmethod
    def model_json_schema(
        cls, mode: Literal["validation", "serialization"] = "validation"
    ) -> dict[str, Any]:
        return TypeAdapter(cls).json_schema(mode=mode)

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self:
        """A shallow copy with ``update`` applied, not validated (as ``BaseModel.model_copy``)."""
        copied = copy.copy(self)
        for name, value in (update or {}).items():
            object.__setattr__(copied, name, value)
        return copied


@dataclass(config=_CONFIG, frozen=True, slots=True, kw_only=True)
class Recipient(_Model):
    """Who the update goes to. ``phone`` is normalised to E.164 (``+5511999999999``)."""

    phone: Phone
    locale: str | None = None


@dataclass(config=_CONFIG, frozen=True, slots=True, kw_only=True)
class OrderItem(_Model):
    """One line of the order. ``amount`` is the exact unit price (send it as a JSON string to keep
    more than 15 significant digits; JSON numbers are accepted)."""

    product_id: NonEmpty
    name: NonEmpty
    amount: Money
    quantity: Annotated[int, Field(ge=1, le=MAX_INT)]
    is_custom_item: bool = False


@dataclass(config=_CONFIG, frozen=True, slots=True, kw_only=True)
class OrderDetails(_Model):
    """The order's money and items; Z-API needs all of it re-sent with every update."""

    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    items: Annotated[tuple[OrderItem, ...], Field(min_length=1)]
    discount: Money | None = None
    tax: Money | None = None
    shipping: Money | None = None


@dataclass(config=_CONFIG, frozen=True, slots=True, kw_only=True)
class WhatsAppRefs(_Model):
    """Meta/YCloud identifiers; ``reference_id`` is the id of the earlier ``order_details``."""

    reference_id: Identifier
    template_name: ShortText | None = None
    template_language: ShortText | None = None


@dataclass(config=_CONFIG, frozen=True, slots=True, kw_only=True)
class ZApiRefs(_Model):
    """Z-API identifiers, all taken from the order webhook of the original order message."""

    message_id: Identifier
    reference_id: Identifier
    order_request_id: Identifier


@dataclass(config=_CONFIG, frozen=True, slots=True, kw_only=True)
class ZonosRefs(_Model):
    """Zonos/iGlobal identifiers; ``order_id`` may carry the ``<store>-`` prefix or not."""

    store: ShortText | None = None
    order_id: Identifier


@dataclass(config=_CONFIG, frozen=True, slots=True, kw_only=True)
class OrderStatusChanged(_Model):
    """One change of an order's status, as published on ``order.status.changed`` (key = order id).

    ``status`` is the canonical status; ``native_status`` overrides it with a provider-native
    value for states outside the canonical six (e.g. Zonos ``VENDOR_LABELS_PRINTED``). At least
    one of the two is set.
    """

    schema_version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    event_id: EventId
    occurred_at: OccurredAt
    order_id: Identifier
    status: Status | None = None
    native_status: Identifier | None = None
    sequence: Annotated[int, Field(ge=0, le=MAX_INT)] | None = None
    account: ShortText | None = None
    merchant_id: ShortText | None = None
    description: str | None = None
    payment_status: PaymentStatus | None = None
    recipient: Recipient | None = None
    order: OrderDetails | None = None
    whatsapp: WhatsAppRefs | None = None
    zapi: ZApiRefs | None = None
    zonos: ZonosRefs | None = None
    traceparent: TraceParent | None = None

    @field_validator("payment_status", mode="before")
    @classmethod
    def _lower_payment_status(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _some_status(self) -> OrderStatusChanged:
        if self.status is None and self.native_status is None:
            raise PydanticCustomError(
                "missing_status", "one of 'status' or 'native_status' is required"
            )
        return self


# ---------------------------------------------------------------------------------------------
# decoding


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_invalid_event(exc: ValidationError, *, prefix: str = "") -> InvalidEventError:
    """Translate pydantic's error into our tree; the first error names the field."""
    first = exc.errors(include_url=False)[0]
    kind = first["type"]
    path = prefix + _field_path(first["loc"])
    if kind in ("json_invalid", "json_type") or (
        kind in ("model_type", "dataclass_type", "dict_type") and not path
    ):
        return UndecodableEventError(f"event is not a JSON object: {first['msg']}")
    if kind == "missing":
        return MissingFieldError(f"missing required field '{path}'", field=path)
    if kind == "missing_status":
        field = prefix + "status"
        return MissingFieldError(f"missing required field '{field}': {first['msg']}", field=field)
    if kind == "enum" and path == prefix + "status":
        allowed = ", ".join(s.value for s in CanonicalStatus)
        return UnknownStatusError(
            f"unknown status {_short(first['input'])}; expected one of: {allowed}"
            " (or set 'native_status' for a provider-native state)",
            field=path,
        )
    return InvalidFieldError(
        f"invalid field '{path}': {first['msg']} (got {_short(first['input'])})", field=path or None
    )


def _validate_json(value: bytes) -> OrderStatusChanged:
    try:
        return OrderStatusChanged.model_validate_json(value)
    except ValidationError as exc:
        raise _as_invalid_event(exc) from None


def _validate_object(data: Any, prefix: str = "") -> OrderStatusChanged:
    try:
        return OrderStatusChanged.model_validate(data)
    except ValidationError as exc:
        raise _as_invalid_event(exc, prefix=prefix) from None


def _loads_object(value: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise UndecodableEventError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise UndecodableEventError(f"{what} is not a JSON object")
    return parsed


def _header_text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def _decode_structured(value: bytes, traceparent: str | None) -> OrderStatusChanged:
    """CloudEvents structured mode: the envelope is JSON and ``data`` holds the event."""
    envelope = _loads_object(value, "CloudEvents envelope")
    if "data" in envelope:
        data = envelope["data"]
        if isinstance(data, str | bytes):  # data serialised as a JSON string
            data = _loads_object(data.encode() if isinstance(data, str) else data, "'data'")
    elif "data_base64" in envelope:
        try:
            raw = base64.b64decode(envelope["data_base64"], validate=True)
        except (ValueError, TypeError):
            raise UndecodableEventError("CloudEvents 'data_base64' is not valid base64") from None
        data = _loads_object(raw, "'data_base64'")
    else:
        raise MissingFieldError("CloudEvents envelope has no 'data'", field="data")
    if not isinstance(data, dict):
        raise UndecodableEventError("CloudEvents 'data' is not a JSON object")
    _fill_from_attributes(data, envelope, traceparent)
    return _validate_object(data, prefix="data.")


def _fill_from_attributes(
    data: dict[str, Any], attributes: Mapping[str, Any], traceparent: str | None
) -> None:
    """CloudEvents attributes (envelope keys or ``ce_`` headers) fill what ``data`` leaves out:
    ``id`` -> ``event_id``, ``time`` -> ``occurred_at``, and the ``traceparent``."""
    if "event_id" not in data and isinstance(attributes.get("id"), str):
        data["event_id"] = attributes["id"]
    if "occurred_at" not in data and attributes.get("time") is not None:
        data["occurred_at"] = attributes["time"]
    if "traceparent" not in data:
        tp = attributes.get("traceparent") or traceparent
        if tp is not None:
            data["traceparent"] = tp


def decode_event(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] = ()
) -> OrderStatusChanged:
    """Decode one ``order.status.changed`` record value (plain JSON or CloudEvents).

    Binary mode is recognised by a ``ce_specversion`` (or ``ce_id``) header, structured mode by a
    ``content-type: application/cloudevents+json`` header or a top-level ``specversion`` key.
    Raises ``InvalidEventError`` subclasses only, with a reason naming the field.
    """
    if value is None:
        raise UndecodableEventError("record has no value (tombstone); expected an event")
    traceparent: str | None = None
    binary = False
    structured = False
    ce: dict[str, str] = {}
    for key, raw in headers:
        lowered = key.lower()
        if lowered == "traceparent":
            traceparent = _header_text(raw)
        elif lowered.startswith(("ce_", "ce-")):
            text = _header_text(raw)
            if text is not None:
                ce[lowered[3:]] = text
            binary = binary or lowered[3:] in ("specversion", "id")
        elif lowered in ("content-type", "content_type"):
            ctype = _header_text(raw) or ""
            structured = ctype.startswith(CLOUDEVENTS_CONTENT_TYPE)
    if structured:
        return _decode_structured(value, traceparent)
    if binary:
        data = _loads_object(value, "event")
        _fill_from_attributes(data, ce, traceparent)
        return _validate_object(data)
    try:
        event = _validate_json(value)
    except InvalidEventError:
        # A structured CloudEvent sent without its content type: recognised by its envelope.
        if b'"specversion"' in value:
            return _decode_structured(value, traceparent)
        raise
    if traceparent is not None and event.traceparent is None:
        # The header must pass the same check as the field. The event was just built here and
        # nobody holds it yet: set the field in place rather than copy a frozen instance.
        object.__setattr__(event, "traceparent", _validate_header_traceparent(traceparent))
    return event


_TRACEPARENT: Final = TypeAdapter(TraceParent)


def _validate_header_traceparent(value: str) -> str:
    try:
        return _TRACEPARENT.validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise InvalidFieldError(
            f"invalid record header 'traceparent': {first['msg']} (got {_short(value)})",
            field="traceparent",
        ) from None


def encode_event(event: OrderStatusChanged) -> bytes:
    """Serialise for producers (demo, tests). Decimals are written as strings to stay exact."""
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


__all__ = [
    "CLOUDEVENTS_CONTENT_TYPE",
    "HEADER_SAFE_PATTERN",
    "MAX_EVENT_ID_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_INT",
    "MAX_TRACEPARENT_LENGTH",
    "SCHEMA_VERSION",
    "CanonicalStatus",
    "OrderDetails",
    "OrderItem",
    "OrderStatusChanged",
    "PaymentStatus",
    "Recipient",
    "WhatsAppRefs",
    "ZApiRefs",
    "ZonosRefs",
    "decode_event",
    "encode_event",
    "normalise_status",
]
