"""Issue 11's sandbox behaviour: late processing, Meta's pair rule, and per-account outages."""

from __future__ import annotations

import asyncio

import aiohttp
import anyio
import orjson
import pytest

from connector.dev.sandbox import SandboxServer
from connector.dev.sandbox.config import RateLimit
from connector.dev.sandbox.state import PairLimits
from tests.support.sandbox_client import (
    META_HEADERS,
    YCLOUD_HEADERS,
    meta_body,
    meta_url,
    ycloud_body,
    zonos_body,
)

YCLOUD_DIRECT = "/v2/whatsapp/messages/sendDirectly"


async def _post_meta(
    client: aiohttp.ClientSession,
    sandbox: SandboxServer,
    status: str,
    *,
    timeout: float = 5.0,
    sender: str = "106540352242922",
) -> int:
    async with client.post(
        meta_url(sandbox, sender=sender),
        json=meta_body("ord-1", status),
        headers=META_HEADERS,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as resp:
        await resp.read()
        return resp.status


async def _until(check: object, within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_a_late_request_is_applied_after_the_client_gave_up_and_overtakes(
    client, sandbox
) -> None:
    """The issue's overtake, reproduced: "processing" lands after "shipped"."""
    sandbox.set_config(
        {"faults": {"meta": {"late_rate": 1.0, "late_min_s": 0.6, "late_max_s": 0.7}}}
    )
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        await _post_meta(client, sandbox, "processing", timeout=0.2)
    assert sandbox.requests() == []  # taken in, not yet applied
    assert sandbox.last_processed("meta", "ord-1") is None
    sandbox.set_config({"faults": {"meta": {"late_rate": 0.0}}})
    assert await _post_meta(client, sandbox, "shipped") == 200
    assert sandbox.last_processed("meta", "ord-1") == "shipped"
    await _until(lambda: sandbox.last_processed("meta", "ord-1") == "processing")
    assert [r.status for r in sandbox.requests()] == ["shipped", "processing"]
    assert sandbox.processed("meta")["meta/ord-1"] == {
        "status": "processing",
        "seq": 2,
        "late": True,
    }
    counts = sandbox.stats()["requests"]["meta"]
    assert (counts["late"], counts["late_applied"]) == (1, 1)
    async with client.get(f"{sandbox.url}/_sandbox/processed/meta/ord-1") as resp:
        assert await resp.json() == {"status": "processing", "seq": 2, "late": True}
    async with client.get(f"{sandbox.url}/_sandbox/processed?provider=meta") as resp:
        assert list((await resp.json())["orders"]) == ["meta/ord-1"]
    async with client.get(f"{sandbox.url}/_sandbox/processed/meta/nope") as resp:
        assert resp.status == 404


async def test_a_late_request_after_a_terminal_status_bounces(client, sandbox) -> None:
    sandbox.set_config(
        {"faults": {"meta": {"late_rate": 1.0, "late_min_s": 0.4, "late_max_s": 0.4}}}
    )
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        await _post_meta(client, sandbox, "processing", timeout=0.1)
    sandbox.set_config({"faults": {"meta": {"late_rate": 0.0}}})
    assert await _post_meta(client, sandbox, "completed") == 200
    await _until(lambda: len(sandbox.requests()) == 2)
    assert [(r.status, r.outcome) for r in sandbox.requests()] == [
        ("completed", "accepted"),
        ("processing", "failed:2046"),
    ]
    assert sandbox.last_processed("meta", "ord-1") == "completed"


async def test_stopping_the_sandbox_drops_requests_not_yet_applied(client) -> None:
    async with SandboxServer() as sandbox:
        sandbox.set_config(
            {"faults": {"meta": {"late_rate": 1.0, "late_min_s": 30.0, "late_max_s": 30.0}}}
        )
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await _post_meta(client, sandbox, "processing", timeout=0.1)
        with anyio.fail_after(5):
            await sandbox.stop()
        assert sandbox.requests() == []


def test_late_processing_settings_are_checked(sandbox) -> None:
    with pytest.raises(ValueError, match="late_max_s"):
        sandbox.set_config({"faults": {"zapi": {"late_min_s": 5.0, "late_max_s": 1.0}}})


def test_the_pair_limit_is_borrowed_then_repaid_not_a_token_bucket() -> None:
    pairs = PairLimits(RateLimit(per_second=1 / 6, burst=3))
    assert [pairs.take("p", t) for t in (0.0, 1.0, 2.0)] == [0.0, 0.0, 0.0]
    assert pairs.take("p", 3.0) == pytest.approx(15.0)  # burst spent: 18 s owed
    # 7 s later a token bucket (1/6 per s) would have a token again; Meta's rule does not
    assert pairs.take("p", 7.0) == pytest.approx(11.0)
    assert pairs.take("p", 18.0) == 0.0
    assert pairs.take("q", 7.0) == 0.0


async def test_meta_pair_limit_over_http_follows_the_rule(client, sandbox) -> None:
    sandbox.set_config({"limits": {"pair": {"per_second": 0.1, "burst": 3}}})
    answers = []
    for i in range(4):
        async with client.post(
            meta_url(sandbox), json=meta_body(f"p{i}"), headers=META_HEADERS
        ) as resp:
            body = await resp.json()
            answers.append((resp.status, body.get("error", {}).get("code")))
    assert answers == [(200, None)] * 3 + [(400, 131056)]


async def test_an_account_outage_answers_503_until_cleared(client, sandbox) -> None:
    sandbox.set_config({"limits": {"meta_per_sender": {"per_second": 0}}})
    async with client.post(
        f"{sandbox.url}/_sandbox/outages",
        json={"provider": "meta", "account": "106540352242922"},
    ) as resp:
        assert (await resp.json())["outages"] == [
            {"provider": "meta", "account": "106540352242922"}
        ]
    for _ in range(3):
        assert await _post_meta(client, sandbox, "processing") == 503
    assert await _post_meta(client, sandbox, "processing", sender="222") == 200  # other account
    assert [r.account for r in sandbox.requests()] == ["222"]
    assert sandbox.stats()["requests"]["meta"]["outage"] == 3
    async with client.delete(f"{sandbox.url}/_sandbox/outages") as resp:
        assert (await resp.json())["outages"] == []
    assert await _post_meta(client, sandbox, "processing") == 200


async def test_outages_by_body_account_and_for_a_whole_provider(client, sandbox) -> None:
    ycloud = sandbox.provider_url("ycloud") + YCLOUD_DIRECT
    sandbox.start_outage("ycloud", "+15550001111")
    async with client.post(ycloud, json=ycloud_body(), headers=YCLOUD_HEADERS) as resp:
        assert resp.status == 503
    other = ycloud_body("ref-2", sender="+15550002222")
    async with client.post(ycloud, json=other, headers=YCLOUD_HEADERS) as resp:
        assert resp.status == 200
    zonos = sandbox.provider_url("zonos") + "/v1/updateVendorOrderStatus"
    zonos_headers = {"Accept": "application/json"}
    sandbox.start_outage("zonos")
    async with client.post(zonos, json=zonos_body(), headers=zonos_headers) as resp:
        assert resp.status == 503
    assert {o["provider"] for o in sandbox.outages()} == {"ycloud", "zonos"}
    async with client.delete(f"{sandbox.url}/_sandbox/outages?provider=zonos") as resp:
        assert (await resp.json())["outages"] == [{"provider": "ycloud", "account": "+15550001111"}]
    async with client.post(zonos, json=zonos_body(), headers=zonos_headers) as resp:
        assert resp.status == 200
        assert "success" in await resp.json()
    sandbox.end_outage()
    async with client.post(ycloud, json=ycloud_body("ref-3"), headers=YCLOUD_HEADERS) as resp:
        assert resp.status == 200


async def test_an_invalid_outage_is_refused(client, sandbox) -> None:
    async with client.post(f"{sandbox.url}/_sandbox/outages", json={"provider": "x"}) as resp:
        assert resp.status == 400
    assert sandbox.outages() == []


async def test_reset_clears_outages_and_processed_statuses(client, sandbox) -> None:
    assert await _post_meta(client, sandbox, "processing") == 200
    sandbox.start_outage("meta")
    sandbox.reset()
    assert sandbox.outages() == []
    assert sandbox.processed() == {}


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/_sandbox/config", {"faults": {"meta": {"server_error_rate": "SECRET-1"}}}, "config"),
        ("/_sandbox/rules", [{"action": "SECRET-1"}], "rule"),
        ("/_sandbox/orders", {"provider": "SECRET-1", "key": "k"}, "order seed"),
        (
            "/_sandbox/templates/status",
            {"name": "t", "status": "SECRET-1"},
            "template status change",
        ),
        ("/_sandbox/outages", {"provider": "SECRET-1"}, "outage"),
    ],
)
async def test_an_invalid_control_body_is_a_400_naming_where_without_its_values(
    client, sandbox, path: str, body: object, error: str
) -> None:
    async with client.post(sandbox.url + path, json=body) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        text = await resp.text()
    answer = orjson.loads(text)
    assert answer["error"] == f"invalid {error}"
    assert answer["details"]
    assert all("loc" in d for d in answer["details"])
    assert "SECRET-1" not in text
