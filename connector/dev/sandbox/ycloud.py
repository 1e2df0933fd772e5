"""Sandbox endpoints for YCloud's WhatsApp send API (``sendDirectly`` and the queued
endpoint), with YCloud's error bodies, ``Retry-After`` on 429 and Meta's order rules.

Wire format only; Meta's validation and transition rules are reused from ``meta`` and
``state``; faults, recording and webhooks come from the engine.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from connector.dev.sandbox.config import Rule
from connector.dev.sandbox.meta import MetaProblem, parse_order_status, rate_limit_problem
from connector.dev.sandbox.responder import (
    Reply,
    Routes,
    SandboxResponder,
    ServerError,
    connection_fault,
    retry_after_header,
    secret_matches,
)
from connector.dev.sandbox.state import SandboxTemplate
from connector.dev.sandbox.webhooks import StatusReport

E164 = re.compile(r"\+?[1-9][0-9]{6,14}")
_SERVER_ERROR_CODES = {500: "INTERNAL_SERVER_ERROR", 503: "SERVICE_UNAVAILABLE"}


def ycloud_error(
    engine: SandboxResponder,
    status: int,
    code: str,
    message: str,
    *,
    target: str | None = None,
    whatsapp: MetaProblem | None = None,
    retry_after: float | None = None,
) -> Reply:
    request_id = "req_" + engine.new_id()
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if target is not None:
        error["target"] = target
    error["requestId"] = request_id
    if whatsapp is not None:
        error["whatsappApiError"] = {
            "message": whatsapp.message,
            "type": "OAuthException",
            "code": str(whatsapp.code),  # YCloud sends Meta's code as a string
            "error_data": {"messaging_product": "whatsapp", "details": whatsapp.details},
            "fbtrace_id": "SBX" + request_id[4:],
        }
    headers = {"YCloud-Request-ID": request_id}
    if retry_after is not None:
        headers.update(retry_after_header(retry_after))
    label = f"{status}:{code}" if whatsapp is None else f"{status}:{code}:{whatsapp.code}"
    return Reply(status, orjson.dumps({"error": error}), label, headers=headers)


def server_error_for(engine: SandboxResponder) -> ServerError:
    def server_error(status: int) -> Reply:
        code = _SERVER_ERROR_CODES.get(status, "INTERNAL_SERVER_ERROR")
        return ycloud_error(engine, status, code, "The sandbox injected a server error.")

    return server_error


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def send_directly(engine: SandboxResponder, request: web.Request) -> Reply:
    """POST /ycloud/v2/whatsapp/messages/sendDirectly"""
    return await _send(engine, request, direct=True)


async def _authorized_body(
    engine: SandboxResponder, request: web.Request
) -> dict[str, Any] | Reply:
    """The request's JSON object, or YCloud's answer to a wrong key or a body that is not one."""
    if not secret_matches(request.headers.get("X-API-Key"), engine.ycloud_key):
        return ycloud_error(engine, 401, "UNAUTHORIZED", "Invalid API key in X-API-Key.")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return ycloud_error(engine, 400, "BAD_REQUEST", "Request body is not valid JSON.")
    if not isinstance(body, dict):
        return ycloud_error(engine, 400, "BAD_REQUEST", "Request body must be a JSON object.")
    return body


async def send_queued(engine: SandboxResponder, request: web.Request) -> Reply:
    """POST /ycloud/v2/whatsapp/messages"""
    return await _send(engine, request, direct=False)


async def _send(engine: SandboxResponder, request: web.Request, *, direct: bool) -> Reply:
    body = await _authorized_body(engine, request)
    if not isinstance(body, dict):
        return body
    for name in ("from", "to", "type"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            return ycloud_error(
                engine, 400, "PARAM_MISSING", f"Parameter '{name}' is required.", target=name
            )
    sender, to = body["from"], body["to"]
    for name, value in (("from", sender), ("to", to)):
        if E164.fullmatch(value) is None:
            return ycloud_error(
                engine, 400, "PARAM_INVALID", f"Parameter '{name}' must be E.164.", target=name
            )
    external_id = body.get("externalId")
    if external_id is not None and not isinstance(external_id, str):
        return ycloud_error(
            engine,
            400,
            "PARAM_INVALID",
            "Parameter 'externalId' must be a string.",
            target="externalId",
        )
    # YCloud forwards the WhatsApp part to Meta; Meta's checks apply.
    parsed = parse_order_status({**body, "messaging_product": "whatsapp"})
    problem = parsed if isinstance(parsed, MetaProblem) else None
    if problem is not None and direct:
        return ycloud_error(
            engine,
            400,
            "BAD_REQUEST",
            problem.message,
            target="whatsappApiError",
            whatsapp=problem,
        )
    key = parsed.reference_id if not isinstance(parsed, MetaProblem) else ""

    async_code: int | None = problem.code if problem is not None else None
    rule = engine.rule_for("ycloud", key)
    if rule is not None:
        reply = _rule_reply(engine, rule)
        if reply is not None:
            return reply
        async_code = int(rule.code or 131026)

    _, direct_limit, queued_limit, pair_limit = engine.limit_flags
    now = time.monotonic()
    buckets = engine.ycloud_direct_sender if direct else engine.ycloud_queued_sender
    if direct_limit if direct else queued_limit:
        wait = buckets.take(sender, now)
        if wait > 0:
            return ycloud_error(
                engine,
                429,
                "SENDER_RATE_LIMITED",
                "Too many requests for this sender.",
                retry_after=wait,
            )
    if pair_limit and async_code is None:
        pair_wait = engine.pair.take(("ycloud", sender, to), now)
        if pair_wait > 0:
            if direct:
                pair_problem = rate_limit_problem(131056)
                return ycloud_error(
                    engine,
                    429,
                    "TOO_MANY_REQUESTS",
                    pair_problem.message,
                    target="whatsappApiError",
                    whatsapp=pair_problem,
                    retry_after=pair_wait,
                )
            async_code = 131056

    message_id = engine.new_id().lower()
    wamid = engine.new_wamid() if direct else None
    status = "" if isinstance(parsed, MetaProblem) else parsed.status
    if async_code is None and not isinstance(parsed, MetaProblem):
        async_code = engine.meta_transition("ycloud", key, parsed.status)
    engine.record(
        request,
        "ycloud",
        endpoint="sendDirectly" if direct else "messages",
        account=sender,
        target=to,
        order_ref=key,
        status=status,
        message_id=message_id,
        echoed_event_id=external_id,
        outcome="accepted" if async_code is None else f"failed:{async_code}",
    )
    engine.report_send(
        StatusReport(
            "ycloud",
            "accepted" if async_code is None else "failed",
            message_id,
            wamid,
            sender,
            to,
            external_id,
            async_code,
            problem.details if problem is not None and async_code is not None else None,
        )
    )
    answer: dict[str, Any] = {
        "id": message_id,
        "wabaId": engine.config.meta_waba_id,
        "from": sender,
        "to": to,
        "type": body["type"],
        "status": "accepted",
        "createTime": _now_iso(),
    }
    if wamid is not None:
        answer["wamid"] = wamid
    if external_id is not None:
        answer["externalId"] = external_id
    return Reply(200, orjson.dumps(answer), "200", accepted=True)


def _rule_reply(engine: SandboxResponder, rule: Rule) -> Reply | None:
    """The scripted answer, or None for ``async_error`` (accept, then a failed webhook)."""
    action, status, code, message = rule.action, rule.status, rule.code, rule.message
    if action == "async_error":
        return None
    if (fault := connection_fault(rule)) is not None:
        return fault
    if action == "rate_limit":
        return ycloud_error(
            engine,
            429,
            code or "SENDER_RATE_LIMITED",
            message or "Too many requests.",
            retry_after=rule.retry_after_s,
        )
    if action == "http_error":
        return server_error_for(engine)(status or 500)
    http_status = status or 400
    if code is not None and code.isdigit():
        problem = MetaProblem(
            int(code), message or f"(#{code}) Scripted sandbox error", message or "scripted"
        )
        return ycloud_error(
            engine,
            http_status,
            "BAD_REQUEST",
            problem.message,
            target="whatsappApiError",
            whatsapp=problem,
        )
    return ycloud_error(
        engine, http_status, code or "BAD_REQUEST", message or "Scripted sandbox error."
    )


TEMPLATE_NAME = re.compile(r"[a-z0-9_]{1,512}")


async def create_template(engine: SandboxResponder, request: web.Request) -> Reply:
    """POST /ycloud/v2/whatsapp/templates (an order-status template: UTILITY, ORDER_STATUS)."""
    body = await _authorized_body(engine, request)
    if not isinstance(body, dict):
        return body
    waba_id, name, language = body.get("wabaId"), body.get("name"), body.get("language")
    for field_name, value in (("wabaId", waba_id), ("language", language)):
        if not isinstance(value, str) or not value:
            return ycloud_error(
                engine, 400, "PARAM_MISSING", f"{field_name} is required.", target=field_name
            )
    if not isinstance(name, str) or TEMPLATE_NAME.fullmatch(name) is None:
        return ycloud_error(
            engine,
            400,
            "PARAM_INVALID",
            "name must be lowercase letters, digits and underscores.",
            target="name",
        )
    if body.get("category") != "UTILITY":
        return ycloud_error(
            engine,
            400,
            "PARAM_INVALID",
            "Order status templates must have category UTILITY.",
            target="category",
        )
    sub_category = body.get("subCategory")
    if sub_category is not None and sub_category != "ORDER_STATUS":
        return ycloud_error(
            engine, 400, "PARAM_INVALID", "subCategory must be ORDER_STATUS.", target="subCategory"
        )
    components = body.get("components")
    if not isinstance(components, list) or not any(
        isinstance(c, dict) and c.get("type") == "BODY" and isinstance(c.get("text"), str)
        for c in components
    ):
        return ycloud_error(
            engine, 400, "PARAM_MISSING", "components needs a BODY with text.", target="components"
        )
    template = engine.templates.create_order_status(
        "ycloud", str(waba_id), name, str(language), sub_category, components, engine.new_id()
    )
    if template is None:
        return ycloud_error(
            engine,
            409,
            "ALREADY_EXISTS",
            f"Template {name} ({language}) already exists in WABA {waba_id}.",
        )
    return Reply(200, orjson.dumps(_ycloud_template(template)), "200")


def _ycloud_template(template: SandboxTemplate) -> dict[str, Any]:
    now = _now_iso()
    return {
        "wabaId": template.waba_id,
        "name": template.name,
        "language": template.language,
        "category": template.category,
        "subCategory": template.sub_category,
        "components": template.components,
        "status": template.status,
        "officialTemplateId": template.template_id,
        "createTime": now,
        "updateTime": now,
    }


async def list_templates(engine: SandboxResponder, request: web.Request) -> Reply:
    """GET /ycloud/v2/whatsapp/templates (``filter.wabaId``, ``page``, ``limit``)."""
    if not secret_matches(request.headers.get("X-API-Key"), engine.ycloud_key):
        return ycloud_error(engine, 401, "UNAUTHORIZED", "Invalid API key in X-API-Key.")
    try:
        page = int(request.query.get("page", "1"))
        limit = int(request.query.get("limit", "10"))
    except ValueError:
        return ycloud_error(engine, 400, "PARAM_INVALID", "page and limit must be integers.")
    if page < 1 or not 1 <= limit <= 100:
        return ycloud_error(engine, 400, "PARAM_INVALID", "page >= 1 and limit 1..100.")
    items = engine.templates.listing("ycloud", request.query.get("filter.wabaId"))
    chunk = items[(page - 1) * limit : page * limit]
    answer: dict[str, Any] = {
        "offset": (page - 1) * limit,
        "limit": limit,
        "length": len(chunk),
        "items": [_ycloud_template(t) for t in chunk],
    }
    if request.query.get("includeTotal") == "true":
        answer["total"] = len(items)
    return Reply(200, orjson.dumps(answer), "200")


async def balance(engine: SandboxResponder, request: web.Request) -> Reply:
    """GET /ycloud/v2/balance: what ``check-config --online`` reads."""
    if not secret_matches(request.headers.get("X-API-Key"), engine.ycloud_key):
        return ycloud_error(engine, 401, "UNAUTHORIZED", "Invalid API key in X-API-Key.")
    return Reply(200, orjson.dumps({"amount": 100.0, "currency": "USD"}), "200")


#: Served below ``/ycloud`` (server.py).
ROUTES: Routes = (
    ("POST", "/v2/whatsapp/messages/sendDirectly", send_directly),
    ("POST", "/v2/whatsapp/messages", send_queued),
    ("POST", "/v2/whatsapp/templates", create_template),
    ("GET", "/v2/whatsapp/templates", list_templates),
    ("GET", "/v2/balance", balance),
)
