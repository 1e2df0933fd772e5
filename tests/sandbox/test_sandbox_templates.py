"""The sandbox's template APIs over HTTP: Meta ``message_templates`` (create, list with cursor
paging), YCloud ``/v2/whatsapp/templates`` (create, list), the credential reads, and moving a
template to PAUSED through the control API (after which Meta sends with it fail with 132015)."""

from __future__ import annotations

from typing import Any

import aiohttp

from connector.dev.sandbox import SandboxServer
from tests.support.sandbox_client import (
    META_HEADERS,
    YCLOUD_HEADERS,
    ZAPI_CLIENT_TOKEN,
    ZAPI_INSTANCE_TOKEN,
    meta_body,
    meta_url,
)

WABA = "102290129340398"


def meta_template(name: str = "order_status_update", language: str = "en_US") -> dict[str, Any]:
    return {
        "name": name,
        "language": language,
        "category": "UTILITY",
        "sub_category": "ORDER_STATUS",
        "components": [{"type": "BODY", "text": "Your order changed."}],
    }


def templates_url(sandbox: SandboxServer, waba: str = WABA) -> str:
    return f"{sandbox.provider_url('meta')}/v21.0/{waba}/message_templates"


async def get_json(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], **params: str
) -> tuple[int, Any]:
    async with client.get(url, headers=headers, params=params) as resp:
        return resp.status, await resp.json()


async def post_json(
    client: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with client.post(url, json=body, headers=headers or {}) as resp:
        return resp.status, await resp.json()


async def test_meta_lists_created_templates_per_waba_with_cursor_paging(
    client: aiohttp.ClientSession, sandbox: SandboxServer
) -> None:
    for language in ("en_US", "pt_BR", "es_MX"):
        status, _ = await post_json(
            client, templates_url(sandbox), meta_template(language=language), META_HEADERS
        )
        assert status == 200
    await post_json(client, templates_url(sandbox, "999"), meta_template(), META_HEADERS)

    status, first = await get_json(client, templates_url(sandbox), META_HEADERS, limit="2")
    assert status == 200
    assert [(t["name"], t["language"], t["status"]) for t in first["data"]] == [
        ("order_status_update", "en_US", "APPROVED"),
        ("order_status_update", "pt_BR", "APPROVED"),
    ]
    assert first["data"][0]["sub_category"] == "ORDER_STATUS"
    assert "next" in first["paging"]
    after = first["paging"]["cursors"]["after"]
    status, second = await get_json(
        client, templates_url(sandbox), META_HEADERS, limit="2", after=after
    )
    assert [t["language"] for t in second["data"]] == ["es_MX"]
    assert "next" not in second["paging"]

    status, denied = await get_json(
        client, templates_url(sandbox), {"Authorization": "Bearer wrong"}
    )
    assert (status, denied["error"]["code"]) == (401, 190)


async def test_paused_template_is_listed_paused_and_meta_sends_fail_with_132015(
    client: aiohttp.ClientSession, sandbox: SandboxServer
) -> None:
    await post_json(client, templates_url(sandbox), meta_template(), META_HEADERS)
    status, _ = await post_json(client, meta_url(sandbox), meta_body("ord-p1"), META_HEADERS)
    assert status == 200

    status, answer = await post_json(
        client,
        f"{sandbox.url}/_sandbox/templates/status",
        {"name": "order_status_update", "language": "en_US", "status": "PAUSED"},
    )
    assert (status, answer["changed"]) == (200, 1)
    _, listed = await get_json(client, templates_url(sandbox), META_HEADERS)
    assert [t["status"] for t in listed["data"]] == ["PAUSED"]
    status, refused = await post_json(client, meta_url(sandbox), meta_body("ord-p2"), META_HEADERS)
    assert (status, refused["error"]["code"]) == (400, 132015)

    assert sandbox.set_template_status("order_status_update", "DISABLED") == 1
    status, refused = await post_json(client, meta_url(sandbox), meta_body("ord-p3"), META_HEADERS)
    assert refused["error"]["code"] == 132016
    assert sandbox.set_template_status("order_status_update", "APPROVED") == 1
    status, _ = await post_json(client, meta_url(sandbox), meta_body("ord-p4"), META_HEADERS)
    assert status == 200

    status, missing = await post_json(
        client, f"{sandbox.url}/_sandbox/templates/status", {"name": "nope", "status": "PAUSED"}
    )
    assert (status, missing["changed"]) == (404, 0)
    status, _ = await post_json(
        client, f"{sandbox.url}/_sandbox/templates/status", {"name": "x", "status": "SLEEPY"}
    )
    assert status == 400


async def test_ycloud_creates_once_and_lists_by_waba(
    client: aiohttp.ClientSession, sandbox: SandboxServer
) -> None:
    url = f"{sandbox.provider_url('ycloud')}/v2/whatsapp/templates"
    body = {
        "wabaId": "WABA1",
        "name": "order_status_update",
        "language": "pt_BR",
        "category": "UTILITY",
        "subCategory": "ORDER_STATUS",
        "components": [{"type": "BODY", "text": "Seu pedido mudou."}],
    }
    status, made = await post_json(client, url, body, YCLOUD_HEADERS)
    assert (status, made["status"], made["wabaId"]) == (200, "APPROVED", "WABA1")
    status, again = await post_json(client, url, body, YCLOUD_HEADERS)
    assert (status, again["error"]["code"]) == (409, "ALREADY_EXISTS")
    marketing = {**body, "category": "MARKETING"}
    status, wrong = await post_json(client, url, marketing, YCLOUD_HEADERS)
    assert (status, wrong["error"]["code"]) == (400, "PARAM_INVALID")
    await post_json(client, url, {**body, "wabaId": "WABA2"}, YCLOUD_HEADERS)

    status, listed = await get_json(
        client, url, YCLOUD_HEADERS, **{"filter.wabaId": "WABA1", "includeTotal": "true"}
    )
    assert status == 200
    assert listed["total"] == 1
    assert [(t["name"], t["language"], t["subCategory"]) for t in listed["items"]] == [
        ("order_status_update", "pt_BR", "ORDER_STATUS")
    ]
    assert sandbox.set_template_status("order_status_update", "PAUSED", provider="ycloud") == 2
    _, listed = await get_json(client, url, YCLOUD_HEADERS, **{"filter.wabaId": "WABA2"})
    assert [t["status"] for t in listed["items"]] == ["PAUSED"]
    assert [t["waba_id"] for t in sandbox.templates("ycloud")] == ["WABA1", "WABA2"]
    status, _ = await get_json(client, url, {"X-API-Key": "wrong"})
    assert status == 401


async def test_credential_reads(client: aiohttp.ClientSession, sandbox: SandboxServer) -> None:
    meta_number = f"{sandbox.provider_url('meta')}/v21.0/106540352242922"
    assert (await get_json(client, meta_number, META_HEADERS))[0] == 200
    assert (await get_json(client, meta_number, {"Authorization": "Bearer x"}))[0] == 401
    balance = f"{sandbox.provider_url('ycloud')}/v2/balance"
    assert (await get_json(client, balance, YCLOUD_HEADERS))[0] == 200
    assert (await get_json(client, balance, {"X-API-Key": "x"}))[0] == 401
    zapi = f"{sandbox.provider_url('zapi')}/instances/3C4E5F/token/{ZAPI_INSTANCE_TOKEN}/status"
    status, state = await get_json(client, zapi, {"Client-Token": ZAPI_CLIENT_TOKEN})
    assert (status, state["connected"]) == (200, True)
    assert (await get_json(client, zapi, {"Client-Token": "x"}))[0] == 403
