"""Records the connector publishes: ``order.status.results`` (``ResultRecord``) and
``order.status.errors`` (``ErrorRecord``). Plain data; no field may ever hold a secret.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from connector.errors import ErrorClass

RESULT_SCHEMA_VERSION: Final = 1
ERROR_SCHEMA_VERSION: Final = 1

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
    original_headers: tuple[OriginalHeader, ...] = ()
    traceparent: str | None = None
    recorded_at: AwareDatetime = Field(default_factory=_now)

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


__all__ = [
    "ERROR_SCHEMA_VERSION",
    "RESULT_SCHEMA_VERSION",
    "ErrorRecord",
    "OriginalHeader",
    "ReportStatus",
    "ResultOutcome",
    "ResultRecord",
    "SourceCoordinates",
    "encode_bytes",
    "original_headers",
]
