"""Asynchronous status webhooks the sandbox sends after answering, shaped and signed like
Meta's (``X-Hub-Signature-256``) and YCloud's (``YCloud-Signature``).

Owns the payload shapes, the signatures and one bounded delivery queue. It never blocks a
provider answer: a full queue drops the webhook and counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from connector.dev.sandbox.config import WebhookConfig

META_ERROR_TITLES: dict[int, str] = {
    2046: "New order status was not correctly transitioned",
    2047: "Could not change order status to 'canceled'",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131026: "Message undeliverable",
    100: "Invalid parameter",
}


def meta_error_title(code: int) -> str:
    return META_ERROR_TITLES.get(code, f"Error {code}")


def meta_signature(app_secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` header value."""
    return "sha256=" + hmac.new(app_secret, body, hashlib.sha256).hexdigest()


def ycloud_signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``YCloud-Signature`` header value."""
    signed = str(timestamp).encode() + b"." + body
    return f"t={timestamp},s={hmac.new(secret, signed, hashlib.sha256).hexdigest()}"


@dataclass(slots=True, frozen=True)
class StatusReport:
    """One status change of one sent message, provider-neutral."""

    provider: str  # "meta" or "ycloud"
    status: str  # sent | delivered | read | failed
    message_id: str  # wamid (Meta) or YCloud message id
    wamid: str | None
    sender: str  # phone_number_id (Meta) or from (YCloud)
    recipient: str
    callback_data: str | None  # biz_opaque_callback_data (Meta) / externalId (YCloud)
    error_code: int | None = None
    error_details: str | None = None


def meta_status_payload(report: StatusReport, waba_id: str, now: float) -> bytes:
    status: dict[str, Any] = {
        "id": report.message_id,
        "status": report.status,
        "timestamp": str(int(now)),
        "recipient_id": report.recipient,
    }
    if report.callback_data is not None:
        status["biz_opaque_callback_data"] = report.callback_data
    if report.error_code is not None:
        title = meta_error_title(report.error_code)
        status["errors"] = [
            {
                "code": report.error_code,
                "title": title,
                "message": title,
                "error_data": {"details": report.error_details or title},
            }
        ]
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": waba_id,
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": report.sender,
                                "phone_number_id": report.sender,
                            },
                            "statuses": [status],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    return orjson.dumps(payload)


def _iso(now: float) -> str:
    return (
        datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def ycloud_status_payload(report: StatusReport, event_id: str, waba_id: str, now: float) -> bytes:
    message: dict[str, Any] = {
        "id": report.message_id,
        "wabaId": waba_id,
        "from": report.sender,
        "to": report.recipient,
        "type": "template",
        "status": report.status,
        "updateTime": _iso(now),
    }
    if report.wamid is not None:
        message["wamid"] = report.wamid
    if report.callback_data is not None:
        message["externalId"] = report.callback_data
    if report.error_code is not None:
        title = meta_error_title(report.error_code)
        code = str(report.error_code)
        message["errorCode"] = code
        message["errorMessage"] = title
        message["whatsappApiError"] = {
            "message": title,
            "type": "OAuthException",
            "code": code,
            "error_data": {"details": report.error_details or title},
        }
    payload = {
        "id": event_id,
        "type": "whatsapp.message.updated",
        "apiVersion": "v2",
        "createTime": _iso(now),
        "whatsappMessage": message,
    }
    return orjson.dumps(payload)


@dataclass(slots=True)
class _Job:
    provider: str
    url: str
    body: bytes
    due: float


class WebhookDispatcher:
    """Posts queued webhooks with a few workers; retries a failed post up to ``max_attempts``."""

    config: WebhookConfig
    meta_secret: bytes
    ycloud_secret: bytes

    def __init__(self, config: WebhookConfig, meta_secret: bytes, ycloud_secret: bytes) -> None:
        self.reconfigure(config, meta_secret, ycloud_secret)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=config.queue_capacity)
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._busy = 0
        self.counts = {"queued": 0, "delivered": 0, "failed": 0, "dropped": 0, "no_url": 0}
        self.recent: deque[dict[str, Any]] = deque(maxlen=1000)

    def reconfigure(self, config: WebhookConfig, meta_secret: bytes, ycloud_secret: bytes) -> None:
        self.config = config
        self.meta_secret = meta_secret
        self.ycloud_secret = ycloud_secret

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"sandbox-webhook-{i}")
            for i in range(self.config.workers)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, provider: str) -> str | None:
        return self.config.meta_url if provider == "meta" else self.config.ycloud_url

    def enqueue(self, provider: str, body: bytes, now: float) -> None:
        url = self.url_for(provider)
        if url is None:
            self.counts["no_url"] += 1
            return
        try:
            self._queue.put_nowait(_Job(provider, url, body, now + self.config.delay_ms / 1000))
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            return
        self.counts["queued"] += 1

    @property
    def pending(self) -> int:
        return self._queue.qsize() + self._busy

    def clear(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        for name in self.counts:
            self.counts[name] = 0
        self.recent.clear()

    def _headers(self, job: _Job) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if job.provider == "meta":
            headers["X-Hub-Signature-256"] = meta_signature(self.meta_secret, job.body)
        else:
            headers["YCloud-Signature"] = ycloud_signature(
                self.ycloud_secret, job.body, int(time.time())
            )
        return headers

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self._busy += 1
            try:
                await self._deliver(job)
            finally:
                self._busy -= 1

    async def _deliver(self, job: _Job) -> None:
        wait = job.due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        assert self._session is not None
        last_error = ""
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                async with self._session.post(
                    job.url, data=job.body, headers=self._headers(job)
                ) as response:
                    await response.read()
                    if response.status < 300:
                        self.counts["delivered"] += 1
                        self.recent.append(
                            {
                                "provider": job.provider,
                                "http_status": response.status,
                                "attempts": attempt,
                            }
                        )
                        return
                    last_error = f"http {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = type(exc).__name__
            await asyncio.sleep(0.05 * attempt)
        self.counts["failed"] += 1
        self.recent.append(
            {"provider": job.provider, "error": last_error, "attempts": self.config.max_attempts}
        )
