"""Fault injection over real HTTP: 5xx rate, connection resets, timeouts (before and after
the request is accepted), latency, and scripted per-order rules."""

from __future__ import annotations

import time

import aiohttp
import anyio
import pytest

from connector.dev.sandbox import LatencyConfig, SandboxServer
from tests.support.sandbox_client import (
    META_HEADERS,
    YCLOUD_HEADERS,
    meta_body,
    meta_url,
    ycloud_body,
)


async def test_server_error_rate_one_answers_5xx_with_provider_body(client, sandbox) -> None:
    sandbox.set_config({"faults": {"meta": {"server_error_rate": 1.0, "server_error_status": 503}}})
    async with client.post(meta_url(sandbox), json=meta_body(), headers=META_HEADERS) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == 2
    assert sandbox.requests() == []
    # other providers are unaffected
    url = sandbox.provider_url("ycloud") + "/v2/whatsapp/messages/sendDirectly"
    async with client.post(url, json=ycloud_body(), headers=YCLOUD_HEADERS) as resp:
        assert resp.status == 200


async def test_server_error_rate_is_a_probability(client, sandbox) -> None:
    sandbox.set_config(
        {
            "faults": {"meta": {"server_error_rate": 0.5}},
            "limits": {"meta_per_sender": {"per_second": 0}},
        }
    )
    statuses = []
    for i in range(200):
        async with client.post(
            meta_url(sandbox), json=meta_body(f"s{i}"), headers=META_HEADERS
        ) as resp:
            statuses.append(resp.status)
    errors = statuses.count(500)
    assert 50 < errors < 150  # binomial(200, 0.5): outside this is ~1e-12
    assert statuses.count(200) == len(sandbox.requests()) == 200 - errors


async def test_reset_rate_aborts_the_connection(client, sandbox) -> None:
    sandbox.set_config({"faults": {"meta": {"reset_rate": 1.0}}})
    with anyio.fail_after(5), pytest.raises(aiohttp.ClientConnectionError):
        async with client.post(meta_url(sandbox), json=meta_body(), headers=META_HEADERS) as r:
            await r.read()
    assert sandbox.requests() == []
    assert sandbox.stats()["requests"]["meta"]["reset"] == 1


async def test_reset_after_accept_records_the_request(client, sandbox) -> None:
    sandbox.set_config({"faults": {"meta": {"reset_after_accept_rate": 1.0}}})
    with anyio.fail_after(5), pytest.raises(aiohttp.ClientConnectionError):
        async with client.post(
            meta_url(sandbox),
            json=meta_body("dup"),
            headers={**META_HEADERS, "X-Request-Id": "ev-dup"},
        ) as r:
            await r.read()
    assert [(r.order_ref, r.event_id) for r in sandbox.requests()] == [("dup", "ev-dup")]


async def test_timeout_rate_holds_longer_than_the_client_waits(client, sandbox) -> None:
    sandbox.set_config({"faults": {"zonos": {"timeout_rate": 1.0, "timeout_hold_s": 30}}})
    url = sandbox.provider_url("zonos") + "/v1/updateVendorOrderStatus"
    body = {
        "store": "999",
        "secret": "sandbox-zonos-secret",
        "orderId": "1",
        "orderStatus": "VENDOR_PREPARING_ORDER",
    }
    started = time.monotonic()
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        async with client.post(url, json=body, timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
            await resp.read()
    assert time.monotonic() - started >= 0.3
    assert sandbox.stats()["requests"]["zonos"]["timeout"] == 1
    assert sandbox.requests() == []


async def test_timeout_after_accept_then_hold_expires_with_504(client, sandbox) -> None:
    sandbox.set_config(
        {"faults": {"meta": {"timeout_after_accept_rate": 1.0, "timeout_hold_s": 0.2}}}
    )
    with anyio.fail_after(5):
        async with client.post(
            meta_url(sandbox), json=meta_body("late"), headers=META_HEADERS
        ) as resp:
            assert resp.status == 504
    assert [r.order_ref for r in sandbox.requests()] == ["late"]


async def test_fixed_latency_is_applied(client, sandbox) -> None:
    sandbox.set_config({"faults": {"meta": {"latency": {"kind": "fixed", "ms": 150}}}})
    started = time.monotonic()
    with anyio.fail_after(5):
        async with client.post(meta_url(sandbox), json=meta_body(), headers=META_HEADERS) as r:
            assert r.status == 200
    assert time.monotonic() - started >= 0.15


async def test_lognormal_latency_fits_p50_and_p99() -> None:
    sample = LatencyConfig(kind="lognormal", p50_ms=20, p99_ms=200).sampler()
    values = sorted(sample() for _ in range(20000))
    assert 0.018 < values[10000] < 0.022
    assert 0.16 < values[19800] < 0.25


async def test_rules_script_the_next_requests_of_one_order(client, sandbox) -> None:
    async with client.post(
        sandbox.url + "/_sandbox/rules",
        json=[
            {"provider": "meta", "key": "K", "count": 2, "action": "http_error", "status": 500},
            {"provider": "meta", "key": "K", "action": "rate_limit"},
            {
                "provider": "meta",
                "key": "K",
                "action": "error",
                "code": "131026",
                "message": "(#131026) Message undeliverable",
            },
        ],
    ) as resp:
        assert resp.status == 200
    answers = []
    for _ in range(5):
        async with client.post(
            meta_url(sandbox), json=meta_body("K"), headers=META_HEADERS
        ) as resp:
            body = await resp.json()
            answers.append((resp.status, body.get("error", {}).get("code")))
    assert answers == [(500, 2), (500, 2), (400, 130429), (400, 131026), (200, None)]
    # other orders were never affected
    async with client.post(
        meta_url(sandbox), json=meta_body("other"), headers=META_HEADERS
    ) as resp:
        assert resp.status == 200
    async with client.get(sandbox.url + "/_sandbox/rules") as resp:
        assert (await resp.json())["rules"] == []


async def test_async_error_rule_answers_200_then_failed_webhook(client, sandbox, receiver) -> None:
    sandbox.add_rule({"provider": "meta", "key": "A", "action": "async_error", "code": "131026"})
    async with client.post(
        meta_url(sandbox), json=meta_body("A", callback="ev-a"), headers=META_HEADERS
    ) as resp:
        assert resp.status == 200
    hook = await receiver.next()
    st = hook.json()["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert (st["status"], st["errors"][0]["code"]) == ("failed", 131026)


async def test_rule_reset_and_timeout_for_ycloud(client, sandbox) -> None:
    sandbox.add_rule({"provider": "ycloud", "key": "R", "action": "reset"})
    sandbox.add_rule({"provider": "ycloud", "key": "R", "action": "timeout", "hold_s": 10})
    sandbox.add_rule({"provider": "ycloud", "key": "R", "action": "rate_limit", "retry_after_s": 7})
    url = sandbox.provider_url("ycloud") + "/v2/whatsapp/messages/sendDirectly"
    with anyio.fail_after(5), pytest.raises(aiohttp.ClientConnectionError):
        async with client.post(url, json=ycloud_body("R"), headers=YCLOUD_HEADERS) as r:
            await r.read()
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        async with client.post(
            url,
            json=ycloud_body("R"),
            headers=YCLOUD_HEADERS,
            timeout=aiohttp.ClientTimeout(total=0.2),
        ) as r:
            await r.read()
    async with client.post(url, json=ycloud_body("R"), headers=YCLOUD_HEADERS) as r:
        assert (r.status, r.headers["Retry-After"]) == (429, "7")


async def test_stop_releases_held_requests(receiver) -> None:
    server = SandboxServer()
    await server.start()
    server.set_config(
        {
            "faults": {"meta": {"timeout_after_accept_rate": 1.0, "timeout_hold_s": 60}},
            # the "sent" report is queued before the hold starts: its arrival is our signal
            "webhooks": {"meta_url": receiver.url, "status_reports": ["sent"]},
        }
    )
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:

        async def call() -> None:
            async with session.post(
                meta_url(server), json=meta_body(), headers=META_HEADERS
            ) as resp:
                statuses.append(resp.status)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await receiver.next()
                await server.stop()
    assert statuses == [504]


async def test_invalid_rules_are_refused(client, sandbox) -> None:
    async with client.post(
        sandbox.url + "/_sandbox/rules",
        json={"provider": "meta", "action": "async_error", "code": "NOPE"},
    ) as resp:
        assert resp.status == 400
    async with client.post(sandbox.url + "/_sandbox/rules", json={"action": "explode"}) as resp:
        assert resp.status == 400
    assert sandbox.engine.rules.snapshot() == []
