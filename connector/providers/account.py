"""Account settings shared by every provider and the per-account status mapping.

Owns how a canonical status becomes a provider-native value, "skip" or "error". No I/O.
Every gap is an explicit entry in a provider's default table, overridable per account.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, ClassVar, Final, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, FilePath, field_validator

from connector.contract.events import CanonicalStatus, OrderStatusChanged, normalise_status
from connector.core.redaction import SecretScrubber
from connector.errors import UnknownStatusError, UnmappedStatusError
from connector.providers.base import OutcomeKind, ProviderOutcome
from connector.providers.classify import scrub_outcome, unclassifiable

SKIP: Final = "skip"
ERROR: Final = "error"
_CHOICES: Final = frozenset({SKIP, ERROR})
_BASE_URL = re.compile(r"^https?://[^\s/]+")

#: A forward proxy: ``http://[user:password@]host:port`` (https targets go through CONNECT).
ProxyUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+/?$")]


class AccountSettings(BaseModel):
    """Settings every provider account has. Subclasses add a ``provider`` discriminator.

    ``status_map`` overrides the provider's default table per canonical status: a provider-native
    value, or the explicit choice ``"skip"`` (publish a ``skipped_mapping`` result) or ``"error"``
    (publish an error record).
    """

    # hide_input_in_errors: a validation error must never echo an account (it holds secrets).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Filled by each provider's subclass: its native status vocabulary (None = open, checked by
    # NATIVE_PATTERN) and its default mapping, which names every gap explicitly.
    NATIVE_STATUSES: ClassVar[frozenset[str] | None] = None
    NATIVE_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
    DEFAULT_STATUS_MAP: ClassVar[Mapping[CanonicalStatus, str]] = {}

    name: Annotated[str, Field(min_length=1)]
    max_in_flight: Annotated[int, Field(ge=1)] = 64
    rate_per_second: Annotated[float, Field(gt=0)] | None = None
    request_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    status_map: dict[CanonicalStatus, str] = Field(default_factory=dict)
    # This account's provider egress, overriding ``http.proxy`` / ``http.ca_bundle``.
    proxy: ProxyUrl | None = None
    ca_bundle: FilePath | None = None

    @field_validator("status_map", mode="before")
    @classmethod
    def _normalise_status_keys(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return {normalise_status(k): v for k, v in value.items()}
        return value

    @field_validator("status_map", mode="after")
    @classmethod
    def _status_map_values_are_known(
        cls, value: dict[CanonicalStatus, str]
    ) -> dict[CanonicalStatus, str]:
        # A field validator (not a model validator) so that an error message shows only the
        # status map, never the whole account with its secrets.
        for status, choice in value.items():
            if choice not in _CHOICES and not cls.is_native_status(choice):
                raise ValueError(
                    f"status_map.{status.value}: {choice!r} is not a {cls.provider_kind()} status"
                    f" nor 'skip' or 'error'"
                )
        return value

    @field_validator("base_url", mode="after", check_fields=False)
    @classmethod
    def _base_url_shape(cls, value: str) -> str:
        if not _BASE_URL.match(value):
            raise ValueError("base_url must start with http:// or https:// and a host")
        return value.rstrip("/")

    @classmethod
    def provider_kind(cls) -> str:
        field = cls.model_fields.get("provider")
        return str(field.default) if field is not None else cls.__name__

    @classmethod
    def is_native_status(cls, value: str) -> bool:
        if cls.NATIVE_STATUSES is not None:
            return value in cls.NATIVE_STATUSES
        return cls.NATIVE_PATTERN.match(value) is not None

    def effective_status_map(self) -> dict[CanonicalStatus, str]:
        """The default table with this account's overrides applied (every status present)."""
        return {**self.DEFAULT_STATUS_MAP, **self.status_map}


class StatusMapper:
    """Turns an event's status into the provider-native value, a SKIPPED outcome, or an error.

    Built once per adapter; ``resolve`` is on the hot path and allocates nothing for the common
    case (skip outcomes are prebuilt).
    """

    __slots__ = ("_account", "_aliases", "_provider", "_settings", "_skips", "_table")

    def __init__(
        self,
        settings: AccountSettings,
        *,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = type(settings)
        self._provider = settings.provider_kind()
        self._account = settings.name
        self._table = settings.effective_status_map()
        self._aliases = dict(aliases or {})
        self._skips = {
            status: ProviderOutcome(
                OutcomeKind.SKIPPED,
                detail=(
                    f"status '{status.value}' is mapped to skip on {self._provider} account "
                    f"'{self._account}'"
                ),
            )
            for status, choice in self._table.items()
            if choice == SKIP
        }

    @property
    def table(self) -> Mapping[CanonicalStatus, str]:
        return self._table

    def resolve(self, event: OrderStatusChanged) -> str | ProviderOutcome:
        native = event.native_status
        if native is not None:
            return self._native_override(native)
        status = event.status
        if status is None:  # the event model forbids this; kept for type narrowing
            raise UnknownStatusError("event has neither status nor native_status", field="status")
        choice = self._table[status]
        if choice == SKIP:
            return self._skips[status]
        if choice == ERROR:
            raise UnmappedStatusError(
                f"status '{status.value}' has no {self._provider} equivalent and account "
                f"'{self._account}' maps it to error (set status_map.{status.value})",
                field="status",
            )
        return choice

    def _native_override(self, native: str) -> str:
        value = self._aliases.get(native, native)
        if self._settings.NATIVE_STATUSES is not None:
            normalised = normalise_status(value)
            if isinstance(normalised, str) and normalised in self._settings.NATIVE_STATUSES:
                return normalised
        elif self._settings.is_native_status(value):
            return value
        raise UnknownStatusError(
            f"native_status {value[:60]!r} is not a {self._provider} status", field="native_status"
        )


SettingsT = TypeVar("SettingsT", bound=AccountSettings)


class AccountAdapter(Generic[SettingsT]):
    """What every adapter shares: its account settings, status mapper and secret scrubber."""

    kind: ClassVar[str]
    __slots__ = ("_scrubber", "_sender", "_settings", "_status")

    def __init__(
        self,
        settings: SettingsT,
        *,
        sender: str,
        secrets: Iterable[str],
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._sender = sender  # the sending identity at the provider (number, instance, store)
        self._status = (
            StatusMapper(settings, aliases=aliases) if aliases else StatusMapper(settings)
        )
        self._scrubber = SecretScrubber(list(secrets), min_length=4)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(account={self._settings.name!r})"

    @property
    def account(self) -> str:
        return self._settings.name

    @property
    def settings(self) -> SettingsT:
        return self._settings

    def target_key(self, event: OrderStatusChanged) -> str:
        """``kind:sender:order``, the order as this provider knows it: the engine keeps the
        requests of one key in input order. Never raises (missing refs: the order id)."""
        return f"{self.kind}:{self._sender}:{self._order_ref(event)}"

    def _order_ref(self, event: OrderStatusChanged) -> str:
        return event.order_id

    def scrub(self, text: str) -> str:
        """``text`` with this account's secrets removed (for exception messages from the sender)."""
        return self._scrubber.scrub_text(text)

    def classify(self, response: httpx.Response, *, attempt: int) -> ProviderOutcome:
        """The adapter's ``_classify``, scrubbed of secrets; never raises."""
        try:
            return scrub_outcome(self._classify(response, attempt), self._scrubber)
        except Exception:  # classify must never raise: a broken answer is still an answer
            return unclassifiable(response, self.kind)

    def _classify(self, response: httpx.Response, attempt: int) -> ProviderOutcome:
        raise NotImplementedError


__all__ = ["ERROR", "SKIP", "AccountAdapter", "AccountSettings", "ProxyUrl", "StatusMapper"]
