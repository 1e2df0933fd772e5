"""Start-up preflight pieces without a broker: backoff, waiting, one-line CLI failures."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from connector.cli import main, one_line
from connector.config import KafkaSettings
from connector.dev.devbroker import free_port
from connector.kafka.startup import (
    BrokerAttempt,
    BrokerUnreachableError,
    backoff_delays,
    wait_for_broker,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "connector.yaml"


def test_backoff_doubles_up_to_the_cap() -> None:
    delay = backoff_delays(first_s=0.5, cap_s=5.0)
    assert [delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert delay(10_000) == 5.0


async def test_waiting_for_an_absent_broker_reports_each_attempt_then_gives_up() -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", startup_timeout_s=1.5)
    attempts: list[BrokerAttempt] = []
    began = time.monotonic()
    with anyio.fail_after(15), pytest.raises(BrokerUnreachableError) as info:
        await wait_for_broker(settings, on_attempt=attempts.append, delay=lambda _n: 0.2)
    assert time.monotonic() - began >= 1.5
    assert len(attempts) >= 3
    assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
    assert all(a.retry_in_s <= 0.2 for a in attempts)
    assert settings.bootstrap_servers in str(info.value)
    assert "kafka.startup_timeout_s" in str(info.value)
    assert "\n" not in str(info.value)


def test_one_line_joins_every_line() -> None:
    assert one_line("c.yaml: 2 problem(s):\n  - a: bad\n  - b: worse") == (
        "c.yaml: 2 problem(s): - a: bad - b: worse"
    )


SECRET_VARS = (
    "META_ACCESS_TOKEN", "YCLOUD_API_KEY", "ZAPI_INSTANCE_TOKEN", "ZAPI_CLIENT_TOKEN",
    "ZONOS_SECRET", "META_APP_SECRET", "META_VERIFY_TOKEN", "YCLOUD_WEBHOOK_SECRET",
    "ZAPI_WEBHOOK_TOKEN",
)  # fmt: skip


@pytest.fixture
def example_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in SECRET_VARS:
        monkeypatch.setenv(var, f"value-of-{var.lower()}")


@pytest.mark.usefixtures("example_env")
def test_an_invalid_config_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        EXAMPLE.read_text()
        .replace("max_in_flight: 512", "max_in_flight: 0")
        .replace("port: 8080", "port: -1")
    )
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("order-connector: configuration invalid: ")
    assert "limits.max_in_flight" in err
    assert "server.port" in err


@pytest.mark.usefixtures("example_env")
def test_an_unknown_log_level_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(EXAMPLE.read_text())
    with pytest.raises(SystemExit) as exited:  # refused by the parser, before any loading
        main(["run", "--config", str(path), "--log-level", "loud"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.count("\n") == 1
    assert err.startswith(
        "order-connector run: error: argument --log-level: invalid choice: 'loud'"
    )


async def test_refused_credentials_are_a_configuration_error_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka.errors import SaslAuthenticationFailed

    from connector.errors import ConfigError
    from connector.kafka import startup
    from connector.kafka.admin import TopicAdminError

    class RefusingAdmin:
        async def __aenter__(self) -> RefusingAdmin:
            try:
                raise SaslAuthenticationFailed("Authentication failed: invalid credentials")
            except SaslAuthenticationFailed as exc:
                raise TopicAdminError("connect to", "broker:9093", -1, str(exc)) from exc

        async def __aexit__(self, *_exc: object) -> None:
            return None

    monkeypatch.setattr(startup, "_admin", lambda *_a, **_k: RefusingAdmin())
    settings = KafkaSettings(bootstrap_servers="broker:9093", startup_timeout_s=30)
    attempts: list[BrokerAttempt] = []
    with anyio.fail_after(5), pytest.raises(ConfigError, match="refused our credentials"):
        await wait_for_broker(settings, on_attempt=attempts.append)
    assert attempts == []
