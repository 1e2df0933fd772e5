"""Order-status template provisioning requests (Meta ``message_templates``, YCloud templates) and
the harmless credential probes ``check-config --online`` makes. Pure: builds ``httpx.Request``s
and reads ``httpx.Response``s; never sends, never logs.

Pages followed (copies in ``../shared/provider-docs/``, summary in docs/templates.md):
- Meta: "Send order status template message" (create: ``POST /<API_VERSION>/<WABA_ID>/
  message_templates`` with ``category: UTILITY``, ``sub_category: ORDER_STATUS``, BODY and
  optional FOOTER, one variant per locale) and "Template management" (list: ``GET
  /<API_VERSION>/<WABA_ID>/message_templates``, cursor paging ``paging.cursors.after``).
- YCloud: whatsapp_template-create (``POST /v2/whatsapp/templates``, ``subCategory``) and
  whatsapp_template-list (``GET /v2/whatsapp/templates?filter.wabaId=&page=&limit=``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import httpx
import orjson

from connector.errors import ConnectorError
from connector.providers.classify import as_code, clip, json_object
from connector.providers.meta import (
    CONFIGURATION_CODES,
    MetaAccount,
    meta_api_root,
    meta_authorization,
)
from connector.providers.request import JSON_CONTENT_TYPE
from connector.providers.ycloud import YCloudAccount
from connector.providers.zapi import ZApiAccount

CATEGORY: Final = "UTILITY"
SUB_CATEGORY: Final = "ORDER_STATUS"
PAGE_SIZE: Final = 100
META_LIST_FIELDS: Final = "name,language,status,category,sub_category,id"
# Statuses under which a template can be sent; the others block sends or await review.
USABLE_STATUSES: Final = frozenset({"APPROVED", "ACTIVE"})
WAITING_STATUSES: Final = frozenset({"PENDING", "IN_APPEAL"})

TemplateAccount = MetaAccount | YCloudAccount


class TemplateApiError(ConnectorError):
    """A provider refused or failed a template or probe call. ``credentials`` is True when the
    answer says the credentials are wrong (HTTP 401/403, Meta auth codes). The message is the
    provider's own error text, clipped; callers still scrub it of the account's secrets."""

    def __init__(self, message: str, *, credentials: bool = False) -> None:
        super().__init__(message)
        self.credentials = credentials


@dataclass(frozen=True, slots=True)
class TemplateVariant:
    """One template variant to create: a name in one locale with its BODY and FOOTER text."""

    name: str
    language: str
    body: str
    footer: str | None = None

    def components(self) -> list[dict[str, str]]:
        parts = [{"type": "BODY", "text": self.body}]
        if self.footer:
            parts.append({"type": "FOOTER", "text": self.footer})
        return parts


@dataclass(frozen=True, slots=True)
class RemoteTemplate:
    """A template as the provider lists it."""

    name: str
    language: str
    status: str
    category: str | None = None
    sub_category: str | None = None
    template_id: str | None = None


@dataclass(frozen=True, slots=True)
class TemplatePage:
    """One page of a listing and how to ask for the next (None: this was the last)."""

    templates: list[RemoteTemplate]
    next_cursor: str | None


# -- Meta ---------------------------------------------------------------------------------------


def _need_waba(account: TemplateAccount) -> str:
    if not account.waba_id:
        raise TemplateApiError(
            f"account {account.name!r} has no waba_id (the WhatsApp Business Account that owns "
            "its templates): set accounts[].waba_id"
        )
    return account.waba_id


def _meta_headers(account: MetaAccount) -> list[tuple[str, str]]:
    return [("Authorization", meta_authorization(account))]


def meta_list_request(account: MetaAccount, cursor: str | None = None) -> httpx.Request:
    """``GET /<version>/<waba_id>/message_templates`` (one page; ``cursor`` = ``after``)."""
    url = f"{meta_api_root(account)}/{_need_waba(account)}/message_templates"
    params: dict[str, str | int] = {"fields": META_LIST_FIELDS, "limit": PAGE_SIZE}
    if cursor is not None:
        params["after"] = cursor
    return httpx.Request("GET", url, params=params, headers=_meta_headers(account))


def meta_create_request(account: MetaAccount, variant: TemplateVariant) -> httpx.Request:
    """``POST /<version>/<waba_id>/message_templates`` for one order-status variant."""
    url = f"{meta_api_root(account)}/{_need_waba(account)}/message_templates"
    body = {
        "name": variant.name,
        "language": variant.language,
        "category": CATEGORY,
        "sub_category": SUB_CATEGORY,
        "components": variant.components(),
    }
    return httpx.Request(
        "POST",
        url,
        headers=[*_meta_headers(account), JSON_CONTENT_TYPE],
        content=orjson.dumps(body),
    )


def meta_probe_request(account: MetaAccount) -> httpx.Request:
    """A harmless read of the sending phone number (checks the token and the number id)."""
    url = f"{meta_api_root(account)}/{account.phone_number_id}"
    return httpx.Request(
        "GET",
        url,
        params={"fields": "id,display_phone_number,verified_name"},
        headers=_meta_headers(account),
    )


def _meta_error(response: httpx.Response) -> TemplateApiError:
    body = json_object(response)
    error = body.get("error") if body is not None else None
    if isinstance(error, dict):
        code = as_code(error.get("code"))
        details = error.get("error_data")
        detail = details.get("details") if isinstance(details, dict) else None
        text = clip(
            f"meta error {error.get('code')}: {error.get('message') or ''}"
            + (f" ({detail})" if detail else "")
        )
        credentials = response.status_code in (401, 403) or (
            code is not None and code in CONFIGURATION_CODES
        )
        return TemplateApiError(text, credentials=credentials)
    return TemplateApiError(
        f"meta answered HTTP {response.status_code}",
        credentials=response.status_code in (401, 403),
    )


def parse_meta_list(response: httpx.Response) -> TemplatePage:
    if response.status_code != 200:
        raise _meta_error(response)
    body = json_object(response)
    data = body.get("data") if body is not None else None
    if body is None or not isinstance(data, list):
        raise TemplateApiError("meta answered a template listing without a data list")
    templates = [t for t in (_meta_template(item) for item in data) if t is not None]
    paging = body.get("paging")
    cursor: str | None = None
    if isinstance(paging, dict) and paging.get("next"):
        cursors = paging.get("cursors")
        after = cursors.get("after") if isinstance(cursors, dict) else None
        cursor = after if isinstance(after, str) and after else None
    return TemplatePage(templates, cursor)


def _listed_template(item: Any, sub_category_key: str, *id_keys: str) -> RemoteTemplate | None:
    """One listed template, whichever provider's spelling (None: not a template object)."""
    if not isinstance(item, dict):
        return None
    name, language = item.get("name"), item.get("language")
    if not isinstance(name, str) or not isinstance(language, str):
        return None
    template_id = None
    for key in id_keys:  # the first that is set, else the last one's value
        template_id = item.get(key)
        if template_id:
            break
    return RemoteTemplate(
        name,
        language,
        str(item.get("status") or "UNKNOWN").upper(),
        _text(item.get("category")),
        _text(item.get(sub_category_key)),
        _text(template_id),
    )


def _meta_template(item: Any) -> RemoteTemplate | None:
    return _listed_template(item, "sub_category", "id")


def parse_meta_create(response: httpx.Response, variant: TemplateVariant) -> RemoteTemplate:
    """Meta answers ``{"id", "status", "category"}``."""
    if response.status_code != 200:
        raise _meta_error(response)
    body = json_object(response) or {}
    return RemoteTemplate(
        variant.name,
        variant.language,
        str(body.get("status") or "PENDING").upper(),
        _text(body.get("category")) or CATEGORY,
        SUB_CATEGORY,
        _text(body.get("id")),
    )


# -- YCloud -------------------------------------------------------------------------------------


def _ycloud_headers(account: YCloudAccount) -> list[tuple[str, str]]:
    return [("X-API-Key", account.api_key.get_secret_value())]


def ycloud_list_request(account: YCloudAccount, cursor: str | None = None) -> httpx.Request:
    """``GET /v2/whatsapp/templates?filter.wabaId=&page=&limit=&includeTotal=true``."""
    params: dict[str, str | int] = {
        "filter.wabaId": _need_waba(account),
        "page": int(cursor) if cursor is not None else 1,
        "limit": PAGE_SIZE,
        "includeTotal": "true",
    }
    return httpx.Request(
        "GET",
        f"{account.base_url}/v2/whatsapp/templates",
        params=params,
        headers=_ycloud_headers(account),
    )


def ycloud_create_request(account: YCloudAccount, variant: TemplateVariant) -> httpx.Request:
    """``POST /v2/whatsapp/templates`` for one order-status variant."""
    body = {
        "wabaId": _need_waba(account),
        "name": variant.name,
        "language": variant.language,
        "category": CATEGORY,
        "subCategory": SUB_CATEGORY,
        "components": variant.components(),
    }
    return httpx.Request(
        "POST",
        f"{account.base_url}/v2/whatsapp/templates",
        headers=[*_ycloud_headers(account), JSON_CONTENT_TYPE],
        content=orjson.dumps(body),
    )


def ycloud_probe_request(account: YCloudAccount) -> httpx.Request:
    """``GET /v2/balance``: reads the account balance, changes nothing."""
    return httpx.Request("GET", f"{account.base_url}/v2/balance", headers=_ycloud_headers(account))


def _ycloud_error(response: httpx.Response) -> TemplateApiError:
    body = json_object(response)
    error = body.get("error") if body is not None else None
    status = response.status_code
    if isinstance(error, dict):
        text = clip(f"ycloud {status} {error.get('code') or ''}: {error.get('message') or ''}")
    else:
        text = f"ycloud answered HTTP {status}"
    return TemplateApiError(text, credentials=status in (401, 403))


def parse_ycloud_list(response: httpx.Response, cursor: str | None = None) -> TemplatePage:
    if response.status_code != 200:
        raise _ycloud_error(response)
    body = json_object(response)
    items = body.get("items") if body is not None else None
    if body is None or not isinstance(items, list):
        raise TemplateApiError("ycloud answered a template listing without an items list")
    templates = [t for t in (_ycloud_template(item) for item in items) if t is not None]
    page = int(cursor) if cursor is not None else 1
    total = body.get("total")
    more = (
        page * PAGE_SIZE < total
        if isinstance(total, int) and not isinstance(total, bool)
        else len(items) >= PAGE_SIZE
    )
    return TemplatePage(templates, str(page + 1) if more and items else None)


def _ycloud_template(item: Any) -> RemoteTemplate | None:
    return _listed_template(item, "subCategory", "officialTemplateId", "id")


def parse_ycloud_create(response: httpx.Response, variant: TemplateVariant) -> RemoteTemplate:
    """YCloud answers the template object (``status`` PENDING while Meta reviews it)."""
    if response.status_code not in (200, 201):
        raise _ycloud_error(response)
    found = _ycloud_template(json_object(response))
    if found is not None:
        return found
    return RemoteTemplate(variant.name, variant.language, "PENDING", CATEGORY, SUB_CATEGORY)


# -- one entry point per provider ---------------------------------------------------------------


def list_request(account: TemplateAccount, cursor: str | None = None) -> httpx.Request:
    if isinstance(account, MetaAccount):
        return meta_list_request(account, cursor)
    return ycloud_list_request(account, cursor)


def parse_list(
    account: TemplateAccount, response: httpx.Response, cursor: str | None = None
) -> TemplatePage:
    if isinstance(account, MetaAccount):
        return parse_meta_list(response)
    return parse_ycloud_list(response, cursor)


def create_request(account: TemplateAccount, variant: TemplateVariant) -> httpx.Request:
    if isinstance(account, MetaAccount):
        return meta_create_request(account, variant)
    return ycloud_create_request(account, variant)


def parse_create(
    account: TemplateAccount, response: httpx.Response, variant: TemplateVariant
) -> RemoteTemplate:
    if isinstance(account, MetaAccount):
        return parse_meta_create(response, variant)
    return parse_ycloud_create(response, variant)


def zapi_probe_request(account: ZApiAccount) -> httpx.Request:
    """``GET /instances/<id>/token/<token>/status``: the instance's connection state."""
    token = account.instance_token.get_secret_value()
    url = f"{account.base_url}/instances/{account.instance_id}/token/{token}/status"
    return httpx.Request(
        "GET", url, headers=[("Client-Token", account.client_token.get_secret_value())]
    )


def probe_request(account: object) -> httpx.Request | None:
    """The harmless credential check for an account; None when the provider has none (Zonos:
    its only call changes an order's status)."""
    if isinstance(account, MetaAccount):
        return meta_probe_request(account)
    if isinstance(account, YCloudAccount):
        return ycloud_probe_request(account)
    if isinstance(account, ZApiAccount):
        return zapi_probe_request(account)
    return None


def check_probe(provider: str, response: httpx.Response) -> None:
    """Raise TemplateApiError unless the probe's answer says the credentials work."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if provider == "meta":
        raise _meta_error(response)
    if provider == "ycloud":
        raise _ycloud_error(response)
    body = json_object(response)
    error = body.get("error") if body is not None else None
    text = clip(f"{provider} answered HTTP {status}" + (f": {error}" if error else ""))
    raise TemplateApiError(text, credentials=status in (401, 403))


def _text(value: object) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


__all__ = [
    "CATEGORY",
    "SUB_CATEGORY",
    "USABLE_STATUSES",
    "WAITING_STATUSES",
    "RemoteTemplate",
    "TemplateAccount",
    "TemplateApiError",
    "TemplatePage",
    "TemplateVariant",
    "check_probe",
    "create_request",
    "list_request",
    "parse_create",
    "parse_list",
    "probe_request",
]
