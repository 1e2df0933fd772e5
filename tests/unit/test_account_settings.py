"""Account settings: discriminated union, status-map overrides and gaps, auth options, secrets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from connector.contract.events import CanonicalStatus
from connector.errors import InvalidFieldError, MissingFieldError, UnknownStatusError
from connector.providers import (
    MetaAccount,
    MetaCloudProvider,
    OutcomeKind,
    ProviderOutcome,
    YCloudProvider,
    ZApiProvider,
    ZonosProvider,
    build_provider,
    parse_account,
)
from connector.providers.base import BuiltRequest
from tests.support.providers import (
    ACCOUNTS,
    SECRETS,
    event_dict,
    event_from,
    make_event,
    make_provider,
)


def body_of(built: object) -> dict[str, Any]:
    assert isinstance(built, BuiltRequest)
    body: dict[str, Any] = json.loads(built.request.content)
    return body


def test_discriminator_picks_the_adapter() -> None:
    adapters = {
        "meta": MetaCloudProvider,
        "ycloud": YCloudProvider,
        "zapi": ZApiProvider,
        "zonos": ZonosProvider,
    }
    for kind, cls in adapters.items():
        assert isinstance(build_provider(parse_account(ACCOUNTS[kind])), cls)


@pytest.mark.parametrize("kind", sorted(ACCOUNTS))
def test_default_status_maps_are_read_only_and_name_every_status(kind: str) -> None:
    """A provider's default table is shared by all its accounts: no account may change it."""
    account = parse_account(ACCOUNTS[kind])
    defaults = type(account).DEFAULT_STATUS_MAP
    assert set(defaults) == set(CanonicalStatus)
    with pytest.raises(TypeError):
        defaults[CanonicalStatus.PENDING] = "changed"  # type: ignore[index]
    assert defaults[CanonicalStatus.PENDING] != "changed"


def test_defaults() -> None:
    meta = parse_account(ACCOUNTS["meta"])
    assert isinstance(meta, MetaAccount)
    assert meta.base_url == "https://graph.facebook.com"
    assert meta.rate_per_second == 80.0
    assert meta.max_in_flight == 64
    assert meta.request_timeout_s == 10.0
    assert meta.variant == "template"
    assert parse_account(ACCOUNTS["zapi"]).rate_per_second is None


def test_sandbox_base_urls_get_real_paths_appended() -> None:
    base = "http://127.0.0.1:8099"
    urls = {}
    for kind in ACCOUNTS:
        provider = make_provider(kind, base_url=f"{base}/{kind}/")
        built = provider.build_request(make_event())
        assert isinstance(built, BuiltRequest)
        request = built.request
        urls[kind] = str(request.url)
    assert urls["meta"] == f"{base}/meta/v21.0/106540352242922/messages"
    assert urls["ycloud"] == f"{base}/ycloud/v2/whatsapp/messages/sendDirectly"
    token = SECRETS["zapi"][0]
    assert urls["zapi"] == f"{base}/zapi/instances/3C4E5F/token/{token}/order-status-update"
    assert urls["zonos"] == f"{base}/zonos/v1/updateVendorOrderStatus"


def test_ycloud_queued_endpoint() -> None:
    built = make_provider("ycloud", endpoint="queued").build_request(make_event())
    assert isinstance(built, BuiltRequest)
    request = built.request
    assert request.url.path == "/v2/whatsapp/messages"


def test_meta_interactive_variant() -> None:
    provider = make_provider("meta", variant="interactive")
    built = provider.build_request(make_event(status="shipped"))
    assert isinstance(built, BuiltRequest)
    assert built.template is None  # no template to park on
    body = body_of(built)
    assert body["type"] == "interactive"
    interactive = body["interactive"]
    assert interactive["type"] == "order_status"
    assert interactive["action"]["name"] == "review_order"
    assert interactive["action"]["parameters"]["reference_id"] == "order-1001"
    assert interactive["action"]["parameters"]["order"]["status"] == "shipped"
    assert interactive["body"]["text"] == "Your order is being prepared"
    assert body["biz_opaque_callback_data"] == "evt-0001"


def test_meta_pending_is_a_gap_unless_mapped() -> None:
    skipped = make_provider("meta").build_request(make_event(status="pending"))
    assert isinstance(skipped, ProviderOutcome)
    assert skipped.kind is OutcomeKind.SKIPPED
    brazil = make_provider("meta", status_map={"pending": "pending"})
    assert (
        body_of(brazil.build_request(make_event(status="pending")))["template"]["components"][0][
            "parameters"
        ][0]["order_status"]["order"]["status"]
        == "pending"
    )


def test_meta_description_is_cut_to_120_characters() -> None:
    body = body_of(make_provider("meta").build_request(make_event(description="x" * 300)))
    order = body["template"]["components"][0]["parameters"][0]["order_status"]["order"]
    assert len(order["description"]) == 120


def test_meta_reference_id_format_is_checked() -> None:
    event = make_event(whatsapp={"reference_id": "has spaces and is far too long for meta!!"})
    with pytest.raises(InvalidFieldError) as caught:
        make_provider("meta").build_request(event)
    assert caught.value.field == "whatsapp.reference_id"


def test_meta_template_name_missing_everywhere_is_named() -> None:
    provider = make_provider("meta", template_name=None)
    with pytest.raises(MissingFieldError) as caught:
        provider.build_request(make_event())
    assert caught.value.field == "whatsapp.template_name"


def test_zapi_partially_shipped_gap_choices() -> None:
    event = make_event(status="partially_shipped", description=None)
    skipped = make_provider("zapi").build_request(event)
    assert isinstance(skipped, ProviderOutcome)
    assert skipped.kind is OutcomeKind.SKIPPED
    as_processing = make_provider("zapi", status_map={"partially-shipped": "processing"})
    body = body_of(as_processing.build_request(event))
    assert body["orderStatus"] == "processing"
    assert body["message"] == "Part of your order has been shipped."
    with pytest.raises(ValidationError):
        parse_account(
            {**ACCOUNTS["zapi"], "status_map": {"partially_shipped": "partially_shipped"}}
        )


def test_zonos_partially_shipped_can_map_to_shipment_ready() -> None:
    provider = make_provider("zonos", status_map={"partially_shipped": "VENDOR_SHIPMENT_READY"})
    body = body_of(provider.build_request(make_event(status="partially_shipped")))
    assert body["orderStatus"] == "VENDOR_SHIPMENT_READY"


@pytest.mark.parametrize("spelling", ["VENDOR_LABELS_PRINTED", "VENDOR_LABELS_PRINTED_DATE"])
@pytest.mark.parametrize("native", ["VENDOR_LABELS_PRINTED", "VENDOR_LABELS_PRINTED_DATE"])
def test_zonos_labels_printed_spelling_is_configurable(spelling: str, native: str) -> None:
    provider = make_provider("zonos", labels_printed_status=spelling)
    data = event_dict(native_status=native)
    del data["status"]
    assert body_of(provider.build_request(event_from(data)))["orderStatus"] == spelling


def test_native_status_must_be_in_the_provider_vocabulary() -> None:
    data = event_dict(native_status="VENDOR_PREPARING_ORDER")
    with pytest.raises(UnknownStatusError):
        make_provider("meta").build_request(event_from(data))
    with pytest.raises(UnknownStatusError):
        make_provider("zonos").build_request(event_from(event_dict(native_status="not valid!")))


def test_zonos_store_mismatch_is_refused() -> None:
    event = make_event(zonos={"store": "123", "order_id": "123-1"})
    with pytest.raises(InvalidFieldError) as caught:
        make_provider("zonos").build_request(event)
    assert caught.value.field == "zonos.store"


def test_zonos_target_key_ignores_the_store_prefix() -> None:
    provider = make_provider("zonos")
    with_prefix = provider.target_key(make_event(zonos={"order_id": "999-1001"}))
    without = provider.target_key(make_event(zonos={"order_id": "1001"}))
    assert with_prefix == without == "zonos:999:1001"


@pytest.mark.parametrize(
    ("kind", "refs", "key"),
    [
        ("meta", {"whatsapp": {"reference_id": "ref-7"}}, "meta:106540352242922:ref-7"),
        ("ycloud", {"whatsapp": {"reference_id": "ref-7"}}, "ycloud:+15550001111:ref-7"),
        ("meta", {"whatsapp": None}, "meta:106540352242922:order-1001"),
        ("zapi", {"zapi": {**event_dict()["zapi"], "reference_id": "R7"}}, "zapi:3C4E5F:R7"),
        ("zapi", {"zapi": None}, "zapi:3C4E5F:order-1001"),
        ("zonos", {"zonos": None}, "zonos:999:order-1001"),
    ],
)
def test_target_keys_keep_their_spelling(kind: str, refs: dict[str, Any], key: str) -> None:
    # The ledger is keyed by target key in a compacted topic: a new spelling would make a
    # replay resend what an earlier version delivered.
    assert make_provider(kind).target_key(make_event(**refs)) == key


def test_meta_basic_auth_needs_a_username() -> None:
    with pytest.raises(ValidationError, match="basic_username"):
        parse_account({**ACCOUNTS["meta"], "auth_scheme": "basic"})


@pytest.mark.parametrize("kind", list(ACCOUNTS))
def test_account_validation_errors_never_echo_secrets(kind: str) -> None:
    broken = {**ACCOUNTS[kind], "base_url": "ftp://nowhere", "max_in_flight": 0}
    with pytest.raises(ValidationError) as caught:
        parse_account(broken)
    for secret in SECRETS[kind]:
        assert secret not in str(caught.value)


def test_unknown_account_field_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_account({**ACCOUNTS["ycloud"], "api_keyy": "typo"})
