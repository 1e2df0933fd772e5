"""The accepted-request log and the inspection/control endpoints over real HTTP."""

from __future__ import annotations

import anyio

from connector.dev.sandbox import SandboxConfig, SandboxServer
from tests.support.sandbox_client import (
    META_HEADERS,
    YCLOUD_HEADERS,
    meta_body,
    meta_url,
    ycloud_body,
)


async def test_log_keeps_arrival_order_with_event_ids_and_traceparent(client, sandbox) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for i in range(5):
        async with client.post(
            meta_url(sandbox),
            json=meta_body(f"o{i}", callback=f"cb{i}"),
            headers={**META_HEADERS, "X-Request-Id": f"ev{i}", "traceparent": traceparent},
        ) as resp:
            assert resp.status == 200
    async with client.post(
        meta_url(sandbox), json=meta_body("o5", callback="cb5"), headers=META_HEADERS
    ) as resp:
        assert resp.status == 200
    url = sandbox.provider_url("ycloud") + "/v2/whatsapp/messages/sendDirectly"
    async with client.post(
        url, json=ycloud_body("y0", external_id="ext0"), headers=YCLOUD_HEADERS
    ) as resp:
        assert resp.status == 200
    async with client.post(meta_url(sandbox), json=meta_body(), headers={}) as resp:
        assert resp.status == 401  # counted, not recorded

    async with client.get(sandbox.url + "/_sandbox/requests", params={"since": 0}) as resp:
        page = await resp.json()
    records = page["requests"]
    assert [r["seq"] for r in records] == list(range(1, 8))
    # X-Request-Id wins; biz_opaque_callback_data / externalId are the fallback
    assert [r["event_id"] for r in records] == [f"ev{i}" for i in range(5)] + ["cb5", "ext0"]
    assert records[0]["traceparent"] == traceparent
    assert records[0]["provider"] == "meta"
    assert records[0]["account"] == "106540352242922"
    assert records[0]["target"] == "15551234567"
    assert records[0]["status"] == "processing"
    assert records[0]["received_at"] <= records[-1]["received_at"]
    assert page["next_since"] == 7

    async with client.get(
        sandbox.url + "/_sandbox/requests", params={"since": 2, "limit": 3}
    ) as resp:
        page = await resp.json()
    assert [r["seq"] for r in page["requests"]] == [3, 4, 5]
    assert page["next_since"] == 5

    async with client.get(sandbox.url + "/_sandbox/stats") as resp:
        stats = await resp.json()
    assert stats["requests"]["meta"] == {"200": 6, "401:190": 1}
    assert stats["requests"]["ycloud"] == {"200": 1}
    assert stats["accepted"] == 7


async def test_log_is_bounded_and_reports_dropped(client) -> None:
    async with SandboxServer(SandboxConfig(record_capacity=8)) as sandbox:
        for i in range(30):
            async with client.post(
                meta_url(sandbox), json=meta_body(f"b{i}"), headers=META_HEADERS
            ) as resp:
                assert resp.status == 200
        stats = sandbox.stats()
        assert stats["accepted"] == 30
        assert 8 <= stats["log"]["size"] <= 9
        assert stats["log"]["dropped"] == 30 - stats["log"]["size"]
        async with client.get(sandbox.url + "/_sandbox/requests?since=0") as resp:
            page = await resp.json()
        seqs = [r["seq"] for r in page["requests"]]
        assert seqs == list(range(page["first_seq"], 31))


async def test_control_api_config_reset_and_secrets_hidden(client, sandbox) -> None:
    async with client.post(
        sandbox.url + "/_sandbox/config",
        json={
            "faults": {"meta": {"latency": {"kind": "uniform", "min_ms": 1, "max_ms": 2}}},
            "credentials": {"meta_access_token": "rotated"},
        },
    ) as resp:
        assert resp.status == 200
        shown = await resp.text()
    assert "rotated" not in shown
    assert "sandbox-" not in shown
    assert sandbox.config.faults.meta.latency.kind == "uniform"
    assert sandbox.config.faults.ycloud.latency.kind == "none"  # merged, not replaced
    async with client.post(
        meta_url(sandbox), json=meta_body(), headers={"Authorization": "Bearer rotated"}
    ) as resp:
        assert resp.status == 200
    async with client.post(
        sandbox.url + "/_sandbox/config", json={"faults": {"meta": {"server_error_rate": 2}}}
    ) as resp:
        assert resp.status == 400
    async with client.post(sandbox.url + "/_sandbox/reset") as resp:
        assert resp.status == 200
    assert sandbox.requests() == []
    assert sandbox.stats()["requests"] == {}


async def test_webhooks_without_url_are_counted_not_sent(client) -> None:
    async with SandboxServer() as sandbox:
        await client.post(meta_url(sandbox), json=meta_body("w", "completed"), headers=META_HEADERS)
        await client.post(meta_url(sandbox), json=meta_body("w", "shipped"), headers=META_HEADERS)
        with anyio.fail_after(2):
            async with client.get(sandbox.url + "/_sandbox/webhooks") as resp:
                hooks = await resp.json()
        assert hooks["no_url"] == 1
        assert hooks["delivered"] == 0
