"""The connector's error tree. Retry policy is decided by the class, never by matching text.

    ConnectorError
    ├── ConfigError                  configuration is wrong at start; the process refuses to run
    ├── InvalidEventError            one input record is unusable; it goes to the errors topic
    │   ├── UndecodableEventError    bytes are not JSON / not a recognised envelope
    │   ├── UnknownStatusError       status outside the canonical vocabulary (and no override)
    │   │   └── UnmappedStatusError  the account maps this status to "error" (a configured gap)
    │   ├── MissingFieldError        the routed provider needs a field the event lacks
    │   └── InvalidFieldError        a field is present but malformed (wrong type, bad format)
    └── DeliveryError                talking to a provider failed (carries an ErrorClass)
        ├── RetryableDeliveryError   transport failure, 5xx, throttling: try again later
        │   └── TransportFailure     no usable HTTP answer (connect, DNS, timeout, reset, protocol)
        ├── PermanentDeliveryError   this event can never succeed as sent
        └── AccountConfigError       credentials/account problem: stop sending on that account

Messages never contain secrets: callers pass only safe, already-redacted text.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """The error classes written to the errors topic (``error_class`` field)."""

    INVALID_EVENT = "invalid_event"
    RETRYABLE = "retryable"
    RETRIES_EXHAUSTED = "retries_exhausted"
    PERMANENT = "permanent"
    CONFIGURATION = "configuration"
    INVALID_TRANSITION = "invalid_transition"
    ASYNC_PROVIDER_ERROR = "async_provider_error"
    UNROUTABLE = "unroutable"
    INTERNAL_ERROR = "internal_error"


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""

    retriable: bool = False
    error_class: ErrorClass = ErrorClass.PERMANENT


class ConfigError(ConnectorError):
    """Configuration is invalid; raised at start-up with a message naming the setting."""

    error_class = ErrorClass.CONFIGURATION


class InvalidEventError(ConnectorError):
    """An input record cannot be turned into a request. Never retried."""

    error_class = ErrorClass.INVALID_EVENT

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class UndecodableEventError(InvalidEventError):
    """The bytes are not a JSON object or a CloudEvents envelope we understand."""


class UnknownStatusError(InvalidEventError):
    """The status is not one of the canonical statuses and no native override was given."""


class UnmappedStatusError(UnknownStatusError):
    """The status is valid, but the routed account maps it to the explicit choice "error"."""


class MissingFieldError(InvalidEventError):
    """The provider the event is routed to needs a field the event does not carry."""


class InvalidFieldError(InvalidEventError):
    """A field is present but malformed: wrong type, bad format, value out of range."""


class DeliveryError(ConnectorError):
    """A provider call failed; ``code`` is the provider's error code when it gave one."""

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class RetryableDeliveryError(DeliveryError):
    retriable = True
    error_class = ErrorClass.RETRYABLE


class PermanentDeliveryError(DeliveryError):
    error_class = ErrorClass.PERMANENT


class AccountConfigError(DeliveryError):
    error_class = ErrorClass.CONFIGURATION


class TransportFailure(RetryableDeliveryError):  # noqa: N818 (the name the design uses)
    """No usable HTTP answer arrived: connect/DNS failure, timeout, reset or protocol error.

    Raised only by ``connector.http.sender``; ``kind`` names the failure (``"timeout"``,
    ``"connect"``, ``"dns"``, ...). ``written`` is False only when the request provably never
    left (connect, DNS, TLS, waiting for a pooled connection); True means the provider may have
    received it and may still process it: the outcome is ambiguous, not failed
    (``connector.core.ambiguity``). The message never holds the URL or any header.
    """

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        kind: str = "transport",
        written: bool = True,
    ) -> None:
        super().__init__(detail, code=code)
        self.kind = kind
        self.written = written


class ProducerFailedError(Exception):
    """The producer can no longer write to a partition: after the broker refused a record,
    aiokafka's idempotent producer keeps a gap in that partition's sequence numbers and every
    later record there fails (OutOfOrderSequenceNumber). Only a new producer (a restart) can
    write again. Raised by connector.kafka's producers from the ack."""


class PublishRefusedError(Exception):
    """The broker refused a record for good (too large, invalid, not authorised): sending the
    same bytes again cannot succeed. Raised by connector.kafka's producers from the ack."""
