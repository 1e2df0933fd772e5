"""What decodes must also become a request and a record: values that would fail later (an HTTP
header the client refuses, an integer orjson cannot write, a date that cannot be converted to
UTC) are refused by ``decode_event`` as ``invalid_event`` before anything is sent.

The property test at the end runs the whole chain the engine runs for one event (decode, every
provider's request with the engine's headers, the HTTP clients' header checks, the result, ledger
and error records) and asserts that whatever decodes goes through it without raising.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import h11
import httpx
import pytest
from aiohttp import http_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from connector.contract.events import (
    MAX_EVENT_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_INT,
    MAX_TRACEPARENT_LENGTH,
    OrderStatusChanged,
    decode_event,
)
from connector.contract.records import (
    ErrorRecord,
    ResultOutcome,
    ResultRecord,
    SourceCoordinates,
    encode_bytes,
    original_headers,
)
from connector.core.ledger import delivery_of, encode_order_entry
from connector.errors import ErrorClass, InvalidEventError, InvalidFieldError
from tests.support.providers import PROVIDER_KINDS, event_dict, make_provider

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_ITEM = event_dict()["order"]["items"][0]


def _raw(**overrides: Any) -> bytes:
    # The standard library writes integers of any size and escapes control characters.
    return json.dumps(event_dict(**overrides)).encode()


def _with_item(**item: Any) -> dict[str, Any]:
    order = copy.deepcopy(event_dict()["order"])
    order["items"][0].update(item)
    return {"order": order}


REFUSED = {
    "event_id with a control character": ({"event_id": "evt-\u0001"}, "event_id"),
    "event_id with CR/LF (header injection)": ({"event_id": "e\r\nX-Evil: 1"}, "event_id"),
    "event_id with NUL": ({"event_id": "e\u0000"}, "event_id"),
    "event_id with DEL": ({"event_id": "e\u007f"}, "event_id"),
    "event_id with a tab": ({"event_id": "e\tf"}, "event_id"),
    "event_id with a leading space (h11 refuses)": ({"event_id": " e"}, "event_id"),
    "event_id with a trailing space": ({"event_id": "e "}, "event_id"),
    "event_id non-ASCII": ({"event_id": "évt-1"}, "event_id"),
    "event_id too long": ({"event_id": "e" * (MAX_EVENT_ID_LENGTH + 1)}, "event_id"),
    "traceparent with LF": ({"traceparent": "00-\nabc"}, "traceparent"),
    "traceparent too long": ({"traceparent": "0" * (MAX_TRACEPARENT_LENGTH + 1)}, "traceparent"),
    "order_id too long (the key of every record)": ({"order_id": "o" * 257}, "order_id"),
    "native_status too long (ledger)": ({"native_status": "s" * 257}, "native_status"),
    "reference_id too long (target key)": (
        {"whatsapp": {"reference_id": "r" * (MAX_ID_LENGTH + 1)}},
        "whatsapp.reference_id",
    ),
    "account too long": ({"account": "a" * (MAX_ID_LENGTH + 1)}, "account"),
    "sequence 2**64 (orjson)": ({"sequence": 2**64}, "sequence"),
    "sequence 2**63": ({"sequence": 2**63}, "sequence"),
    "sequence 2**1000": ({"sequence": 2**1000}, "sequence"),
    "quantity 2**64 (Z-API body)": (_with_item(quantity=2**64), "order.items.0.quantity"),
    "amount with a huge exponent": (_with_item(amount="1e999999"), "order.items.0.amount"),
    "amount with a tiny exponent": (_with_item(amount="1e-999999"), "order.items.0.amount"),
    "amount as a huge JSON number": (_with_item(amount=1e300), "order.items.0.amount"),
    "shipping with 13 decimals": (
        {"order": {**event_dict()["order"], "shipping": "0.0000000000001"}},
        "order.shipping",
    ),
    "occurred_at before year 1 in UTC": (
        {"occurred_at": "0001-01-01T00:00:00+14:00"},
        "occurred_at",
    ),
    "occurred_at after 9999 in UTC": ({"occurred_at": "9999-12-31T23:59:59-14:00"}, "occurred_at"),
}


@pytest.mark.parametrize(("overrides", "field"), REFUSED.values(), ids=list(REFUSED))
def test_values_that_would_fail_later_are_invalid_events(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        decode_event(_raw(**overrides))
    assert caught.value.field == field
    assert caught.value.error_class is ErrorClass.INVALID_EVENT
    assert field in caught.value.reason


ACCEPTED = {
    "sequence at the largest signed 64-bit value": {"sequence": MAX_INT},
    "quantity at the largest signed 64-bit value": _with_item(quantity=MAX_INT),
    "event_id at the length bound": {"event_id": "e" * MAX_EVENT_ID_LENGTH},
    "order_id at the length bound, 4-byte characters": {"order_id": "\U0001f4e6" * MAX_ID_LENGTH},
    "event_id with inner spaces and punctuation": {"event_id": "evt 1/2:3~!"},
    "a W3C traceparent": {"traceparent": TRACEPARENT},
    "amount with 18 integer and 12 decimal digits": _with_item(
        amount="123456789012345678.123456789012"
    ),
    "amount with trailing zeros": _with_item(amount="1.500000000000000000"),
    "occurred_at at the UTC edges": {"occurred_at": "0001-01-01T00:00:00Z"},
    "control characters in free text (JSON-escaped in bodies)": {"description": "a\u0001b\nc"},
    "non-ASCII order id (a Kafka key, not a header)": {"order_id": "pedido-ção"},
}


@pytest.mark.parametrize("overrides", ACCEPTED.values(), ids=list(ACCEPTED))
def test_values_at_the_bounds_still_decode_and_go_through(overrides: dict[str, Any]) -> None:
    raw = _raw(**overrides)
    assert _through_every_stage(raw) is not None


def test_a_traceparent_record_header_is_checked_like_the_field() -> None:
    raw = _raw(traceparent=None)
    with pytest.raises(InvalidFieldError, match="header 'traceparent'") as caught:
        decode_event(raw, [("traceparent", b"00-abc\r\nX-Evil: 1")])
    assert caught.value.field == "traceparent"
    event = decode_event(raw, [("traceparent", TRACEPARENT.encode())])
    assert event.traceparent == TRACEPARENT


def test_cloudevents_ids_are_checked_like_the_field() -> None:
    data = event_dict()
    del data["event_id"]
    with pytest.raises(InvalidFieldError) as caught:
        decode_event(json.dumps(data).encode(), [("ce_specversion", b"1.0"), ("ce_id", b"a\x01")])
    assert caught.value.field == "event_id"
    envelope = {"specversion": "1.0", "id": "a\nb", "type": "t", "source": "s", "data": data}
    with pytest.raises(InvalidFieldError) as caught:
        decode_event(json.dumps(envelope).encode())
    assert caught.value.field == "data.event_id"


def test_the_json_schema_states_the_bounds() -> None:
    schema = OrderStatusChanged.model_json_schema(mode="validation")
    props = schema["properties"]
    assert props["event_id"]["maxLength"] == MAX_EVENT_ID_LENGTH
    assert "pattern" in props["event_id"]
    assert props["sequence"]["anyOf"][0]["maximum"] == MAX_INT


# ---------------------------------------------------------------------------------------------
# the whole chain, as the engine runs it


def _aiohttp_accepts(request: httpx.Request) -> None:
    headers = CIMultiDict((k.decode(), v.decode()) for k, v in request.headers.raw)
    # Both of aiohttp's serialisers (C and pure Python) refuse the same characters.
    http_writer._serialize_headers("POST / HTTP/1.1", headers)
    http_writer._py_serialize_headers("POST / HTTP/1.1", headers)


def _h11_accepts(request: httpx.Request) -> None:
    h11.Request(method="POST", target="/", headers=list(request.headers.raw))


def _through_every_stage(raw: bytes) -> OrderStatusChanged:
    """Decode, then everything the engine does with a decoded event; raises what would fail."""
    event = decode_event(raw)
    event.order_id.encode()  # the key of every record we write for it
    source = SourceCoordinates(topic="in", partition=0, offset=MAX_INT)
    for kind in PROVIDER_KINDS:
        provider = make_provider(kind)
        try:
            built = provider.build_request(event)
        except InvalidEventError:
            continue  # a provider-specific gap: an invalid_event outcome, not a crash
        if not isinstance(built, httpx.Request):
            continue
        built.headers["X-Request-Id"] = event.event_id  # as connector.delivery.engine does
        if event.traceparent:
            built.headers["traceparent"] = event.traceparent
        assert built.content
        _aiohttp_accepts(built)
        _h11_accepts(built)
        target = provider.target_key(event)
        ResultRecord.model_construct(
            event_id=event.event_id,
            order_id=event.order_id,
            outcome=ResultOutcome.ACCEPTED,
            provider=kind,
            account=provider.account,
            provider_message_id="m",
            http_status=200,
            provider_error_code=None,
            attempts=1,
            latency_ms=1.0,
            source=source,
            traceparent=event.traceparent,
            detail=None,
            report_status=None,
            recorded_at=datetime.now(UTC),
        ).to_bytes()
        encode_order_entry(event.order_id, {target: delivery_of(event)})
    ErrorRecord(
        event_id=event.event_id,
        order_id=event.order_id,
        error_class=ErrorClass.PERMANENT,
        reason="x",
        source=source,
        original_key=encode_bytes(event.order_id.encode()),
        original_value=encode_bytes(raw),
        original_headers=original_headers([("traceparent", b"x")]),
        traceparent=event.traceparent,
    ).to_bytes()
    return event


_PATHS: list[tuple[str | int, ...]] = [
    ("event_id",),
    ("order_id",),
    ("occurred_at",),
    ("sequence",),
    ("traceparent",),
    ("status",),
    ("native_status",),
    ("description",),
    ("account",),
    ("merchant_id",),
    ("payment_status",),
    ("recipient", "phone"),
    ("recipient", "locale"),
    ("order", "currency"),
    ("order", "discount"),
    ("order", "tax"),
    ("order", "shipping"),
    *[("order", "items", 0, name) for name in _ITEM],
    ("whatsapp", "reference_id"),
    ("whatsapp", "template_name"),
    ("whatsapp", "template_language"),
    ("zapi", "message_id"),
    ("zapi", "reference_id"),
    ("zapi", "order_request_id"),
    ("zonos", "store"),
    ("zonos", "order_id"),
]

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=10),
    st.sampled_from(
        [
            "1e999",
            "1E+30",
            "-0",
            "0.0000000000000000000001",
            "2025-06-01T12:00:00+14:00",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "shipped",
            "+5511999999999",
            " x",
            "x\r\n",
        ]
    ),
)


def _set(data: dict[str, Any], path: tuple[str | int, ...], value: object) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _VALUES), min_size=1, max_size=4))
def test_whatever_decodes_becomes_requests_and_records(
    changes: list[tuple[tuple[str | int, ...], object]],
) -> None:
    data = event_dict()
    for path, value in changes:
        _set(data, path, value)
    raw = json.dumps(data).encode()
    try:
        decode_event(raw)
    except InvalidEventError:
        return  # refused at intake: an invalid_event record, nothing sent
    _through_every_stage(raw)  # anything raised here would leave the record without outcome


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ce_id=st.binary(max_size=12),
    traceparent=st.binary(max_size=12),
    binary_mode=st.booleans(),
)
def test_whatever_decodes_from_record_headers_becomes_requests_and_records(
    ce_id: bytes, traceparent: bytes, binary_mode: bool
) -> None:
    data = event_dict()
    headers: list[tuple[str, bytes | None]] = [("traceparent", traceparent)]
    if binary_mode:
        del data["event_id"]
        headers += [("ce_specversion", b"1.0"), ("ce_id", ce_id)]
    raw = json.dumps(data).encode()
    try:
        event = decode_event(raw, headers)
    except InvalidEventError:
        return
    for value in (event.event_id, event.traceparent):
        if value is not None:
            request = httpx.Request("POST", "http://x/", headers={"X-Request-Id": value})
            _aiohttp_accepts(request)
            _h11_accepts(request)
