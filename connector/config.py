"""Connector configuration: loaded once at the edge (the CLI) from a file plus the environment.

Secrets never live in the file: a secret field there must be a reference, ``env:NAME`` or
``file:/path``, resolved at load time. Everything is validated before the daemon starts.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    model_validator,
)

from connector.core.breaker import BreakerSettings
from connector.core.config_problems import (
    ConfigProblem,
    ConfigProblemsError,
    Findings,
    RawPath,
    display_path,
    line_of,
    repeated,
    unknown_key_message,
    without_tags,
    yaml_lines,
)
from connector.core.personal_data import ErrorRecordSettings
from connector.core.retry import RetryPolicy
from connector.errors import AccountConfigError, ConfigError
from connector.http.egress import Egress, EgressPlan, origin_of, tls_context
from connector.providers import AccountConfig
from connector.providers.account import ProxyUrl
from connector.providers.template_config import OrderStatusTemplate
from connector.secret_refs import collect_secrets, resolve_secret_refs

ENV_PREFIX = "ORDER_CONNECTOR_"


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
    # What one fetch may bring (aiokafka holds it until the engine takes the records): 4 MiB,
    # 256 KiB per partition (about 450 typical events) cut peak RSS by about 25 MB against
    # aiokafka's 16 MiB / 1 MiB without costing throughput (docs/benchmarks.md, issue 12).
    # A batch larger than these is still fetched whole.
    fetch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_partition_fetch_bytes: int = Field(default=256 * 1024, ge=1024)
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


class OutageSettings(BreakerSettings):
    """Account outage mode: an account whose recent requests fail as transient (5xx, timeouts,
    resets; 429s only once its adaptive rate is at its floor) enters outage; its events park in
    lane order without spending their retry budget and one probe tests recovery. The fields are
    the breaker's own (``connector.core.breaker.BreakerSettings``), plus the switch."""

    enabled: bool = True


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
    # How long publishing outcomes may keep failing before dispatch pauses: no new provider
    # request goes out (a customer message whose outcome cannot be recorded) and /readyz fails
    # ``outcomes_publishable``, until a publish succeeds again.
    publish_outage_s: float = Field(default=10.0, gt=0)
    # /readyz fails ``commits_moving`` when a partition's commit point has not moved for this
    # long while records of it wait (a stalled record pins it); 0 turns the check off.
    stall_alert_s: float = Field(default=300.0, ge=0)
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
    # Per provider kind, how a newer request is kept from being overtaken by a late ambiguous
    # one: "hold" (the default: it waits for the settle window, no extra message) or
    # "reassert" (it goes at once and the order's newest status is sent once more when the
    # window has passed: lower latency, one extra message per such order).
    late_guard: dict[str, Literal["hold", "reassert"]] = Field(default_factory=dict)


class HttpSettings(_Strict):
    # native: our HTTP/1.1 keep-alive client, ~0.7x the CPU per event of aiohttp end to end
    # (docs/http-transport.md); aiohttp and httpx stay selectable.
    client: Literal["aiohttp", "httpx", "native"] = "native"
    max_connections: int = Field(default=512, ge=1)
    # Provider egress: a forward proxy (http://host:port; https targets go through CONNECT)
    # and a PEM CA bundle to trust instead of the system store. An account's own ``proxy`` /
    # ``ca_bundle`` override them. Without a proxy, HTTPS_PROXY/HTTP_PROXY/ALL_PROXY and
    # NO_PROXY apply unless ``proxy_from_env`` is false. Credentials in a proxy URL: put the
    # URL in the environment (ORDER_CONNECTOR_HTTP__PROXY or HTTPS_PROXY), not in the file.
    proxy: ProxyUrl | None = None
    ca_bundle: FilePath | None = None
    proxy_from_env: bool = True


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
    # A record whose Kafka key is not its event's ``order_id``: Kafka orders records per key
    # (per partition), so such events of one order may sit in different partitions and reach
    # us in any order. ``error`` (default) writes a ``key_mismatch`` error record and sends
    # nothing; ``accept`` processes them anyway, for producers that key by customer (all of
    # a customer's orders share a partition, so each order's events stay in order).
    key_mismatch: Literal["error", "accept"] = "error"

    def coalesces(self, account: str, provider_kind: str) -> bool:
        return self.coalesce.get(account, provider_kind in self.coalesce_providers)


def _check_template_accounts(config: ConnectorConfig) -> None:
    whatsapp = {a.name for a in config.accounts if a.provider in ("meta", "ycloud")}
    for template in config.templates:
        wrong = sorted(set(template.accounts or ()) - whatsapp)
        if wrong:
            raise ValueError(
                f"templates.{template.name}.accounts: not Meta or YCloud accounts: "
                f"{', '.join(wrong)} (known: {', '.join(sorted(whatsapp)) or 'none'})"
            )


class ConnectorConfig(_Strict):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicNames = Field(default_factory=TopicNames)
    accounts: list[AccountConfig] = Field(min_length=1)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    http: HttpSettings = Field(default_factory=HttpSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)
    errors: ErrorRecordSettings = Field(default_factory=ErrorRecordSettings)
    templates: list[OrderStatusTemplate] = Field(default_factory=list)  # template provisioning

    @model_validator(mode="after")
    def _templates_name_whatsapp_accounts(self) -> ConnectorConfig:
        _check_template_accounts(self)
        return self

    @model_validator(mode="after")
    def _zapi_tokens_name_zapi_accounts(self) -> ConnectorConfig:
        zapi_accounts = {a.name for a in self.accounts if a.provider == "zapi"}
        named = [t.account for t in self.webhooks.zapi]
        wrong = sorted({n for n in named if n not in zapi_accounts})
        if wrong:
            raise ValueError(f"webhooks.zapi names accounts that are not Z-API: {', '.join(wrong)}")
        twice = repeated(named)
        if twice:
            raise ValueError(f"webhooks.zapi names an account twice: {', '.join(twice)}")
        return self

    @model_validator(mode="after")
    def _routes_name_accounts(self) -> ConnectorConfig:
        names = [a.name for a in self.accounts]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"account names must be unique; repeated: {', '.join(dupes)}")
        known = set(names)
        wanted = {self.routing.default_account} | set(self.routing.by_merchant.values())
        unknown = sorted(n for n in wanted if n is not None and n not in known)
        if unknown:
            raise ValueError(f"routing names unknown accounts: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _one_egress_per_origin(self) -> ConnectorConfig:
        """Accounts on one host must agree on their proxy and CA bundle (the sender picks the
        egress by the request's origin)."""
        seen: dict[str, tuple[str, Egress]] = {}
        for base_url, name, egress in self._account_egress():
            origin = origin_of(httpx.URL(base_url))
            first = seen.setdefault(origin, (name, egress))
            if first[1] != egress:
                raise ValueError(
                    f"accounts {first[0]} and {name} send to {origin} with different proxy or"
                    " ca_bundle settings; give them the same ones"
                )
        for egress in self.egress_plan(environ={}).routes():
            try:
                tls_context(egress.ca_bundle)
            except AccountConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    def _account_egress(self) -> list[tuple[str, str, Egress]]:
        default = Egress(self.http.proxy, self.http.ca_bundle)
        out = []
        for account in self.accounts:
            base_url = getattr(account, "base_url", None)
            if base_url is None:
                continue
            egress = Egress(
                account.proxy if account.proxy is not None else default.proxy,
                account.ca_bundle if account.ca_bundle is not None else default.ca_bundle,
            )
            out.append((str(base_url), account.name, egress))
        return out

    def egress_plan(self, environ: Mapping[str, str] | None = None) -> EgressPlan:
        """Which proxy and CA bundle each provider request uses (``connector.http.egress``)."""
        return EgressPlan(
            Egress(self.http.proxy, self.http.ca_bundle),
            {origin: egress for origin, _, egress in self._account_egress()},
            proxy_from_env=self.http.proxy_from_env,
            environ=environ,
        )

    @property
    def correlation_active(self) -> bool:
        """Whether accepted sends are written to the correlation topic."""
        enabled = self.correlation.enabled
        return self.webhooks.any if enabled is None else enabled

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor."""
        found: list[str] = []
        collect_secrets(self, found)
        return [s for s in found if s]


# ---------------------------------------------------------------------------------------------
# loading: every problem in one pass, each named by file, line and path


def account_named(accounts: list[Any], wanted: str) -> tuple[int | None, str | None]:
    """The index of the account an environment variable names, or a reason it names none.

    ``wanted`` is the lowercased name from ``ORDER_CONNECTOR_ACCOUNTS__<NAME>__<FIELD>``. An
    exact (case-insensitive) match wins; else ``_`` stands for ``-`` (a shell cannot export a
    name with ``-``), and a name reached by more than one account is refused.
    """
    names = [str(a.get("name", "")) if isinstance(a, dict) else "" for a in accounts]
    exact = [i for i, n in enumerate(names) if n.lower() == wanted]
    mapped = [i for i, n in enumerate(names) if n.lower().replace("-", "_") == wanted]
    for matches in (exact, mapped):
        if len(matches) == 1:
            return matches[0], None
        if len(matches) > 1:
            both = ", ".join(repr(names[i]) for i in matches)
            return None, f"matches more than one account ({both}); rename one of them"
    known = ", ".join(repr(n) for n in names if n) or "none"
    return None, f"no account named {wanted!r} (with '_' as '-'); known accounts: {known}"


def _apply_env_overrides(
    raw: dict[str, Any], environ: dict[str, str], found: Findings
) -> dict[str, Any]:
    """``ORDER_CONNECTOR_KAFKA__BOOTSTRAP_SERVERS=x`` sets ``kafka.bootstrap_servers``.

    Account fields are addressed by name: ``ORDER_CONNECTOR_ACCOUNTS__<NAME>__<FIELD>``, where
    ``_`` in ``<NAME>`` also matches ``-`` (``ACCOUNTS__META_BR__`` reaches ``meta-br``).
    """
    for var, value in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        path = var[len(ENV_PREFIX) :].lower().split("__")
        if path[0] == "accounts":
            accounts = raw.get("accounts")
            if len(path) != 3 or not isinstance(accounts, list):
                found.env(var, "an account override is ORDER_CONNECTOR_ACCOUNTS__<NAME>__<FIELD>")
                continue
            index, why = account_named(accounts, path[1])
            if index is None:
                found.env(var, str(why))
            else:
                accounts[index][path[2]] = value
            continue
        node: Any = raw
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                found.env(var, f"{part} is not a section")
                break
        else:
            node[path[-1]] = value
    return raw


def _check_routing(raw: dict[str, Any], found: Findings) -> bool:
    """Report routing targets that name no account (with the known names); True if any."""
    accounts = raw.get("accounts")
    routing = raw.get("routing")
    if not isinstance(accounts, list) or not isinstance(routing, dict):
        return False
    names = sorted({str(a["name"]) for a in accounts if isinstance(a, dict) and "name" in a})
    known = ", ".join(names) or "none"
    bad = False
    targets: list[tuple[RawPath, Any]] = [
        (("routing", "default_account"), routing.get("default_account"))
    ]
    by_merchant = routing.get("by_merchant")
    if isinstance(by_merchant, dict):
        targets += [(("routing", "by_merchant", m), a) for m, a in by_merchant.items()]
    for path, target in targets:
        if target is not None and str(target) not in names:
            found.at(path, f"unknown account {target!r}; known accounts: {known}")
            bad = True
    return bad


def _validation_findings(
    raw: dict[str, Any], exc: ValidationError, found: Findings, *, routed: bool
) -> None:
    for err in exc.errors(include_input=False, include_url=False):
        path = without_tags(raw, tuple(err["loc"]))
        message = err["msg"]
        if routed and not path and "routing names unknown accounts" in message:
            continue  # already reported per route, with the known names
        if err["type"] == "extra_forbidden":
            message = unknown_key_message(ConnectorConfig, raw, path)
        found.at(path, message.removeprefix("Value error, "))


def load_config(path: Path, environ: dict[str, str] | None = None) -> ConnectorConfig:
    """Read, resolve and validate the configuration; raise ``ConfigProblemsError`` naming every
    problem (missing variables, literal secrets, unknown keys, unknown routing targets and
    every validation error), each as ``file:line: path: message``."""
    env = dict(os.environ if environ is None else environ)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    is_toml = path.suffix == ".toml"
    try:
        raw = tomllib.loads(text) if is_toml else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        kind = "TOML" if is_toml else "YAML"
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    found = Findings()
    raw = resolve_secret_refs(raw, (), env, found)
    raw = _apply_env_overrides(raw, env, found)
    routed = _check_routing(raw, found)
    config: ConnectorConfig | None = None
    try:
        config = ConnectorConfig.model_validate(raw)
    except ValidationError as exc:
        _validation_findings(raw, exc, found, routed=routed)
    if found.items or config is None:
        lines = {} if is_toml else yaml_lines(text)
        problems = [
            ConfigProblem(display_path(raw, where), message, line_of(lines, where))
            if where is not None
            else ConfigProblem(var, message, from_env=True)
            for where, var, message in found.items
        ]
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        raise ConfigProblemsError(path, problems)
    return config
