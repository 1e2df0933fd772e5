"""Sandbox endpoint for Z-API ``order-status-update``: path token plus ``Client-Token``,
Content-Type (415), the required order fields and ``{"error": "..."}`` answers.

Z-API documents only 405 and 415; the auth answers (401 for a bad instance token, 403 for a
bad Client-Token) are this sandbox's choice, marked VERIFY in docs/sandbox.md.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from aiohttp import web

from connector.dev.sandbox.config import Rule
from connector.dev.sandbox.responder import (
    Reply,
    Routes,
    SandboxResponder,
    connection_fault,
    retry_after_header,
    secret_matches,
)

ORDER_STATUSES = frozenset({"pending", "processing", "shipped", "completed", "canceled"})
PAYMENT_STATUSES = frozenset({"pending", "paid"})
_PRODUCT_FIELDS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("productId", (str,)),
    ("name", (str,)),
    ("value", (int, float)),
    ("quantity", (int,)),
    ("isCustomItem", (bool,)),
)


def zapi_error(status: int, message: str, label: str | None = None) -> Reply:
    return Reply(status, orjson.dumps({"error": message}), label or str(status))


def server_error(status: int) -> Reply:
    return zapi_error(status, "Internal server error")


def _check_order(order: Any) -> str | None:
    """The first problem with the ``order`` object, or None."""
    if not isinstance(order, dict):
        return "order is required"
    if not isinstance(order.get("currency"), str) or not order["currency"]:
        return "order.currency is required"
    products = order.get("products")
    if not isinstance(products, list) or not products:
        return "order.products is required"
    for index, product in enumerate(products):
        if not isinstance(product, dict):
            return f"order.products[{index}] must be an object"
        for name, types in _PRODUCT_FIELDS:
            value = product.get(name)
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                return f"order.products[{index}].{name} is required"
    for name in ("discount", "tax", "shipping"):
        value = order.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            return f"order.{name} must be a number"
    return None


def _rule_reply(rule: Rule) -> Reply:
    if (fault := connection_fault(rule)) is not None:
        return fault
    if rule.action == "rate_limit":
        reply = zapi_error(429, rule.message or "Too many requests")
        reply.headers = retry_after_header(rule.retry_after_s)
        return reply
    if rule.action == "http_error":
        return server_error(rule.status or 500)
    return zapi_error(rule.status or 400, rule.message or "Scripted sandbox error")


async def order_status_update(engine: SandboxResponder, request: web.Request) -> Reply:
    """POST /zapi/instances/{instanceId}/token/{token}/order-status-update"""
    if request.content_type != "application/json":
        return zapi_error(415, "Unsupported Media Type: send Content-Type: application/json")
    if not secret_matches(request.match_info["token"], engine.zapi_instance_token):
        return zapi_error(401, "Invalid instance token", "401:instance_token")
    if not secret_matches(request.headers.get("Client-Token"), engine.zapi_client_token):
        return zapi_error(403, "your client-token is not configured", "403:client_token")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return zapi_error(400, "Invalid JSON body")
    if not isinstance(body, dict):
        return zapi_error(400, "Invalid JSON body")
    for name in ("phone", "messageId", "referenceId", "orderRequestId"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            return zapi_error(400, f"{name} is required")
    phone = body["phone"]
    if not phone.isdigit() or not 8 <= len(phone) <= 15:
        return zapi_error(400, "phone must be digits only, country code first")
    order_status = body.get("orderStatus")
    if order_status not in ORDER_STATUSES:
        return zapi_error(
            400, "orderStatus must be one of pending, processing, shipped, completed, canceled"
        )
    if body.get("paymentStatus") not in PAYMENT_STATUSES:
        return zapi_error(400, "paymentStatus must be pending or paid")
    problem = _check_order(body.get("order"))
    if problem is not None:
        return zapi_error(400, problem)
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        return zapi_error(400, "message must be a string")
    key = body["referenceId"]
    rule = engine.rule_for("zapi", key)
    if rule is not None:
        return _rule_reply(rule)
    instance = request.match_info["instanceId"]
    engine.orders.ensure("zapi", key).status = order_status
    zaap_id = os.urandom(16).hex().upper()
    message_id = engine.new_id()
    engine.record(
        request,
        "zapi",
        endpoint="order-status-update",
        account=instance,
        target=phone,
        order_ref=key,
        status=order_status,
        message_id=message_id,
    )
    answer = {"zaapId": zaap_id, "messageId": message_id, "id": message_id}
    return Reply(200, orjson.dumps(answer), "200", accepted=True)


async def instance_status(engine: SandboxResponder, request: web.Request) -> Reply:
    """GET /zapi/instances/{instanceId}/token/{token}/status: what ``check-config --online``
    reads (the instance's connection state; changes nothing)."""
    if not secret_matches(request.match_info["token"], engine.zapi_instance_token):
        return zapi_error(401, "Invalid instance token", "401:instance_token")
    if not secret_matches(request.headers.get("Client-Token"), engine.zapi_client_token):
        return zapi_error(403, "your client-token is not configured", "403:client_token")
    answer = {"connected": True, "session": True, "smartphoneConnected": True, "error": None}
    return Reply(200, orjson.dumps(answer), "200")


#: Served below ``/zapi`` (server.py).
ROUTES: Routes = (
    ("POST", "/instances/{instanceId}/token/{token}/order-status-update", order_status_update),
    ("GET", "/instances/{instanceId}/token/{token}/status", instance_status),
)
