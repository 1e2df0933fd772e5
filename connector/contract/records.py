"""Records the connector publishes: ``order.status.results`` (``ResultRecord``) and
``order.status.errors`` (``ErrorRecord``), and ``bounded_error_record``, which writes an error
record that always fits a size limit. Plain data; no field may ever hold a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from connector.errors import ErrorClass

RESULT_SCHEMA_VERSION: Final = 1
# 2: adds original_value_truncated, original_value_size and original_value_sha256 (a v1 reader
# that ignores unknown fields reads v2 records unchanged; topics/schemas/ keeps both).
ERROR_SCHEMA_VERSION: Final = 2

_RECORD = ConfigDict(extra="forbid", frozen=True)


def _now() -> datetime:
    return datetime.now(UTC)


def encode_bytes(data: bytes | None) -> str | None:
    """Base64 (standard alphabet) for the original key/value/header bytes kept in error records."""
    return None if data is None else base64.b64encode(data).decode("ascii")


class SourceCoordinates(BaseModel):
    """Where the input record came from, so it can be found and re-driven."""

    model_config = _RECORD

    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]


class ResultOutcome(StrEnum):
    """The final outcome of one event, or a later status report from a provider webhook."""

    ACCEPTED = "accepted"  # provider took it; delivery reports may follow (Meta, YCloud, Z-API)
    DELIVERED = "delivered"  # provider applied it synchronously (Zonos)
    ALREADY_DONE = "already_done"  # provider already had this state (Zonos, YCloud 409)
    SKIPPED_MAPPING = "skipped_mapping"  # the account maps this status to "skip"
    SKIPPED_DUPLICATE = "skipped_duplicate"  # this event id was already delivered (replay)
    SKIPPED_STALE = "skipped_stale"  # an older sequence number than one already delivered
    EXPIRED = "expired"  # too old to be worth sending
    SUPERSEDED = "superseded"  # a newer status for the same order made this one moot
    DRY_RUN = "dry_run"  # built but not sent
    STATUS_REPORT = "status_report"  # a webhook status (sent, delivered, read, failed)


class ReportStatus(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class ResultRecord(BaseModel):
    """One record on ``order.status.results`` (key = order id)."""

    model_config = _RECORD

    schema_version: int = RESULT_SCHEMA_VERSION
    event_id: str | None
    order_id: str | None
    outcome: ResultOutcome
    provider: str | None = None
    account: str | None = None
    provider_message_id: str | None = None
    http_status: int | None = None
    provider_error_code: str | None = None
    attempts: Annotated[int, Field(ge=0)] = 0
    latency_ms: Annotated[float, Field(ge=0)] | None = None
    source: SourceCoordinates | None = None
    traceparent: str | None = None
    detail: str | None = None
    report_status: ReportStatus | None = None
    recorded_at: AwareDatetime = Field(default_factory=_now)

    @model_validator(mode="after")
    def _report_status_only_on_reports(self) -> ResultRecord:
        is_report = self.outcome is ResultOutcome.STATUS_REPORT
        if is_report != (self.report_status is not None):
            raise ValueError("report_status is set exactly when outcome is 'status_report'")
        return self

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


def result_record_bytes(
    *,
    event_id: str | None,
    order_id: str | None,
    outcome: ResultOutcome,
    provider: str | None,
    account: str | None,
    provider_message_id: str | None,
    http_status: int | None,
    provider_error_code: str | None,
    attempts: int,
    latency_ms: float | None,
    source: tuple[str, int, int] | None,
    traceparent: str | None,
    detail: str | None,
    recorded_at: datetime,
) -> bytes:
    """The JSON of the ``ResultRecord`` with these fields (no status report), written directly.

    Byte for byte what ``ResultRecord.model_construct(...).to_bytes()`` writes (same field
    order, ``Z`` for UTC; tests/unit/test_records.py compares them), without building the model
    on the hot path. ``source`` is (topic, partition, offset).
    """
    return orjson.dumps(
        {
            "schema_version": RESULT_SCHEMA_VERSION,
            "event_id": event_id,
            "order_id": order_id,
            "outcome": outcome.value,
            "provider": provider,
            "account": account,
            "provider_message_id": provider_message_id,
            "http_status": http_status,
            "provider_error_code": provider_error_code,
            "attempts": attempts,
            "latency_ms": latency_ms,
            "source": None
            if source is None
            else {"topic": source[0], "partition": source[1], "offset": source[2]},
            "traceparent": traceparent,
            "detail": detail,
            "report_status": None,
            "recorded_at": recorded_at,
        },
        option=orjson.OPT_UTC_Z,
    )


class OriginalHeader(BaseModel):
    """One header of the input record; ``value`` is base64 (``None`` for a null header)."""

    model_config = _RECORD

    key: str
    value: str | None


def original_headers(headers: Sequence[tuple[str, bytes | None]]) -> tuple[OriginalHeader, ...]:
    """Kafka record headers as kept in an ``ErrorRecord``."""
    return tuple(OriginalHeader(key=k, value=encode_bytes(v)) for k, v in headers)


class ErrorRecord(BaseModel):
    """One record on ``order.status.errors`` (key = order id when known).

    Keeps the original record (base64) so the event can be re-driven; ``original_value`` is
    ``None`` for a tombstone or for asynchronous provider errors that have no input record.
    When the whole value would not fit the errors topic (``bounded_error_record``),
    ``original_value`` holds a prefix, ``original_value_truncated`` is true, and
    ``original_value_size`` and ``original_value_sha256`` describe the whole value; the input
    record itself is still at ``source``.
    """

    model_config = _RECORD

    schema_version: int = ERROR_SCHEMA_VERSION
    event_id: str | None
    order_id: str | None
    error_class: ErrorClass
    reason: str
    provider: str | None = None
    account: str | None = None
    http_status: int | None = None
    provider_error_code: str | None = None
    attempts: Annotated[int, Field(ge=0)] = 0
    first_attempt_at: AwareDatetime | None = None
    last_attempt_at: AwareDatetime | None = None
    source: SourceCoordinates | None = None
    original_key: str | None = None
    original_value: str | None = None
    original_value_truncated: bool = False
    # Set exactly when truncated: the whole value's length in bytes and its SHA-256 (hex).
    original_value_size: Annotated[int, Field(ge=0)] | None = None
    original_value_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    # ``errors.original_value``: None = the value as it was; ``redacted`` = phone numbers and
    # emails masked (not re-drivable); ``encrypted`` = AES-GCM sealed (redrive decrypts).
    original_value_protection: Literal["redacted", "encrypted"] | None = None
    original_headers: tuple[OriginalHeader, ...] = ()
    traceparent: str | None = None
    recorded_at: AwareDatetime = Field(default_factory=_now)

    @model_validator(mode="after")
    def _digest_exactly_when_truncated(self) -> ErrorRecord:
        described = (self.original_value_size, self.original_value_sha256)
        expected = self.original_value_truncated
        if any((v is not None) != expected for v in described):
            raise ValueError(
                "original_value_size and original_value_sha256 are set exactly when "
                "original_value_truncated is true"
            )
        return self

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


# ---------------------------------------------------------------------------------------------
# error records that always fit

#: The smallest ``max_bytes`` ``bounded_error_record`` accepts: the record with its free-text
#: fields clipped to ``_CLIPPED_CHARS`` characters always fits, whatever they held (a character
#: takes at most 6 bytes in JSON, as a ``\\u0001`` escape).
MIN_ERROR_RECORD_BYTES: Final = 16 * 1024
_CLIPPED_CHARS: Final = 256
_CLIPPED_NOTE: Final = " [error record cut to fit: original key and headers left out]"
_CLIPPED_NOTE_NO_ORIGINALS: Final = " [error record cut to fit]"


def _clip(text: str | None) -> str | None:
    return text if text is None or len(text) <= _CLIPPED_CHARS else text[:_CLIPPED_CHARS]


def _decoded_value(record: ErrorRecord) -> bytes:
    if record.original_value is None:
        return b""
    try:
        return base64.b64decode(record.original_value, validate=True)
    except (binascii.Error, ValueError):
        # Not our base64 (a hand-built record): describe the text that was given.
        return record.original_value.encode()


def _with_value_prefix(record: ErrorRecord, value: bytes, max_bytes: int) -> bytes | None:
    """The record with the longest prefix of ``value`` that fits ``max_bytes``, or None."""
    described = record.model_copy(
        update={
            "original_value": "",
            "original_value_truncated": True,
            "original_value_size": len(value),
            "original_value_sha256": hashlib.sha256(value).hexdigest(),
        }
    )
    room = max_bytes - len(described.to_bytes())
    if room < 0:
        return None
    # Base64 of 3n bytes is exactly 4n characters (no padding), none of them escaped in JSON.
    kept = min(len(value), room // 4 * 3)
    encoded = described.model_copy(update={"original_value": encode_bytes(value[:kept])})
    return encoded.to_bytes()


def minimal_error_record(record: ErrorRecord) -> ErrorRecord:
    """``record`` with no original key, value or headers and its text fields clipped (the value
    is still described by size and SHA-256): what to publish when even a bounded record was
    refused. The input record itself stays findable at ``source``."""
    value = _decoded_value(record) if record.original_value is not None else None
    source = record.source
    if source is not None and len(source.topic) > _CLIPPED_CHARS:
        source = source.model_copy(update={"topic": source.topic[:_CLIPPED_CHARS]})
    had_originals = record.original_key is not None or bool(record.original_headers)
    note = _CLIPPED_NOTE if had_originals else _CLIPPED_NOTE_NO_ORIGINALS
    return record.model_copy(
        update={
            "event_id": _clip(record.event_id),
            "order_id": _clip(record.order_id),
            "reason": (_clip(record.reason) or "") + note,
            "provider": _clip(record.provider),
            "account": _clip(record.account),
            "provider_error_code": _clip(record.provider_error_code),
            "traceparent": _clip(record.traceparent),
            "source": source,
            "original_key": None,
            "original_headers": (),
            "original_value": "" if value is not None else None,
            "original_value_truncated": value is not None,
            "original_value_size": len(value) if value is not None else None,
            "original_value_sha256": hashlib.sha256(value).hexdigest()
            if value is not None
            else None,
        }
    )


def bounded_error_record(record: ErrorRecord, *, max_bytes: int) -> bytes:
    """The JSON bytes of ``record``, at most ``max_bytes`` long; never raises for a valid limit.

    The original value is kept whole when the record fits. Beyond that, ``original_value``
    keeps the longest prefix that fits, and the record says so (``original_value_truncated``,
    with the whole value's size and SHA-256). If even an empty prefix does not fit (an
    enormous key, headers or reason), the record becomes ``minimal_error_record(record)``.
    ``max_bytes`` comes from ``connector.kafka.producer.error_record_limit``.
    """
    if max_bytes < MIN_ERROR_RECORD_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_ERROR_RECORD_BYTES}, got {max_bytes}")
    whole = record.to_bytes()
    if len(whole) <= max_bytes:
        return whole
    if record.original_value is not None:
        cut = _with_value_prefix(record, _decoded_value(record), max_bytes)
        if cut is not None:
            return cut
    minimal = minimal_error_record(record)
    if minimal.original_value is not None:
        cut = _with_value_prefix(minimal, _decoded_value(record), max_bytes)
        if cut is not None:
            return cut
    return minimal.to_bytes()  # fits: MIN_ERROR_RECORD_BYTES covers every clipped field


__all__ = [
    "ERROR_SCHEMA_VERSION",
    "MIN_ERROR_RECORD_BYTES",
    "RESULT_SCHEMA_VERSION",
    "ErrorRecord",
    "OriginalHeader",
    "ReportStatus",
    "ResultOutcome",
    "ResultRecord",
    "SourceCoordinates",
    "bounded_error_record",
    "encode_bytes",
    "minimal_error_record",
    "original_headers",
    "result_record_bytes",
]
