"""Zonos (HTTP-200 errors, 406/415 HTML, per-order status rules) and Z-API (path token,
Client-Token, Content-Type 415, required order fields) over real HTTP."""

from __future__ import annotations

import orjson
import pytest

from tests.support.sandbox_client import (
    ZAPI_CLIENT_TOKEN,
    ZAPI_INSTANCE_TOKEN,
    zapi_body,
    zonos_body,
)

JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


def zonos_url(sandbox) -> str:
    return sandbox.provider_url("zonos") + "/v1/updateVendorOrderStatus"


async def zonos(client, sandbox, body, headers=JSON_HEADERS) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with client.post(zonos_url(sandbox), data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_zonos_success_then_already_current(client, sandbox) -> None:
    assert await zonos(client, sandbox, zonos_body("999-9999")) == (
        200,
        {"success": "Updated Order: 9999 to new order status: VENDOR_PREPARING_ORDER"},
    )
    # with or without the store prefix it is the same order
    status, body = await zonos(client, sandbox, zonos_body("9999"))
    assert status == 200
    assert "already has current status: VENDOR_PREPARING_ORDER" in body["error"]
    assert [r.order_ref for r in sandbox.requests()] == ["9999"]


async def test_zonos_fraud_review_blocks_until_released(client, sandbox) -> None:
    sandbox.seed_order({"provider": "zonos", "key": "999-77", "status": "IGLOBAL_FRAUD_REVIEW"})
    status, body = await zonos(client, sandbox, zonos_body("77", "VENDOR_SHIPMENT_READY"))
    assert status == 200
    assert body["error"] == (
        "OrderId: 77 cannot be moved to order status: VENDOR_SHIPMENT_READY "
        "while in status: IGLOBAL_FRAUD_REVIEW"
    )
    async with client.post(
        sandbox.url + "/_sandbox/orders",
        json={"provider": "zonos", "key": "77", "status": "IGLOBAL_ORDER_IN_PROCESS"},
    ) as resp:
        assert resp.status == 200
    status, body = await zonos(client, sandbox, zonos_body("77", "VENDOR_SHIPMENT_READY"))
    assert "success" in body


async def test_zonos_terminal_and_cancelled(client, sandbox) -> None:
    await zonos(client, sandbox, zonos_body("5", "VENDOR_END_OF_DAY_COMPLETE"))
    _, body = await zonos(client, sandbox, zonos_body("5", "VENDOR_CANCELLATION_REQUEST"))
    assert "while in status: VENDOR_END_OF_DAY_COMPLETE" in body["error"]
    sandbox.seed_order({"provider": "zonos", "key": "6", "status": "IGLOBAL_ORDER_CANCELLED"})
    _, body = await zonos(client, sandbox, zonos_body("6"))
    assert "has been cancelled" in body["error"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "cannot parse input"),
        ({**zonos_body(), "secret": "wrong"}, "Invalid security credentials"),
        ({k: v for k, v in zonos_body().items() if k != "orderId"}, "orderId parameter required"),
        (
            {k: v for k, v in zonos_body().items() if k != "orderStatus"},
            "orderStatus parameter required",
        ),
        (zonos_body("123-45"), "is not a valid orderId"),
        (zonos_body(status="SHIPPED_BY_PIGEON"), "is not a valid order status"),
        (zonos_body(status="IGLOBAL_ORDER_ON_HOLD"), "invalid status"),
    ],
    ids=[
        "unparseable",
        "bad-secret",
        "no-order-id",
        "no-status",
        "other-store",
        "unknown-status",
        "not-vendor-settable",
    ],
)
async def test_zonos_http_200_errors(client, sandbox, body, fragment) -> None:
    status, answer = await zonos(client, sandbox, body)
    assert status == 200
    assert fragment in answer["error"]
    assert "sandbox-zonos-secret" not in orjson.dumps(answer).decode()
    assert sandbox.requests() == []


async def test_zonos_unknown_order_when_auto_create_is_off(client, sandbox) -> None:
    sandbox.set_config({"zonos_auto_create_orders": False})
    _, body = await zonos(client, sandbox, zonos_body("424242"))
    assert "Unable to retrieve order" in body["error"]


async def test_zonos_unable_to_process_by_rule(client, sandbox) -> None:
    sandbox.add_rule({"provider": "zonos", "key": "9999", "action": "error"})
    _, body = await zonos(client, sandbox, zonos_body("999-9999"))
    assert body == {"error": "Unable to process updateVendorOrderStatus."}
    _, body = await zonos(client, sandbox, zonos_body("999-9999"))
    assert "success" in body


async def test_zonos_406_and_415_are_html(client, sandbox) -> None:
    data = orjson.dumps(zonos_body())
    async with client.post(
        zonos_url(sandbox),
        data=data,
        headers={"Accept": "text/html", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 406
        assert resp.content_type == "text/html"
    async with client.post(
        zonos_url(sandbox),
        data=data,
        headers={"Accept": "application/json", "Content-Type": "text/plain"},
    ) as resp:
        assert resp.status == 415
        assert resp.content_type == "text/html"


def zapi_url(sandbox, token: str = ZAPI_INSTANCE_TOKEN) -> str:
    return f"{sandbox.provider_url('zapi')}/instances/INST1/token/{token}/order-status-update"


async def test_zapi_success_shape_and_record(client, sandbox) -> None:
    async with client.post(
        zapi_url(sandbox),
        json=zapi_body(),
        headers={"Client-Token": ZAPI_CLIENT_TOKEN, "X-Request-Id": "ev-z"},
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert set(body) == {"zaapId", "messageId", "id"}
    record = sandbox.requests()[-1]
    assert (record.provider, record.account, record.target, record.order_ref, record.event_id) == (
        "zapi",
        "INST1",
        "554499999999",
        "4N8FCTW1WM6",
        "ev-z",
    )


async def test_zapi_auth_and_content_type(client, sandbox) -> None:
    good = {"Client-Token": ZAPI_CLIENT_TOKEN}
    async with client.post(zapi_url(sandbox), data=orjson.dumps(zapi_body()), headers=good) as resp:
        assert resp.status == 415  # no Content-Type
    async with client.post(zapi_url(sandbox, "wrong"), json=zapi_body(), headers=good) as resp:
        assert resp.status == 401
    async with client.post(
        zapi_url(sandbox), json=zapi_body(), headers={"Client-Token": "wrong"}
    ) as resp:
        assert resp.status == 403
        assert "client-token" in (await resp.json())["error"]
    async with client.post(zapi_url(sandbox), json=zapi_body(), headers=good) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("referenceId", None, "referenceId"),
        ("orderStatus", "partially_shipped", "orderStatus"),
        ("paymentStatus", "refunded", "paymentStatus"),
        ("phone", "+55 44 9999", "phone"),
        ("order", {"currency": "BRL", "products": []}, "order.products"),
    ],
)
async def test_zapi_required_fields(client, sandbox, field, value, fragment) -> None:
    body = zapi_body()
    if value is None:
        del body[field]
    else:
        body[field] = value
    async with client.post(
        zapi_url(sandbox), json=body, headers={"Client-Token": ZAPI_CLIENT_TOKEN}
    ) as resp:
        assert resp.status == 400
        assert fragment in (await resp.json())["error"]
