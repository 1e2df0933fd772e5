"""Sandbox endpoint for Zonos/iGlobal ``updateVendorOrderStatus``: 406/415 HTML answers,
HTTP-200 ``{"error": ...}`` answers in Zonos's wording, and per-order status rules.

The secret travels in the request body; it is compared and then forgotten, never stored
or echoed.
"""

from __future__ import annotations

import re

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
from connector.dev.sandbox.state import ZONOS_ALL_STATUSES, ZONOS_BLOCKING

ORDER_ID = re.compile(r"(?:([0-9]+)-)?([0-9]+)")
HTML = "text/html"
_ACCEPTABLE = ("application/json", "application/*", "*/*")


def _html(status: int, reason: str) -> Reply:
    page = (
        f"<html><head><title>Error {status} {reason}</title></head>"
        f"<body><h2>HTTP ERROR {status}</h2><p>{reason}</p></body></html>"
    )
    return Reply(status, page.encode(), str(status), content_type=HTML)


def server_error(status: int) -> Reply:
    return _html(status, "Server Error")


def zonos_error(message: str, label: str) -> Reply:
    return Reply(200, orjson.dumps({"error": message}), f"200:{label}")


def _accepts_json(accept: str | None) -> bool:
    if accept is None:
        return True
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in _ACCEPTABLE:
            return True
    return False


def split_order_id(value: object) -> tuple[str | None, str] | None:
    """(store prefix or None, bare order id) from "999-9999" or "9999" (or an integer)."""
    if isinstance(value, bool):
        return None
    text = str(value) if isinstance(value, int) else value
    if not isinstance(text, str):
        return None
    match = ORDER_ID.fullmatch(text)
    if match is None:
        return None
    return match.group(1), match.group(2)


def _rule_reply(rule: Rule) -> Reply:
    if (fault := connection_fault(rule)) is not None:
        return fault
    if rule.action == "http_error":
        return server_error(rule.status or 500)
    if rule.action == "rate_limit":
        return _html(rule.status or 429, "Too Many Requests")
    return zonos_error(rule.message or "Unable to process updateVendorOrderStatus.", "scripted")


async def update_vendor_order_status(engine: SandboxResponder, request: web.Request) -> Reply:
    """POST /zonos/v1/updateVendorOrderStatus"""
    if not _accepts_json(request.headers.get("Accept")):
        return _html(406, "Not Acceptable")
    if request.content_type != "application/json":
        return _html(415, "Unsupported Media Type")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return zonos_error("cannot parse input", "cannot_parse")
    if not isinstance(body, dict):
        return zonos_error("cannot parse input", "cannot_parse")
    store = body.get("store")
    store_text = str(store) if isinstance(store, int | str) and not isinstance(store, bool) else ""
    secret = body.get("secret")
    if (
        not store_text
        or not isinstance(secret, str)
        or not secret_matches(secret, engine.zonos_secret)
    ):
        return zonos_error("Invalid security credentials", "invalid_credentials")
    order_id = body.get("orderId")
    if order_id is None or order_id == "":
        return zonos_error(
            "orderId parameter required for updateVendorOrderStatus", "missing_order_id"
        )
    new_status = body.get("orderStatus")
    if not isinstance(new_status, str) or not new_status:
        return zonos_error(
            "orderStatus parameter required for updateVendorOrderStatus.", "missing_status"
        )
    split = split_order_id(order_id)
    shown = str(order_id)[:64]
    if split is None or (split[0] is not None and split[0] != store_text):
        return zonos_error(f"orderId: {shown} is not a valid orderId", "invalid_order_id")
    key = split[1]
    if new_status not in ZONOS_ALL_STATUSES:
        return zonos_error(
            f"New status: {new_status[:64]} is not a valid order status", "invalid_status"
        )
    if new_status not in engine.config.zonos_vendor_statuses:
        return zonos_error(
            f"Unable to update order status to invalid status: {new_status}", "not_settable"
        )
    rule = engine.rule_for("zonos", key)
    if rule is not None:
        return _rule_reply(rule)
    order = engine.orders.get("zonos", key)
    if order is None or order.status is None:
        if not engine.config.zonos_auto_create_orders:
            return zonos_error(
                f"Unable to retrieve order to updateVendorOrderStatus from orderId: {shown}",
                "unknown_order",
            )
        order = engine.orders.ensure("zonos", key)
        order.status = engine.config.zonos_initial_status
    current = order.status
    assert current is not None
    if current == "IGLOBAL_ORDER_CANCELLED":
        return zonos_error(
            f"OrderId: {shown} has been cancelled and cannot update status.", "cancelled"
        )
    if current == new_status:
        return zonos_error(
            f"OrderId: {shown} already has current status: {current}", "already_current"
        )
    if current in ZONOS_BLOCKING:
        return zonos_error(
            f"OrderId: {shown} cannot be moved to order status: {new_status} "
            f"while in status: {current}",
            "cannot_be_moved",
        )
    order.status = new_status
    engine.record(
        request,
        "zonos",
        endpoint="updateVendorOrderStatus",
        account=store_text,
        target=key,
        order_ref=key,
        status=new_status,
        message_id=None,
    )
    answer = {"success": f"Updated Order: {key} to new order status: {new_status}"}
    return Reply(200, orjson.dumps(answer), "200", accepted=True)


#: Served below ``/zonos`` (server.py).
ROUTES: Routes = (("POST", "/v1/updateVendorOrderStatus", update_vendor_order_status),)
