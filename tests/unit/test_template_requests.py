"""Template provisioning without I/O: the Meta and YCloud template requests rebuilt from the
provider pages (``golden/``), reading their answers, and what ``templates`` wants per account."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.config import ConnectorConfig, load_config
from connector.errors import ConfigError
from connector.ops.templates import TemplateRow, render_table, wanted_templates
from connector.providers import MetaAccount, YCloudAccount, parse_account
from connector.providers.template_api import (
    TemplateApiError,
    TemplateVariant,
    check_probe,
    create_request,
    list_request,
    parse_create,
    parse_list,
    probe_request,
)

GOLDEN = Path(__file__).parent / "golden"
TOKEN = "meta-access-token-0123456789"
API_KEY = "ycloud-api-key-0123456789"


def golden(name: str, substitutions: dict[str, str]) -> dict[str, Any]:
    text = (GOLDEN / name).read_text(encoding="utf-8")
    for placeholder, value in substitutions.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def meta(**overrides: Any) -> MetaAccount:
    data = {
        "provider": "meta",
        "name": "meta-br",
        "phone_number_id": "106540352242922",
        "access_token": TOKEN,
        "waba_id": "102290129340398",
        **overrides,
    }
    account = parse_account(data)
    assert isinstance(account, MetaAccount)
    return account


def ycloud(**overrides: Any) -> YCloudAccount:
    data = {
        "provider": "ycloud",
        "name": "ycloud-br",
        "api_key": API_KEY,
        "sender": "+5511900000001",
        "waba_id": "WABA123",
        **overrides,
    }
    account = parse_account(data)
    assert isinstance(account, YCloudAccount)
    return account


VARIANT = TemplateVariant(
    "order_status_update", "pt_BR", "Atualizamos o status do seu pedido.", "Loja Exemplo"
)


def test_meta_create_request_is_the_documented_one() -> None:
    example = golden(
        "meta_message_templates_create.json",
        {
            "<API_VERSION>": "v21.0",
            "<WHATSAPP_BUSINESS_BUSINESS_ID>": "102290129340398",
            "<ACCESS_TOKEN>": TOKEN,
            "<TEMPLATE_NAME>": VARIANT.name,
            "<LANGUAGE_AND_LOCALE_CODE>": VARIANT.language,
            "<TEMPLATE_BODY_TEXT>": VARIANT.body,
            "<TEMPLATE_FOOTER_TEXT>": "Loja Exemplo",
        },
    )
    request = create_request(meta(api_version="v21.0"), VARIANT)
    assert request.method == example["method"]
    assert str(request.url) == example["url"]
    for header, value in example["headers"].items():
        assert request.headers[header] == value
    assert json.loads(request.content) == example["body"]


def test_meta_create_without_footer_has_only_the_body() -> None:
    request = create_request(meta(), TemplateVariant("order_update", "en_US", "Hi"))
    body = json.loads(request.content)
    assert body["components"] == [{"type": "BODY", "text": "Hi"}]
    assert body["sub_category"] == "ORDER_STATUS"


def test_ycloud_create_request_is_the_documented_one() -> None:
    example = golden(
        "ycloud_templates_create.json",
        {
            "<YOUR-API-KEY>": API_KEY,
            "<WABA_ID>": "WABA123",
            "<TEMPLATE_NAME>": VARIANT.name,
            "<LANGUAGE_AND_LOCALE_CODE>": VARIANT.language,
            "<TEMPLATE_BODY_TEXT>": VARIANT.body,
            "<TEMPLATE_FOOTER_TEXT>": "Loja Exemplo",
        },
    )
    request = create_request(ycloud(), VARIANT)
    assert request.method == example["method"]
    assert str(request.url) == example["url"]
    for header, value in example["headers"].items():
        assert request.headers[header] == value
    assert json.loads(request.content) == example["body"]


def test_meta_list_request_and_paging() -> None:
    example = golden(
        "meta_message_templates_list.json",
        {"<API_VERSION>": "v21.0", "<WABA_ID>": "102290129340398", "<ACCESS_TOKEN>": TOKEN},
    )
    account = meta(api_version="v21.0")
    request = list_request(account)
    assert request.method == example["method"]
    assert request.url.copy_with(query=None) == httpx.URL(example["url"])
    assert request.headers["Authorization"] == example["headers"]["Authorization"]
    assert request.url.params["limit"] == "100"
    assert set(request.url.params["fields"].split(",")) >= {"name", "language", "status"}
    assert "after" not in request.url.params

    page = parse_list(account, httpx.Response(200, json=example["response"]))
    assert [(t.name, t.language, t.status) for t in page.templates] == [
        ("order_status_update", "pt_BR", "APPROVED"),
        ("order_status_update", "en_US", "PAUSED"),
    ]
    assert page.next_cursor == "MjQZD"
    assert list_request(account, page.next_cursor).url.params["after"] == "MjQZD"
    last = {**example["response"], "paging": {"cursors": {"before": "a", "after": "b"}}}
    assert parse_list(account, httpx.Response(200, json=last)).next_cursor is None


def test_ycloud_list_request_and_paging_by_total() -> None:
    account = ycloud()
    request = list_request(account)
    assert str(request.url.copy_with(query=None)) == "https://api.ycloud.com/v2/whatsapp/templates"
    assert request.url.params["filter.wabaId"] == "WABA123"
    assert request.url.params["page"] == "1"
    assert request.headers["X-API-Key"] == API_KEY
    item = {"name": "order_status_update", "language": "pt_BR", "status": "APPROVED"}
    full = {"items": [item] * 100, "total": 150}
    page = parse_list(account, httpx.Response(200, json=full))
    assert page.next_cursor == "2"
    assert list_request(account, "2").url.params["page"] == "2"
    rest = parse_list(account, httpx.Response(200, json={"items": [item] * 50, "total": 150}), "2")
    assert rest.next_cursor is None


def test_created_answers_are_read() -> None:
    made = parse_create(meta(), httpx.Response(200, json={"id": "1", "status": "PENDING"}), VARIANT)
    assert (made.name, made.language, made.status) == ("order_status_update", "pt_BR", "PENDING")
    answer = {"name": VARIANT.name, "language": "pt_BR", "status": "PENDING", "wabaId": "W"}
    assert parse_create(ycloud(), httpx.Response(200, json=answer), VARIANT).status == "PENDING"


def test_errors_say_when_credentials_are_wrong() -> None:
    bad_token = {"error": {"message": "Invalid OAuth access token", "code": 190}}
    with pytest.raises(TemplateApiError) as meta_err:
        parse_list(meta(), httpx.Response(401, json=bad_token))
    assert meta_err.value.credentials
    assert "190" in str(meta_err.value)
    duplicate = {"error": {"message": "(#100) Invalid parameter", "code": 100}}
    with pytest.raises(TemplateApiError) as dup:
        parse_create(meta(), httpx.Response(400, json=duplicate), VARIANT)
    assert not dup.value.credentials
    yc = {"error": {"status": 401, "code": "UNAUTHORIZED", "message": "Invalid API key"}}
    with pytest.raises(TemplateApiError) as yc_err:
        parse_list(ycloud(), httpx.Response(401, json=yc))
    assert yc_err.value.credentials


def test_an_account_without_waba_id_is_named() -> None:
    with pytest.raises(TemplateApiError, match=r"meta-br.*waba_id"):
        list_request(meta(waba_id=None))


def test_probes_are_reads_and_zonos_has_none() -> None:
    meta_probe = probe_request(meta())
    assert meta_probe is not None
    assert meta_probe.method == "GET"
    assert meta_probe.url.path == "/v21.0/106540352242922"
    yc_probe = probe_request(ycloud())
    assert yc_probe is not None
    assert (yc_probe.method, yc_probe.url.path) == ("GET", "/v2/balance")
    zonos = parse_account(
        {"provider": "zonos", "name": "z", "store": "9", "secret": "s3cret-zonos"}
    )
    assert probe_request(zonos) is None
    check_probe("meta", httpx.Response(200, json={"id": "1"}))
    with pytest.raises(TemplateApiError):
        check_probe("zapi", httpx.Response(403, json={"error": "client-token"}))


CONFIG = """
accounts:
  - provider: meta
    name: meta-br
    phone_number_id: "106540352242922"
    access_token: env:META_TOKEN
    waba_id: "102290129340398"
    template_name: order_status_update
    language: pt_BR
  - provider: ycloud
    name: ycloud-mx
    api_key: env:YC_KEY
    sender: "+5215500000001"
    waba_id: WABA123
    template_name: legacy_status
    language: es_MX
templates:
  - name: order_status_update
    variants:
      - {locale: pt_BR, body: "Seu pedido mudou de status.", footer: "Loja"}
      - {locale: en_US, body: "Your order status changed."}
  - name: ycloud_only
    accounts: [ycloud-mx]
    variants:
      - {locale: es_MX, body: "Su pedido cambió de estado."}
"""
ENV = {"META_TOKEN": "meta-token-abcdef", "YC_KEY": "yc-key-abcdef"}


def load(tmp_path: Path, text: str = CONFIG) -> ConnectorConfig:
    path = tmp_path / "connector.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, ENV)


def test_wanted_templates_per_account(tmp_path: Path) -> None:
    config = load(tmp_path)
    meta_account, ycloud_account = config.accounts
    assert isinstance(meta_account, MetaAccount)
    assert isinstance(ycloud_account, YCloudAccount)
    wanted_meta = [
        (w.name, w.locale, w.variant is not None) for w in wanted_templates(config, meta_account)
    ]
    assert wanted_meta == [
        ("order_status_update", "pt_BR", True),
        ("order_status_update", "en_US", True),
    ]
    wanted_yc = [
        (w.name, w.locale, w.variant is not None) for w in wanted_templates(config, ycloud_account)
    ]
    # Every template without an accounts list, the one naming it, and the one it sends with
    # (legacy_status has no text in the config: status can report it, ensure cannot create it).
    assert wanted_yc == [
        ("order_status_update", "pt_BR", True),
        ("order_status_update", "en_US", True),
        ("ycloud_only", "es_MX", True),
        ("legacy_status", "es_MX", False),
    ]


def test_templates_must_name_whatsapp_accounts(tmp_path: Path) -> None:
    text = CONFIG.replace("accounts: [ycloud-mx]", "accounts: [zonos-us]")
    with pytest.raises(ConfigError, match=r"templates\.ycloud_only\.accounts.*zonos-us.*known"):
        load(tmp_path, text)


def test_a_locale_is_given_once_per_template(tmp_path: Path) -> None:
    text = CONFIG.replace("locale: en_US", "locale: pt_BR")
    with pytest.raises(ConfigError, match="locale repeated: pt_BR"):
        load(tmp_path, text)


def test_table_is_aligned_and_rows_know_what_blocks_sends() -> None:
    rows = [
        TemplateRow("meta-br", "meta", "order_status_update", "pt_BR", "APPROVED", "exists"),
        TemplateRow("ycloud-mx", "ycloud", "legacy_status", "es_MX", "MISSING", "-"),
        TemplateRow("meta-br", "meta", "order_status_update", "en_US", "PAUSED", "exists"),
        TemplateRow("meta-br", "meta", "order_status_update", "es_MX", "PENDING", "created"),
    ]
    lines = render_table(rows).splitlines()
    assert lines[0].split() == ["ACCOUNT", "PROVIDER", "NAME", "LOCALE", "STATUS", "ACTION"]
    column = lines[0].index("STATUS")  # every row's status starts under its header
    assert [line[column:].split()[0] for line in lines[1:]] == [
        "APPROVED",
        "MISSING",
        "PAUSED",
        "PENDING",
    ]
    assert [line.split()[4] for line in lines[1:]] == ["APPROVED", "MISSING", "PAUSED", "PENDING"]
    assert [r.blocked for r in rows] == [False, True, True, False]
