"""The web server over real loopback HTTP: probes, metrics and the webhook routes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from connector.logs import configure_logging, reset_logging
from connector.server.health import HealthModel
from connector.server.metrics import ConnectorMetrics
from connector.server.web import WebhookHandlers, WebServer, build_web_app
from connector.webhooks import (
    DeliveryStatus,
    MetaWebhookReceiver,
    ParsedWebhook,
    StatusReport,
    TemplateStatusChange,
    YCloudWebhookReceiver,
    ZapiWebhookReceiver,
)
from tests.support.webhook_payloads import (
    ALL_SECRETS,
    META_APP_SECRET,
    META_VERIFY_TOKEN,
    NOW,
    YCLOUD_SECRET,
    ZAPI_TOKEN,
    meta_2046_body,
    meta_signature,
    meta_status,
    meta_statuses_body,
    meta_template_body,
    ycloud_body,
    ycloud_signature,
    zapi_body,
)

MAX_BODY = 4096


@dataclass
class RecordingSink:
    reports: list[StatusReport] = field(default_factory=list)
    templates: list[TemplateStatusChange] = field(default_factory=list)
    fail_next: int = 0

    async def publish_reports(self, reports: Sequence[StatusReport]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("kafka unavailable")
        self.reports.extend(reports)

    async def template_status(self, change: TemplateStatusChange) -> None:
        self.templates.append(change)


@dataclass
class Harness:
    client: TestClient[aiohttp.web.Request, aiohttp.web.Application]
    sink: RecordingSink
    health: HealthModel
    metrics: ConnectorMetrics
    logs: io.StringIO

    async def metrics_text(self) -> str:
        response = await self.client.get("/metrics")
        assert response.status == 200
        return await response.text()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", ALL_SECRETS, json=True, stream=stream)
    yield stream
    reset_logging()


@pytest.fixture
async def harness(log_stream: io.StringIO) -> AsyncIterator[Harness]:
    sink = RecordingSink()
    health = HealthModel()
    metrics = ConnectorMetrics()
    handlers = WebhookHandlers(
        sink=sink,
        meta=MetaWebhookReceiver(
            app_secret=SecretStr(META_APP_SECRET), verify_token=SecretStr(META_VERIFY_TOKEN)
        ),
        ycloud=YCloudWebhookReceiver(secret=SecretStr(YCLOUD_SECRET)),
        zapi=ZapiWebhookReceiver(tokens={"zapi-br": SecretStr(ZAPI_TOKEN)}),
        clock=lambda: float(NOW),
    )
    app = build_web_app(
        health=health, metrics=metrics, webhook_handlers=handlers, max_body_bytes=MAX_BODY
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Harness(client, sink, health, metrics, log_stream)


def _log_events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _assert_no_secret_logged(stream: io.StringIO) -> None:
    text = stream.getvalue()
    for secret in ALL_SECRETS:
        assert secret not in text


# --- probes ---------------------------------------------------------------------------------


async def test_healthz_alive_then_dead(harness: Harness) -> None:
    response = await harness.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "alive"}
    harness.health.mark_dead("engine task crashed")
    response = await harness.client.get("/healthz")
    assert response.status == 503
    assert (await response.json())["reason"] == "engine task crashed"


async def test_readyz_names_each_failing_check(harness: Harness) -> None:
    connected = [True]
    harness.health.register(
        "kafka_connected", lambda: (connected[0], None if connected[0] else "broker unreachable")
    )
    harness.health.set("partitions_assigned", True)
    harness.health.register("accounts_not_stopped", lambda: True)

    response = await harness.client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["status"] == "ready"

    connected[0] = False
    harness.health.set("accounts_not_stopped", False, "meta/br-main stopped: auth error 190")

    def broken() -> bool:
        raise RuntimeError("boom")

    harness.health.register("ledger_loaded", broken)
    response = await harness.client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "not_ready"
    assert body["failing"] == ["kafka_connected", "accounts_not_stopped", "ledger_loaded"]
    assert body["checks"]["kafka_connected"] == {"ok": False, "detail": "broker unreachable"}
    assert body["checks"]["partitions_assigned"] == {"ok": True}
    assert body["checks"]["ledger_loaded"]["detail"] == "check raised RuntimeError"

    connected[0] = True
    harness.health.set("accounts_not_stopped", True)
    harness.health.unregister("ledger_loaded")
    assert (await harness.client.get("/readyz")).status == 200


async def test_metrics_text_contains_incremented_counters(harness: Harness) -> None:
    m = harness.metrics
    m.record_consumed("order.status.changed", 0, 3)
    m.outcome("meta", "br-main", "accepted")
    m.retry("meta", "br-main")
    m.rate_limit_wait("meta", "br-main", "pair", 0.25)
    m.inflight_requests.labels("meta").set(2)
    m.set_consumer_lag("order.status.changed", 0, 17)
    m.observe_commit(0.004)
    m.observe_provider_request("meta", 0.12)
    body = meta_statuses_body(meta_status("read"))
    assert (
        await harness.client.post(
            "/webhooks/meta", data=body, headers={"X-Hub-Signature-256": meta_signature(body)}
        )
    ).status == 200

    response = await harness.client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    for line in [
        'connector_records_consumed_total{partition="0",topic="order.status.changed"} 3.0',
        'connector_outcomes_total{account="br-main",outcome="accepted",provider="meta"} 1.0',
        'connector_retries_total{account="br-main",provider="meta"} 1.0',
        'connector_rate_limit_waits_total{account="br-main",limiter="pair",provider="meta"} 1.0',
        'connector_inflight_requests{provider="meta"} 2.0',
        'connector_consumer_lag{partition="0",topic="order.status.changed"} 17.0',
        "connector_commit_latency_seconds_count 1.0",
        'connector_provider_request_seconds_bucket{le="0.25",provider="meta"} 1.0',
        'connector_webhooks_received_total{provider="meta"} 1.0',
        'connector_webhook_reports_total{provider="meta",status="read"} 1.0',
    ]:
        assert line in text, line

    m.forget_partition("order.status.changed", 0)
    assert "connector_consumer_lag{" not in await harness.metrics_text()


async def test_two_metrics_instances_do_not_share_a_registry() -> None:
    first, second = ConnectorMetrics(), ConnectorMetrics()
    first.webhook_received("meta")
    assert b'connector_webhooks_received_total{provider="meta"} 1.0' in first.render()
    assert b"connector_webhooks_received_total{" not in second.render()


# --- Meta -----------------------------------------------------------------------------------


async def test_meta_handshake(harness: Harness) -> None:
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": META_VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    response = await harness.client.get("/webhooks/meta", params=params)
    assert response.status == 200
    assert await response.text() == "1158201444"

    response = await harness.client.get(
        "/webhooks/meta", params={**params, "hub.verify_token": "guess"}
    )
    assert response.status == 403
    response = await harness.client.get("/webhooks/meta", params={"hub.challenge": "1"})
    assert response.status == 400
    _assert_no_secret_logged(harness.logs)


async def test_meta_signed_2046_is_handed_to_the_sink(harness: Harness) -> None:
    body = meta_2046_body("evt-9")
    response = await harness.client.post(
        "/webhooks/meta", data=body, headers={"X-Hub-Signature-256": meta_signature(body)}
    )
    assert response.status == 200
    (report,) = harness.sink.reports
    assert report.status is DeliveryStatus.FAILED
    assert report.event_id == "evt-9"
    assert report.error_codes == ("2046",)


async def test_replayed_webhook_answers_200_but_is_published_once(harness: Harness) -> None:
    body = meta_2046_body()
    headers = {"X-Hub-Signature-256": meta_signature(body)}
    for _ in range(3):
        response = await harness.client.post("/webhooks/meta", data=body, headers=headers)
        assert response.status == 200
    assert len(harness.sink.reports) == 1
    assert (await response.json())["duplicates"] == 1
    assert 'connector_webhook_duplicates_total{provider="meta"} 2.0' in await harness.metrics_text()


async def test_template_pause_reaches_the_sink_once(harness: Harness) -> None:
    body = meta_template_body("PAUSED")
    headers = {"X-Hub-Signature-256": meta_signature(body)}
    for _ in range(2):
        assert (
            await harness.client.post("/webhooks/meta", data=body, headers=headers)
        ).status == 200
    (change,) = harness.sink.templates
    assert change.pauses_sending
    assert harness.sink.reports == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": meta_signature(b"other")},
    ],
)
async def test_meta_bad_signature_401_nothing_published_nothing_secret_logged(
    harness: Harness, headers: dict[str, str]
) -> None:
    body = meta_2046_body()
    response = await harness.client.post("/webhooks/meta", data=body, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "signature"}
    assert harness.sink.reports == []
    _assert_no_secret_logged(harness.logs)
    rejected = [e for e in _log_events(harness.logs) if e["event"] == "webhook_rejected"]
    assert rejected
    assert rejected[0]["reason"] == "signature"
    assert (
        'connector_webhooks_rejected_total{provider="meta",reason="signature"} 1.0'
        in await harness.metrics_text()
    )


async def test_malformed_signed_body_is_400(harness: Harness) -> None:
    body = b'{"entry": "not a list"}'
    response = await harness.client.post(
        "/webhooks/meta", data=body, headers={"X-Hub-Signature-256": meta_signature(body)}
    )
    assert response.status == 400
    assert harness.sink.reports == []
    assert 'reason="malformed"' in await harness.metrics_text()


async def test_oversized_body_is_413_with_content_length(harness: Harness) -> None:
    body = b"{" + b" " * MAX_BODY + b"}"
    response = await harness.client.post(
        "/webhooks/meta", data=body, headers={"X-Hub-Signature-256": meta_signature(body)}
    )
    assert response.status == 413
    assert harness.sink.reports == []
    assert 'reason="too_large"' in await harness.metrics_text()


async def test_oversized_chunked_body_is_413(harness: Harness) -> None:
    chunk = b" " * 1024

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // len(chunk) + 2):
            yield chunk

    response = await harness.client.post(
        "/webhooks/ycloud", data=chunks(), headers={"YCloud-Signature": f"t={NOW},s=00"}
    )
    assert response.status == 413
    assert harness.sink.reports == []


async def test_body_at_the_cap_is_accepted(harness: Harness) -> None:
    body = meta_statuses_body(meta_status())
    body = body + b" " * (MAX_BODY - len(body))
    assert len(body) == MAX_BODY
    response = await harness.client.post(
        "/webhooks/meta", data=body, headers={"X-Hub-Signature-256": meta_signature(body)}
    )
    assert response.status == 200


async def test_sink_failure_is_500_and_the_retry_is_published(harness: Harness) -> None:
    body = meta_2046_body()
    headers = {"X-Hub-Signature-256": meta_signature(body)}
    harness.sink.fail_next = 1
    response = await harness.client.post("/webhooks/meta", data=body, headers=headers)
    assert response.status == 500
    assert harness.sink.reports == []
    response = await harness.client.post("/webhooks/meta", data=body, headers=headers)
    assert response.status == 200
    assert len(harness.sink.reports) == 1
    failed = [e for e in _log_events(harness.logs) if e["event"] == "webhook_sink_failed"]
    assert failed[0]["error_type"] == "ConnectionError"


# --- YCloud and Z-API -----------------------------------------------------------------------


async def test_ycloud_valid_and_stale(harness: Harness) -> None:
    body = ycloud_body("failed")
    response = await harness.client.post(
        "/webhooks/ycloud", data=body, headers={"YCloud-Signature": ycloud_signature(body)}
    )
    assert response.status == 200
    assert [r.event_id for r in harness.sink.reports] == ["evt-yc-1"]

    stale = ycloud_body("read", error_code=None)
    response = await harness.client.post(
        "/webhooks/ycloud",
        data=stale,
        headers={"YCloud-Signature": ycloud_signature(stale, t=NOW - 301)},
    )
    assert response.status == 401
    assert await response.json() == {"error": "stale"}
    assert len(harness.sink.reports) == 1
    assert (
        'connector_webhooks_rejected_total{provider="ycloud",reason="stale"} 1.0'
        in await harness.metrics_text()
    )


async def test_zapi_token_in_path(harness: Harness) -> None:
    response = await harness.client.post(f"/webhooks/zapi/{ZAPI_TOKEN}", data=zapi_body("READ"))
    assert response.status == 200
    assert {r.account for r in harness.sink.reports} == {"zapi-br"}
    assert len(harness.sink.reports) == 2

    response = await harness.client.post(
        f"/webhooks/zapi/{ZAPI_TOKEN[:-1]}", data=zapi_body("SENT")
    )
    assert response.status == 401
    assert len(harness.sink.reports) == 2
    _assert_no_secret_logged(harness.logs)


async def test_unconfigured_provider_routes_do_not_exist(log_stream: io.StringIO) -> None:
    handlers = WebhookHandlers(sink=RecordingSink())
    app = build_web_app(health=HealthModel(), metrics=ConnectorMetrics(), webhook_handlers=handlers)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.post("/webhooks/meta", data=b"{}")).status == 404
        assert (await client.post("/webhooks/ycloud", data=b"{}")).status == 404
        assert (await client.get("/healthz")).status == 200


# --- WebServer --------------------------------------------------------------------------------


async def test_web_server_start_and_stop(log_stream: io.StringIO) -> None:
    metrics = ConnectorMetrics()
    metrics.webhook_received("zapi")
    server = WebServer(build_web_app(health=HealthModel(), metrics=metrics, webhook_handlers=None))
    url = await server.start("127.0.0.1", 0)
    assert url.startswith("http://127.0.0.1:")
    assert server.url == url
    try:
        with anyio.fail_after(5):
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{url}/readyz") as response:
                    assert response.status == 200
                async with session.get(f"{url}/metrics") as response:
                    assert (
                        'connector_webhooks_received_total{provider="zapi"} 1.0'
                        in await response.text()
                    )
                async with session.post(f"{url}/webhooks/meta", data=b"{}") as response:
                    assert response.status == 404
    finally:
        await server.stop()
    with pytest.raises(RuntimeError):
        _ = server.url
    with anyio.fail_after(5):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"{url}/healthz")


async def test_concurrent_deliveries_of_one_webhook_publish_once(log_stream: io.StringIO) -> None:
    release = anyio.Event()
    entered = anyio.Event()
    published: list[StatusReport] = []

    class SlowSink:
        async def publish_reports(self, reports: Sequence[StatusReport]) -> None:
            entered.set()
            await release.wait()
            published.extend(reports)

        async def template_status(self, change: TemplateStatusChange) -> None:
            raise AssertionError("no template changes expected")

    handlers = WebhookHandlers(
        sink=SlowSink(),
        meta=MetaWebhookReceiver(
            app_secret=SecretStr(META_APP_SECRET), verify_token=SecretStr(META_VERIFY_TOKEN)
        ),
    )
    app = build_web_app(health=HealthModel(), metrics=ConnectorMetrics(), webhook_handlers=handlers)
    body = meta_2046_body()
    headers = {"X-Hub-Signature-256": meta_signature(body)}
    statuses: list[int] = []
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:

        async def post() -> None:
            response = await client.post("/webhooks/meta", data=body, headers=headers)
            statuses.append(response.status)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(post)
                await entered.wait()  # the first delivery is inside the sink
                await post()  # the provider's retry arrives meanwhile
                assert statuses == [200]
                assert published == []
                release.set()
    assert statuses == [200, 200]
    assert len(published) == 1


# --- malformed but signed input is a 4xx, never a 5xx -----------------------------------------


async def test_signed_ycloud_webhook_with_a_400_digit_timestamp_is_400(harness: Harness) -> None:
    body = ycloud_body("delivered", error_code=None)
    for digits in (400, 5_000):  # float overflow; beyond int()'s digit limit
        t = "9" * digits
        digest = hmac.new(YCLOUD_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256)
        signature = f"t={t},s={digest.hexdigest()}"
        response = await harness.client.post(
            "/webhooks/ycloud", data=body, headers={"YCloud-Signature": signature}
        )
        assert response.status == 400
        assert await response.json() == {"error": "malformed"}
    assert harness.sink.reports == []
    # Refused by the receiver itself, not by the server's last-resort catch.
    assert not [e for e in _log_events(harness.logs) if e["event"] == "webhook_parse_crashed"]


async def test_an_unexpected_receiver_exception_is_400_and_logged(
    log_stream: io.StringIO,
) -> None:
    class CrashingReceiver(ZapiWebhookReceiver):
        def receive(self, body: bytes, path_token: str) -> ParsedWebhook:
            raise OverflowError("int too large to convert to float")

    handlers = WebhookHandlers(
        sink=RecordingSink(), zapi=CrashingReceiver(tokens={"z": SecretStr(ZAPI_TOKEN)})
    )
    app = build_web_app(health=HealthModel(), metrics=ConnectorMetrics(), webhook_handlers=handlers)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.post(f"/webhooks/zapi/{ZAPI_TOKEN}", data=zapi_body("READ"))
        assert response.status == 400
    crashed = [e for e in _log_events(log_stream) if e["event"] == "webhook_parse_crashed"]
    assert crashed[0]["error_type"] == "OverflowError"


# --- slow and numerous clients are bounded ------------------------------------------------------


def _meta_only_app(metrics: ConnectorMetrics, *, body_timeout_s: float) -> aiohttp.web.Application:
    handlers = WebhookHandlers(
        sink=RecordingSink(),
        meta=MetaWebhookReceiver(
            app_secret=SecretStr(META_APP_SECRET), verify_token=SecretStr(META_VERIFY_TOKEN)
        ),
    )
    return build_web_app(
        health=HealthModel(),
        metrics=metrics,
        webhook_handlers=handlers,
        body_timeout_s=body_timeout_s,
    )


async def _read_until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after timeout_s)."""
    data = b""
    with anyio.fail_after(timeout_s):
        while chunk := await reader.read(4096):
            data += chunk
    return data


async def test_half_sent_request_head_is_closed_after_the_header_timeout(
    log_stream: io.StringIO,
) -> None:
    server = WebServer(_meta_only_app(ConnectorMetrics(), body_timeout_s=30), header_timeout_s=0.5)
    url = await server.start("127.0.0.1", 0)
    port = int(url.rsplit(":", 1)[1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        began = time.monotonic()
        writer.write(b"POST /webhooks/meta HTTP/1.1\r\nHost: x\r\nContent-Le")  # no end
        await writer.drain()
        assert await _read_until_closed(reader, 5) == b""
        waited = time.monotonic() - began
        assert 0.4 <= waited < 5
        writer.close()
        # A connection that never sends a byte is closed the same way.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _read_until_closed(reader, 5) == b""
        writer.close()
    finally:
        await server.stop()


async def test_half_sent_body_is_408_and_closed_after_the_body_timeout(
    log_stream: io.StringIO,
) -> None:
    metrics = ConnectorMetrics()
    server = WebServer(_meta_only_app(metrics, body_timeout_s=0.5), header_timeout_s=30)
    url = await server.start("127.0.0.1", 0)
    port = int(url.rsplit(":", 1)[1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        began = time.monotonic()
        writer.write(
            b"POST /webhooks/meta HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            b"X-Hub-Signature-256: sha256=00\r\n\r\n" + b"{" * 10
        )
        await writer.drain()
        answer = await _read_until_closed(reader, 5)
        waited = time.monotonic() - began
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'{"error": "body_timeout"}' in answer
        assert 0.4 <= waited < 5
        writer.close()
    finally:
        await server.stop()
    assert 'connector_webhooks_rejected_total{provider="meta",reason="body_timeout"} 1.0' in (
        metrics.render().decode()
    )


async def test_connections_beyond_the_cap_get_503_and_are_closed(log_stream: io.StringIO) -> None:
    server = WebServer(
        _meta_only_app(ConnectorMetrics(), body_timeout_s=30),
        header_timeout_s=30,
        max_connections=2,
    )
    url = await server.start("127.0.0.1", 0)
    port = int(url.rsplit(":", 1)[1])
    held = []
    try:
        for _ in range(2):
            held.append(await asyncio.open_connection("127.0.0.1", port))
        with anyio.fail_after(5):
            while server.open_connections < 2:
                await anyio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _read_until_closed(reader, 5)
        assert answer.startswith(b"HTTP/1.1 503 ")
        writer.close()
        assert server.refused_connections == 1
        # Once a held connection goes, a new one is served again.
        held.pop()[1].close()
        with anyio.fail_after(5):
            while server.open_connections > 1:
                await anyio.sleep(0.01)
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
            assert response.status == 200
    finally:
        for _reader, held_writer in held:
            held_writer.close()
        await server.stop()
