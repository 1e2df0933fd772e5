"""Webhook and server settings: secrets only by reference, every secret known to the redactor."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ConfigError

ACCOUNTS = """
accounts:
  - provider: zapi
    name: zapi-br
    base_url: https://api.z-api.io
    instance_id: INST1
    instance_token: env:ZAPI_INSTANCE
    client_token: env:ZAPI_CLIENT
"""
ENV = {
    "ZAPI_INSTANCE": "inst-secret",
    "ZAPI_CLIENT": "client-secret",
    "META_APP_SECRET": "meta-app-secret-value",
    "META_VERIFY": "meta-verify-value",
    "YCLOUD_HOOK": "ycloud-hook-value",
    "ZAPI_HOOK": "zapi-hook-value",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(text)
    return path


def test_webhook_secrets_resolve_from_references_and_reach_the_redactor(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            ACCOUNTS
            + """
server: {port: 0, max_body_bytes: 65536}
webhooks:
  meta: {app_secret: "env:META_APP_SECRET", verify_token: "env:META_VERIFY"}
  ycloud: {secret: "env:YCLOUD_HOOK", tolerance_s: 120}
  zapi:
    - {account: zapi-br, token: "env:ZAPI_HOOK"}
""",
        ),
        ENV,
    )
    assert config.server.max_body_bytes == 65536
    assert config.webhooks.ycloud is not None
    assert config.webhooks.ycloud.tolerance_s == 120
    assert config.topics.correlation == "order.status.correlation"
    secrets = set(config.secret_values())
    for name in ("META_APP_SECRET", "META_VERIFY", "YCLOUD_HOOK", "ZAPI_HOOK"):
        assert ENV[name] in secrets
    assert "meta-app-secret-value" not in repr(config)


@pytest.mark.parametrize(
    "section",
    [
        "webhooks:\n  meta: {app_secret: literal, verify_token: 'env:META_VERIFY'}\n",
        "webhooks:\n  ycloud: {secret: literal}\n",
        "webhooks:\n  zapi:\n    - {account: zapi-br, token: literal}\n",
    ],
)
def test_literal_webhook_secrets_are_refused(tmp_path: Path, section: str) -> None:
    with pytest.raises(ConfigError, match="secrets may not be written"):
        load_config(write(tmp_path, ACCOUNTS + section), ENV)


def test_zapi_tokens_must_name_zapi_accounts(tmp_path: Path) -> None:
    text = ACCOUNTS + "webhooks:\n  zapi:\n    - {account: nobody, token: 'env:ZAPI_HOOK'}\n"
    with pytest.raises(ConfigError, match="not Z-API"):
        load_config(write(tmp_path, text), ENV)


def test_zapi_tokens_name_each_account_once(tmp_path: Path) -> None:
    text = ACCOUNTS + (
        "webhooks:\n  zapi:\n"
        "    - {account: zapi-br, token: 'env:ZAPI_HOOK'}\n"
        "    - {account: zapi-br, token: 'env:ZAPI_CLIENT'}\n"
    )
    with pytest.raises(ConfigError, match="names an account twice: zapi-br"):
        load_config(write(tmp_path, text), ENV)


def test_account_names_are_unique(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be unique; repeated: zapi-br"):
        load_config(write(tmp_path, ACCOUNTS + ACCOUNTS.removeprefix("\naccounts:\n")), ENV)
