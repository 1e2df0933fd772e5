"""Result and error records, and the committed JSON Schemas shipped in the package."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.contract.records import (
    ErrorRecord,
    ResultOutcome,
    ResultRecord,
    SourceCoordinates,
    encode_bytes,
    original_headers,
    result_record_bytes,
)
from connector.contract.schemas import SCHEMAS, export_schemas, packaged_schema, render_schema
from connector.errors import ErrorClass

SOURCE = SourceCoordinates(topic="order.status.changed", partition=3, offset=1234)


def test_result_record_serialises_to_json_bytes() -> None:
    record = ResultRecord(
        event_id="evt-1",
        order_id="o-1",
        outcome=ResultOutcome.ACCEPTED,
        provider="meta",
        account="meta-main",
        provider_message_id="wamid.X",
        http_status=200,
        attempts=1,
        latency_ms=12.5,
        source=SOURCE,
        recorded_at=datetime(2025, 6, 1, tzinfo=UTC),
    )
    data = json.loads(record.to_bytes())
    assert data["outcome"] == "accepted"
    assert data["source"] == {"topic": "order.status.changed", "partition": 3, "offset": 1234}
    assert data["recorded_at"] == "2025-06-01T00:00:00Z"
    assert ResultRecord.model_validate_json(record.to_bytes()) == record


_text = st.none() | st.text(max_size=40)
_record_fields = st.fixed_dictionaries(
    {
        "event_id": _text,
        "order_id": _text,
        "outcome": st.sampled_from(
            [o for o in ResultOutcome if o is not ResultOutcome.STATUS_REPORT]
        ),
        "provider": _text,
        "account": _text,
        "provider_message_id": _text,
        "http_status": st.none() | st.integers(100, 599),
        "provider_error_code": _text,
        "attempts": st.integers(0, 50),
        "latency_ms": st.none()
        | st.floats(0, 1e7, allow_nan=False).map(lambda f: round(f, 3))
        | st.floats(0, 1e7, allow_nan=False),
        "source": st.none()
        | st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 500), st.integers(0, 2**62)),
        "traceparent": _text,
        "detail": _text,
        "recorded_at": st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
    }
)


@settings(max_examples=300)
@given(_record_fields)
def test_result_record_bytes_are_those_of_the_model(fields: dict[str, object]) -> None:
    """The hot path writes the result JSON directly: byte for byte the model's serialisation,
    and a record the model (whose schema is committed) validates back to the same values."""
    source = fields["source"]
    model = ResultRecord.model_construct(
        **{
            **fields,
            "source": None
            if source is None
            else SourceCoordinates(topic=source[0], partition=source[1], offset=source[2]),  # type: ignore[index]
        }
    )
    direct = result_record_bytes(**fields)  # type: ignore[arg-type]
    assert direct == model.to_bytes()
    assert ResultRecord.model_validate_json(direct) == model


def test_status_report_needs_report_status_and_only_then() -> None:
    ResultRecord(
        event_id="e", order_id="o", outcome=ResultOutcome.STATUS_REPORT, report_status="read"
    )
    with pytest.raises(ValidationError):
        ResultRecord(event_id="e", order_id="o", outcome=ResultOutcome.STATUS_REPORT)
    with pytest.raises(ValidationError):
        ResultRecord(event_id="e", order_id="o", outcome="accepted", report_status="read")


def test_error_record_keeps_the_original_bytes_in_base64() -> None:
    value = b'{"broken": \xff'
    record = ErrorRecord(
        event_id=None,
        order_id=None,
        error_class=ErrorClass.INVALID_EVENT,
        reason="event is not a JSON object",
        source=SOURCE,
        original_key=encode_bytes(b"o-1"),
        original_value=encode_bytes(value),
        original_headers=original_headers([("traceparent", b"00-x"), ("empty", None)]),
    )
    data = json.loads(record.to_bytes())
    assert base64.b64decode(data["original_value"]) == value
    assert base64.b64decode(data["original_key"]) == b"o-1"
    assert data["original_headers"] == [
        {"key": "traceparent", "value": base64.b64encode(b"00-x").decode()},
        {"key": "empty", "value": None},
    ]
    assert data["error_class"] == "invalid_event"


def test_records_have_no_secret_like_fields() -> None:
    for model in (ResultRecord, ErrorRecord):
        names = set(model.model_fields)
        assert not {
            n for n in names if any(w in n for w in ("secret", "token", "key_value", "password"))
        }


def test_records_reject_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ResultRecord(event_id="e", order_id="o", outcome="accepted", access_token="x")  # type: ignore[call-arg]


@pytest.mark.parametrize("file_name", sorted(SCHEMAS))
def test_committed_schema_matches_its_model(file_name: str) -> None:
    model, mode = SCHEMAS[file_name]
    committed = packaged_schema(file_name)
    assert committed == render_schema(model, mode, file_name), (
        f"{file_name} is stale: run `python -m connector.contract.schemas` and commit the result"
    )


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in export_schemas(tmp_path / "a")]
    second = [p.read_bytes() for p in export_schemas(tmp_path / "b")]
    assert first == second
    assert all(text.endswith(b"}\n") for text in first)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(SCHEMAS)
