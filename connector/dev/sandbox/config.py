"""Settings of the provider sandbox: credentials, limits, latency, faults and scripted rules.

Pure data (pydantic). It must not hold runtime state; the server derives its fast-path values
from a config each time one is set.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

ProviderName = Literal["meta", "ycloud", "zapi", "zonos"]
PROVIDERS: tuple[ProviderName, ...] = ("meta", "ycloud", "zapi", "zonos")

# Statuses a vendor may set through Zonos updateVendorOrderStatus. Labels-printed is spelled
# two ways in Zonos's own pages (PROVIDERS.md, VERIFY), so both are accepted by default.
ZONOS_VENDOR_STATUSES: tuple[str, ...] = (
    "VENDOR_PREPARING_ORDER",
    "VENDOR_SHIPMENT_READY",
    "VENDOR_LABELS_PRINTED",
    "VENDOR_LABELS_PRINTED_DATE",
    "VENDOR_END_OF_DAY_COMPLETE",
    "VENDOR_CANCELLATION_REQUEST",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Credentials(_Model):
    """Well-known sandbox credentials. Override them to test credential handling end to end."""

    meta_access_token: SecretStr = SecretStr("sandbox-meta-token")
    meta_app_secret: SecretStr = SecretStr("sandbox-meta-app-secret")
    ycloud_api_key: SecretStr = SecretStr("sandbox-ycloud-key")
    ycloud_webhook_secret: SecretStr = SecretStr("sandbox-ycloud-webhook-secret")
    zapi_instance_token: SecretStr = SecretStr("sandbox-zapi-instance-token")
    zapi_client_token: SecretStr = SecretStr("sandbox-zapi-client-token")
    zonos_secret: SecretStr = SecretStr("sandbox-zonos-secret")


class LatencyConfig(_Model):
    """Added answer latency: none, fixed ``ms``, uniform ``min_ms..max_ms``, or a lognormal
    distribution fitted to ``p50_ms`` and ``p99_ms``."""

    kind: Literal["none", "fixed", "uniform", "lognormal"] = "none"
    ms: float = Field(default=0.0, ge=0)
    min_ms: float = Field(default=0.0, ge=0)
    max_ms: float = Field(default=0.0, ge=0)
    p50_ms: float = Field(default=0.0, ge=0)
    p99_ms: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check_shape(self) -> LatencyConfig:
        if self.kind == "uniform" and self.max_ms < self.min_ms:
            raise ValueError("uniform latency needs max_ms >= min_ms")
        if self.kind == "lognormal" and not (0 < self.p50_ms <= self.p99_ms):
            raise ValueError("lognormal latency needs 0 < p50_ms <= p99_ms")
        return self

    def sampler(self) -> Any:
        """A zero-argument callable returning seconds, or None when no latency is added."""
        if self.kind == "none" or (self.kind == "fixed" and self.ms == 0):
            return None
        if self.kind == "fixed":
            seconds = self.ms / 1000
            return lambda: seconds
        if self.kind == "uniform":
            low, high = self.min_ms / 1000, self.max_ms / 1000
            return lambda: random.uniform(low, high)
        mu = math.log(self.p50_ms / 1000)
        sigma = (math.log(self.p99_ms) - math.log(self.p50_ms)) / 2.3263478740408408  # z(0.99)
        return lambda: random.lognormvariate(mu, sigma)


class FaultConfig(_Model):
    """Per-provider latency and random faults. Rates are probabilities per request.

    ``*_rate`` faults strike before the request is looked at (nothing is recorded);
    ``*_after_accept_rate`` faults strike after it was accepted and recorded, which is the case
    that makes a client retry create a customer-visible duplicate.

    ``late_rate`` is late processing (issue 11): the request is taken in, no answer is sent until
    it is applied ``late_min_s..late_max_s`` seconds after it arrived (set that beyond the
    client's timeout), and only then does it change the order and enter the request log, as a
    provider that queued the connection would. Sandbox shutdown drops requests not yet applied.
    """

    latency: LatencyConfig = LatencyConfig()
    server_error_rate: float = Field(default=0.0, ge=0, le=1)
    server_error_status: int = Field(default=500, ge=500, le=599)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_after_accept_rate: float = Field(default=0.0, ge=0, le=1)
    reset_rate: float = Field(default=0.0, ge=0, le=1)
    reset_after_accept_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_hold_s: float = Field(default=30.0, ge=0)
    late_rate: float = Field(default=0.0, ge=0, le=1)
    late_min_s: float = Field(default=3.0, ge=0)
    late_max_s: float = Field(default=15.0, ge=0)

    @model_validator(mode="after")
    def _check_late(self) -> FaultConfig:
        if self.late_max_s < self.late_min_s:
            raise ValueError("late processing needs late_max_s >= late_min_s")
        return self


class ProviderFaults(_Model):
    meta: FaultConfig = FaultConfig()
    ycloud: FaultConfig = FaultConfig()
    zapi: FaultConfig = FaultConfig()
    zonos: FaultConfig = FaultConfig()


class RateLimit(_Model):
    """A token bucket: ``per_second`` refill (0 turns the limit off) and ``burst`` capacity
    (defaults to ``per_second``, at least 1)."""

    per_second: float = Field(default=0.0, ge=0)
    burst: float | None = Field(default=None, gt=0)

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.per_second)


class RateLimits(_Model):
    """Meta's and YCloud's documented defaults, except the pair limit (off by default so demos
    and benchmarks that reuse one test recipient still flow; Meta's real value is about
    ``per_second=1/6, burst=45``).

    The pair limit follows Meta's rule as ``connector.core.ratelimit.PairLimiter`` states it (one
    message per ``1 / per_second`` seconds; a burst of up to ``burst`` messages inside that
    period is borrowed and repaid before the pair may send again), not a token bucket. Over it
    Meta answers 131056, YCloud 429 with the Meta error inside.
    """

    meta_per_sender: RateLimit = RateLimit(per_second=80)
    ycloud_send_directly_per_sender: RateLimit = RateLimit(per_second=80)
    ycloud_queued_per_sender: RateLimit = RateLimit(per_second=200)
    pair: RateLimit = RateLimit(per_second=0)


class WebhookConfig(_Model):
    """Where and how the sandbox posts asynchronous status webhooks."""

    meta_url: str | None = None
    ycloud_url: str | None = None
    # Extra delivery reports for accepted messages, in this order, e.g. ["sent", "delivered"].
    status_reports: list[Literal["sent", "delivered", "read"]] = []
    delay_ms: float = Field(default=0.0, ge=0)
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    queue_capacity: int = Field(default=100_000, ge=1)
    workers: int = Field(default=8, ge=1)


class SandboxConfig(_Model):
    """Everything the sandbox can be told. Change it at runtime with ``POST /_sandbox/config``
    (a partial JSON object, merged) or ``SandboxServer.set_config``."""

    credentials: Credentials = Credentials()
    faults: ProviderFaults = ProviderFaults()
    limits: RateLimits = RateLimits()
    webhooks: WebhookConfig = WebhookConfig()
    meta_waba_id: str = "100000000000001"
    # Payment state of orders never seeded via /_sandbox/orders: "paid"/"pending" make a
    # cancel fail with 2047.
    meta_default_payment_status: Literal["unpaid", "pending", "paid"] = "unpaid"
    # Answer 132001 for templates not created through message_templates first.
    meta_require_templates: bool = False
    zonos_auto_create_orders: bool = True
    zonos_initial_status: str = "IGLOBAL_ORDER_IN_PROCESS"
    zonos_vendor_statuses: list[str] = list(ZONOS_VENDOR_STATUSES)
    record_capacity: int = Field(default=200_000, ge=1)

    def merged(self, patch: dict[str, Any]) -> SandboxConfig:
        """A new config: this one with ``patch`` (nested dicts) merged in, validated."""
        base = self.model_dump(mode="python")
        _reveal_secrets(base)
        return SandboxConfig.model_validate(_deep_merge(base, patch))


class Rule(_Model):
    """A scripted answer for the next ``count`` matching requests.

    Matches on provider (None: any) and order key (None: any order). ``action``:
      ``http_error``   answer ``status`` (default 500) with the provider's error body
      ``rate_limit``   the provider's throughput error (Meta 130429, YCloud 429 + Retry-After)
      ``error``        the provider's synchronous error with ``code``/``message`` (Meta: code
                       in a 400 body; YCloud: ``code`` string and ``status``; Z-API:
                       ``{"error": message}`` with ``status``; Zonos: HTTP 200 ``{"error"}``)
      ``async_error``  Meta/YCloud: answer 200, then a failed webhook with ``code``
      ``timeout``      hold the request ``hold_s`` then 504; ``reset``: abort the connection
    """

    provider: ProviderName | None = None
    key: str | None = None
    count: int = Field(default=1, ge=1)
    action: Literal["http_error", "rate_limit", "error", "async_error", "timeout", "reset"]
    status: int | None = None
    code: str | None = None
    message: str | None = None
    hold_s: float = Field(default=30.0, ge=0)
    retry_after_s: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _check_code(self) -> Rule:
        numeric = self.action == "async_error" or (
            self.provider == "meta" and self.action == "error"
        )
        if numeric and self.code is not None and not self.code.isdigit():
            raise ValueError(f"{self.action} needs a numeric Meta error code, got {self.code!r}")
        return self


class Outage(_Model):
    """``POST /_sandbox/outages``: answer 503 to every request of ``provider`` (and, when given,
    only of ``account``: Meta phone number id, YCloud ``from``, Z-API instance id, Zonos store)
    until the outage is cleared."""

    provider: ProviderName
    account: str | None = None


class TemplateStatusChange(_Model):
    """``POST /_sandbox/templates/status``: move a created template to a status, as Meta does
    (ACTIVE -> PAUSED/DISABLED on customer feedback). No ``language``: every variant."""

    name: str = Field(min_length=1)
    status: Literal["APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED", "IN_APPEAL"]
    language: str | None = None
    provider: Literal["meta", "ycloud"] | None = None


class OrderSeed(_Model):
    """Put an order into a given state (``POST /_sandbox/orders``)."""

    provider: ProviderName
    key: str
    status: str | None = None
    payment_status: Literal["unpaid", "pending", "paid"] | None = None


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = _deep_merge(out[name], value)
        else:
            out[name] = value
    return out


def _reveal_secrets(tree: dict[str, Any]) -> None:
    for name, value in tree.items():
        if isinstance(value, SecretStr):
            tree[name] = value.get_secret_value()
        elif isinstance(value, dict):
            _reveal_secrets(value)
