"""Builders for provider tests: one fully-populated event and one account per provider."""

from __future__ import annotations

from typing import Any

import orjson

from connector.contract.events import OrderStatusChanged, decode_event
from connector.providers import Provider, build_provider, parse_account

SECRETS = {
    "meta": ["meta-access-token-0123456789"],
    "ycloud": ["ycloud-api-key-0123456789"],
    "zapi": ["zapi-instance-token-0123456789", "zapi-client-token-0123456789"],
    "zonos": ["f5bde245-f55e-414d-b722-80b25161c12c"],
}

ACCOUNTS: dict[str, dict[str, Any]] = {
    "meta": {
        "provider": "meta",
        "name": "meta-main",
        "phone_number_id": "106540352242922",
        "access_token": SECRETS["meta"][0],
        "template_name": "order_status_update",
        "language": "en_US",
    },
    "ycloud": {
        "provider": "ycloud",
        "name": "ycloud-main",
        "api_key": SECRETS["ycloud"][0],
        "sender": "+15550001111",
        "template_name": "order_status_template",
    },
    "zapi": {
        "provider": "zapi",
        "name": "zapi-main",
        "instance_id": "3C4E5F",
        "instance_token": SECRETS["zapi"][0],
        "client_token": SECRETS["zapi"][1],
    },
    "zonos": {
        "provider": "zonos",
        "name": "zonos-main",
        "store": "999",
        "secret": SECRETS["zonos"][0],
    },
}

PROVIDER_KINDS = tuple(ACCOUNTS)


def event_dict(**overrides: Any) -> dict[str, Any]:
    """A fully-populated event (every provider's identifiers present) as plain JSON data."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "evt-0001",
        "occurred_at": "2025-06-01T12:00:00Z",
        "order_id": "order-1001",
        "status": "processing",
        "sequence": 3,
        "description": "Your order is being prepared",
        "payment_status": "pending",
        "recipient": {"phone": "+55 44 9999-9999", "locale": "pt_BR"},
        "order": {
            "currency": "BRL",
            "items": [
                {
                    "product_id": "sku-1",
                    "name": "Mug",
                    "amount": "19.90",
                    "quantity": 2,
                    "is_custom_item": False,
                }
            ],
            "discount": "1.50",
            "tax": "0",
            "shipping": "5.00",
        },
        "whatsapp": {"reference_id": "order-1001"},
        "zapi": {
            "message_id": "3EB0F91BBA791BB0A787FC",
            "reference_id": "4N8FCTW1WM6",
            "order_request_id": "4N8FCTW22W4",
        },
        "zonos": {"store": "999", "order_id": "999-1001"},
    }
    data.update(overrides)
    return data


def event_from(data: dict[str, Any]) -> OrderStatusChanged:
    return decode_event(orjson.dumps(data))


def make_event(**overrides: Any) -> OrderStatusChanged:
    return event_from(event_dict(**overrides))


def make_provider(kind: str, **overrides: Any) -> Provider:
    return build_provider(parse_account({**ACCOUNTS[kind], **overrides}))
