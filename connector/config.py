"""Connector configuration: loaded once at the edge (the CLI) from a file plus the environment.

Secrets never live in the file: a secret field there must be a reference, ``env:NAME`` or
``file:/path``, resolved at load time. Everything is validated before the daemon starts.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from connector.errors import ConfigError
from connector.providers import AccountConfig

ENV_PREFIX = "ORDER_CONNECTOR_"
_SECRET_REF_PREFIXES = ("env:", "file:")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "order-status-connector"
    client_id: str = "order-status-connector"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    # The broker waits this long for our revocation callback: it must cover the drain deadline.
    rebalance_timeout_ms: int = Field(default=60_000, ge=1_000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    fetch_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_partition_fetch_bytes: int = Field(default=1024 * 1024, ge=1024)
    linger_ms: int = Field(default=5, ge=0)
    # Start-up waits this long for the broker (backoff, one log line per attempt), then exits 1.
    startup_timeout_s: float = Field(default=60.0, gt=0)
    # The largest record batch the producers send (aiokafka's ``max_request_size``). Keep it at
    # or below the ``max.message.bytes`` of every topic the daemon writes: a record over the
    # topic's limit is then refused before sending (``PublishRefusedError``) instead of by the
    # broker, which leaves an idempotent producer's partition unusable (OutOfOrderSequence).
    max_request_size: int = Field(default=1024 * 1024, ge=64 * 1024)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "kafka.security_protocol is SASL_*: set sasl_mechanism, sasl_username "
                "and sasl_password (the password from the environment)"
            )
        return self


class TopicNames(_Strict):
    input: str = "order.status.changed"
    results: str = "order.status.results"
    errors: str = "order.status.errors"
    # The compacted delivery ledger, co-partitioned with ``input``; None turns the ledger off.
    ledger: str | None = "order.status.ledger"
    # Compacted: provider message id -> (event, order, account), for webhooks on any replica.
    correlation: str = "order.status.correlation"


class RoutingSettings(_Strict):
    """Which account an event goes to: its own ``account``, else its merchant, else the default."""

    default_account: str | None = None
    by_merchant: dict[str, str] = Field(default_factory=dict)


class OutageSettings(_Strict):
    """Account outage mode (``connector.core.breaker.BreakerSettings``): an account whose recent
    requests fail as transient (5xx, timeouts, resets, 429s) enters outage; its events park in
    lane order without spending their retry budget and one probe tests recovery."""

    enabled: bool = True
    # Among the last ``window`` results no older than ``window_s``: at least ``min_requests``,
    # and a transient share of at least ``failure_ratio``, opens the account.
    window: int = Field(default=20, ge=1)
    window_s: float = Field(default=30.0, gt=0)
    min_requests: int = Field(default=10, ge=1)
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    # The first probe this long after opening; each failed probe multiplies it, up to the cap.
    probe_interval_s: float = Field(default=1.0, gt=0)
    probe_backoff: float = Field(default=2.0, ge=1)
    probe_interval_cap_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> OutageSettings:
        if self.min_requests > self.window:
            raise ValueError("limits.outage.min_requests must be at most window")
        if self.probe_interval_cap_s < self.probe_interval_s:
            raise ValueError("limits.outage.probe_interval_cap_s must be >= probe_interval_s")
        return self


class LimitSettings(_Strict):
    max_in_flight: int = Field(default=512, ge=1)
    max_buffered_records: int = Field(default=20_000, ge=1)
    max_buffered_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_poll_records: int = Field(default=1_000, ge=1)
    # Records between the commit point and the newest record taken in (a slow order at the
    # head of a partition holds the commit point while the rest flows past it). Bounds the
    # offset tracker, the outcomes a transaction holds back, and the re-work after a crash.
    max_uncommitted_records: int = Field(default=200_000, ge=1)
    commit_interval_s: float = Field(default=1.0, gt=0)
    drain_timeout_s: float = Field(default=20.0, gt=0)
    # After an account is stopped by a configuration/auth error, one event probes it this often.
    account_probe_interval_s: float = Field(default=30.0, gt=0)
    # While a template is paused (Meta 132015/132016 or a PAUSED webhook), one parked event
    # probes it this often; APPROVED/REINSTATED webhooks resume it at once.
    template_probe_interval_s: float = Field(default=300.0, gt=0)
    outage: OutageSettings = Field(default_factory=OutageSettings)
    # Accounts with ``rate_per_second`` send at an adaptive rate at or below it: cut on a
    # rate-limit answer (130429, 429), grown back slowly. False: a fixed token bucket.
    adaptive_rate: bool = True
    # Meta and YCloud: Meta's pair limit (1 message per 6 s per recipient, bursts of 45) is
    # kept before sending, so 131056 is not provoked. False: only reacted to.
    pair_limit: bool = True
    # Meta's pair rule: one message per ``pair_period_s`` to a recipient, bursts of
    # ``pair_burst`` borrowed and repaid (change only to match a sandbox in tests).
    pair_period_s: float = Field(default=6.0, gt=0)
    pair_burst: int = Field(default=45, ge=1)
    # After a request ended without an answer but may have reached the provider (ambiguous),
    # the order's next request waits this long (None: the provider's default, 20 s), so a
    # late original cannot overtake it (docs/providers.md, "Ambiguous outcomes").
    settle_window_s: float | None = Field(default=None, ge=0)


class RetrySettings(_Strict):
    max_attempts: int = Field(default=8, ge=1)
    max_elapsed_s: float = Field(default=300.0, gt=0)
    base_s: float = Field(default=0.5, gt=0)
    cap_s: float = Field(default=60.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1)


class HttpSettings(_Strict):
    client: Literal["aiohttp", "httpx"] = "aiohttp"
    max_connections: int = Field(default=512, ge=1)


class ServerSettings(_Strict):
    """The daemon's HTTP server: probes, /metrics and webhook routes (port 0 picks a free one)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    sink_timeout_s: float = Field(default=10.0, gt=0)
    dedupe_max_entries: int = Field(default=100_000, ge=1)
    dedupe_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # /readyz: how often the broker is asked for metadata, and how long an answer may take.
    kafka_check_interval_s: float = Field(default=5.0, gt=0)
    kafka_check_timeout_s: float = Field(default=5.0, gt=0)
    lag_interval_s: float = Field(default=10.0, gt=0)
    # A connection must deliver a complete request line and headers this long after it opened
    # (or after its previous response); idle keep-alive connections close after it too.
    header_timeout_s: float = Field(default=10.0, gt=0)
    # A request's body must arrive completely this long after its headers (else 408, closed).
    body_timeout_s: float = Field(default=20.0, gt=0)
    # Open connections beyond this are answered 503 and closed at once (webhook retries
    # come back later); bounds the sockets and memory a flood of slow clients can take.
    max_connections: int = Field(default=1_000, ge=1)


class MetaWebhookSettings(_Strict):
    app_secret: SecretStr
    verify_token: SecretStr


class YCloudWebhookSettings(_Strict):
    secret: SecretStr
    tolerance_s: float = Field(default=300.0, gt=0)


class ZapiWebhookToken(_Strict):
    """The secret token in one Z-API account's callback URL ``/webhooks/zapi/<token>``."""

    account: str
    token: SecretStr


class WebhookSettings(_Strict):
    """Which webhook routes are served (a provider left out has no route) and their secrets."""

    meta: MetaWebhookSettings | None = None
    ycloud: YCloudWebhookSettings | None = None
    zapi: list[ZapiWebhookToken] = Field(default_factory=list)

    @property
    def any(self) -> bool:
        return self.meta is not None or self.ycloud is not None or bool(self.zapi)


class CorrelationSettings(_Strict):
    """Message id -> event/order correlation kept in ``topics.correlation``."""

    # None: on exactly when this deployment serves webhooks (``webhooks`` configured), since
    # only webhook replicas read it; every replica writes it then. True/False force it.
    enabled: bool | None = None
    cache_max_entries: int = Field(default=200_000, ge=1)
    # A webhook can overtake the correlation record of its own send; wait this long for it.
    wait_s: float = Field(default=5.0, ge=0)


class DeliverySettings(_Strict):
    """Replay protection and exactly-once publishing (docs/replay.md)."""

    # Events older than this are published as ``expired`` and not sent. Off for ``run`` (a
    # backlog after an outage must still go out); ``replay`` sets 7 days unless told otherwise.
    max_event_age_s: float | None = Field(default=None, gt=0)
    # Coalescing: only the newest queued event of an order is sent, the others are superseded.
    # On by default for the WhatsApp providers (Meta pair limits; only the latest status
    # matters to the customer); ``coalesce`` overrides it per account name.
    coalesce_providers: frozenset[str] = frozenset({"meta", "ycloud"})
    coalesce: dict[str, bool] = Field(default_factory=dict)
    # What to do with a transition the provider will reject (Meta/YCloud: after completed or
    # canceled): enforce = an invalid_transition error, warn = log and send, off = send.
    transition_guard: Literal["enforce", "warn", "off"] = "enforce"
    # Results, errors, ledger updates and input offsets in one Kafka transaction per commit.
    transactional: bool = False
    # Must be unique per running replica and stable across its restarts (a restart then
    # fences and aborts the crashed process's open transaction at once).
    transactional_id: str | None = None
    transaction_timeout_ms: int = Field(default=30_000, ge=1_000)
    # Translate and publish ``dry_run`` results without calling providers.
    dry_run: bool = False

    def coalesces(self, account: str, provider_kind: str) -> bool:
        return self.coalesce.get(account, provider_kind in self.coalesce_providers)


class ConnectorConfig(_Strict):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicNames = Field(default_factory=TopicNames)
    accounts: list[AccountConfig] = Field(min_length=1)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)

    @model_validator(mode="after")
    def _zapi_tokens_name_zapi_accounts(self) -> ConnectorConfig:
        zapi_accounts = {a.name for a in self.accounts if a.provider == "zapi"}
        named = [t.account for t in self.webhooks.zapi]
        wrong = sorted({n for n in named if n not in zapi_accounts})
        if wrong:
            raise ValueError(f"webhooks.zapi names accounts that are not Z-API: {', '.join(wrong)}")
        if len(set(named)) != len(named):
            raise ValueError("webhooks.zapi names an account twice")
        return self

    @model_validator(mode="after")
    def _routes_name_accounts(self) -> ConnectorConfig:
        names = [a.name for a in self.accounts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"account names must be unique; repeated: {', '.join(dupes)}")
        known = set(names)
        wanted = {self.routing.default_account} | set(self.routing.by_merchant.values())
        unknown = sorted(n for n in wanted if n is not None and n not in known)
        if unknown:
            raise ValueError(f"routing names unknown accounts: {', '.join(unknown)}")
        return self

    @property
    def correlation_active(self) -> bool:
        """Whether accepted sends are written to the correlation topic."""
        enabled = self.correlation.enabled
        return self.webhooks.any if enabled is None else enabled

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor."""
        found: list[str] = []
        _collect_secrets(self, found)
        return [s for s in found if s]


def _collect_secrets(value: object, out: list[str]) -> None:
    if isinstance(value, SecretStr):
        out.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect_secrets(getattr(value, name), out)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_secrets(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_secrets(item, out)


def _resolve_secret(ref: str, where: str, environ: dict[str, str]) -> str:
    kind, _, target = ref.partition(":")
    if kind == "env":
        if target not in environ:
            raise ConfigError(f"{where}: environment variable {target} is not set")
        return environ[target]
    path = Path(target)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read secret file {path}: {exc.strerror}") from None


def _resolve_secret_refs(raw: Any, where: str, environ: dict[str, str]) -> Any:
    """Replace ``env:``/``file:`` references in secret-looking fields; reject literal secrets."""
    if isinstance(raw, dict):
        out: dict[str, Any] = {}
        for key, value in raw.items():
            here = f"{where}.{key}" if where else str(key)
            if _looks_secret(str(key)) and value is not None:
                if not (isinstance(value, str) and value.startswith(_SECRET_REF_PREFIXES)):
                    raise ConfigError(
                        f"{here}: secrets may not be written in the config file; "
                        f"use 'env:VARIABLE' or 'file:/path/to/secret'"
                    )
                out[key] = _resolve_secret(value, here, environ)
            else:
                out[key] = _resolve_secret_refs(value, here, environ)
        return out
    if isinstance(raw, list):
        return [_resolve_secret_refs(v, f"{where}[{i}]", environ) for i, v in enumerate(raw)]
    return raw


_SECRET_WORDS = ("token", "secret", "password", "api_key")


def _looks_secret(key: str) -> bool:
    return any(word in key for word in _SECRET_WORDS) and not key.endswith("_id")


def _apply_env_overrides(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """``ORDER_CONNECTOR_KAFKA__BOOTSTRAP_SERVERS=x`` sets ``kafka.bootstrap_servers``.

    Account fields are addressed by name: ``ORDER_CONNECTOR_ACCOUNTS__<NAME>__<FIELD>``.
    """
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        path = var[len(ENV_PREFIX) :].lower().split("__")
        if path[0] == "accounts" and len(path) == 3:
            for account in raw.get("accounts", []):
                if str(account.get("name", "")).lower() == path[1]:
                    account[path[2]] = value
                    break
            else:
                raise ConfigError(f"{var}: no account named {path[1]!r} in the config file")
            continue
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{var}: {part} is not a section")
        node[path[-1]] = value
    return raw


def load_config(path: Path, environ: dict[str, str] | None = None) -> ConnectorConfig:
    """Read, resolve and validate the configuration; raise ConfigError with every problem."""
    env = dict(os.environ if environ is None else environ)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "YAML"
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw = _resolve_secret_refs(raw, "", env)
    raw = _apply_env_overrides(raw, env)
    try:
        return ConnectorConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(path, exc)) from None


def _explain(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s):"]
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  - {where}: {err['msg']}")
    return "\n".join(lines)
