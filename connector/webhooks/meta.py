"""Meta WhatsApp Cloud API webhooks: the subscription handshake, ``X-Hub-Signature-256`` and
the ``statuses``/``message_template_status_update`` payloads. Pure: verify then parse bytes.

https://developers.facebook.com/docs/graph-api/webhooks/getting-started
https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, SecretStr

from connector.webhooks.model import (
    DeliveryStatus,
    ParsedWebhook,
    ReportError,
    StatusReport,
    TemplateStatusChange,
    WebhookHandshakeError,
    WebhookPayloadError,
    WebhookSignatureError,
    unix_to_datetime,
)
from connector.webhooks.payload import ErrorData, ProviderPayload, parse_payload
from connector.webhooks.signing import hmac_sha256_hex, same_secret, same_text

PROVIDER = "meta"
SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE_PREFIX = "sha256="


class _Error(ProviderPayload):
    code: str
    title: str | None = None
    message: str | None = None
    error_data: ErrorData | None = None


class _Status(ProviderPayload):
    id: str
    status: str
    timestamp: str | None = None
    recipient_id: str | None = None
    biz_opaque_callback_data: str | None = None
    errors: list[_Error] = Field(default_factory=list)


class _Metadata(ProviderPayload):
    phone_number_id: str | None = None


class _Value(ProviderPayload):
    # Only the parts we read; any other shape under another field is ignored.
    metadata: _Metadata | None = None
    statuses: list[_Status] = Field(default_factory=list)
    event: str | None = None
    message_template_id: str | None = None
    message_template_name: str | None = None
    message_template_language: str | None = None
    reason: str | None = None


class _Change(ProviderPayload):
    field: str
    value: _Value


class _Entry(ProviderPayload):
    id: str | None = None
    time: str | None = None
    changes: list[_Change] = Field(default_factory=list)


class _Payload(ProviderPayload):
    object: str | None = None
    entry: list[_Entry]


class MetaWebhookReceiver:
    """Verifies and parses Meta webhooks for one app.

    ``accounts`` maps a ``phone_number_id`` to the configured account name, so reports carry
    the name the rest of the connector uses; unknown numbers keep ``account=None``.
    """

    provider = PROVIDER

    def __init__(
        self,
        *,
        app_secret: SecretStr,
        verify_token: SecretStr,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        self._app_secret = app_secret
        self._verify_token = verify_token
        self._accounts = dict(accounts or {})

    def __repr__(self) -> str:
        return f"MetaWebhookReceiver(accounts={sorted(self._accounts.values())!r})"

    def handshake(self, query: Mapping[str, str]) -> str:
        """Answer ``GET ?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...``.

        Returns the challenge to echo; raises ``WebhookHandshakeError`` (403) on a wrong token
        and ``WebhookPayloadError`` (400) when the query is not a subscription handshake.
        """
        mode = query.get("hub.mode")
        token = query.get("hub.verify_token")
        challenge = query.get("hub.challenge")
        if mode != "subscribe" or token is None or challenge is None:
            raise WebhookPayloadError("not a subscription handshake")
        if not same_secret(self._verify_token, token):
            raise WebhookHandshakeError("verify token mismatch")
        return challenge

    def verify(self, body: bytes, signature: str | None) -> None:
        """Check ``X-Hub-Signature-256`` over the raw ``body``; raise before anything is read."""
        if not signature or not signature.startswith(_SIGNATURE_PREFIX):
            raise WebhookSignatureError("missing or malformed X-Hub-Signature-256")
        presented = signature[len(_SIGNATURE_PREFIX) :].strip().lower()
        if not same_text(hmac_sha256_hex(self._app_secret, body), presented):
            raise WebhookSignatureError("X-Hub-Signature-256 does not match the body")

    def receive(self, body: bytes, signature: str | None) -> ParsedWebhook:
        """Verify, then parse. The only entry point a server should call for POSTs."""
        self.verify(body, signature)
        return self.parse(body)

    def parse(self, body: bytes) -> ParsedWebhook:
        """Parse an already verified body (tests and replays may call it directly)."""
        payload = parse_payload(_Payload, body)
        reports: list[StatusReport] = []
        templates: list[TemplateStatusChange] = []
        ignored = 0
        for entry in payload.entry:
            for change in entry.changes:
                value = change.value
                if change.field == "messages":
                    sender = value.metadata.phone_number_id if value.metadata else None
                    account = self._accounts.get(sender) if sender else None
                    for status in value.statuses:
                        report = _report(status, sender=sender, account=account)
                        if report is None:
                            ignored += 1
                        else:
                            reports.append(report)
                elif change.field == "message_template_status_update":
                    change_value = _template_change(value, entry)
                    if change_value is None:
                        raise WebhookPayloadError("template status update without name/event")
                    templates.append(change_value)
                else:
                    ignored += 1
        return ParsedWebhook(PROVIDER, tuple(reports), tuple(templates), ignored)


_STATUS = {s.value: s for s in DeliveryStatus}


def _report(status: _Status, *, sender: str | None, account: str | None) -> StatusReport | None:
    canonical = _STATUS.get(status.status)
    if canonical is None:  # "deleted", "warning", future words: not delivery states we track
        return None
    errors = tuple(
        ReportError(
            code=e.code,
            title=e.title or e.message or "",
            detail=(e.error_data.details if e.error_data else None) or e.message,
        )
        for e in status.errors
    )
    codes = ",".join(e.code for e in errors)
    return StatusReport(
        provider=PROVIDER,
        message_id=status.id,
        status=canonical,
        dedupe_key=f"{PROVIDER}|{status.id}|{canonical.value}|{status.timestamp or ''}|{codes}",
        event_id=status.biz_opaque_callback_data or None,
        account=account,
        sender=sender,
        timestamp=unix_to_datetime(status.timestamp),
        recipient=status.recipient_id,
        errors=errors,
    )


def _template_change(value: _Value, entry: _Entry) -> TemplateStatusChange | None:
    if not value.event or not value.message_template_name:
        return None
    event = value.event.upper()
    return TemplateStatusChange(
        provider=PROVIDER,
        template_name=value.message_template_name,
        event=event,
        dedupe_key=(
            f"{PROVIDER}|template|{value.message_template_id or value.message_template_name}|"
            f"{value.message_template_language or ''}|{event}|{entry.time or ''}"
        ),
        template_id=value.message_template_id,
        language=value.message_template_language,
        reason=value.reason,
        waba_id=entry.id,
    )
