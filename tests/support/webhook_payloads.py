"""Signed sample webhooks shared by the webhook and web-server tests."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

META_APP_SECRET = "meta-app-secret-7f3a9c"
META_VERIFY_TOKEN = "meta-verify-token-51be"
YCLOUD_SECRET = "whsec_ycloud_0d9e8f7a6b"
ZAPI_TOKEN = "zapi-callback-token-c4d2e1"
ALL_SECRETS = (META_APP_SECRET, META_VERIFY_TOKEN, YCLOUD_SECRET, ZAPI_TOKEN)

NOW = 1_750_000_000


def meta_signature(body: bytes, secret: str = META_APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def ycloud_signature(body: bytes, t: int = NOW, secret: str = YCLOUD_SECRET) -> str:
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},s={digest}"


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def meta_status(
    status: str = "delivered",
    *,
    wamid: str = "wamid.HBgM1",
    event_id: str | None = "evt-1",
    timestamp: str = "1750000000",
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": timestamp,
        "recipient_id": "5511987654321",
    }
    if event_id is not None:
        entry["biz_opaque_callback_data"] = event_id
    if errors is not None:
        entry["errors"] = errors
    return entry


def meta_statuses_body(
    *statuses: dict[str, Any], phone_number_id: str = "106540352242922"
) -> bytes:
    return dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": phone_number_id,
                                },
                                "statuses": list(statuses),
                            },
                        }
                    ],
                }
            ],
        }
    )


def meta_2046_body(event_id: str = "evt-2046") -> bytes:
    return meta_statuses_body(
        meta_status(
            "failed",
            wamid="wamid.FAIL2046",
            event_id=event_id,
            errors=[
                {
                    "code": 2046,
                    "title": "New order status was not correctly transitioned",
                    "message": "New order status was not correctly transitioned",
                    "error_data": {"details": "Cannot move from completed to shipped"},
                }
            ],
        )
    )


def meta_template_body(event: str = "PAUSED", time: int = 1750000100) -> bytes:
    return dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "time": time,
                    "changes": [
                        {
                            "field": "message_template_status_update",
                            "value": {
                                "event": event,
                                "message_template_id": 1234567890,
                                "message_template_name": "order_status_update",
                                "message_template_language": "pt_BR",
                                "reason": "NONE",
                            },
                        }
                    ],
                }
            ],
        }
    )


def ycloud_body(
    status: str = "failed",
    *,
    external_id: str | None = "evt-yc-1",
    error_code: str | None = "131026",
    event_type: str = "whatsapp.message.updated",
) -> bytes:
    message: dict[str, Any] = {
        "id": "63f5d23d3b8c5d3bba2f5b9e",
        "wamid": "wamid.YCLOUD1",
        "wabaId": "102290129340398",
        "from": "+5511900000000",
        "to": "+5511987654321",
        "status": status,
        "updateTime": "2025-06-15T15:06:40.000Z",
    }
    if external_id is not None:
        message["externalId"] = external_id
    if error_code is not None:
        message["errorCode"] = error_code
        message["errorMessage"] = "Message undeliverable"
        message["whatsappApiError"] = {
            "message": "Message undeliverable",
            "code": int(error_code),
            "error_data": {"details": "Message failed to send"},
        }
    return dumps(
        {
            "id": "evt_eEkn4HLfVVJbLvvB",
            "type": event_type,
            "apiVersion": "v2",
            "createTime": "2025-06-15T15:06:41.000Z",
            "whatsappMessage": message,
        }
    )


def zapi_body(
    status: str = "RECEIVED", ids: tuple[str, ...] = ("3EB0C431D2A3", "3EB0C431D2A4")
) -> bytes:
    return dumps(
        {
            "instanceId": "3C4B8D",
            "status": status,
            "ids": list(ids),
            "momment": 1632234645000,
            "phoneDevice": 0,
            "phone": "5544999999999",
            "type": "MessageStatusCallback",
            "isGroup": False,
        }
    )
