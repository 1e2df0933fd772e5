"""Sandbox endpoints for the Meta WhatsApp Cloud API: order_status sends (template and
interactive variants), order-status template creation and listing, and the phone-number read
``check-config --online`` makes, with Meta's error bodies.

Wire format and Meta's rules only; faults, recording and webhooks come from the engine.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from connector.dev.sandbox.config import Rule
from connector.dev.sandbox.responder import (
    Reply,
    Routes,
    SandboxResponder,
    connection_fault,
    secret_matches,
)
from connector.dev.sandbox.state import META_STATUSES
from connector.dev.sandbox.webhooks import StatusReport

REFERENCE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,35}")
DESCRIPTION_MAX = 120
CALLBACK_DATA_MAX = 512
TEMPLATE_NAME = re.compile(r"[a-z0-9_]{1,512}")

_RATE_LIMIT_DETAILS = {
    130429: ("Rate limit hit", "Cloud API message throughput has been reached."),
    131056: (
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
}


# Sends of a template moved to these statuses (``/_sandbox/templates/status``) fail like Meta's.
_BLOCKED_TEMPLATE = {
    "PAUSED": (132015, "Template is Paused"),
    "DISABLED": (132016, "Template is Disabled"),
}


@dataclass(slots=True, frozen=True)
class MetaProblem:
    """A Meta-level rejection: code, message and error_data.details."""

    code: int
    message: str
    details: str
    http_status: int = 400


@dataclass(slots=True, frozen=True)
class OrderStatusMessage:
    """What the sandbox needs from a valid order_status message."""

    reference_id: str
    status: str
    template: tuple[str, str] | None  # (name, language code) for the template variant


def _fbtrace() -> str:
    return "SBX" + os.urandom(8).hex()


def meta_error_body(code: int, message: str, details: str | None = None) -> bytes:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = _fbtrace()
    return orjson.dumps({"error": error})


def meta_error(http_status: int, code: int, message: str, details: str | None = None) -> Reply:
    return Reply(http_status, meta_error_body(code, message, details), f"{http_status}:{code}")


def server_error(status: int) -> Reply:
    return meta_error(status, 2, "(#2) Service temporarily unavailable")


def _invalid(details: str) -> MetaProblem:
    return MetaProblem(100, "(#100) Invalid parameter", details)


def _required(name: str) -> MetaProblem:
    return MetaProblem(100, f"(#100) The parameter {name} is required.", f"{name} is required")


def _order_fields(holder: Any, where: str) -> tuple[str, str] | MetaProblem:
    """(reference_id, status) from an ``{reference_id, order: {status, description?}}``."""
    if not isinstance(holder, dict):
        return _required(where)
    reference_id = holder.get("reference_id")
    if not isinstance(reference_id, str) or not reference_id:
        return _required(f"{where}.reference_id")
    if REFERENCE_ID.fullmatch(reference_id) is None:
        return _invalid(
            "reference_id must be at most 35 characters of letters, digits, '_', '-' or '.'"
        )
    order = holder.get("order")
    if not isinstance(order, dict):
        return _required(f"{where}.order")
    status = order.get("status")
    if not isinstance(status, str) or not status:
        return _required(f"{where}.order.status")
    if status not in META_STATUSES:
        return _invalid(f"order.status '{status[:40]}' is not a valid order status")
    description = order.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > DESCRIPTION_MAX
    ):
        return _invalid(f"order.description must be a string of at most {DESCRIPTION_MAX} chars")
    return reference_id, status


def parse_order_status(body: Any) -> OrderStatusMessage | MetaProblem:
    """Validate a Cloud API message body as Meta would for an order_status send."""
    if not isinstance(body, dict):
        return _invalid("request body must be a JSON object")
    if body.get("messaging_product") != "whatsapp":
        return _required("messaging_product")
    kind = body.get("type")
    if kind == "template":
        template = body.get("template")
        if not isinstance(template, dict):
            return _required("template")
        name = template.get("name")
        if not isinstance(name, str) or not name:
            return _required("template.name")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if not isinstance(code, str) or not code:
            return _required("template.language.code")
        components = template.get("components")
        if not isinstance(components, list):
            return _required("template.components")
        for component in components:
            if isinstance(component, dict) and component.get("type") == "order_status":
                parameters = component.get("parameters")
                if not isinstance(parameters, list) or not parameters:
                    return _required("template.components[].parameters")
                parameter = parameters[0]
                if not isinstance(parameter, dict) or parameter.get("type") != "order_status":
                    return _invalid("order_status component needs an order_status parameter")
                fields = _order_fields(parameter.get("order_status"), "order_status")
                if isinstance(fields, MetaProblem):
                    return fields
                return OrderStatusMessage(fields[0], fields[1], (name, code))
        return _invalid("the sandbox accepts only templates with an order_status component")
    if kind == "interactive":
        interactive = body.get("interactive")
        if not isinstance(interactive, dict) or interactive.get("type") != "order_status":
            return _invalid("interactive.type must be order_status")
        action = interactive.get("action")
        if not isinstance(action, dict) or action.get("name") != "review_order":
            return _invalid("interactive.action.name must be review_order")
        fields = _order_fields(action.get("parameters"), "action.parameters")
        if isinstance(fields, MetaProblem):
            return fields
        return OrderStatusMessage(fields[0], fields[1], None)
    if kind is None:
        return _required("type")
    return _invalid("the sandbox accepts only template and interactive order_status messages")


def rate_limit_problem(code: int) -> MetaProblem:
    title, details = _RATE_LIMIT_DETAILS[code]
    return MetaProblem(code, f"(#{code}) {title}", details)


def _problem_reply(problem: MetaProblem) -> Reply:
    return meta_error(problem.http_status, problem.code, problem.message, problem.details)


async def send_message(engine: SandboxResponder, request: web.Request) -> Reply:
    """POST /meta/{api_version}/{phone_number_id}/messages"""
    if not secret_matches(request.headers.get("Authorization"), engine.meta_bearer):
        return meta_error(401, 190, "Invalid OAuth access token - Cannot parse access token", None)
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _problem_reply(_invalid("request body is not valid JSON"))
    parsed = parse_order_status(body)
    if isinstance(parsed, MetaProblem):
        return _problem_reply(parsed)
    to = body.get("to")
    if not isinstance(to, str) or not to:
        return _problem_reply(_required("to"))
    recipient = to[1:] if to.startswith("+") else to
    if not recipient.isdigit():
        return _problem_reply(_invalid("to must be a phone number of digits"))
    callback_data = body.get("biz_opaque_callback_data")
    if callback_data is not None and (
        not isinstance(callback_data, str) or len(callback_data) > CALLBACK_DATA_MAX
    ):
        return _problem_reply(_invalid("biz_opaque_callback_data is at most 512 characters"))
    sender = request.match_info["phone_number_id"]
    key = parsed.reference_id

    async_code: int | None = None
    rule = engine.rule_for("meta", key)
    if rule is not None:
        if rule.action != "async_error":
            return _rule_reply(rule)
        async_code = int(rule.code or 131026)

    meta_limit, _, _, pair_limit = engine.limit_flags
    if meta_limit or pair_limit:
        now = time.monotonic()
        if meta_limit and engine.meta_sender.take(sender, now) > 0:
            return _problem_reply(rate_limit_problem(130429))
        if pair_limit and engine.pair.take(("meta", sender, recipient), now) > 0:
            return _problem_reply(rate_limit_problem(131056))

    if parsed.template is not None and engine.templates:
        state = engine.templates.status_of(*parsed.template, provider="meta")
        if state in _BLOCKED_TEMPLATE:
            code, title = _BLOCKED_TEMPLATE[state]
            return meta_error(
                400,
                code,
                f"(#{code}) {title}",
                f"template {parsed.template[0]} ({parsed.template[1]}) is {state}",
            )
    if (
        engine.config.meta_require_templates
        and parsed.template is not None
        and parsed.template not in engine.templates
    ):
        return meta_error(
            404,
            132001,
            "(#132001) Template name does not exist in the translation",
            f"template name ({parsed.template[0]}) does not exist in {parsed.template[1]}",
        )

    wamid = engine.new_wamid()
    if async_code is None:
        async_code = engine.meta_transition("meta", key, parsed.status)
    engine.record(
        request,
        "meta",
        endpoint="messages",
        account=sender,
        target=recipient,
        order_ref=key,
        status=parsed.status,
        message_id=wamid,
        echoed_event_id=callback_data,
        outcome="accepted" if async_code is None else f"failed:{async_code}",
    )
    reported = "accepted" if async_code is None else "failed"
    engine.report_send(
        StatusReport("meta", reported, wamid, wamid, sender, recipient, callback_data, async_code)
    )
    answer = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": recipient}],
        "messages": [{"id": wamid, "message_status": "accepted"}],
    }
    return Reply(200, orjson.dumps(answer), "200", accepted=True)


def _rule_reply(rule: Rule) -> Reply:
    action, status, code, message = rule.action, rule.status, rule.code, rule.message
    if (fault := connection_fault(rule)) is not None:
        return fault
    if action == "rate_limit":
        return _problem_reply(rate_limit_problem(130429))
    if action == "http_error":
        return server_error(status or 500)
    error_code = int(code or 100)
    return meta_error(
        status or 400, error_code, message or f"(#{error_code}) Scripted sandbox error", message
    )


async def create_template(engine: SandboxResponder, request: web.Request) -> Reply:
    """POST /meta/{api_version}/{waba_id}/message_templates"""
    if not secret_matches(request.headers.get("Authorization"), engine.meta_bearer):
        return meta_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _problem_reply(_invalid("request body is not valid JSON"))
    if not isinstance(body, dict):
        return _problem_reply(_invalid("request body must be a JSON object"))
    name = body.get("name")
    if not isinstance(name, str) or TEMPLATE_NAME.fullmatch(name) is None:
        return _problem_reply(_invalid("name must be lowercase letters, digits and underscores"))
    language = body.get("language")
    if not isinstance(language, str) or not language:
        return _problem_reply(_required("language"))
    if body.get("category") != "UTILITY":
        return _problem_reply(_invalid("order status templates must have category UTILITY"))
    sub_category = body.get("sub_category")
    if sub_category is not None and sub_category != "ORDER_STATUS":
        return _problem_reply(_invalid("sub_category must be ORDER_STATUS"))
    components = body.get("components")
    if not isinstance(components, list) or not any(
        isinstance(c, dict) and c.get("type") == "BODY" and isinstance(c.get("text"), str)
        for c in components
    ):
        return _problem_reply(_required("components (a BODY with text)"))
    waba_id = request.match_info["waba_id"]
    template = engine.templates.create_order_status(
        "meta", waba_id, name, language, sub_category, components, engine.new_id()
    )
    if template is None:
        return meta_error(
            400,
            100,
            "(#100) Invalid parameter",
            f"Content in this language already exists for template {name}",
        )
    answer = {"id": template.template_id, "status": template.status, "category": "UTILITY"}
    return Reply(200, orjson.dumps(answer), "200")


async def list_templates(engine: SandboxResponder, request: web.Request) -> Reply:
    """GET /meta/{api_version}/{waba_id}/message_templates (``limit``, ``after`` cursor)."""
    if not secret_matches(request.headers.get("Authorization"), engine.meta_bearer):
        return meta_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
    try:
        limit = int(request.query.get("limit", "25"))
        start = int(request.query.get("after", "0"))
    except ValueError:
        return _problem_reply(_invalid("limit and after must be integers in the sandbox"))
    if not 1 <= limit <= 1000 or start < 0:
        return _problem_reply(_invalid("limit must be 1..1000"))
    items = engine.templates.listing("meta", request.match_info["waba_id"])
    page = items[start : start + limit]
    end = start + len(page)
    paging: dict[str, Any] = {"cursors": {"before": str(start), "after": str(end)}}
    if end < len(items):
        paging["next"] = f"{request.url.with_query({**request.query, 'after': str(end)})}"
    data = [
        {
            "name": t.name,
            "language": t.language,
            "status": t.status,
            "category": t.category,
            "sub_category": t.sub_category,
            "components": t.components,
            "id": t.template_id,
        }
        for t in page
    ]
    return Reply(200, orjson.dumps({"data": data, "paging": paging}), "200")


async def phone_number(engine: SandboxResponder, request: web.Request) -> Reply:
    """GET /meta/{api_version}/{phone_number_id}: what ``check-config --online`` reads."""
    if not secret_matches(request.headers.get("Authorization"), engine.meta_bearer):
        return meta_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
    number_id = request.match_info["phone_number_id"]
    answer = {
        "id": number_id,
        "display_phone_number": "+1 555-010-0000",
        "verified_name": "Sandbox Business",
    }
    return Reply(200, orjson.dumps(answer), "200")


#: Served below ``/meta`` (server.py).
ROUTES: Routes = (
    ("POST", "/{api_version}/{phone_number_id}/messages", send_message),
    ("POST", "/{api_version}/{waba_id}/message_templates", create_template),
    ("GET", "/{api_version}/{waba_id}/message_templates", list_templates),
    ("GET", "/{api_version}/{phone_number_id}", phone_number),
)
