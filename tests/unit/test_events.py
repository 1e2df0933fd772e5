"""Decoding ``order.status.changed``: plain JSON, CloudEvents structured and binary mode, and a
typed, explained error for every kind of bad input."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.contract.events import (
    CanonicalStatus,
    OrderStatusChanged,
    decode_event,
    encode_event,
)
from connector.errors import (
    InvalidEventError,
    InvalidFieldError,
    MissingFieldError,
    UndecodableEventError,
    UnknownStatusError,
)
from tests.support.providers import event_dict

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_plain_json_decodes_every_field() -> None:
    event = decode_event(orjson.dumps(event_dict()))
    assert event.schema_version == 1
    assert event.event_id == "evt-0001"
    assert event.occurred_at.tzinfo is not None
    assert event.status is CanonicalStatus.PROCESSING
    assert event.recipient is not None
    assert event.recipient.phone == "+554499999999"  # punctuation removed, E.164
    assert event.order is not None
    assert event.order.items[0].amount == Decimal("19.90")
    assert str(event.order.items[0].amount) == "19.90"  # exact, not a float
    assert event.zapi is not None
    assert event.zapi.order_request_id == "4N8FCTW22W4"
    assert event.zonos is not None
    assert event.zonos.order_id == "999-1001"


@pytest.mark.parametrize(
    "spelling", ["partially-shipped", "partially_shipped", "PARTIALLY-SHIPPED"]
)
def test_hyphenated_status_is_accepted(spelling: str) -> None:
    event = decode_event(orjson.dumps(event_dict(status=spelling)))
    assert event.status is CanonicalStatus.PARTIALLY_SHIPPED


def test_unknown_status_is_a_typed_error_naming_the_value() -> None:
    with pytest.raises(UnknownStatusError) as caught:
        decode_event(orjson.dumps(event_dict(status="lost_in_transit")))
    assert caught.value.field == "status"
    assert "lost_in_transit" in caught.value.reason


def test_native_status_alone_is_enough() -> None:
    data = event_dict(native_status="VENDOR_LABELS_PRINTED")
    del data["status"]
    event = decode_event(orjson.dumps(data))
    assert event.status is None
    assert event.native_status == "VENDOR_LABELS_PRINTED"


def test_neither_status_nor_native_status_is_a_missing_field() -> None:
    data = event_dict()
    del data["status"]
    with pytest.raises(MissingFieldError) as caught:
        decode_event(orjson.dumps(data))
    assert caught.value.field == "status"


@pytest.mark.parametrize("field", ["event_id", "occurred_at", "order_id"])
def test_missing_required_field_is_named(field: str) -> None:
    data = event_dict()
    del data[field]
    with pytest.raises(MissingFieldError) as caught:
        decode_event(orjson.dumps(data))
    assert caught.value.field == field
    assert field in str(caught.value)


def test_missing_nested_field_is_named_with_its_path() -> None:
    data = event_dict(zapi={"message_id": "m", "reference_id": "r"})
    with pytest.raises(MissingFieldError) as caught:
        decode_event(orjson.dumps(data))
    assert caught.value.field == "zapi.order_request_id"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"occurred_at": "2025-06-01T12:00:00"}, "occurred_at"),  # naive time
        ({"recipient": {"phone": "call me"}}, "recipient.phone"),
        ({"payment_status": "refunded"}, "payment_status"),
        ({"schema_version": 2}, "schema_version"),
        ({"sequence": -1}, "sequence"),
        ({"order": {"currency": "BRL", "items": []}}, "order.items"),
    ],
)
def test_malformed_field_is_an_invalid_field_error(override: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        decode_event(orjson.dumps(event_dict(**override)))
    assert caught.value.field == field


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"\xff\xfe\x00", b"[1, 2]", b'"a string"', b"null", b'{"event_id": '],
)
def test_garbage_bytes_are_undecodable(raw: bytes) -> None:
    with pytest.raises(UndecodableEventError):
        decode_event(raw)


def test_tombstone_is_undecodable() -> None:
    with pytest.raises(UndecodableEventError, match="tombstone"):
        decode_event(None)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_no_bytes_escape_as_anything_but_invalid_event(raw: bytes) -> None:
    with contextlib.suppress(InvalidEventError):
        decode_event(raw)


def test_extra_fields_are_tolerated_everywhere() -> None:
    data = event_dict(future_field={"x": 1})
    data["recipient"]["nickname"] = "Ana"
    data["order"]["items"][0]["colour"] = "blue"
    event = decode_event(orjson.dumps(data))
    assert event.event_id == "evt-0001"


def test_traceparent_header_fills_traceparent() -> None:
    event = decode_event(orjson.dumps(event_dict()), [("traceparent", TRACEPARENT.encode())])
    assert event.traceparent == TRACEPARENT


def test_traceparent_in_body_wins_over_header() -> None:
    raw = orjson.dumps(event_dict(traceparent="00-body"))
    event = decode_event(raw, [("traceparent", TRACEPARENT.encode())])
    assert event.traceparent == "00-body"


def structured(data: dict[str, object], **envelope: object) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "type": "com.example.order.status.changed",
            "source": "/orders",
            "id": "ce-42",
            "time": "2025-06-01T12:00:00Z",
            "datacontenttype": "application/json",
            "data": data,
            **envelope,
        }
    )


def test_cloudevents_structured_mode() -> None:
    data = event_dict()
    del data["event_id"]
    del data["occurred_at"]
    raw = structured(data, traceparent=TRACEPARENT)
    event = decode_event(raw, [("content-type", b"application/cloudevents+json; charset=utf-8")])
    assert event.event_id == "ce-42"  # from the envelope id
    assert event.occurred_at.isoformat() == "2025-06-01T12:00:00+00:00"
    assert event.traceparent == TRACEPARENT
    assert event.status is CanonicalStatus.PROCESSING


def test_cloudevents_structured_mode_without_content_type_header() -> None:
    event = decode_event(structured(event_dict()))
    assert event.event_id == "evt-0001"  # the data's own id wins over the envelope's


def test_cloudevents_structured_data_base64() -> None:
    payload = base64.b64encode(orjson.dumps(event_dict())).decode()
    raw = orjson.dumps({"specversion": "1.0", "id": "x", "data_base64": payload})
    event = decode_event(raw, [("content-type", b"application/cloudevents+json")])
    assert event.order_id == "order-1001"


def test_cloudevents_structured_missing_field_names_data_path() -> None:
    data = event_dict()
    del data["order_id"]
    with pytest.raises(MissingFieldError) as caught:
        decode_event(structured(data), [("content-type", b"application/cloudevents+json")])
    assert caught.value.field == "data.order_id"


def test_cloudevents_structured_without_data() -> None:
    raw = orjson.dumps({"specversion": "1.0", "id": "x"})
    with pytest.raises(MissingFieldError):
        decode_event(raw, [("content-type", b"application/cloudevents+json")])


def test_cloudevents_binary_mode() -> None:
    data = event_dict()
    del data["event_id"]
    del data["occurred_at"]
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"ce-77"),
        ("ce_type", b"com.example.order.status.changed"),
        ("ce_source", b"/orders"),
        ("ce_time", b"2025-06-01T12:00:00Z"),
        ("content-type", b"application/json"),
        ("traceparent", TRACEPARENT.encode()),
    ]
    event = decode_event(orjson.dumps(data), headers)
    assert event.event_id == "ce-77"
    assert event.occurred_at.year == 2025
    assert event.traceparent == TRACEPARENT


def test_cloudevents_binary_body_values_win() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"ce-77"),
        ("ce_time", b"2020-01-01T00:00:00Z"),
    ]
    event = decode_event(orjson.dumps(event_dict()), headers)
    assert event.event_id == "evt-0001"
    assert event.occurred_at.year == 2025


def test_cloudevents_binary_garbage_body() -> None:
    with pytest.raises(UndecodableEventError):
        decode_event(b"\x00\x01", [("ce_specversion", b"1.0"), ("ce_id", b"x")])


def test_header_with_none_value_is_ignored() -> None:
    event = decode_event(orjson.dumps(event_dict()), [("traceparent", None), ("ce_type", None)])
    assert event.traceparent is None


def test_event_is_frozen() -> None:
    event = decode_event(orjson.dumps(event_dict()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.order_id = "other"  # type: ignore[misc]


def test_a_decoded_event_is_slotted_all_the_way_down() -> None:
    """Every buffered record holds its decoded event: no per-instance ``__dict__`` or
    fields-set ``set`` (a ``BaseModel`` event costs about five times the memory)."""
    event = decode_event(orjson.dumps(event_dict()))
    assert event.recipient is not None
    assert event.order is not None
    parts = [event, event.recipient, event.order, *event.order.items, event.zapi, event.zonos]
    for part in parts:
        assert not hasattr(part, "__dict__"), type(part).__name__


def test_encode_then_decode_round_trips_exactly() -> None:
    event = decode_event(orjson.dumps(event_dict(status="partially-shipped")))
    again = decode_event(encode_event(event))
    assert again == event
    assert b'"amount":"19.90"' in encode_event(event)


def test_model_accepts_python_objects_for_producers() -> None:
    event = OrderStatusChanged.model_validate(event_dict())
    assert event.order_id == "order-1001"
