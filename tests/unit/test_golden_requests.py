"""Each request example in the provider docs, rebuilt by its adapter from an equivalent event.

The examples are kept verbatim (placeholders included) in ``golden/``; a test replaces each
placeholder with a concrete value, builds the event carrying the same values, and compares method,
URL (path), the documented headers and the JSON body. The only additions to a documented body are
the correlation fields the product requires: Meta ``biz_opaque_callback_data`` and YCloud
``externalId`` (both the event id), asserted explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.providers.base import BuiltRequest
from tests.support.providers import event_dict, make_event, make_provider

GOLDEN = Path(__file__).parent / "golden"
STATUS_PLACEHOLDER = "processing | partially_shipped | shipped | completed | canceled"
DOCUMENTED_STATUSES = STATUS_PLACEHOLDER.split(" | ")


def load_example(name: str, substitutions: dict[str, str]) -> dict[str, Any]:
    text = (GOLDEN / name).read_text(encoding="utf-8")
    for placeholder, value in substitutions.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    example: dict[str, Any] = json.loads(text)
    return example


def assert_request_matches(request: httpx.Request, example: dict[str, Any]) -> dict[str, Any]:
    assert request.method == example["method"]
    assert str(request.url) == example["url"]
    for header, value in example["headers"].items():
        assert request.headers[header] == value, header
    body: dict[str, Any] = json.loads(request.content)
    return body


@pytest.mark.parametrize("status", DOCUMENTED_STATUSES)
def test_meta_template_example(status: str) -> None:
    example = load_example(
        "meta_order_status_template.json",
        {
            "<API_VERSION>": "v21.0",
            "<FROM_PHONE_NUMBER_ID>": "106540352242922",
            "<ACCESS_TOKEN>": "meta-access-token-0123456789",
            "<PHONE_NUMBER>": "5544999999999",
            "<TEMPLATE_NAME>": "order_update_pt",
            "<LANGUAGE_AND_LOCALE_CODE>": "pt_BR",
            "<OPTIONAL_DESCRIPTION>": "Pedido a caminho",
            STATUS_PLACEHOLDER: status,
        },
    )
    provider = make_provider("meta", api_version="v21.0")
    event = make_event(
        status=status,
        description="Pedido a caminho",
        recipient={"phone": "+5544999999999"},
        whatsapp={
            "reference_id": "reference_id_value",
            "template_name": "order_update_pt",
            "template_language": "pt_BR",
        },
    )
    built = provider.build_request(event)
    assert isinstance(built, BuiltRequest)
    assert built.template == ("order_update_pt", "pt_BR")  # the engine parks by this key
    request = built.request
    body = assert_request_matches(request, example)
    assert body == {**example["body"], "biz_opaque_callback_data": event.event_id}


def test_meta_example_through_chatarchitect_style_endpoint() -> None:
    """Same body through a Meta-compatible BSP: other base URL, HTTP Basic auth."""
    example = load_example(
        "meta_order_status_template.json",
        {
            "<PHONE_NUMBER>": "5544999999999",
            "<TEMPLATE_NAME>": "order_update_pt",
            "<LANGUAGE_AND_LOCALE_CODE>": "pt_BR",
            "<OPTIONAL_DESCRIPTION>": "Pedido a caminho",
            STATUS_PLACEHOLDER: "shipped",
        },
    )
    provider = make_provider(
        "meta",
        base_url="https://bsp.example/whatsapp/",
        api_version="",
        auth_scheme="basic",
        basic_username="app-id",
    )
    event = make_event(
        status="shipped",
        description="Pedido a caminho",
        recipient={"phone": "+5544999999999"},
        whatsapp={
            "reference_id": "reference_id_value",
            "template_name": "order_update_pt",
            "template_language": "pt_BR",
        },
    )
    built = provider.build_request(event)
    assert isinstance(built, BuiltRequest)
    request = built.request
    assert str(request.url) == "https://bsp.example/whatsapp/106540352242922/messages"
    # base64("app-id:meta-access-token-0123456789")
    assert (
        request.headers["Authorization"] == "Basic YXBwLWlkOm1ldGEtYWNjZXNzLXRva2VuLTAxMjM0NTY3ODk="
    )
    body = json.loads(request.content)
    assert body == {**example["body"], "biz_opaque_callback_data": event.event_id}


@pytest.mark.parametrize("status", DOCUMENTED_STATUSES)
def test_ycloud_send_directly_example(status: str) -> None:
    example = load_example(
        "ycloud_send_directly.json",
        {
            "{{YOUR-API-KEY}}": "ycloud-api-key-0123456789",
            "{{BUSINESS-PHONE-NUMBER}}": "+15550001111",
            "{{CUSTOMER-PHONE-NUMBER}}": "+5544999999999",
            "<reference_id_value>": "ORDER-1001",
            "<OPTIONAL_DESCRIPTION>": "Pedido a caminho",
            STATUS_PLACEHOLDER: status,
        },
    )
    provider = make_provider("ycloud")
    event = make_event(
        status=status,
        description="Pedido a caminho",
        recipient={"phone": "+5544999999999"},
        whatsapp={"reference_id": "ORDER-1001", "template_language": "en_US"},
    )
    built = provider.build_request(event)
    assert isinstance(built, BuiltRequest)
    template = example["body"]["template"]
    assert built.template == (template["name"], template["language"]["code"])
    request = built.request
    body = assert_request_matches(request, example)
    assert body == {**example["body"], "externalId": event.event_id}


def test_zapi_order_status_update_example() -> None:
    example = load_example(
        "zapi_order_status_update.json",
        {
            "{instanceId}": "3C4E5F",
            "{token}": "zapi-instance-token-0123456789",
            "<api-key>": "zapi-client-token-0123456789",
        },
    )
    provider = make_provider("zapi")
    event = make_event(
        status="processing",
        payment_status="pending",
        description="Order update text message",
        recipient={"phone": "554499999999"},
        zapi={
            "message_id": "3EB0F91BBA791BB0A787FC",
            "reference_id": "4N8FCTW1WM6",
            "order_request_id": "4N8FCTW22W4",
        },
        order={
            "currency": "BRL",
            "discount": 10,
            "tax": 10,
            "shipping": 5,
            "items": [
                {
                    "product_id": "custom-item-4N8FCTW23N7",
                    "name": "order 1",
                    "amount": 150,
                    "quantity": 2,
                    "is_custom_item": True,
                },
                {
                    "product_id": "23940797548900636",
                    "name": "order 2",
                    "amount": 150,
                    "quantity": 2,
                    "is_custom_item": False,
                },
            ],
        },
    )
    built = provider.build_request(event)
    assert isinstance(built, BuiltRequest)
    request = built.request
    body = assert_request_matches(request, example)
    assert body == example["body"]
    assert b'"value":150,' in request.content  # a JSON number, as Z-API expects


def test_zapi_amounts_are_exact_json_numbers() -> None:
    event = make_event(
        order={
            "currency": "BRL",
            "items": [
                {
                    "product_id": "p",
                    "name": "n",
                    "amount": "1234567890123.456789",
                    "quantity": 1,
                }
            ],
            "discount": "0.10",
        }
    )
    built = make_provider("zapi").build_request(event)
    assert isinstance(built, BuiltRequest)
    request = built.request
    assert b'"value":1234567890123.456789' in request.content
    assert b'"discount":0.10' in request.content


@pytest.mark.parametrize("status", ["completed", "shipped"])
def test_zonos_update_vendor_order_status_example(status: str) -> None:
    example = load_example("zonos_update_vendor_order_status.json", {})
    provider = make_provider("zonos")
    event = make_event(status=status, zonos={"store": "999", "order_id": "999-9999"})
    built = provider.build_request(event)
    assert isinstance(built, BuiltRequest)
    request = built.request
    body = assert_request_matches(request, example)
    assert body == example["body"]


def test_event_dict_builder_is_complete() -> None:
    """Guard: the shared event used by the contract suite carries every provider's identifiers."""
    data = event_dict()
    assert {"whatsapp", "zapi", "zonos", "order", "recipient"} <= data.keys()
