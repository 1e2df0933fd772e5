"""Meta endpoints over real HTTP: auth, validation, transition rules and the asynchronous,
signed 2046/2047 webhooks (signatures verified here independently of the sandbox code)."""

from __future__ import annotations

import hashlib
import hmac

import aiohttp
import pytest

from connector.dev.sandbox import SandboxServer
from tests.support.sandbox_client import (
    META_APP_SECRET,
    META_HEADERS,
    WebhookReceiver,
    meta_body,
    meta_url,
)


def assert_meta_signature(headers: dict[str, str], body: bytes) -> None:
    expected = "sha256=" + hmac.new(META_APP_SECRET, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Hub-Signature-256"], expected)


async def send(
    client: aiohttp.ClientSession,
    sandbox: SandboxServer,
    body: object,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict]:
    async with client.post(
        meta_url(sandbox), json=body, headers=headers if headers is not None else META_HEADERS
    ) as resp:
        return resp.status, await resp.json()


async def test_bad_token_is_code_190(client, sandbox) -> None:
    status, body = await send(
        client, sandbox, meta_body(), headers={"Authorization": "Bearer wrong"}
    )
    assert status == 401
    assert body["error"]["code"] == 190
    assert body["error"]["type"] == "OAuthException"
    assert "fbtrace_id" in body["error"]
    status, body = await send(client, sandbox, meta_body(), headers={})
    assert (status, body["error"]["code"]) == (401, 190)
    assert sandbox.requests() == []


@pytest.mark.parametrize(
    "body",
    [
        meta_body(reference_id="x" * 36),
        meta_body(reference_id="bad ref!"),
        meta_body(description="d" * 121),
        meta_body(status="partially-shipped"),
        meta_body(status="lost"),
        {**meta_body(), "messaging_product": None},
        {k: v for k, v in meta_body().items() if k != "to"},
    ],
    ids=[
        "ref-too-long",
        "ref-bad-chars",
        "description-121",
        "hyphen-status",
        "unknown-status",
        "no-messaging-product",
        "no-to",
    ],
)
async def test_invalid_parameters_are_code_100(client, sandbox, body) -> None:
    status, answer = await send(client, sandbox, body)
    assert status == 400
    assert answer["error"]["code"] == 100
    assert answer["error"]["error_data"]["details"]
    assert sandbox.requests() == []


async def test_limits_at_the_edge_are_accepted(client, sandbox) -> None:
    status, answer = await send(
        client, sandbox, meta_body(reference_id="A.b_c-" + "9" * 29, description="d" * 120)
    )
    assert status == 200
    assert answer["messages"][0]["id"].startswith("wamid.")
    assert answer["contacts"][0]["wa_id"] == "15551234567"


async def test_valid_path_sends_no_failure_webhook_then_2046_is_signed_and_async(
    client, sandbox, receiver: WebhookReceiver
) -> None:
    for step in ("processing", "partially_shipped", "shipped", "processing", "completed"):
        status, _ = await send(client, sandbox, meta_body("ord-1", step, callback=f"e-{step}"))
        assert status == 200
    # completed is terminal: this is accepted with 200, then fails by webhook with 2046
    status, answer = await send(client, sandbox, meta_body("ord-1", "shipped", callback="e-late"))
    assert status == 200
    wamid = answer["messages"][0]["id"]

    hook = await receiver.next()
    assert hook.path == "/meta"
    assert_meta_signature(hook.headers, hook.body)
    statuses = hook.json()["entry"][0]["changes"][0]["value"]["statuses"]
    assert statuses[0]["id"] == wamid
    assert statuses[0]["status"] == "failed"
    assert statuses[0]["biz_opaque_callback_data"] == "e-late"
    error = statuses[0]["errors"][0]
    assert error["code"] == 2046
    assert error["title"] == "New order status was not correctly transitioned"
    assert error["error_data"]["details"]
    assert receiver.queue.empty()  # exactly one webhook: the valid steps caused none
    assert [r.outcome for r in sandbox.requests()] == ["accepted"] * 5 + ["failed:2046"]


async def test_back_to_pending_is_2046(client, sandbox, receiver) -> None:
    await send(client, sandbox, meta_body("ord-2", "processing"))
    await send(client, sandbox, meta_body("ord-2", "pending", callback="e-back"))
    hook = await receiver.next()
    status = hook.json()["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert status["errors"][0]["code"] == 2046
    assert status["biz_opaque_callback_data"] == "e-back"


@pytest.mark.parametrize("payment", ["paid", "pending"])
async def test_cancel_of_paid_order_is_2047(client, sandbox, receiver, payment) -> None:
    async with client.post(
        sandbox.url + "/_sandbox/orders",
        json={"provider": "meta", "key": "ord-3", "payment_status": payment},
    ) as resp:
        assert resp.status == 200
    status, _ = await send(client, sandbox, meta_body("ord-3", "canceled", callback="e-cancel"))
    assert status == 200
    hook = await receiver.next()
    assert_meta_signature(hook.headers, hook.body)
    st = hook.json()["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert st["errors"][0]["code"] == 2047
    assert st["errors"][0]["title"] == "Could not change order status to 'canceled'"
    assert st["biz_opaque_callback_data"] == "e-cancel"
    # the refused cancel left the order where it was: processing is still allowed
    await send(client, sandbox, meta_body("ord-3", "processing"))
    assert sandbox.requests()[-1].outcome == "accepted"


async def test_cancel_of_unpaid_order_is_accepted_and_terminal(client, sandbox, receiver) -> None:
    await send(client, sandbox, meta_body("ord-4", "canceled"))
    await send(client, sandbox, meta_body("ord-4", "processing", callback="after-cancel"))
    hook = await receiver.next()
    st = hook.json()["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert (st["errors"][0]["code"], st["biz_opaque_callback_data"]) == (2046, "after-cancel")


async def test_status_reports_for_accepted_messages(client, sandbox, receiver) -> None:
    sandbox.set_config({"webhooks": {"status_reports": ["sent", "delivered", "read"]}})
    _, answer = await send(client, sandbox, meta_body("ord-5", "processing", callback="e-5"))
    wamid = answer["messages"][0]["id"]
    seen = []
    for _ in range(3):
        hook = await receiver.next()
        assert_meta_signature(hook.headers, hook.body)
        st = hook.json()["entry"][0]["changes"][0]["value"]["statuses"][0]
        assert (st["id"], st["biz_opaque_callback_data"]) == (wamid, "e-5")
        assert "errors" not in st
        seen.append(st["status"])
    assert seen == ["sent", "delivered", "read"]


async def test_interactive_variant_is_accepted(client, sandbox) -> None:
    body = {
        "messaging_product": "whatsapp",
        "to": "15551234567",
        "type": "interactive",
        "interactive": {
            "type": "order_status",
            "body": {"text": "Your order"},
            "action": {
                "name": "review_order",
                "parameters": {"reference_id": "ord-6", "order": {"status": "shipped"}},
            },
        },
    }
    status, _ = await send(client, sandbox, body)
    assert status == 200
    assert sandbox.requests()[-1].order_ref == "ord-6"


async def test_template_creation_and_required_templates(client, sandbox) -> None:
    sandbox.set_config({"meta_require_templates": True})
    status, answer = await send(client, sandbox, meta_body("ord-7"))
    assert (status, answer["error"]["code"]) == (404, 132001)
    url = f"{sandbox.provider_url('meta')}/v21.0/100000000000001/message_templates"
    template = {
        "name": "order_status_update",
        "language": "en_US",
        "category": "UTILITY",
        "sub_category": "ORDER_STATUS",
        "components": [{"type": "BODY", "text": "Order update"}, {"type": "FOOTER", "text": "x"}],
    }
    async with client.post(url, json=template, headers=META_HEADERS) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "APPROVED"
    async with client.post(
        url, json={**template, "category": "MARKETING"}, headers=META_HEADERS
    ) as resp:
        assert resp.status == 400
    status, _ = await send(client, sandbox, meta_body("ord-7"))
    assert status == 200
