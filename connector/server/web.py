"""The daemon's HTTP server: /healthz, /readyz, /metrics and the provider webhook routes.

Handlers only move bytes: read with a size cap and a time limit, let the pure receivers verify
and parse, dedupe, and hand reports to a ``WebhookSink``. Nothing here publishes to Kafka
itself, and no request path, query or header is logged (tokens travel in them). The server
bounds what slow or numerous clients can hold: a header timeout, a body timeout and a cap on
open connections (docs/webhooks.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from aiohttp import hdrs, web

from connector.server.health import HealthModel
from connector.server.metrics import CONTENT_TYPE, ConnectorMetrics
from connector.webhooks import (
    MetaWebhookReceiver,
    ParsedWebhook,
    SeenWebhooks,
    StatusReport,
    TemplateStatusChange,
    WebhookBodyTimeout,
    WebhookError,
    WebhookPayloadError,
    WebhookTooLarge,
    YCloudWebhookReceiver,
    ZapiWebhookReceiver,
)
from connector.webhooks import meta as meta_webhooks
from connector.webhooks import ycloud as ycloud_webhooks

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_SINK_TIMEOUT_S = 10.0
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 20.0
DEFAULT_MAX_CONNECTIONS = 1_000
LINGER_S = 1.0

_log = structlog.get_logger("connector.server.web")


class WebhookSink(Protocol):
    """Where verified, deduplicated webhook content goes (the daemon publishes it to Kafka).

    Raising makes the server answer 500 so the provider retries; the items are then not
    remembered as seen.
    """

    async def publish_reports(self, reports: Sequence[StatusReport]) -> None: ...

    async def template_status(self, change: TemplateStatusChange) -> None: ...


@dataclass
class WebhookHandlers:
    """The configured receivers (None = route not served), the sink and the dedupe memory.

    ``clock`` returns unix seconds for YCloud's timestamp tolerance.
    """

    sink: WebhookSink
    meta: MetaWebhookReceiver | None = None
    ycloud: YCloudWebhookReceiver | None = None
    zapi: ZapiWebhookReceiver | None = None
    seen: SeenWebhooks = field(default_factory=SeenWebhooks)
    clock: Callable[[], float] = time.time
    sink_timeout_s: float = DEFAULT_SINK_TIMEOUT_S


def build_web_app(
    *,
    health: HealthModel,
    metrics: ConnectorMetrics,
    webhook_handlers: WebhookHandlers | None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> web.Application:
    """The aiohttp application. Webhook routes exist only for configured providers.

    A webhook body must arrive within ``body_timeout_s`` of its headers (else 408, closed).
    """
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    if body_timeout_s <= 0:
        raise ValueError("body_timeout_s must be positive")
    app = web.Application(client_max_size=max_body_bytes)
    probes = _Probes(health, metrics)
    app.router.add_get("/healthz", probes.healthz)
    app.router.add_get("/readyz", probes.readyz)
    app.router.add_get("/metrics", probes.metrics)
    if webhook_handlers is not None:
        routes = _WebhookRoutes(webhook_handlers, metrics, max_body_bytes, body_timeout_s)
        if webhook_handlers.meta is not None:
            app.router.add_get("/webhooks/meta", routes.meta_handshake)
            app.router.add_post("/webhooks/meta", routes.meta)
        if webhook_handlers.ycloud is not None:
            app.router.add_post("/webhooks/ycloud", routes.ycloud)
        if webhook_handlers.zapi is not None:
            app.router.add_post("/webhooks/zapi/{token}", routes.zapi)
    return app


class _Probes:
    def __init__(self, health: HealthModel, metrics: ConnectorMetrics) -> None:
        self._health = health
        self._metrics = metrics

    async def healthz(self, _request: web.Request) -> web.Response:
        if self._health.alive:
            return web.json_response({"status": "alive"})
        return web.json_response({"status": "dead", "reason": self._health.dead_reason}, status=503)

    async def readyz(self, _request: web.Request) -> web.Response:
        readiness = self._health.readiness()
        return web.json_response(readiness.as_json(), status=200 if readiness.ready else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})


class _WebhookRoutes:
    def __init__(
        self,
        handlers: WebhookHandlers,
        metrics: ConnectorMetrics,
        max_body_bytes: int,
        body_timeout_s: float,
    ) -> None:
        self._h = handlers
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._body_timeout_s = body_timeout_s

    # --- routes ---------------------------------------------------------------------------

    async def meta_handshake(self, request: web.Request) -> web.Response:
        receiver = self._h.meta
        assert receiver is not None  # the route exists only when Meta is configured
        query = {
            key: value
            for key in ("hub.mode", "hub.verify_token", "hub.challenge")
            if (value := request.query.get(key)) is not None
        }
        try:
            challenge = receiver.handshake(query)
        except WebhookError as exc:
            return self._rejected(meta_webhooks.PROVIDER, exc)
        _log.info("webhook_handshake_accepted", provider=meta_webhooks.PROVIDER)
        return web.Response(text=challenge, content_type="text/plain")

    async def meta(self, request: web.Request) -> web.Response:
        receiver = self._h.meta
        assert receiver is not None
        signature = request.headers.get(meta_webhooks.SIGNATURE_HEADER)
        return await self._receive(
            request, receiver.provider, lambda body: receiver.receive(body, signature)
        )

    async def ycloud(self, request: web.Request) -> web.Response:
        receiver = self._h.ycloud
        assert receiver is not None
        signature = request.headers.get(ycloud_webhooks.SIGNATURE_HEADER)
        now = self._h.clock()
        return await self._receive(
            request, receiver.provider, lambda body: receiver.receive(body, signature, now=now)
        )

    async def zapi(self, request: web.Request) -> web.Response:
        receiver = self._h.zapi
        assert receiver is not None
        token = request.match_info["token"]
        return await self._receive(
            request, receiver.provider, lambda body: receiver.receive(body, token)
        )

    # --- shared flow ----------------------------------------------------------------------

    async def _receive(
        self,
        request: web.Request,
        provider: str,
        verify_and_parse: Callable[[bytes], ParsedWebhook],
    ) -> web.Response:
        self._metrics.webhook_received(provider)
        try:
            body = await self._read_body(request)
        except WebhookError as exc:
            response = self._rejected(provider, exc)
            response.force_close()  # the rest of the body is not read: drop the connection
            return response
        try:
            parsed = verify_and_parse(body)
        except WebhookError as exc:
            return self._rejected(provider, exc)
        except Exception as exc:
            # Receivers are pure functions of the bytes: an exception they did not mean is
            # caused by the input (an overflow, an odd encoding) and cannot pass on a retry,
            # so it is the sender's 400, never a 500 that makes the provider retry forever.
            _log.error("webhook_parse_crashed", provider=provider, error_type=type(exc).__name__)
            return self._rejected(provider, WebhookPayloadError("payload could not be parsed"))
        return await self._hand_on(parsed)

    async def _read_body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            raise WebhookTooLarge(f"body of {length} bytes exceeds {self._max_body_bytes}")
        try:
            async with asyncio.timeout(self._body_timeout_s):
                return await request.read()  # aiohttp stops at client_max_size
        except web.HTTPRequestEntityTooLarge:
            raise WebhookTooLarge(f"body exceeds {self._max_body_bytes} bytes") from None
        except TimeoutError:
            raise WebhookBodyTimeout(
                f"body not complete within {self._body_timeout_s:g} s"
            ) from None

    def _rejected(self, provider: str, exc: WebhookError) -> web.Response:
        self._metrics.webhook_rejected(provider, exc.reason)
        # Our exception texts never echo request data, so ``detail`` is safe to log.
        _log.warning(
            "webhook_rejected",
            provider=provider,
            reason=exc.reason,
            http_status=exc.http_status,
            detail=str(exc),
        )
        return web.json_response({"error": exc.reason}, status=exc.http_status)

    async def _hand_on(self, parsed: ParsedWebhook) -> web.Response:
        provider, seen = parsed.provider, self._h.seen
        reports = [r for r in parsed.reports if seen.claim(r.dedupe_key)]
        changes = [c for c in parsed.template_changes if seen.claim(c.dedupe_key)]
        duplicates = (
            len(parsed.reports) + len(parsed.template_changes) - len(reports) - len(changes)
        )
        pending = {r.dedupe_key for r in reports} | {c.dedupe_key for c in changes}
        try:
            async with asyncio.timeout(self._h.sink_timeout_s):
                for change in changes:
                    await self._h.sink.template_status(change)
                    pending.discard(change.dedupe_key)
                if reports:
                    await self._h.sink.publish_reports(reports)
                    pending.clear()
        except Exception as exc:
            seen.release(pending)
            self._metrics.webhook_rejected(provider, "sink_failed")
            _log.error("webhook_sink_failed", provider=provider, error_type=type(exc).__name__)
            return web.json_response({"error": "sink_failed"}, status=500)
        except BaseException:  # cancelled: let the provider's retry be handled again
            seen.release(pending)
            raise
        for report in reports:
            self._metrics.webhook_report(provider, report.status.value)
        for change in changes:
            self._metrics.webhook_template_change(provider, change.event)
        if duplicates:
            self._metrics.webhook_duplicate(provider, duplicates)
        _log.info(
            "webhook_accepted",
            provider=provider,
            reports=len(reports),
            template_changes=len(changes),
            duplicates=duplicates,
            ignored=parsed.ignored,
        )
        return web.json_response(
            {"reports": len(reports), "template_changes": len(changes), "duplicates": duplicates}
        )


class _Refused(asyncio.Protocol):
    """A connection over the cap: answer 503 at once and close (providers retry later)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n\r\n"
        )
        transport.close()


class WebServer:
    """Runs an application on one TCP port; no access log (paths can carry tokens).

    ``header_timeout_s``: a connection that has not sent a complete request head this long
    after it opened (or after its last response) is closed; aiohttp's keep-alive timer, which
    runs from the moment a connection opens, does this. ``max_connections``: connections
    opened while that many are open get a 503 and are closed (connections accepted in the
    same instant may overshoot it by a few).
    """

    def __init__(
        self,
        app: web.Application,
        *,
        shutdown_timeout_s: float = 5.0,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if header_timeout_s <= 0 or max_connections < 1:
            raise ValueError("header_timeout_s must be positive and max_connections >= 1")
        self._app = app
        self._shutdown_timeout_s = shutdown_timeout_s
        self._header_timeout_s = header_timeout_s
        self._max_connections = max_connections
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._url: str | None = None
        self.refused_connections = 0

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the web server is not started")
        return self._url

    @property
    def open_connections(self) -> int:
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port); return the base URL."""
        if self._runner is not None:
            raise RuntimeError("the web server is already started")
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self._shutdown_timeout_s,
            keepalive_timeout=self._header_timeout_s,
            # After an early answer (408, 413) aiohttp reads and drops the rest of the body
            # before closing, for 10 s by default: a slow sender would hold it that long.
            lingering_time=LINGER_S,
        )
        await runner.setup()
        server = runner.server
        assert server is not None  # set by setup()

        def connection() -> asyncio.BaseProtocol:
            if len(server.connections) >= self._max_connections:
                self.refused_connections += 1
                if self.refused_connections == 1 or self.refused_connections % 1000 == 0:
                    _log.warning(
                        "web_connections_refused",
                        max_connections=self._max_connections,
                        refused_total=self.refused_connections,
                    )
                return _Refused()
            return server()

        try:
            listener = await asyncio.get_running_loop().create_server(
                connection, host, port, reuse_address=True
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._listener = runner, listener
        bound_host, bound_port = listener.sockets[0].getsockname()[:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._url = f"http://{shown_host}:{bound_port}"
        _log.info("web_server_started", host=bound_host, port=bound_port)
        return self._url

    async def stop(self) -> None:
        runner, self._runner, self._url = self._runner, None, None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()  # no new connections; open ones are shut down by the runner
        if runner is not None:
            await runner.cleanup()
            _log.info("web_server_stopped")
        if listener is not None:
            await listener.wait_closed()

    async def __aenter__(self) -> WebServer:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
