"""Provider webhooks, verified then parsed into status reports and template changes (pure)."""

from connector.webhooks.dedupe import SeenWebhooks
from connector.webhooks.meta import MetaWebhookReceiver
from connector.webhooks.model import (
    DeliveryStatus,
    ParsedWebhook,
    ReportError,
    StatusReport,
    TemplateStatusChange,
    WebhookBodyTimeout,
    WebhookError,
    WebhookHandshakeError,
    WebhookPayloadError,
    WebhookSignatureError,
    WebhookStaleError,
    WebhookTooLarge,
)
from connector.webhooks.ycloud import YCloudWebhookReceiver
from connector.webhooks.zapi import ZapiWebhookReceiver

__all__ = [
    "DeliveryStatus",
    "MetaWebhookReceiver",
    "ParsedWebhook",
    "ReportError",
    "SeenWebhooks",
    "StatusReport",
    "TemplateStatusChange",
    "WebhookBodyTimeout",
    "WebhookError",
    "WebhookHandshakeError",
    "WebhookPayloadError",
    "WebhookSignatureError",
    "WebhookStaleError",
    "WebhookTooLarge",
    "YCloudWebhookReceiver",
    "ZapiWebhookReceiver",
]
