"""Configuration loading: file + environment, secret references, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "connector.yaml"
SECRETS = {
    "META_ACCESS_TOKEN": "meta-tok-123",
    "YCLOUD_API_KEY": "yc-key-456",
    "ZAPI_INSTANCE_TOKEN": "zi-789",
    "ZAPI_CLIENT_TOKEN": "zc-abc",
    "ZONOS_SECRET": "zs-def",
    "META_APP_SECRET": "mas-1",
    "META_VERIFY_TOKEN": "mvt-2",
    "YCLOUD_WEBHOOK_SECRET": "yws-3",
    "ZAPI_WEBHOOK_TOKEN": "zwt-4",
}


def test_example_config_loads_and_collects_every_secret() -> None:
    config = load_config(EXAMPLE, SECRETS)
    assert [a.name for a in config.accounts] == ["meta-br", "ycloud-br", "zapi-br", "zonos-us"]
    assert set(config.secret_values()) == set(SECRETS.values())
    assert "meta-tok-123" not in repr(config)


def test_environment_overrides_settings_and_account_fields() -> None:
    env = {
        **SECRETS,
        "ORDER_CONNECTOR_KAFKA__BOOTSTRAP_SERVERS": "kafka-1:9093",
        "ORDER_CONNECTOR_LIMITS__MAX_IN_FLIGHT": "64",
        "ORDER_CONNECTOR_ACCOUNTS__ZONOS-US__STORE": "1234",
    }
    config = load_config(EXAMPLE, env)
    assert config.kafka.bootstrap_servers == "kafka-1:9093"
    assert config.limits.max_in_flight == 64
    zonos = next(a for a in config.accounts if a.name == "zonos-us")
    assert getattr(zonos, "store", None) == "1234"


def test_literal_secret_in_file_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("env:ZONOS_SECRET", "hunter2")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"accounts\[3\]\.secret: secrets may not be written"):
        load_config(path, SECRETS)


def test_missing_secret_variable_and_file_are_named(tmp_path: Path) -> None:
    env = {k: v for k, v in SECRETS.items() if k != "YCLOUD_API_KEY"}
    with pytest.raises(ConfigError, match="YCLOUD_API_KEY is not set"):
        load_config(EXAMPLE, env)
    path = tmp_path / "c.yaml"
    path.write_text(EXAMPLE.read_text().replace("env:ZONOS_SECRET", "file:/nonexistent/s"))
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_config(path, SECRETS)


def test_secret_file_reference_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "zonos"
    secret.write_text("from-a-file\n")
    path = tmp_path / "c.yaml"
    path.write_text(EXAMPLE.read_text().replace("env:ZONOS_SECRET", f"file:{secret}"))
    config = load_config(path, SECRETS)
    assert "from-a-file" in config.secret_values()


def test_validation_errors_list_every_problem_without_secret_values(tmp_path: Path) -> None:
    text = (
        EXAMPLE.read_text()
        .replace("max_in_flight: 512", "max_in_flight: 0")
        .replace("default_account: meta-br", "default_account: nobody")
    )
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, SECRETS)
    message = str(info.value)
    assert "limits.max_in_flight" in message
    for secret in SECRETS.values():
        assert secret not in message


def test_unknown_keys_and_bad_yaml_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(EXAMPLE.read_text().replace("limits:\n", "limits:\n  max_inflight: 3\n"))
    with pytest.raises(ConfigError, match="max_inflight"):
        load_config(path, SECRETS)
    path.write_text("kafka: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, SECRETS)
