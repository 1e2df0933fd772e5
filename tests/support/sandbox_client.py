"""Talking to the sandbox in tests: its credentials, request bodies for each provider and a
webhook receiver that keeps each webhook's raw bytes so tests can verify signatures."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from aiohttp import web

from connector.dev.sandbox import SandboxServer

META_TOKEN = "sandbox-meta-token"
META_APP_SECRET = b"sandbox-meta-app-secret"
YCLOUD_KEY = "sandbox-ycloud-key"
YCLOUD_SECRET = b"sandbox-ycloud-webhook-secret"
ZAPI_INSTANCE_TOKEN = "sandbox-zapi-instance-token"
ZAPI_CLIENT_TOKEN = "sandbox-zapi-client-token"
ZONOS_SECRET = "sandbox-zonos-secret"

META_HEADERS = {"Authorization": f"Bearer {META_TOKEN}"}
YCLOUD_HEADERS = {"X-API-Key": YCLOUD_KEY}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class WebhookReceiver:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Received] = asyncio.Queue()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.queue.put_nowait(Received(request.path, dict(request.headers), body))
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def next(self, within: float = 5.0) -> Received:
        with anyio.fail_after(within):
            return await self.queue.get()


def meta_body(
    reference_id: str = "ref-1",
    status: str = "processing",
    *,
    callback: str | None = "evt-1",
    description: str | None = "Your order is on its way",
    to: str = "15551234567",
) -> dict[str, Any]:
    order: dict[str, Any] = {"status": status}
    if description is not None:
        order["description"] = description
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": "order_status_update",
            "language": {"policy": "deterministic", "code": "en_US"},
            "components": [
                {
                    "type": "order_status",
                    "parameters": [
                        {
                            "type": "order_status",
                            "order_status": {"reference_id": reference_id, "order": order},
                        }
                    ],
                }
            ],
        },
    }
    if callback is not None:
        body["biz_opaque_callback_data"] = callback
    return body


def ycloud_body(
    reference_id: str = "ref-1",
    status: str = "processing",
    *,
    external_id: str | None = "evt-1",
    sender: str = "+15550001111",
    to: str = "+15551234567",
) -> dict[str, Any]:
    body = meta_body(reference_id, status, callback=None)
    del body["messaging_product"], body["recipient_type"]
    body.update({"from": sender, "to": to})
    if external_id is not None:
        body["externalId"] = external_id
    return body


def zapi_body(reference_id: str = "4N8FCTW1WM6", status: str = "processing") -> dict[str, Any]:
    return {
        "phone": "554499999999",
        "messageId": "3EB0F91BBA791BB0A787FC",
        "message": "Order update text message",
        "referenceId": reference_id,
        "orderRequestId": "4N8FCTW22W4",
        "orderStatus": status,
        "paymentStatus": "pending",
        "order": {
            "currency": "BRL",
            "discount": 10,
            "tax": 10,
            "shipping": 5,
            "products": [
                {
                    "value": 150,
                    "quantity": 2,
                    "name": "order 1",
                    "isCustomItem": True,
                    "productId": "custom-item-4N8FCTW23N7",
                }
            ],
        },
    }


def zonos_body(
    order_id: str = "999-9999", status: str = "VENDOR_PREPARING_ORDER"
) -> dict[str, Any]:
    return {"store": "999", "secret": ZONOS_SECRET, "orderId": order_id, "orderStatus": status}


def meta_url(sandbox: SandboxServer, sender: str = "106540352242922") -> str:
    return f"{sandbox.provider_url('meta')}/v21.0/{sender}/messages"
