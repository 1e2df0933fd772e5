"""YCloud endpoints over real HTTP: X-API-Key, validation, Meta rules reported through the
YCloud webhook (signature verified independently), 429 with Retry-After."""

from __future__ import annotations

import hashlib
import hmac
import time

from tests.support.sandbox_client import YCLOUD_HEADERS, YCLOUD_SECRET, ycloud_body


def assert_ycloud_signature(header: str, body: bytes) -> None:
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = parts["t"]
    assert abs(int(timestamp) - time.time()) < 300
    expected = hmac.new(YCLOUD_SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["s"], expected)


def direct_url(sandbox) -> str:
    return sandbox.provider_url("ycloud") + "/v2/whatsapp/messages/sendDirectly"


async def test_bad_key_is_401_unauthorized(client, sandbox) -> None:
    async with client.post(
        direct_url(sandbox), json=ycloud_body(), headers={"X-API-Key": "nope"}
    ) as resp:
        assert resp.status == 401
        error = (await resp.json())["error"]
    assert (error["status"], error["code"]) == (401, "UNAUTHORIZED")
    assert error["requestId"]


async def test_send_directly_success_shape(client, sandbox) -> None:
    async with client.post(
        direct_url(sandbox), json=ycloud_body(external_id="ev-9"), headers=YCLOUD_HEADERS
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "accepted"
    assert body["externalId"] == "ev-9"
    assert body["wamid"].startswith("wamid.")
    record = sandbox.requests()[-1]
    assert (record.provider, record.endpoint, record.event_id) == ("ycloud", "sendDirectly", "ev-9")


async def test_missing_and_invalid_params(client, sandbox) -> None:
    body = ycloud_body()
    del body["from"]
    async with client.post(direct_url(sandbox), json=body, headers=YCLOUD_HEADERS) as resp:
        error = (await resp.json())["error"]
        assert (resp.status, error["code"], error["target"]) == (400, "PARAM_MISSING", "from")
    async with client.post(
        direct_url(sandbox), json=ycloud_body(reference_id="x" * 36), headers=YCLOUD_HEADERS
    ) as resp:
        error = (await resp.json())["error"]
        assert resp.status == 400
        assert error["whatsappApiError"]["code"] == "100"  # Meta's code, as a string


async def test_invalid_transition_reported_by_signed_ycloud_webhook(
    client, sandbox, receiver
) -> None:
    for status, ext in (("completed", "ev-1"), ("shipped", "ev-2")):
        async with client.post(
            direct_url(sandbox),
            json=ycloud_body("ord-y", status, external_id=ext),
            headers=YCLOUD_HEADERS,
        ) as resp:
            assert resp.status == 200
            answer = await resp.json()
    hook = await receiver.next()
    assert hook.path == "/yc"
    assert_ycloud_signature(hook.headers["YCloud-Signature"], hook.body)
    event = hook.json()
    assert event["type"] == "whatsapp.message.updated"
    assert event["id"]
    assert event["apiVersion"] == "v2"
    assert event["createTime"]
    message = event["whatsappMessage"]
    assert message["status"] == "failed"
    assert message["externalId"] == "ev-2"
    assert message["id"] == answer["id"]
    assert message["wamid"] == answer["wamid"]
    assert message["errorCode"] == "2046"
    assert receiver.queue.empty()


async def test_queued_endpoint_reports_meta_errors_asynchronously(
    client, sandbox, receiver
) -> None:
    url = sandbox.provider_url("ycloud") + "/v2/whatsapp/messages"
    async with client.post(
        url, json=ycloud_body(reference_id="bad ref"), headers=YCLOUD_HEADERS
    ) as resp:
        assert resp.status == 200
        assert "wamid" not in await resp.json()
    hook = await receiver.next()
    assert_ycloud_signature(hook.headers["YCloud-Signature"], hook.body)
    assert hook.json()["whatsappMessage"]["errorCode"] == "100"


async def test_sender_rate_limit_is_429_with_retry_after(client, sandbox) -> None:
    sandbox.set_config(
        {"limits": {"ycloud_send_directly_per_sender": {"per_second": 0.5, "burst": 2}}}
    )
    answers = []
    for i in range(3):
        async with client.post(
            direct_url(sandbox), json=ycloud_body(f"o{i}"), headers=YCLOUD_HEADERS
        ) as resp:
            answers.append((resp.status, resp.headers.get("Retry-After"), await resp.json()))
    assert [a[0] for a in answers] == [200, 200, 429]
    assert answers[2][2]["error"]["code"] == "SENDER_RATE_LIMITED"
    assert int(answers[2][1]) >= 1
    # another sender has its own bucket
    async with client.post(
        direct_url(sandbox), json=ycloud_body(sender="+15550002222"), headers=YCLOUD_HEADERS
    ) as resp:
        assert resp.status == 200


async def test_pair_limit_is_429_with_meta_131056(client, sandbox) -> None:
    sandbox.set_config({"limits": {"pair": {"per_second": 0.1, "burst": 1}}})
    async with client.post(
        direct_url(sandbox), json=ycloud_body("p1"), headers=YCLOUD_HEADERS
    ) as resp:
        assert resp.status == 200
    async with client.post(
        direct_url(sandbox), json=ycloud_body("p2"), headers=YCLOUD_HEADERS
    ) as resp:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        error = (await resp.json())["error"]
    assert error["code"] == "TOO_MANY_REQUESTS"
    assert error["whatsappApiError"]["code"] == "131056"
