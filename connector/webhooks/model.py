"""Values every webhook receiver produces (status reports, template changes) and its errors.

Pure data: nothing here reads a request, publishes a record or logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from connector.contract.records import ReportStatus
from connector.core.redaction import mask_phone
from connector.errors import ConnectorError


class WebhookError(ConnectorError):
    """A webhook request is rejected; ``http_status`` is what the server answers.

    ``reason`` is a short fixed word (a metrics label): never request data.
    """

    http_status: int = 400
    reason: str = "malformed"


class WebhookSignatureError(WebhookError):
    """The signature, token or verify token is missing or wrong: nothing may be read."""

    http_status = 401
    reason = "signature"


class WebhookStaleError(WebhookSignatureError):
    """The signed timestamp is outside the tolerance (a replay or a badly skewed clock)."""

    reason = "stale"


class WebhookHandshakeError(WebhookSignatureError):
    """Meta's subscription handshake presented a wrong verify token (Meta expects 403)."""

    http_status = 403
    reason = "handshake"


class WebhookPayloadError(WebhookError):
    """The body is signed correctly but is not a payload we understand."""

    http_status = 400
    reason = "malformed"


class WebhookTooLarge(WebhookError):  # noqa: N818  (the name the lead's brief uses)
    """The body exceeds the configured size cap."""

    http_status = 413
    reason = "too_large"


class WebhookBodyTimeout(WebhookError):  # noqa: N818  (named like WebhookTooLarge)
    """The body did not arrive completely within the server's body timeout."""

    http_status = 408
    reason = "body_timeout"


# Canonical delivery states reported by providers after they accepted a send: the same
# words a result record carries as its ``report_status``, so the enum is declared once.
DeliveryStatus = ReportStatus


@dataclass(frozen=True, slots=True)
class ReportError:
    """One provider error attached to a status report (Meta ``errors[]``, YCloud errorCode)."""

    code: str
    title: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One delivery status change for one provider message.

    ``event_id`` is our event id echoed back (Meta ``biz_opaque_callback_data``, YCloud
    ``externalId``) or None (Z-API): then correlate by ``message_id``. ``account`` is the
    configured account name when the receiver knows it; ``sender`` is the provider-side sender
    (Meta phone_number_id, YCloud ``from`` number, Z-API instanceId). ``recipient`` is shown
    masked in ``repr`` and ``log_fields``. ``dedupe_key`` is identical for every provider retry
    of the same report.
    """

    provider: str
    message_id: str
    status: DeliveryStatus
    dedupe_key: str
    event_id: str | None = None
    account: str | None = None
    sender: str | None = None
    timestamp: datetime | None = None
    recipient: str | None = field(default=None, repr=False)
    errors: tuple[ReportError, ...] = ()
    provider_message_id: str | None = None  # YCloud's own id when message_id is the wamid

    @property
    def masked_recipient(self) -> str | None:
        return None if self.recipient is None else mask_phone(self.recipient)

    @property
    def error_codes(self) -> tuple[str, ...]:
        return tuple(e.code for e in self.errors)

    def log_fields(self) -> dict[str, object]:
        """Context safe to bind to a log line (recipient masked)."""
        return {
            "provider": self.provider,
            "account": self.account,
            "message_id": self.message_id,
            "event_id": self.event_id,
            "delivery_status": self.status.value,
            "recipient": self.masked_recipient,
            "error_codes": list(self.error_codes),
        }


@dataclass(frozen=True, slots=True)
class TemplateStatusChange:
    """Meta ``message_template_status_update``: a template became APPROVED, PAUSED, DISABLED...

    ``event`` is Meta's upper-case word, kept as given so new words never break parsing; use
    ``pauses_sending``/``resumes_sending`` for the decision.
    """

    provider: str
    template_name: str
    event: str
    dedupe_key: str
    template_id: str | None = None
    language: str | None = None
    reason: str | None = None
    waba_id: str | None = None
    account: str | None = None

    @property
    def pauses_sending(self) -> bool:
        return self.event in _PAUSING_EVENTS

    @property
    def resumes_sending(self) -> bool:
        return self.event in _RESUMING_EVENTS


# FLAGGED only warns (the template still sends); LOCKED stops edits, not sends.
_PAUSING_EVENTS = frozenset({"PAUSED", "DISABLED", "REJECTED", "PENDING_DELETION", "DELETED"})
_RESUMING_EVENTS = frozenset({"APPROVED", "REINSTATED"})


@dataclass(frozen=True, slots=True)
class ParsedWebhook:
    """Everything one verified webhook request carried. ``ignored`` counts skipped items
    (statuses we do not track, other callback types) so operators can see them in metrics."""

    provider: str
    reports: tuple[StatusReport, ...] = ()
    template_changes: tuple[TemplateStatusChange, ...] = ()
    ignored: int = 0


def unix_to_datetime(value: str | float | None, *, millis: bool = False) -> datetime | None:
    """A provider's unix timestamp (seconds, or milliseconds) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value) / (1000.0 if millis else 1.0)
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise WebhookPayloadError("timestamp is not a unix time") from None


def iso_to_datetime(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp (YCloud) as an aware UTC datetime."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise WebhookPayloadError("timestamp is not RFC 3339") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def describe_validation_error(exc: ValidationError) -> str:
    """Where a payload is wrong, without echoing any input value."""
    first = exc.errors(include_input=False, include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or "body"
    return f"unexpected webhook payload at {location}: {first['type']}"
