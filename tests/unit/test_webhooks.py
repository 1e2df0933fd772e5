"""Webhook receivers: signatures checked over raw bytes first, then payloads parsed."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from connector.webhooks import (
    DeliveryStatus,
    MetaWebhookReceiver,
    SeenWebhooks,
    WebhookHandshakeError,
    WebhookPayloadError,
    WebhookSignatureError,
    WebhookStaleError,
    YCloudWebhookReceiver,
    ZapiWebhookReceiver,
)
from tests.support.webhook_payloads import (
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


@pytest.fixture
def meta() -> MetaWebhookReceiver:
    return MetaWebhookReceiver(
        app_secret=SecretStr(META_APP_SECRET),
        verify_token=SecretStr(META_VERIFY_TOKEN),
        accounts={"106540352242922": "br-main"},
    )


@pytest.fixture
def ycloud() -> YCloudWebhookReceiver:
    return YCloudWebhookReceiver(
        secret=SecretStr(YCLOUD_SECRET), accounts={"+5511900000000": "yc-br"}
    )


@pytest.fixture
def zapi() -> ZapiWebhookReceiver:
    return ZapiWebhookReceiver(
        tokens={"zapi-a": SecretStr("another-token-zz"), "zapi-b": SecretStr(ZAPI_TOKEN)}
    )


# --- Meta -----------------------------------------------------------------------------------


def test_meta_handshake_echoes_challenge(meta: MetaWebhookReceiver) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": META_VERIFY_TOKEN, "hub.challenge": "42"}
    assert meta.handshake(query) == "42"


def test_meta_handshake_wrong_token_is_403(meta: MetaWebhookReceiver) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "42"}
    with pytest.raises(WebhookHandshakeError) as info:
        meta.handshake(query)
    assert info.value.http_status == 403
    assert META_VERIFY_TOKEN not in str(info.value)


@pytest.mark.parametrize(
    "query",
    [
        {"hub.verify_token": META_VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": META_VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": META_VERIFY_TOKEN},
    ],
)
def test_meta_handshake_incomplete_is_400(meta: MetaWebhookReceiver, query: dict[str, str]) -> None:
    with pytest.raises(WebhookPayloadError):
        meta.handshake(query)


def test_meta_valid_signature_parses_delivery_report(meta: MetaWebhookReceiver) -> None:
    body = meta_statuses_body(meta_status("delivered"), meta_status("read", timestamp="1750000005"))
    parsed = meta.receive(body, meta_signature(body))
    assert [r.status for r in parsed.reports] == [DeliveryStatus.DELIVERED, DeliveryStatus.READ]
    first = parsed.reports[0]
    assert first.provider == "meta"
    assert first.message_id == "wamid.HBgM1"
    assert first.event_id == "evt-1"
    assert first.account == "br-main"
    assert first.sender == "106540352242922"
    assert first.timestamp == datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC)
    assert first.errors == ()
    assert parsed.reports[0].dedupe_key != parsed.reports[1].dedupe_key


def test_meta_failed_2046_carries_error_and_event_id(meta: MetaWebhookReceiver) -> None:
    body = meta_2046_body("evt-77")
    (report,) = meta.receive(body, meta_signature(body)).reports
    assert report.status is DeliveryStatus.FAILED
    assert report.event_id == "evt-77"
    assert report.error_codes == ("2046",)
    assert report.errors[0].title == "New order status was not correctly transitioned"
    assert report.errors[0].detail == "Cannot move from completed to shipped"


def test_meta_recipient_is_masked_when_rendered(meta: MetaWebhookReceiver) -> None:
    body = meta_statuses_body(meta_status())
    (report,) = meta.receive(body, meta_signature(body)).reports
    assert report.recipient == "5511987654321"
    assert "5511987654321" not in repr(report)
    assert report.log_fields()["recipient"] == "55*********21"


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "sha1=abc",
        "sha256=",
        "sha256=" + "0" * 64,
        meta_signature(b"{}"),  # a valid signature of another body
        meta_signature(meta_statuses_body(meta_status()), secret="wrong-secret"),
        "sha256=é" * 3,  # non-ASCII must not crash the comparison
    ],
)
def test_meta_bad_signature_rejected_before_parsing(
    meta: MetaWebhookReceiver, signature: str | None
) -> None:
    body = meta_statuses_body(meta_status())
    with pytest.raises(WebhookSignatureError) as info:
        meta.receive(body, signature)
    assert info.value.http_status == 401
    assert META_APP_SECRET not in str(info.value)


def test_meta_bad_signature_on_garbage_is_401_not_400(meta: MetaWebhookReceiver) -> None:
    with pytest.raises(WebhookSignatureError):
        meta.receive(b"not json at all", "sha256=" + "0" * 64)


def test_meta_uppercase_hex_signature_accepted(meta: MetaWebhookReceiver) -> None:
    body = meta_statuses_body(meta_status())
    signature = "sha256=" + meta_signature(body).removeprefix("sha256=").upper()
    assert len(meta.receive(body, signature).reports) == 1


def test_meta_signature_covers_raw_bytes_not_reserialised_json(meta: MetaWebhookReceiver) -> None:
    body = meta_statuses_body(meta_status())
    spaced = body.replace(b",", b", ")  # same JSON, different bytes
    with pytest.raises(WebhookSignatureError):
        meta.receive(spaced, meta_signature(body))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"object":"whatsapp_business_account"}',
        b'{"entry":[{"changes":[{"field":"messages","value":{"statuses":[{"status":"read"}]}}]}]}',
        b'{"entry":[{"changes":[{"field":"messages","value":{"statuses":[{"id":"w","status":"read","timestamp":"soon"}]}}]}]}',
        b'{"entry":[{"changes":[{"field":"message_template_status_update","value":{"reason":"x"}}]}]}',
        b"\xff\xfe",
    ],
)
def test_meta_malformed_payload_is_400(meta: MetaWebhookReceiver, body: bytes) -> None:
    with pytest.raises(WebhookPayloadError) as info:
        meta.receive(body, meta_signature(body))
    assert info.value.http_status == 400


def test_meta_unknown_status_and_fields_are_ignored(meta: MetaWebhookReceiver) -> None:
    body = meta_statuses_body(meta_status("deleted"), meta_status("sent"))
    parsed = meta.receive(body, meta_signature(body))
    assert [r.status for r in parsed.reports] == [DeliveryStatus.SENT]
    assert parsed.ignored == 1


def test_meta_template_status_update(meta: MetaWebhookReceiver) -> None:
    body = meta_template_body("PAUSED")
    parsed = meta.receive(body, meta_signature(body))
    assert parsed.reports == ()
    (change,) = parsed.template_changes
    assert change.template_name == "order_status_update"
    assert change.template_id == "1234567890"
    assert change.language == "pt_BR"
    assert change.event == "PAUSED"
    assert change.pauses_sending
    assert not change.resumes_sending
    approved = meta.parse(meta_template_body("APPROVED"))
    assert approved.template_changes[0].resumes_sending
    assert approved.template_changes[0].dedupe_key != change.dedupe_key


def test_meta_dedupe_key_is_stable_across_retries(meta: MetaWebhookReceiver) -> None:
    body = meta_2046_body()
    first = meta.parse(body).reports[0].dedupe_key
    again = meta.parse(body).reports[0].dedupe_key
    assert first == again
    assert "2046" in first


# --- YCloud ---------------------------------------------------------------------------------


def test_ycloud_valid_failed_report(ycloud: YCloudWebhookReceiver) -> None:
    body = ycloud_body("failed")
    (report,) = ycloud.receive(body, ycloud_signature(body), now=NOW).reports
    assert report.provider == "ycloud"
    assert report.status is DeliveryStatus.FAILED
    assert report.event_id == "evt-yc-1"
    assert report.message_id == "wamid.YCLOUD1"
    assert report.provider_message_id == "63f5d23d3b8c5d3bba2f5b9e"
    assert report.account == "yc-br"
    assert report.error_codes == ("131026",)
    assert report.errors[0].detail == "Message failed to send"
    assert report.timestamp == datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC)


def test_ycloud_delivered_without_error(ycloud: YCloudWebhookReceiver) -> None:
    body = ycloud_body("delivered", error_code=None)
    (report,) = ycloud.receive(body, ycloud_signature(body), now=NOW).reports
    assert report.status is DeliveryStatus.DELIVERED
    assert report.errors == ()


@pytest.mark.parametrize("skew", [-301, 301, -10_000])
def test_ycloud_stale_timestamp_rejected(ycloud: YCloudWebhookReceiver, skew: int) -> None:
    body = ycloud_body()
    with pytest.raises(WebhookStaleError) as info:
        ycloud.receive(body, ycloud_signature(body, t=NOW + skew), now=NOW)
    assert info.value.http_status == 401
    assert info.value.reason == "stale"


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_ycloud_timestamp_within_tolerance_accepted(
    ycloud: YCloudWebhookReceiver, skew: int
) -> None:
    body = ycloud_body()
    assert ycloud.receive(body, ycloud_signature(body, t=NOW + skew), now=NOW).reports


def test_ycloud_tolerance_is_configurable() -> None:
    strict = YCloudWebhookReceiver(secret=SecretStr(YCLOUD_SECRET), tolerance_s=5)
    body = ycloud_body()
    with pytest.raises(WebhookStaleError):
        strict.receive(body, ycloud_signature(body, t=NOW - 6), now=NOW)
    assert strict.receive(body, ycloud_signature(body, t=NOW - 5), now=NOW).reports


@pytest.mark.parametrize(
    "make_signature",
    [
        lambda body: None,
        lambda body: "",
        lambda body: "s=abc",
        lambda body: f"t={NOW}",
        lambda body: f"t=abc,s={'0' * 64}",
        lambda body: ycloud_signature(body, secret="wrong"),
        lambda body: ycloud_signature(body + b" "),
        # the timestamp is part of what is signed: moving it breaks the signature
        lambda body: ycloud_signature(body).replace(f"t={NOW}", f"t={NOW + 1}"),
    ],
)
def test_ycloud_bad_signature_rejected(
    ycloud: YCloudWebhookReceiver, make_signature: object
) -> None:
    body = ycloud_body()
    assert callable(make_signature)
    with pytest.raises(WebhookSignatureError) as info:
        ycloud.receive(body, make_signature(body), now=NOW)
    assert not isinstance(info.value, WebhookStaleError)
    assert YCLOUD_SECRET not in str(info.value)


def test_ycloud_other_event_types_and_accepted_status_are_ignored(
    ycloud: YCloudWebhookReceiver,
) -> None:
    other = ycloud_body(event_type="whatsapp.inbound_message.received")
    assert ycloud.receive(other, ycloud_signature(other), now=NOW).ignored == 1
    accepted = ycloud_body("accepted", error_code=None)
    parsed = ycloud.receive(accepted, ycloud_signature(accepted), now=NOW)
    assert parsed.reports == ()
    assert parsed.ignored == 1


@pytest.mark.parametrize("t", ["9" * 13, "9" * 400, "9" * 5_000, "0" * 20])
def test_ycloud_signed_absurd_timestamp_is_400_not_a_crash(
    ycloud: YCloudWebhookReceiver, t: str
) -> None:
    body = ycloud_body()
    digest = hmac.new(YCLOUD_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256)
    with pytest.raises(WebhookPayloadError) as info:
        ycloud.receive(body, f"t={t},s={digest.hexdigest()}", now=NOW)
    assert info.value.http_status == 400


@pytest.mark.parametrize("t", ["\u00b2", "\u0663" * 10, "1\u00b2"])
def test_ycloud_non_ascii_digits_in_timestamp_are_a_malformed_signature(
    ycloud: YCloudWebhookReceiver, t: str
) -> None:
    body = ycloud_body()
    digest = hmac.new(YCLOUD_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256)
    with pytest.raises(WebhookSignatureError, match="malformed"):
        ycloud.receive(body, f"t={t},s={digest.hexdigest()}", now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"id":"e"}',
        b'{"type":"whatsapp.message.updated"}',
        b'{"type":"whatsapp.message.updated","whatsappMessage":{"id":"x"}}',
    ],
)
def test_ycloud_malformed_is_400(ycloud: YCloudWebhookReceiver, body: bytes) -> None:
    with pytest.raises(WebhookPayloadError):
        ycloud.receive(body, ycloud_signature(body), now=NOW)


# --- Z-API ----------------------------------------------------------------------------------


def test_zapi_status_callback_one_report_per_id(zapi: ZapiWebhookReceiver) -> None:
    parsed = zapi.receive(zapi_body("RECEIVED"), ZAPI_TOKEN)
    assert [r.message_id for r in parsed.reports] == ["3EB0C431D2A3", "3EB0C431D2A4"]
    assert {r.status for r in parsed.reports} == {DeliveryStatus.DELIVERED}
    assert {r.account for r in parsed.reports} == {"zapi-b"}
    assert all(r.event_id is None for r in parsed.reports)
    assert parsed.reports[0].timestamp == datetime(2021, 9, 21, 14, 30, 45, tzinfo=UTC)


@pytest.mark.parametrize(
    ("wire", "canonical"),
    [("SENT", "sent"), ("RECEIVED", "delivered"), ("READ", "read"), ("PLAYED", "read")],
)
def test_zapi_status_mapping(zapi: ZapiWebhookReceiver, wire: str, canonical: str) -> None:
    parsed = zapi.receive(zapi_body(wire), ZAPI_TOKEN)
    assert {r.status.value for r in parsed.reports} == {canonical}


def test_zapi_read_by_me_is_ignored(zapi: ZapiWebhookReceiver) -> None:
    parsed = zapi.receive(zapi_body("READ_BY_ME"), ZAPI_TOKEN)
    assert parsed.reports == ()
    assert parsed.ignored == 1


@pytest.mark.parametrize("token", ["", "zapi-callback-token", ZAPI_TOKEN + "x", "ÿ" * 4])
def test_zapi_wrong_token_rejected(zapi: ZapiWebhookReceiver, token: str) -> None:
    with pytest.raises(WebhookSignatureError) as info:
        zapi.receive(zapi_body(), token)
    assert ZAPI_TOKEN not in str(info.value)


def test_zapi_malformed_is_400(zapi: ZapiWebhookReceiver) -> None:
    with pytest.raises(WebhookPayloadError):
        zapi.receive(b'{"type":"MessageStatusCallback","status":"READ","ids":[]}', ZAPI_TOKEN)
    with pytest.raises(WebhookPayloadError):
        zapi.receive(b"[1,2]", ZAPI_TOKEN)


def test_receivers_do_not_show_secrets_in_repr(
    meta: MetaWebhookReceiver, ycloud: YCloudWebhookReceiver, zapi: ZapiWebhookReceiver
) -> None:
    rendered = repr(meta) + repr(ycloud) + repr(zapi)
    for secret in (META_APP_SECRET, META_VERIFY_TOKEN, YCLOUD_SECRET, ZAPI_TOKEN):
        assert secret not in rendered


# --- SeenWebhooks ---------------------------------------------------------------------------


def test_seen_webhooks_claim_once() -> None:
    seen = SeenWebhooks()
    assert seen.claim("a")
    assert not seen.claim("a")
    assert "a" in seen


def test_seen_webhooks_release_lets_a_retry_through() -> None:
    seen = SeenWebhooks()
    assert seen.claim("a")
    seen.release(["a"])
    assert seen.claim("a")


def test_seen_webhooks_bounded_by_count_oldest_first() -> None:
    seen = SeenWebhooks(max_entries=3)
    for key in "abcd":
        assert seen.claim(key)
    assert len(seen) == 3
    assert "a" not in seen
    assert not seen.claim("d")


def test_seen_webhooks_expire_by_age() -> None:
    now = [0.0]
    seen = SeenWebhooks(ttl_s=10, clock=lambda: now[0])
    assert seen.claim("a")
    now[0] = 5.0
    assert seen.claim("b")
    now[0] = 10.0
    assert not seen.claim("b")
    assert seen.claim("a")  # expired at t=10, so a retry now is handled again
    assert len(seen) == 2


@pytest.mark.parametrize("kwargs", [{"max_entries": 0}, {"ttl_s": 0}])
def test_seen_webhooks_rejects_bad_bounds(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SeenWebhooks(**kwargs)  # type: ignore[arg-type]


# --- the same class of bug in the other receivers: absurd numbers are a 400 -----------------


@pytest.mark.parametrize("timestamp", ["9" * 400, "1e400", "-1e400", "nan", "99999999999999999"])
def test_meta_absurd_status_timestamp_is_400(meta: MetaWebhookReceiver, timestamp: str) -> None:
    body = meta_statuses_body(meta_status(timestamp=timestamp))
    with pytest.raises(WebhookPayloadError):
        meta.receive(body, meta_signature(body))


@pytest.mark.parametrize("raw", [b"1e400", b"9" * 400, b"-1e400"])
def test_meta_absurd_json_number_timestamp_is_400(meta: MetaWebhookReceiver, raw: bytes) -> None:
    body = meta_statuses_body(meta_status(timestamp="TS")).replace(b'"TS"', raw)
    with pytest.raises(WebhookPayloadError):
        meta.receive(body, meta_signature(body))


@pytest.mark.parametrize("raw", [b"1e400", b"9" * 400, b'"nan"', b"-99999999999999999999"])
def test_zapi_absurd_moment_is_400(zapi: ZapiWebhookReceiver, raw: bytes) -> None:
    body = zapi_body("READ").replace(b"1632234645000", raw)
    with pytest.raises(WebhookPayloadError):
        zapi.receive(body, ZAPI_TOKEN)
