"""The sandbox's shared runtime: current config and its fast-path derivatives, per-order
state, limiters, rules, the request log, counters, webhooks, and the fault wrapper that
every provider endpoint runs through.

It must not know provider wire formats; those live in the per-provider modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

from connector.dev.sandbox.config import PROVIDERS, FaultConfig, Rule, SandboxConfig
from connector.dev.sandbox.state import (
    AnswerCounters,
    OrderBook,
    PairLimits,
    ProcessedStatus,
    RecordedRequest,
    RequestLog,
    RuleBook,
    TemplateBook,
    TokenBuckets,
    meta_transition_error,
)
from connector.dev.sandbox.webhooks import (
    StatusReport,
    WebhookDispatcher,
    meta_status_payload,
    ycloud_status_payload,
)

JSON = "application/json"


@dataclass(slots=True)
class Reply:
    """What a provider handler decided. ``action`` asks the wrapper to hold or reset instead."""

    status: int
    body: bytes
    label: str
    content_type: str = JSON
    headers: dict[str, str] | None = None
    accepted: bool = False
    action: Literal["timeout", "reset"] | None = None
    hold_s: float = 0.0


Handler = Callable[["SandboxResponder", web.Request], Awaitable[Reply]]
ServerError = Callable[[int], Reply]
#: A provider module's endpoints: (method, path below ``/<provider>``, handler); server.py
#: mounts each under its provider's prefix.
Routes = tuple[tuple[str, str, Handler], ...]


class _FaultPlan:
    """Per-provider values precomputed from a FaultConfig so the hot path only compares."""

    __slots__ = (
        "after",
        "before",
        "hold_s",
        "late_max_s",
        "late_min_s",
        "late_rate",
        "latency",
        "reset_after",
        "reset_before",
        "server_error_status",
        "timeout_after",
        "timeout_before",
    )

    def __init__(self, faults: FaultConfig) -> None:
        self.latency: Callable[[], float] | None = faults.latency.sampler()
        self.reset_before = faults.reset_rate
        self.timeout_before = faults.reset_rate + faults.timeout_rate
        self.before = self.timeout_before + faults.server_error_rate
        self.server_error_status = faults.server_error_status
        self.reset_after = faults.reset_after_accept_rate
        self.timeout_after = faults.reset_after_accept_rate + faults.timeout_after_accept_rate
        self.after = self.timeout_after
        self.hold_s = faults.timeout_hold_s
        self.late_rate = faults.late_rate
        self.late_min_s = faults.late_min_s
        self.late_max_s = faults.late_max_s


def connection_fault(rule: Rule) -> Reply | None:
    """The scripted faults every provider answers alike: ``timeout`` (held, then 504) and
    ``reset`` (the connection is dropped); None for every other action."""
    if rule.action == "timeout":
        return Reply(504, b"", "timeout", action="timeout", hold_s=rule.hold_s)
    if rule.action == "reset":
        return Reply(500, b"", "reset", action="reset")
    return None


def _secret_bytes(value: Any) -> bytes:
    return str(value.get_secret_value()).encode()


def secret_matches(given: str | None, expected: bytes) -> bool:
    """Constant-time comparison of a presented credential against the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected)


class SandboxResponder:
    """State plus the request wrapper. One instance per SandboxServer."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.orders = OrderBook()
        self.rules = RuleBook()
        self.counters = AnswerCounters()
        self.log = RequestLog(config.record_capacity)
        self.templates = TemplateBook()
        self._id_prefix = os.urandom(4).hex().upper()
        self._id_counter = 0
        self.started_at = time.time()
        self._stopping = asyncio.Event()
        self.webhooks = WebhookDispatcher(
            config.webhooks,
            _secret_bytes(config.credentials.meta_app_secret),
            _secret_bytes(config.credentials.ycloud_webhook_secret),
        )
        self.server_errors: dict[str, ServerError] = {}
        # (provider, order_ref) -> the last status applied; what the late-processing check reads
        self.processed: dict[tuple[str, str], ProcessedStatus] = {}
        # (provider, account or None for all accounts) answering 503 until cleared
        self.outages: set[tuple[str, str | None]] = set()
        self._late_tasks: set[asyncio.Task[Reply]] = set()
        self._apply(config, fresh_limits=True)

    # -- configuration ---------------------------------------------------------------------

    def _apply(self, config: SandboxConfig, *, fresh_limits: bool) -> None:
        old = self.config
        self.config = config
        creds = config.credentials
        self.meta_bearer = b"Bearer " + _secret_bytes(creds.meta_access_token)
        self.ycloud_key = _secret_bytes(creds.ycloud_api_key)
        self.zapi_instance_token = _secret_bytes(creds.zapi_instance_token)
        self.zapi_client_token = _secret_bytes(creds.zapi_client_token)
        self.zonos_secret = _secret_bytes(creds.zonos_secret)
        self.plans: dict[str, _FaultPlan] = {
            p: _FaultPlan(getattr(config.faults, p)) for p in PROVIDERS
        }
        if fresh_limits or old.limits != config.limits:
            limits = config.limits
            self.meta_sender = TokenBuckets(limits.meta_per_sender)
            self.ycloud_direct_sender = TokenBuckets(limits.ycloud_send_directly_per_sender)
            self.ycloud_queued_sender = TokenBuckets(limits.ycloud_queued_per_sender)
            self.pair = PairLimits(limits.pair)
        self.limit_flags = (
            config.limits.meta_per_sender.enabled,
            config.limits.ycloud_send_directly_per_sender.enabled,
            config.limits.ycloud_queued_per_sender.enabled,
            config.limits.pair.enabled,
        )
        self.log.capacity = config.record_capacity
        self.webhooks.reconfigure(
            config.webhooks,
            _secret_bytes(creds.meta_app_secret),
            _secret_bytes(creds.ycloud_webhook_secret),
        )
        self.status_reports = tuple(config.webhooks.status_reports)

    def set_config(self, config: SandboxConfig) -> None:
        self._apply(config, fresh_limits=False)

    def reset(self) -> None:
        """Forget orders, rules, templates, the log, counters, limiter state and queued
        webhooks. The config stays."""
        self.orders.clear()
        self.rules.clear()
        self.templates.clear()
        self.counters.clear()
        self.log.clear()
        self.processed.clear()
        self.outages.clear()
        self.webhooks.clear()
        self._apply(self.config, fresh_limits=True)

    def add_rule(self, rule: Rule) -> None:
        self.rules.add(rule)

    # -- ids ---------------------------------------------------------------------------------

    def new_id(self) -> str:
        self._id_counter += 1
        return f"{self._id_prefix}{self._id_counter:012d}"

    def new_wamid(self) -> str:
        return "wamid.HBgLSBX" + self.new_id()

    def rule_for(self, provider: str, key: str) -> Rule | None:
        """The scripted rule for this request's order, if any (cheap when there are none)."""
        return self.rules.match(provider, key) if self.rules else None

    def meta_transition(self, provider: str, key: str, status: str) -> int | None:
        """Meta's order_status rules (Meta and YCloud) on the order kept here: None, and the
        order moves to ``status``, when allowed; else the asynchronous error code (2046/2047)."""
        order = self.orders.ensure(provider, key)
        payment = order.payment_status or self.config.meta_default_payment_status
        code = meta_transition_error(order.status, status, payment)
        if code is None:
            order.status = status
        return code

    # -- recording and webhooks ----------------------------------------------------------------

    def record(
        self,
        request: web.Request,
        provider: str,
        *,
        endpoint: str,
        account: str,
        target: str,
        order_ref: str,
        status: str,
        message_id: str | None,
        echoed_event_id: str | None = None,
        outcome: str = "accepted",
    ) -> None:
        """Log one provider request. Its event id is the connector's ``X-Request-Id`` header,
        else the id the provider echoes back (Meta callback data, YCloud externalId)."""
        event_id = request.headers.get("X-Request-Id") or echoed_event_id
        log = self.log
        seq = log.next_seq()
        if outcome == "accepted":
            self.processed[(provider, order_ref)] = ProcessedStatus(
                status, seq, request.get(_LATE, False)
            )
        log.append(
            RecordedRequest(
                seq,
                provider,
                endpoint,
                account,
                target,
                order_ref,
                status,
                event_id,
                message_id,
                request.headers.get("traceparent"),
                time.time(),
                outcome,
            )
        )

    def report(self, report: StatusReport) -> None:
        now = time.time()
        waba = self.config.meta_waba_id
        if report.provider == "meta":
            body = meta_status_payload(report, waba, now)
        else:
            body = ycloud_status_payload(report, "evt_" + self.new_id(), waba, now)
        self.webhooks.enqueue(report.provider, body, now)

    def report_send(self, report: StatusReport) -> None:
        """The status webhooks of a send just recorded: ``report`` itself when it is the send's
        asynchronous failure, else the configured reports of the accepted message."""
        if report.status == "failed":
            self.report(report)
        elif self.status_reports:
            self.report_accepted(report)

    def report_accepted(self, report: StatusReport) -> None:
        """Queue the configured sent/delivered/read reports for an accepted message."""
        for status in self.status_reports:
            self.report(
                StatusReport(
                    report.provider,
                    status,
                    report.message_id,
                    report.wamid,
                    report.sender,
                    report.recipient,
                    report.callback_data,
                )
            )

    # -- the wrapper every provider endpoint runs through -----------------------------------

    def endpoint(
        self, provider: str, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await self.serve(provider, handler, request)

        return serve

    async def serve(self, provider: str, handler: Handler, request: web.Request) -> web.Response:
        plan = self.plans[provider]
        if self.outages and await self._in_outage(provider, request):
            outage = self.server_errors[provider](503)
            outage.label = "outage"
            return self._respond(provider, outage)
        if plan.before:
            roll = random.random()
            if roll < plan.before:
                if roll < plan.reset_before:
                    return self._reset(provider, request)
                if roll < plan.timeout_before:
                    return await self._hold(provider, plan.hold_s)
                reply = self.server_errors[provider](plan.server_error_status)
                return self._respond(provider, reply)
        if plan.late_rate and random.random() < plan.late_rate:
            return await self._late(provider, handler, request, plan)
        if plan.latency is not None:
            await asyncio.sleep(plan.latency())
        reply = await handler(self, request)
        if reply.action is not None:
            if reply.action == "reset":
                return self._reset(provider, request)
            return await self._hold(provider, reply.hold_s)
        if reply.accepted and plan.after:
            roll = random.random()
            if roll < plan.after:
                if roll < plan.reset_after:
                    return self._reset(provider, request)
                return await self._hold(provider, plan.hold_s)
        return self._respond(provider, reply)

    def _respond(self, provider: str, reply: Reply) -> web.Response:
        self.counters.add(provider, reply.label)
        return web.Response(
            status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
            headers=reply.headers,
        )

    def _reset(self, provider: str, request: web.Request) -> web.Response:
        self.counters.add(provider, "reset")
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0 turns the close into a TCP RST, as a crashed proxy would send.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=500)  # never reaches the client: the transport is gone

    async def _hold(self, provider: str, hold_s: float) -> web.Response:
        self.counters.add(provider, "timeout")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=hold_s)
        return web.Response(status=504, text="Gateway Timeout")

    def stopping(self) -> None:
        """Release every held request and drop late ones not yet applied (on shutdown)."""
        self._stopping.set()
        for task in list(self._late_tasks):
            task.cancel()

    # -- late processing and outages ----------------------------------------------------------

    async def _late(
        self, provider: str, handler: Handler, request: web.Request, plan: _FaultPlan
    ) -> web.Response:
        """Take the request in, answer nothing, apply it ``late_min_s..late_max_s`` s later."""
        self.counters.add(provider, "late")
        await request.read()  # the body is in hand before the client gives up (read is cached)
        request[_LATE] = True
        delay = random.uniform(plan.late_min_s, plan.late_max_s)
        # Its own task: the client disconnects long before, and applying must not depend on
        # what the server does with this handler then.
        task = asyncio.create_task(self._apply_late(provider, handler, request, delay))
        self._late_tasks.add(task)
        task.add_done_callback(self._late_tasks.discard)
        reply = await asyncio.shield(task)
        return self._respond(provider, reply)

    async def _apply_late(
        self, provider: str, handler: Handler, request: web.Request, delay: float
    ) -> Reply:
        await asyncio.sleep(delay)
        self.counters.add(provider, "late_applied")
        return await handler(self, request)

    async def _in_outage(self, provider: str, request: web.Request) -> bool:
        outages = self.outages
        if (provider, None) in outages:
            return True
        return (provider, await account_of(provider, request)) in outages


_LATE = web.RequestKey("sandbox_late", bool)


async def account_of(provider: str, request: web.Request) -> str | None:
    """The account a provider request belongs to, as an outage names it; None if unreadable."""
    if provider == "meta":
        return request.match_info.get("phone_number_id")
    if provider == "zapi":
        return request.match_info.get("instanceId")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    value = body.get("from" if provider == "ycloud" else "store")
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, int(seconds + 0.999)))}
