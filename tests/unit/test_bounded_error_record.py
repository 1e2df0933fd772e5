"""Error records always fit: ``bounded_error_record`` keeps the original value whole when the
record fits ``max_bytes`` and otherwise a prefix plus the whole value's size and SHA-256."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.contract.records import (
    ERROR_SCHEMA_VERSION,
    MIN_ERROR_RECORD_BYTES,
    ErrorRecord,
    SourceCoordinates,
    bounded_error_record,
    encode_bytes,
    minimal_error_record,
    original_headers,
)
from connector.contract.schemas import SCHEMAS
from connector.errors import ErrorClass
from connector.ops.redrive import redrive_selects

MIB = 1024 * 1024
SOURCE = SourceCoordinates(topic="order.status.changed", partition=2, offset=77)


def _record(
    value: bytes | None,
    *,
    key: bytes | None = b"order-1",
    headers: list[tuple[str, bytes | None]] | None = None,
    reason: str = "event is not a JSON object",
    order_id: str | None = "order-1",
) -> ErrorRecord:
    return ErrorRecord(
        event_id=None,
        order_id=order_id,
        error_class=ErrorClass.INVALID_EVENT,
        reason=reason,
        source=SOURCE,
        original_key=encode_bytes(key),
        original_value=encode_bytes(value),
        original_headers=original_headers(headers or [("traceparent", b"00-abc")]),
        recorded_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def _check_cut(out: bytes, value: bytes, max_bytes: int) -> ErrorRecord:
    """``out`` is a valid, truncated record of ``value`` and the prefix is as long as fits."""
    assert len(out) <= max_bytes
    parsed = ErrorRecord.model_validate_json(out)
    assert parsed.original_value_truncated is True
    assert parsed.original_value_size == len(value)
    assert parsed.original_value_sha256 == hashlib.sha256(value).hexdigest()
    assert parsed.original_value is not None
    prefix = base64.b64decode(parsed.original_value)
    assert value.startswith(prefix)
    assert len(prefix) < len(value)
    # One more base64 quantum (3 bytes -> 4 characters) would not have fitted.
    assert len(out) + 4 > max_bytes
    return parsed


def test_a_record_that_fits_is_written_whole_and_unchanged() -> None:
    record = _record(b'{"broken": ' + b"x" * 1000)
    out = bounded_error_record(record, max_bytes=64 * 1024)
    assert out == record.to_bytes()
    parsed = ErrorRecord.model_validate_json(out)
    assert parsed.schema_version == ERROR_SCHEMA_VERSION == 2
    assert parsed.original_value_truncated is False
    assert parsed.original_value_size is None
    assert parsed.original_value_sha256 is None


@pytest.mark.parametrize(
    "size", [0, 1, 100 * 1024, 700 * 1024, 800 * 1024, 1024 * 1024 - 1, MIB, MIB + 1]
)
@pytest.mark.parametrize("max_bytes", [MIN_ERROR_RECORD_BYTES, 256 * 1024, MIB - 4096])
def test_values_up_to_a_mebibyte_always_fit(size: int, max_bytes: int) -> None:
    value = os.urandom(size)
    record = _record(value)
    out = bounded_error_record(record, max_bytes=max_bytes)
    assert len(out) <= max_bytes
    if len(record.to_bytes()) <= max_bytes:
        assert out == record.to_bytes()
        return
    parsed = _check_cut(out, value, max_bytes)
    # The key and headers are kept: only the value was cut.
    assert parsed.original_key == record.original_key
    assert parsed.original_headers == record.original_headers
    assert parsed.reason == record.reason


def test_base64_growth_is_what_makes_an_800_kb_value_too_large_for_1_mib() -> None:
    value = os.urandom(800 * 1000)
    record = _record(value)
    assert len(record.to_bytes()) > MIB  # the bug of issue 10 item 2
    out = bounded_error_record(record, max_bytes=MIB - 4096)
    parsed = _check_cut(out, value, MIB - 4096)
    assert parsed.original_value_size == 800_000


def test_an_enormous_key_and_headers_give_a_minimal_record_that_says_so() -> None:
    value = os.urandom(10_000)
    key = b"k" * MIB
    record = _record(value, key=key, headers=[("h", b"v" * MIB)], order_id="k" * MIB)
    out = bounded_error_record(record, max_bytes=64 * 1024)
    assert len(out) <= 64 * 1024
    parsed = ErrorRecord.model_validate_json(out)
    assert parsed.original_key is None
    assert parsed.original_headers == ()
    assert parsed.order_id == "k" * 256
    assert "original key and headers left out" in parsed.reason
    assert parsed.original_value_truncated is True
    assert parsed.original_value_size == len(value)
    assert parsed.original_value_sha256 == hashlib.sha256(value).hexdigest()
    assert parsed.original_value is not None
    assert value.startswith(base64.b64decode(parsed.original_value))
    assert parsed.source == SOURCE


def test_worst_case_text_fields_fit_the_smallest_limit() -> None:
    # Control characters take 6 bytes each in JSON (\u0001): the worst case per character.
    nasty = "\u0001" * MIB
    record = ErrorRecord(
        event_id=nasty,
        order_id=nasty,
        error_class=ErrorClass.INTERNAL_ERROR,
        reason=nasty,
        provider=nasty,
        account=nasty,
        provider_error_code=nasty,
        traceparent=nasty,
        source=SourceCoordinates(topic="t" * 249, partition=2**31, offset=2**63 - 1),
        original_key=encode_bytes(b"k" * MIB),
        original_value=encode_bytes(b"v" * MIB),
        original_headers=original_headers([(nasty, b"x")]),
        attempts=2**63 - 1,
        http_status=599,
    )
    out = bounded_error_record(record, max_bytes=MIN_ERROR_RECORD_BYTES)
    assert len(out) <= MIN_ERROR_RECORD_BYTES
    parsed = ErrorRecord.model_validate_json(out)
    assert parsed.error_class is ErrorClass.INTERNAL_ERROR
    assert parsed.original_value_size == MIB


def test_a_record_without_value_is_never_marked_truncated() -> None:
    record = _record(None, key=b"k" * MIB)
    out = bounded_error_record(record, max_bytes=MIN_ERROR_RECORD_BYTES)
    parsed = ErrorRecord.model_validate_json(out)
    assert parsed.original_value is None
    assert parsed.original_value_truncated is False
    assert parsed.original_value_size is None


def test_minimal_record_keeps_what_identifies_the_input() -> None:
    value = b'{"order_id": "o-1"}'
    minimal = minimal_error_record(_record(value))
    assert minimal.original_key is None
    assert minimal.original_value == ""
    assert minimal.original_value_size == len(value)
    assert minimal.original_value_sha256 == hashlib.sha256(value).hexdigest()
    assert minimal.source == SOURCE
    assert minimal.order_id == "order-1"
    assert minimal.error_class is ErrorClass.INVALID_EVENT
    ErrorRecord.model_validate_json(minimal.to_bytes())


def test_a_limit_below_the_floor_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        bounded_error_record(_record(b"x"), max_bytes=MIN_ERROR_RECORD_BYTES - 1)


def test_digest_fields_come_exactly_with_truncation() -> None:
    with pytest.raises(ValidationError):
        ErrorRecord(
            event_id=None,
            order_id=None,
            error_class=ErrorClass.INVALID_EVENT,
            reason="r",
            original_value_truncated=True,
        )
    with pytest.raises(ValidationError):
        ErrorRecord(
            event_id=None,
            order_id=None,
            error_class=ErrorClass.INVALID_EVENT,
            reason="r",
            original_value_size=3,
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value_size=st.integers(min_value=0, max_value=MIB + 16),
    key_size=st.integers(min_value=0, max_value=40_000),
    header_size=st.integers(min_value=0, max_value=40_000),
    reason_size=st.integers(min_value=1, max_value=20_000),
    max_bytes=st.integers(min_value=MIN_ERROR_RECORD_BYTES, max_value=2 * MIB),
)
def test_any_record_fits_any_limit_and_keeps_the_longest_prefix(
    value_size: int, key_size: int, header_size: int, reason_size: int, max_bytes: int
) -> None:
    value = os.urandom(value_size)
    record = _record(
        value, key=b"k" * key_size, headers=[("h", b"v" * header_size)], reason="r" * reason_size
    )
    out = bounded_error_record(record, max_bytes=max_bytes)
    assert len(out) <= max_bytes
    parsed = ErrorRecord.model_validate_json(out)
    if not parsed.original_value_truncated:
        assert out == record.to_bytes()
    elif parsed.original_key is not None:
        _check_cut(out, value, max_bytes)
    else:
        assert parsed.original_value_sha256 == hashlib.sha256(value).hexdigest()


def test_older_schema_versions_stay_committed_next_to_the_generated_ones() -> None:
    committed = (
        Path(__file__).resolve().parents[2] / "connector" / "contract" / "resources" / "schemas"
    )
    names = {p.name for p in committed.glob("*.json")}
    assert "error-record.v2.json" in SCHEMAS
    assert "error-record.v1.json" in names  # v1 records are still on the topic
    v1 = json.loads((committed / "error-record.v1.json").read_text(encoding="utf-8"))
    assert "original_value_truncated" not in v1["properties"]
    for name in names - set(SCHEMAS):
        stem, version, _ = name.rsplit(".", 2)
        newer = [s for s in SCHEMAS if s.startswith(stem + ".")]
        assert newer, f"{name} is neither generated nor an older version of a generated schema"
        assert all(int(s.rsplit(".", 2)[1][1:]) > int(version[1:]) for s in newer)


def test_redrive_never_selects_a_truncated_value() -> None:
    value = os.urandom(100_000)
    whole = json.loads(_record(value).to_bytes())
    cut = json.loads(bounded_error_record(_record(value), max_bytes=MIN_ERROR_RECORD_BYTES))
    assert redrive_selects(whole, set(), set(), None, None)
    assert not redrive_selects(cut, set(), set(), None, None)
