"""YCloud webhooks: the timestamped ``YCloud-Signature`` and ``whatsapp.message.updated``.

Pure: verify the raw bytes against the secret and a caller-supplied clock, then parse.
https://docs.ycloud.com/reference/configure-webhooks (signature verification)
https://docs.ycloud.com/en/api-reference/webhook-reference/whatsapp-message-updated
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ConfigDict, Field, SecretStr

from connector.webhooks.model import (
    DeliveryStatus,
    ParsedWebhook,
    ReportError,
    StatusReport,
    WebhookPayloadError,
    WebhookSignatureError,
    WebhookStaleError,
    iso_to_datetime,
)
from connector.webhooks.payload import ErrorData, ProviderPayload, parse_payload
from connector.webhooks.signing import hmac_sha256_hex, same_text

PROVIDER = "ycloud"
SIGNATURE_HEADER = "YCloud-Signature"
MESSAGE_UPDATED = "whatsapp.message.updated"
DEFAULT_TOLERANCE_S = 300.0
_MAX_TIMESTAMP_DIGITS = 12  # unix seconds stay below 10^12 until the year 33658


class _Lenient(ProviderPayload):
    model_config = ConfigDict(populate_by_name=True)


class _ApiError(_Lenient):
    code: str | None = None
    message: str | None = None
    error_data: ErrorData | None = None


class _Message(_Lenient):
    id: str
    wamid: str | None = None
    status: str
    external_id: str | None = Field(default=None, alias="externalId")
    error_code: str | None = Field(default=None, alias="errorCode")
    error_message: str | None = Field(default=None, alias="errorMessage")
    whatsapp_api_error: _ApiError | None = Field(default=None, alias="whatsappApiError")
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    send_time: str | None = Field(default=None, alias="sendTime")
    deliver_time: str | None = Field(default=None, alias="deliverTime")
    read_time: str | None = Field(default=None, alias="readTime")
    update_time: str | None = Field(default=None, alias="updateTime")


class _Envelope(_Lenient):
    id: str | None = None
    type: str
    create_time: str | None = Field(default=None, alias="createTime")
    whatsapp_message: _Message | None = Field(default=None, alias="whatsappMessage")


class YCloudWebhookReceiver:
    """Verifies and parses YCloud webhooks for one endpoint secret.

    ``tolerance_s`` bounds how far the signed ``t`` may be from ``now`` (either direction).
    ``accounts`` maps the business number (``from``, E.164) to the configured account name.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        secret: SecretStr,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        if tolerance_s <= 0:
            raise ValueError("tolerance_s must be positive")
        self._secret = secret
        self.tolerance_s = tolerance_s
        self._accounts = dict(accounts or {})

    def __repr__(self) -> str:
        return f"YCloudWebhookReceiver(tolerance_s={self.tolerance_s!r})"

    def verify(self, body: bytes, signature: str | None, *, now: float) -> None:
        """Check ``t=<unix>,s=<hex>`` over ``"<t>." + body``; then that ``t`` is fresh."""
        if not signature:
            raise WebhookSignatureError("missing YCloud-Signature")
        timestamp: str | None = None
        presented: list[str] = []
        for part in signature.split(","):
            key, sep, value = part.strip().partition("=")
            if not sep:
                continue
            if key == "t":
                timestamp = value.strip()
            elif key == "s":
                presented.append(value.strip().lower())
        # ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses.
        if timestamp is None or not (timestamp.isascii() and timestamp.isdigit()) or not presented:
            raise WebhookSignatureError("malformed YCloud-Signature")
        expected = hmac_sha256_hex(self._secret, timestamp.encode() + b"." + body)
        # Check every candidate so the time taken does not depend on which one matched.
        matched = [same_text(expected, candidate) for candidate in presented]
        if not any(matched):
            raise WebhookSignatureError("YCloud-Signature does not match the body")
        # Signed but absurd (a 400-digit t overflows float arithmetic, 5,000 digits exceed
        # int()'s limit): the sender's bug, not a transient failure, so 400 and not 500.
        if len(timestamp) > _MAX_TIMESTAMP_DIGITS:
            raise WebhookPayloadError("YCloud-Signature timestamp is not a unix time")
        if abs(now - int(timestamp)) > self.tolerance_s:
            raise WebhookStaleError("YCloud-Signature timestamp outside the tolerance")

    def receive(self, body: bytes, signature: str | None, *, now: float) -> ParsedWebhook:
        """Verify, then parse. ``now`` is the current unix time (injected for tests)."""
        self.verify(body, signature, now=now)
        return self.parse(body)

    def parse(self, body: bytes) -> ParsedWebhook:
        envelope = parse_payload(_Envelope, body)
        if envelope.type != MESSAGE_UPDATED:
            return ParsedWebhook(PROVIDER, ignored=1)
        message = envelope.whatsapp_message
        if message is None:
            raise WebhookPayloadError(f"{MESSAGE_UPDATED} without whatsappMessage")
        status = _STATUS.get(message.status)
        if status is None:  # "accepted" and future words: not a delivery state we report
            return ParsedWebhook(PROVIDER, ignored=1)
        errors = _errors(message)
        when = _time_for(status, message) or envelope.create_time
        message_id = message.wamid or message.id
        codes = ",".join(e.code for e in errors)
        report = StatusReport(
            provider=PROVIDER,
            message_id=message_id,
            status=status,
            dedupe_key=f"{PROVIDER}|{message.id}|{status.value}|{when or ''}|{codes}",
            event_id=message.external_id or None,
            account=self._accounts.get(message.from_) if message.from_ else None,
            sender=message.from_,
            timestamp=iso_to_datetime(when),
            recipient=message.to,
            errors=errors,
            provider_message_id=message.id,
        )
        return ParsedWebhook(PROVIDER, reports=(report,))


_STATUS = {s.value: s for s in DeliveryStatus}


def _errors(message: _Message) -> tuple[ReportError, ...]:
    api = message.whatsapp_api_error
    code = message.error_code or (api.code if api else None)
    if not code:
        return ()
    detail = api.error_data.details if api and api.error_data else None
    title = message.error_message or (api.message if api else None) or ""
    return (ReportError(code=code, title=title, detail=detail),)


def _time_for(status: DeliveryStatus, message: _Message) -> str | None:
    by_status = {
        DeliveryStatus.SENT: message.send_time,
        DeliveryStatus.DELIVERED: message.deliver_time,
        DeliveryStatus.READ: message.read_time,
        DeliveryStatus.FAILED: None,
    }[status]
    return by_status or message.update_time
