"""Every code and case in PROVIDERS.md, classified: one table per provider.

Zonos error texts: the doc copy we have is Vietnamese; these English texts are back-translated
from it, keeping the stable fragments PROVIDERS.md names. Unknown texts are permanent anyway.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connector.providers import OutcomeKind, ProviderOutcome
from connector.providers.meta import CONFIGURATION_CODES, PERMANENT_CODES, RETRYABLE_CODES
from tests.support.providers import make_provider

K = OutcomeKind


def classify(
    kind: str,
    status: int,
    body: Any = None,
    *,
    attempt: int = 0,
    headers: dict[str, str] | None = None,
    text: str | None = None,
) -> ProviderOutcome:
    if text is not None:
        response = httpx.Response(status, text=text, headers=headers)
    elif body is None:
        response = httpx.Response(status, headers=headers)
    else:
        response = httpx.Response(status, json=body, headers=headers)
    return make_provider(kind).classify(response, attempt=attempt)


def meta_error(code: int | str, message: str = "m", **extra: Any) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": "d"},
            "fbtrace_id": "Az8",
            **extra,
        }
    }


# ---------------------------------------------------------------------------------- Meta

META_CASES: list[tuple[int, OutcomeKind, float | None]] = [
    # (code, kind, retry_after at attempt 0)
    (130429, K.RETRYABLE, None),
    (131056, K.RETRYABLE, 1.0),
    (4, K.RETRYABLE, 60.0),
    (80007, K.RETRYABLE, 60.0),
    (131057, K.RETRYABLE, 60.0),
    (131000, K.RETRYABLE, None),
    (131016, K.RETRYABLE, None),
    (133004, K.RETRYABLE, None),
    (2, K.RETRYABLE, None),
    (100, K.PERMANENT, None),
    (131008, K.PERMANENT, None),
    (131009, K.PERMANENT, None),
    (33, K.PERMANENT, None),
    (131026, K.PERMANENT, None),
    (131047, K.PERMANENT, None),
    (131051, K.PERMANENT, None),
    (132000, K.PERMANENT, None),
    (132001, K.PERMANENT, None),
    (132005, K.PERMANENT, None),
    (132007, K.PERMANENT, None),
    (132012, K.PERMANENT, None),
    (132015, K.PERMANENT, None),
    (132016, K.PERMANENT, None),
    (133010, K.PERMANENT, None),
    (0, K.CONFIGURATION, None),
    (190, K.CONFIGURATION, None),
    (10, K.CONFIGURATION, None),
    (200, K.CONFIGURATION, None),
    (250, K.CONFIGURATION, None),
    (299, K.CONFIGURATION, None),
    (3, K.CONFIGURATION, None),
]


def test_meta_table_covers_every_listed_code() -> None:
    listed = {code for code, _, _ in META_CASES}
    assert set(RETRYABLE_CODES) | PERMANENT_CODES <= listed
    assert {0, 3, 10, 190, 200, 299} <= CONFIGURATION_CODES


@pytest.mark.parametrize("http_status", [400, 403, 500])
@pytest.mark.parametrize(("code", "kind", "wait"), META_CASES)
def test_meta_error_codes_win_over_http_status(
    http_status: int, code: int, kind: OutcomeKind, wait: float | None
) -> None:
    outcome = classify("meta", http_status, meta_error(code))
    assert outcome.kind is kind
    assert outcome.error_code == str(code)
    assert outcome.http_status == http_status
    assert outcome.retry_after == wait
    assert outcome.pause_template is (code in (132015, 132016))


@pytest.mark.parametrize(
    ("attempt", "wait"), [(0, 1.0), (1, 4.0), (2, 16.0), (3, 64.0), (50, 65536.0)]
)
def test_meta_pair_rate_backs_off_4_to_the_attempt(attempt: int, wait: float) -> None:
    outcome = classify("meta", 400, meta_error(131056), attempt=attempt)
    assert outcome.kind is K.RETRYABLE
    assert outcome.retry_after == wait


def test_meta_success_is_accepted_with_wamid() -> None:
    body = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "5544999999999", "wa_id": "5544999999999"}],
        "messages": [{"id": "wamid.HBgM", "message_status": "accepted"}],
    }
    outcome = classify("meta", 200, body)
    assert outcome == ProviderOutcome(K.ACCEPTED, message_id="wamid.HBgM", http_status=200)


@pytest.mark.parametrize("state", ["held_for_quality_assessment", "paused"])
def test_meta_held_or_paused_message_is_still_accepted_and_says_so(state: str) -> None:
    outcome = classify("meta", 200, {"messages": [{"id": "wamid.X", "message_status": state}]})
    assert outcome.kind is K.ACCEPTED
    assert outcome.message_id == "wamid.X"
    assert outcome.detail is not None
    assert state in outcome.detail


def test_meta_success_without_id_is_accepted_without_id() -> None:
    outcome = classify("meta", 200, {"messaging_product": "whatsapp"})
    assert outcome.kind is K.ACCEPTED
    assert outcome.message_id is None


@pytest.mark.parametrize(
    ("http_status", "kind"),
    [
        (400, K.PERMANENT),
        (404, K.PERMANENT),
        (429, K.RETRYABLE),
        (500, K.RETRYABLE),
        (401, K.CONFIGURATION),
    ],
)
def test_meta_unknown_code_falls_back_to_http_status(http_status: int, kind: OutcomeKind) -> None:
    outcome = classify("meta", http_status, meta_error(999999))
    assert outcome.kind is kind
    assert outcome.error_code == "999999"


def test_meta_detail_names_code_subcode_and_message() -> None:
    outcome = classify("meta", 400, meta_error(100, "Invalid parameter", error_subcode=2494010))
    assert outcome.detail is not None
    assert "100/2494010" in outcome.detail
    assert "Invalid parameter" in outcome.detail


# -------------------------------------------------------------------------------- YCloud


def ycloud_error(status: int, code: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": "msg", "requestId": "r1", **extra}}


YCLOUD_CASES: list[tuple[int, str, OutcomeKind]] = [
    (429, "TOO_MANY_REQUESTS", K.RETRYABLE),
    (429, "SENDER_RATE_LIMITED", K.RETRYABLE),
    (429, "ACCOUNT_RATE_LIMITED", K.RETRYABLE),
    (500, "INTERNAL_ERROR", K.RETRYABLE),
    (503, "SERVICE_UNAVAILABLE", K.RETRYABLE),
    (400, "PARAM_INVALID", K.PERMANENT),
    (400, "PARAM_MISSING", K.PERMANENT),
    (400, "BAD_REQUEST", K.PERMANENT),
    # Departure from PROVIDERS.md ("permanent"): these concern every send on the account.
    (401, "UNAUTHORIZED", K.CONFIGURATION),
    (403, "FORBIDDEN", K.CONFIGURATION),
    (403, "BALANCE_INSUFFICIENT", K.CONFIGURATION),
    (403, "WHATSAPP_TEMPLATE_UNAVAILABLE", K.PERMANENT),
    (403, "SOMETHING_ELSE_FORBIDDEN", K.PERMANENT),
    (404, "NOT_FOUND", K.PERMANENT),
    (409, "ALREADY_EXISTS", K.ALREADY_DONE),
]


@pytest.mark.parametrize(("http_status", "code", "kind"), YCLOUD_CASES)
def test_ycloud_error_envelope(http_status: int, code: str, kind: OutcomeKind) -> None:
    outcome = classify("ycloud", http_status, ycloud_error(http_status, code))
    assert outcome.kind is kind
    assert outcome.error_code == code
    assert outcome.http_status == http_status
    assert outcome.pause_template is (code == "WHATSAPP_TEMPLATE_UNAVAILABLE")


@pytest.mark.parametrize(
    "code", ["TOO_MANY_REQUESTS", "SENDER_RATE_LIMITED", "ACCOUNT_RATE_LIMITED"]
)
def test_ycloud_429_honours_retry_after(code: str) -> None:
    outcome = classify("ycloud", 429, ycloud_error(429, code), headers={"Retry-After": "7"})
    assert outcome.kind is K.RETRYABLE
    assert outcome.retry_after == 7.0


def test_ycloud_429_http_date_retry_after_is_honoured() -> None:
    outcome = classify(
        "ycloud",
        429,
        ycloud_error(429, "TOO_MANY_REQUESTS"),
        headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
    )
    assert outcome.kind is K.RETRYABLE
    assert outcome.retry_after == 0.0  # a date in the past: retry now


@pytest.mark.parametrize(
    ("meta_code", "kind", "wait"),
    [
        ("131056", K.RETRYABLE, 4.0),
        ("130429", K.RETRYABLE, None),
        ("131026", K.PERMANENT, None),
        ("132016", K.PERMANENT, None),
        ("190", K.CONFIGURATION, None),
    ],
)
def test_ycloud_whatsapp_api_error_string_code_uses_meta_table(
    meta_code: str, kind: OutcomeKind, wait: float | None
) -> None:
    body = ycloud_error(
        400, "WHATSAPP_API_ERROR", whatsappApiError={"code": meta_code, "message": "x"}
    )
    outcome = classify("ycloud", 400, body, attempt=1)
    assert outcome.kind is kind
    assert outcome.error_code == meta_code
    assert outcome.retry_after == wait


def test_ycloud_429_with_pair_rate_prefers_retry_after_header() -> None:
    body = ycloud_error(429, "TOO_MANY_REQUESTS", whatsappApiError={"code": "131056"})
    outcome = classify("ycloud", 429, body, attempt=3, headers={"Retry-After": "2"})
    assert outcome.kind is K.RETRYABLE
    assert outcome.retry_after == 2.0


def test_ycloud_message_object_is_accepted_with_its_id() -> None:
    body = {
        "id": "63f5d7b2c3",
        "wamid": "wamid.HBgM",
        "status": "accepted",
        "from": "+15550001111",
        "to": "+5544999999999",
        "externalId": "evt-0001",
    }
    outcome = classify("ycloud", 200, body)
    assert outcome == ProviderOutcome(K.ACCEPTED, message_id="63f5d7b2c3", http_status=200)


def test_ycloud_failed_message_is_classified_by_its_meta_error_code() -> None:
    body = {"id": "m1", "status": "failed", "errorCode": "131026", "errorMessage": "undeliverable"}
    outcome = classify("ycloud", 200, body)
    assert outcome.kind is K.PERMANENT
    assert outcome.error_code == "131026"


@pytest.mark.parametrize("http_status", [500, 502, 503])
def test_ycloud_plain_5xx_without_envelope_is_retryable(http_status: int) -> None:
    assert classify("ycloud", http_status, text="<html>").kind is K.RETRYABLE


# --------------------------------------------------------------------------------- Z-API


def test_zapi_success_is_accepted_with_message_id() -> None:
    body = {
        "zaapId": "3999984263738042930CD6ECDE9VDWSA",
        "messageId": "D241XXXX732339502B68",
        "id": "D241XXXX732339502B68",
    }
    outcome = classify("zapi", 200, body)
    assert outcome == ProviderOutcome(
        K.ACCEPTED, message_id="D241XXXX732339502B68", http_status=200
    )


ZAPI_CASES: list[tuple[int, Any, OutcomeKind]] = [
    (405, None, K.PERMANENT),  # wrong method: our bug
    (415, None, K.PERMANENT),  # missing Content-Type: our bug
    (400, {"error": "phone is required"}, K.PERMANENT),
    (404, {"error": "Not found"}, K.PERMANENT),
    (422, {"error": "invalid order"}, K.PERMANENT),
    (401, {"error": "unauthorized"}, K.CONFIGURATION),
    (403, {"error": "forbidden"}, K.CONFIGURATION),
    (400, {"error": "Client-Token F123 not allowed"}, K.CONFIGURATION),
    (400, {"error": "your client-token is not configured"}, K.CONFIGURATION),
    (429, {"error": "too many requests"}, K.RETRYABLE),
    (408, None, K.RETRYABLE),
    (500, {"error": "internal"}, K.RETRYABLE),
    (502, None, K.RETRYABLE),
    (503, None, K.RETRYABLE),
]


@pytest.mark.parametrize(("http_status", "body", "kind"), ZAPI_CASES)
def test_zapi_cases(http_status: int, body: Any, kind: OutcomeKind) -> None:
    outcome = classify("zapi", http_status, body)
    assert outcome.kind is kind
    assert outcome.http_status == http_status


def test_zapi_429_honours_retry_after() -> None:
    outcome = classify("zapi", 429, {"error": "slow down"}, headers={"Retry-After": "3"})
    assert outcome.retry_after == 3.0


# --------------------------------------------------------------------------------- Zonos

ZONOS_ERRORS: list[tuple[str, OutcomeKind, str]] = [
    ("cannot parse input", K.PERMANENT, "cannot_parse_input"),
    ("orderId parameter required for updateVendorOrderStatus", K.PERMANENT, "missing_parameter"),
    (
        "orderStatus parameter required for updateVendorOrderStatus.",
        K.PERMANENT,
        "missing_parameter",
    ),
    ("orderId: 999-99999 is not a valid orderId", K.PERMANENT, "invalid_order_id"),
    (
        "Unable to retrieve order for updateVendorOrderStatus from orderId: 999-99999",
        K.PERMANENT,
        "order_not_found",
    ),
    (
        "OrderId: 999-99999 has been cancelled and cannot have status updated.",
        K.PERMANENT,
        "order_cancelled",
    ),
    (
        "Unable to update order status to status: VENDOR_CANCELLATION_REQUEST",
        K.PERMANENT,
        "status_not_settable",
    ),
    (
        "Unable to update order status to invalid status: NEW_ORDER_STATUS",
        K.PERMANENT,
        "invalid_status",
    ),
    (
        "OrderId: 999-99999 already has current status: VENDOR_SHIPMENT_READY",
        K.ALREADY_DONE,
        "already_current_status",
    ),
    ("New status: NEW_ORDER_STATUS is not a valid order status", K.PERMANENT, "invalid_status"),
    ("Unable to process updateVendorOrderStatus.", K.RETRYABLE, "unable_to_process"),
    ("Invalid security credentials", K.CONFIGURATION, "invalid_credentials"),
    ("Something Zonos added later", K.PERMANENT, "unrecognised_error"),
]


@pytest.mark.parametrize(("text", "kind", "code"), ZONOS_ERRORS)
def test_zonos_http_200_errors(text: str, kind: OutcomeKind, code: str) -> None:
    outcome = classify("zonos", 200, {"error": text})
    assert outcome.kind is kind
    assert outcome.error_code == code
    assert outcome.http_status == 200


@pytest.mark.parametrize(
    ("blocker", "kind"),
    [
        ("IGLOBAL_FRAUD_REVIEW", K.RETRYABLE),
        ("IGLOBAL_ORDER_ON_HOLD", K.RETRYABLE),
        ("IGLOBAL_LABELS_PROCESSING", K.RETRYABLE),
        ("VENDOR_END_OF_DAY_COMPLETE", K.PERMANENT),
        ("VENDOR_CANCELLATION_REQUEST", K.PERMANENT),
        ("IGLOBAL_ORDER_CANCELLED", K.PERMANENT),
        ("IGLOBAL_SOMETHING_NEW", K.PERMANENT),
    ],
)
def test_zonos_cannot_be_moved_is_split_by_the_blocking_status(
    blocker: str, kind: OutcomeKind
) -> None:
    text = (
        "OrderId: 99999 cannot be moved to order status: VENDOR_PREPARING_ORDER "
        f"while in status: {blocker}"
    )
    outcome = classify("zonos", 200, {"error": text})
    assert outcome.kind is kind
    assert outcome.error_code == f"blocked:{blocker}"
    if kind is K.RETRYABLE:
        assert outcome.retry_after == 3600.0


def test_zonos_success_is_delivered() -> None:
    body = {"success": "Updated Order: 99999 to new order status: VENDOR_PREPARING_ORDER"}
    outcome = classify("zonos", 200, body)
    assert outcome.kind is K.DELIVERED
    assert outcome.detail == body["success"]


@pytest.mark.parametrize("http_status", [406, 415])
def test_zonos_html_406_415_are_permanent(http_status: int) -> None:
    outcome = classify("zonos", http_status, text="<html><body>Not Acceptable</body></html>")
    assert outcome.kind is K.PERMANENT


def test_zonos_200_without_json_is_retryable_because_repeats_are_idempotent() -> None:
    assert classify("zonos", 200, text="<html>proxy page</html>").kind is K.RETRYABLE


@pytest.mark.parametrize(
    ("http_status", "kind"), [(500, K.RETRYABLE), (503, K.RETRYABLE), (404, K.PERMANENT)]
)
def test_zonos_other_http_statuses(http_status: int, kind: OutcomeKind) -> None:
    assert classify("zonos", http_status, text="x").kind is kind


def test_zonos_error_echoing_the_secret_is_scrubbed() -> None:
    secret = "f5bde245-f55e-414d-b722-80b25161c12c"
    outcome = classify("zonos", 200, {"error": f'cannot parse input {{"secret": "{secret}"}}'})
    assert outcome.kind is K.PERMANENT
    assert outcome.detail is not None
    assert secret not in outcome.detail
    assert "[REDACTED]" in outcome.detail
