"""docker-compose.yml read with pyyaml: health-gated start order, the grace period against the
drain deadline, and a connector config (with the compose secrets) the daemon accepts. The stack
itself runs in `./run compose-test`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.config import load_config
from connector.dev.sandbox.config import SandboxConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return document


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return float(match.group(1))


def test_services_start_in_health_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    conditions = {
        name: {dep: spec["condition"] for dep, spec in service.get("depends_on", {}).items()}
        for name, service in services.items()
    }
    assert conditions["topics-init"] == {"kafka": "service_healthy"}
    assert conditions["connector"] == {
        "topics-init": "service_completed_successfully",
        "sandbox": "service_healthy",
    }
    assert conditions["producer"] == {"connector": "service_healthy"}
    for name in ("kafka", "sandbox", "connector"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert "/readyz" in " ".join(services["connector"]["healthcheck"]["test"])
    assert services["prometheus"]["profiles"] == ["metrics"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_connector_config_loads_and_the_grace_period_outlasts_the_drain(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    connector = compose["services"]["connector"]
    (mount,) = connector["volumes"]
    source, target, mode = mount.split(":")
    assert (target, mode) == ("/etc/order-connector/connector.yaml", "ro")
    config = load_config(REPO / source, environ=dict(connector["environment"]))
    assert _seconds(connector["stop_grace_period"]) > config.limits.drain_timeout_s
    assert config.server.host == "0.0.0.0"
    assert {a.name for a in config.accounts} == {"meta-br", "ycloud-br", "zapi-br", "zonos-us"}
    # The compose secrets are the sandbox's own credentials, or every request would be a 401.
    creds = SandboxConfig().credentials
    env = connector["environment"]
    assert env["META_ACCESS_TOKEN"] == creds.meta_access_token.get_secret_value()
    assert env["ZONOS_SECRET"] == creds.zonos_secret.get_secret_value()
    assert env["YCLOUD_WEBHOOK_SECRET"] == creds.ycloud_webhook_secret.get_secret_value()
