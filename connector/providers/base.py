"""The provider Protocol and the outcome vocabulary every adapter speaks.

Adapters are pure: they build a ``PlainRequest`` (in a ``BuiltRequest``) from an event and
classify an ``httpx.Response`` into a ``ProviderOutcome``. They never send anything and never log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    import httpx

    from connector.contract.events import OrderStatusChanged
    from connector.contract.outbound import PlainRequest


class OutcomeKind(StrEnum):
    """What one provider answer means for the event that caused it."""

    ACCEPTED = "accepted"  # taken by the provider; delivery reports may follow by webhook
    DELIVERED = "delivered"  # the provider says it is done (synchronous providers)
    ALREADY_DONE = "already_done"  # idempotent success: the provider already had this state
    SKIPPED = "skipped"  # nothing to send (a mapping gap configured as "skip")
    RETRYABLE = "retryable"  # try again after ``retry_after`` (or the policy's backoff)
    PERMANENT = "permanent"  # this event can never succeed as sent
    CONFIGURATION = "configuration"  # account/auth problem: stop sending on the account

    @property
    def is_success(self) -> bool:
        return self in _SUCCESS


_SUCCESS = frozenset({OutcomeKind.ACCEPTED, OutcomeKind.DELIVERED, OutcomeKind.ALREADY_DONE})


@dataclass(frozen=True, slots=True)
class ProviderOutcome:
    """A classified provider answer. ``detail`` is safe to publish: it never holds a secret."""

    kind: OutcomeKind
    message_id: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    detail: str | None = None
    retry_after: float | None = None  # seconds; only meaningful for RETRYABLE
    pause_template: bool = False  # Meta 132015/132016: the template is paused or disabled


TemplateKey = tuple[str, str | None]  # (WhatsApp template name, language; None = every language)


@dataclass(frozen=True, slots=True)
class BuiltRequest:
    """A request ready to send and the WhatsApp template it uses (None: no template), so the
    engine can park sends of a paused template without parsing the body."""

    request: PlainRequest
    template: TemplateKey | None = None


class SendLimits(Protocol):
    """The per-account sending limits the engine reads (``AccountSettings`` provides them)."""

    @property
    def max_in_flight(self) -> int: ...
    @property
    def rate_per_second(self) -> float | None: ...
    @property
    def request_timeout_s(self) -> float: ...


class Provider(Protocol):
    """One configured provider account. Instances are cheap and immutable."""

    kind: ClassVar[str]  # "meta", "ycloud", "zapi", "zonos"

    @property
    def account(self) -> str:
        """The configured account name (used in results, metrics and routing)."""
        ...

    @property
    def settings(self) -> SendLimits:
        """The account's settings (limits are read from here)."""
        ...

    def target_key(self, event: OrderStatusChanged) -> str:
        """The per-order ordering key on this provider (e.g. sender + reference id)."""
        ...

    def build_request(self, event: OrderStatusChanged) -> BuiltRequest | ProviderOutcome:
        """The request for ``event``, or a SKIPPED outcome when the mapping says skip.

        Raises ``MissingFieldError``/``UnknownStatusError`` when the event cannot be sent.
        """
        ...

    def classify(self, response: httpx.Response, *, attempt: int) -> ProviderOutcome:
        """Classify the answer to the ``attempt``-th try (0-based) of a request."""
        ...
