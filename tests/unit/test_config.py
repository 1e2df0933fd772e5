"""Configuration loading: file + environment, secret references, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import ConfigProblemsError, load_config
from connector.core.breaker import BreakerSettings
from connector.core.retry import RetryPolicy
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


def line_of(text: str, needle: str) -> int:
    """The 1-based line of ``needle``'s first occurrence: problems name lines of the file."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


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
    line = line_of(text, "hunter2")
    with pytest.raises(
        ConfigError,
        match=rf"c\.yaml:{line}: accounts\.zonos-us\.secret: secrets may not be written",
    ):
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


def test_check_config_names_every_problem_with_file_line_and_account_names(tmp_path: Path) -> None:
    """Issue 14: missing variables, literal secrets, unknown keys and routes, all in one pass."""
    text = (
        EXAMPLE.read_text()
        .replace("env:ZONOS_SECRET", "hunter2")
        .replace("env:META_APP_SECRET", "also-literal")
        .replace("limits:\n", "limits:\n  max_inflight: 3\n")
        .replace("merchant-42: zapi-br", "merchant-42: zapi-x")
    )
    path = tmp_path / "c.yaml"
    path.write_text(text)
    env = {k: v for k, v in SECRETS.items() if k not in ("META_ACCESS_TOKEN", "YCLOUD_API_KEY")}
    env["ORDER_CONNECTOR_ACCOUNTS__NOBODY__RATE_PER_SECOND"] = "3"
    with pytest.raises(ConfigProblemsError) as info:
        load_config(path, env)
    at = {needle: line_of(text, needle) for needle in (
        "env:META_ACCESS_TOKEN", "env:YCLOUD_API_KEY", "hunter2", "merchant-42: zapi-x",
        "max_inflight: 3", "also-literal",
    )}  # fmt: skip
    assert info.value.lines == [
        f"{path}:{at['env:META_ACCESS_TOKEN']}: accounts.meta-br.access_token: environment"
        " variable META_ACCESS_TOKEN is not set",
        f"{path}:{at['env:YCLOUD_API_KEY']}: accounts.ycloud-br.api_key: environment variable"
        " YCLOUD_API_KEY is not set",
        f"{path}:{at['hunter2']}: accounts.zonos-us.secret: secrets may not be written in the"
        " config file; use 'env:VARIABLE' or 'file:/path/to/secret'",
        f"{path}:{at['merchant-42: zapi-x']}: routing.by_merchant.merchant-42: unknown account"
        " 'zapi-x'; known accounts: meta-br, ycloud-br, zapi-br, zonos-us",
        f"{path}:{at['max_inflight: 3']}: limits.max_inflight: unknown setting; did you mean"
        " 'max_in_flight'?",
        f"{path}:{at['also-literal']}: webhooks.meta.app_secret: secrets may not be written in"
        " the config file; use 'env:VARIABLE' or 'file:/path/to/secret'",
        "(environment): ORDER_CONNECTOR_ACCOUNTS__NOBODY__RATE_PER_SECOND: no account named"
        " 'nobody' (with '_' as '-'); known accounts: 'meta-br', 'ycloud-br', 'zapi-br',"
        " 'zonos-us'",
    ]
    assert "hunter2" not in str(info.value)
    assert "also-literal" not in str(info.value)


def test_unknown_key_inside_an_account_is_named_by_account(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    text = EXAMPLE.read_text().replace('    store: "9999"\n', '    stor: "9999"\n')
    path.write_text(text)
    with pytest.raises(ConfigProblemsError) as info:
        load_config(path, SECRETS)
    stor, account = line_of(text, 'stor: "9999"'), line_of(text, "- provider: zonos")
    assert f"{path}:{stor}: accounts.zonos-us.stor: unknown setting; did you mean 'store'?" in (
        info.value.lines
    )
    assert f"{path}:{account}: accounts.zonos-us.store: Field required" in info.value.lines


def test_check_config_command_prints_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.cli import main

    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "c.yaml"
    text = EXAMPLE.read_text().replace("limits:\n", "limits:\n  max_inflight: 3\n")
    path.write_text(text)
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "configuration invalid: 10 problem(s):"
    assert sum("is not set" in line for line in err) == 9
    line = line_of(text, "max_inflight: 3")
    assert (
        f"{path}:{line}: limits.max_inflight: unknown setting; did you mean 'max_in_flight'?"
        in (err)
    )


def test_environment_override_maps_underscore_to_dash_in_account_names() -> None:
    env = {**SECRETS, "ORDER_CONNECTOR_ACCOUNTS__META_BR__RATE_PER_SECOND": "12.5"}
    config = load_config(EXAMPLE, env)
    meta = next(a for a in config.accounts if a.name == "meta-br")
    assert meta.rate_per_second == 12.5


def test_environment_override_prefers_exact_name_and_refuses_ambiguous(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("name: zonos-us", "name: meta_br")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    exact = load_config(
        path, {**SECRETS, "ORDER_CONNECTOR_ACCOUNTS__META_BR__REQUEST_TIMEOUT_S": "3"}
    )
    timeouts = {a.name: a.request_timeout_s for a in exact.accounts}
    assert timeouts["meta_br"] == 3
    assert timeouts["meta-br"] == 10
    path.write_text(
        text.replace("name: meta_br", "name: zonos-us").replace("name: ycloud-br", "name: Meta-Br")
    )
    with pytest.raises(ConfigProblemsError) as info:
        load_config(path, {**SECRETS, "ORDER_CONNECTOR_ACCOUNTS__META_BR__REQUEST_TIMEOUT_S": "3"})
    assert info.value.lines == [
        "(environment): ORDER_CONNECTOR_ACCOUNTS__META_BR__REQUEST_TIMEOUT_S: matches more"
        " than one account ('meta-br', 'Meta-Br'); rename one of them"
    ]


def test_examples_bind_loopback_like_the_default() -> None:
    """Issue 14: the example and the webhook docs bind 127.0.0.1 (the default), not 0.0.0.0."""
    assert load_config(EXAMPLE, SECRETS).server.host == "127.0.0.1"
    docs = EXAMPLE.parents[1] / "docs" / "webhooks.md"
    hosts = [
        line.split("#")[0].split(":", 1)[1].strip()
        for text in (EXAMPLE.read_text(), docs.read_text())
        for line in text.splitlines()
        if line.strip().startswith("host:")
    ]
    assert hosts
    assert set(hosts) == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("section", "lines", "where", "says"),
    [
        ("retry:\n", ["jitter: 1.0"], "retry.jitter", "less than 1"),
        ("retry:\n", ["base_s: 2.0", "cap_s: 1.0"], "retry", "cap_s must be >= base_s"),
        ("retry:\n", ["cap_s: .inf"], "retry.cap_s", "finite"),
        ("limits:\n", ["outage:", "  window_s: .inf"], "limits.outage.window_s", "finite"),
        ("limits:\n", ["outage:", "  window: 3", "  min_requests: 4"], "limits.outage", "window"),
    ],
)
def test_retry_and_outage_are_checked_by_the_rules_that_use_them(
    tmp_path: Path, section: str, lines: list[str], where: str, says: str
) -> None:
    """The retry and outage sections are validated by ``RetryPolicy`` and ``BreakerSettings``
    themselves: a value the file accepts is one the daemon starts with (a jitter of 1, a cap
    below the base or an infinite window used to pass the check and stop the daemon's start)."""
    path = tmp_path / "c.yaml"
    added = "".join(f"  {line}\n" for line in lines)
    path.write_text(EXAMPLE.read_text().replace(section, section + added, 1))
    with pytest.raises(ConfigProblemsError) as info:
        load_config(path, SECRETS)
    problems = [line for line in info.value.lines if f": {where}: " in line]
    assert len(problems) == 1, info.value.lines
    assert says in problems[0]


def test_the_configured_retry_and_outage_are_the_rules_objects() -> None:
    config = load_config(EXAMPLE, SECRETS)
    assert isinstance(config.retry, RetryPolicy)
    assert isinstance(config.limits.outage, BreakerSettings)
