"""Z-API webhooks: a secret token in the callback path and ``MessageStatusCallback`` payloads.

Z-API signs nothing; the token in ``/webhooks/zapi/{token}`` is the only proof of origin.
Pure. https://developer.z-api.io/en/webhooks/on-whatsapp-message-status-changes
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, SecretStr

from connector.webhooks.model import (
    DeliveryStatus,
    ParsedWebhook,
    StatusReport,
    WebhookPayloadError,
    WebhookSignatureError,
    unix_to_datetime,
)
from connector.webhooks.payload import ProviderPayload, parse_payload
from connector.webhooks.signing import same_secret

PROVIDER = "zapi"
STATUS_CALLBACK = "MessageStatusCallback"

# Z-API has no failed state. PLAYED (a voice note was heard) implies read; READ_BY_ME is our
# own phone reading a message and says nothing about the customer.
_STATUS = {
    "SENT": DeliveryStatus.SENT,
    "RECEIVED": DeliveryStatus.DELIVERED,
    "READ": DeliveryStatus.READ,
    "PLAYED": DeliveryStatus.READ,
}


class _Callback(ProviderPayload):
    type: str
    status: str | None = None
    ids: list[str] = Field(default_factory=list)
    phone: str | None = None
    instance_id: str | None = Field(default=None, alias="instanceId")
    momment: str | None = None  # sic: Z-API's spelling; unix milliseconds
    moment: str | None = None


class ZapiWebhookReceiver:
    """Verifies and parses Z-API status callbacks.

    ``tokens`` maps each configured account name to the secret token in its callback URL;
    the matching token tells which account a callback belongs to.
    """

    provider = PROVIDER

    def __init__(self, *, tokens: Mapping[str, SecretStr]) -> None:
        if not tokens:
            raise ValueError("at least one Z-API callback token is required")
        self._tokens = dict(tokens)

    def __repr__(self) -> str:
        return f"ZapiWebhookReceiver(accounts={sorted(self._tokens)!r})"

    def verify(self, path_token: str) -> str:
        """Return the account whose token is ``path_token``; raise ``WebhookSignatureError``.

        Every configured token is compared, so timing does not reveal which one is closest.
        """
        matched: str | None = None
        for account, token in self._tokens.items():
            if same_secret(token, path_token) and matched is None:
                matched = account
        if matched is None:
            raise WebhookSignatureError("unknown Z-API callback token")
        return matched

    def receive(self, body: bytes, path_token: str) -> ParsedWebhook:
        account = self.verify(path_token)
        return self.parse(body, account=account)

    def parse(self, body: bytes, *, account: str | None = None) -> ParsedWebhook:
        callback = parse_payload(_Callback, body)
        if callback.type != STATUS_CALLBACK:
            return ParsedWebhook(PROVIDER, ignored=1)
        status = _STATUS.get((callback.status or "").upper())
        if status is None:
            return ParsedWebhook(PROVIDER, ignored=1)
        if not callback.ids:
            raise WebhookPayloadError("MessageStatusCallback without ids")
        moment = callback.momment or callback.moment
        timestamp = unix_to_datetime(moment, millis=True)
        reports = tuple(
            StatusReport(
                provider=PROVIDER,
                message_id=message_id,
                status=status,
                dedupe_key=f"{PROVIDER}|{message_id}|{status.value}|{moment or ''}|",
                account=account,
                sender=callback.instance_id,
                timestamp=timestamp,
                recipient=callback.phone,
            )
            for message_id in callback.ids
        )
        return ParsedWebhook(PROVIDER, reports=reports)
