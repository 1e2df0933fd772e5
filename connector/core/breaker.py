"""Account outage detection (a circuit breaker) as a pure state machine over attempt results.

Owns the closed -> open -> probing -> closed rules for one provider account. It never reads a
clock, sleeps or sends: the engine passes ``now`` (monotonic seconds) and the attempt results in.

How the engine uses it (one ``AccountBreaker`` per account):

* before an attempt: ``admit(now)`` answers ``GO`` (send), ``PROBE`` (send; this request is the
  one probe that tests recovery) or ``WAIT`` (park the job in lane order; ask again at
  ``next_probe_at``);
* after it: ``record(result, now, probe=...)`` with what the attempt came to; the returned
  ``Transition`` (or ``None``) says whether the account just went into or out of outage. A probe
  whose job is dropped without a result (drain, revoke) is given back with ``probe_abandoned``.

Per-event failures (a 4xx for this event, an invalid transition) prove the account answers and
count as healthy; only account-level transient failures (5xx, timeouts, resets, connect errors)
count towards an outage. Rate-limit answers (429, Meta 130429) count only when the sender cannot
slow down any further (its adaptive rate is at its floor, or it has none): above the floor they
are pacing signals for ``AdaptiveRate`` and prove the account answers (``PACED``), so a merely
throttled account never parks, while one that answers nothing but 429s still does. While the
account is in outage, attempts do not burn their event's retry budget: the caller decides that
from ``state``.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum
from typing import Final

from pydantic import Field, model_validator

from connector.core.bounds import Settings

__all__ = [
    "PAIR_LIMIT_CODES",
    "RATE_LIMIT_CODES",
    "AccountBreaker",
    "Admission",
    "AttemptResult",
    "BreakerSettings",
    "BreakerState",
    "Transition",
    "attempt_result",
]

#: Provider error codes that mean "this sender is over its rate" (Meta codes as strings, as
#: ``ProviderOutcome.error_code`` carries them; YCloud's own 429 codes).
RATE_LIMIT_CODES: Final = frozenset(
    {"130429", "4", "80007", "SENDER_RATE_LIMITED", "ACCOUNT_RATE_LIMITED"}
)
#: Per-recipient limits (Meta 131056): the account is fine, this recipient must wait.
PAIR_LIMIT_CODES: Final = frozenset({"131056"})


class AttemptResult(StrEnum):
    """What one attempt came to, as far as the account's health is concerned."""

    SUCCESS = "success"
    EVENT_FAILURE = "event_failure"  # the account answered; this event is at fault
    SERVER_ERROR = "server_error"  # 5xx, or a provider code meaning "temporarily unavailable"
    TIMEOUT = "timeout"
    RESET = "reset"  # the connection broke during the exchange
    RATE_LIMITED = "rate_limited"  # 429, Meta 130429, and the sender cannot slow down further
    PACED = "paced"  # 429, Meta 130429 while the adaptive rate can still slow down: no outage
    CONNECT_ERROR = "connect_error"  # refused, DNS, TLS: nothing reached the provider

    @property
    def transient(self) -> bool:
        """Whether this result counts towards an account outage."""
        return self not in {AttemptResult.SUCCESS, AttemptResult.EVENT_FAILURE, AttemptResult.PACED}


class BreakerState(StrEnum):
    CLOSED = "closed"  # normal sending
    OPEN = "open"  # outage: nothing goes until the next probe is due
    PROBING = "probing"  # outage: one probe is in flight


class Admission(StrEnum):
    GO = "go"
    PROBE = "probe"
    WAIT = "wait"


class Transition(StrEnum):
    OPENED = "opened"  # the account entered outage
    CLOSED = "closed"  # a probe succeeded: resume every lane in order
    PROBE_FAILED = "probe_failed"  # still in outage; the next probe waits longer


class BreakerSettings(Settings):
    """When an account counts as in outage and how recovery is probed.

    The account opens when, among its last ``window`` results no older than ``window_s``, at
    least ``min_requests`` are present and the transient share is at least ``failure_ratio``.
    Probes start ``probe_interval_s`` after opening; each failed probe multiplies the interval
    by ``probe_backoff`` up to ``probe_interval_cap_s``.
    """

    window: int = Field(default=20, ge=1)
    window_s: float = Field(default=30.0, gt=0)
    min_requests: int = Field(default=10, ge=1)
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    probe_interval_s: float = Field(default=1.0, gt=0)
    probe_backoff: float = Field(default=2.0, ge=1)
    probe_interval_cap_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> BreakerSettings:
        if self.min_requests > self.window:
            raise ValueError(f"min_requests must be at most window ({self.window})")
        if self.probe_interval_cap_s < self.probe_interval_s:
            raise ValueError("probe_interval_cap_s must be >= probe_interval_s")
        return self


class AccountBreaker:
    """The outage state of one account. Every method takes the current time; none blocks.

    Results recorded while open or probing that are not the probe's (requests that were already
    in flight when the account opened) change nothing: only the probe decides recovery.
    """

    __slots__ = (
        "_interval",
        "_next_probe_at",
        "_recent",
        "_settings",
        "_state",
        "opened_at",
        "outages",
    )

    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self._settings = settings or BreakerSettings()
        self._state = BreakerState.CLOSED
        self._recent: deque[tuple[float, bool]] = deque(maxlen=self._settings.window)
        self._interval = self._settings.probe_interval_s
        self._next_probe_at: float | None = None
        #: when the current outage began (None while closed)
        self.opened_at: float | None = None
        #: how many outages this account has entered
        self.outages = 0

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def in_outage(self) -> bool:
        return self._state is not BreakerState.CLOSED

    @property
    def next_probe_at(self) -> float | None:
        """When ``admit`` next answers ``PROBE``; None while closed or while a probe is out."""
        return self._next_probe_at if self._state is BreakerState.OPEN else None

    @property
    def probe_interval_s(self) -> float:
        """The wait before the next probe after the one due now (grows with failed probes)."""
        return self._interval

    def admit(self, now: float) -> Admission:
        """May a request go now? ``PROBE`` hands out the one probe and moves to ``PROBING``."""
        if self._state is BreakerState.CLOSED:
            return Admission.GO
        if self._state is BreakerState.OPEN:
            assert self._next_probe_at is not None
            if now >= self._next_probe_at:
                self._state = BreakerState.PROBING
                return Admission.PROBE
        return Admission.WAIT

    def record(
        self,
        result: AttemptResult,
        now: float,
        *,
        probe: bool = False,
        retry_in: float | None = None,
    ) -> Transition | None:
        """Feed one attempt's result; returns the state change it caused, if any.

        ``probe`` must be True exactly for the request ``admit`` answered ``PROBE`` to.
        ``retry_in``: for a failed probe, when the provider itself says to ask again (a
        rate-limit answer: its ``Retry-After``, or the sender's floor pace). The next probe is
        due then and the backoff does not grow: a throttled provider is asked again as soon as
        it allows, not after a doubling wait that outlasts the throttle.
        """
        if probe:
            if self._state is not BreakerState.PROBING:
                raise ValueError(f"a probe result arrived in state {self._state}")
            if result.transient and retry_in is not None:
                self._open_until(now + max(0.0, retry_in))
                return Transition.PROBE_FAILED
            if result.transient:
                self._interval = min(
                    self._settings.probe_interval_cap_s,
                    self._interval * self._settings.probe_backoff,
                )
                self._open_until(now + self._interval)
                return Transition.PROBE_FAILED
            self._close()
            return Transition.CLOSED
        if self._state is not BreakerState.CLOSED:
            return None
        self._recent.append((now, result.transient))
        if self._tripped(now):
            self._interval = self._settings.probe_interval_s
            self._open_until(now + self._interval)
            self.opened_at = now
            self.outages += 1
            return Transition.OPENED
        return None

    def probe_abandoned(self, now: float) -> None:
        """The probe's job went away without a result: the next probe is due at once."""
        if self._state is BreakerState.PROBING:
            self._open_until(now)

    def failure_share(self, now: float) -> tuple[int, int]:
        """(transient failures, results) in the window as of ``now``; for metrics and tests."""
        self._expire(now)
        return sum(1 for _, failed in self._recent if failed), len(self._recent)

    def _tripped(self, now: float) -> bool:
        failures, total = self.failure_share(now)
        s = self._settings
        return total >= s.min_requests and failures >= s.failure_ratio * total

    def _expire(self, now: float) -> None:
        horizon = now - self._settings.window_s
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()

    def _open_until(self, at: float) -> None:
        self._state = BreakerState.OPEN
        self._next_probe_at = at

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._next_probe_at = None
        self._interval = self._settings.probe_interval_s
        self._recent.clear()
        self.opened_at = None


def attempt_result(
    *,
    success: bool,
    retryable: bool,
    http_status: int | None = None,
    error_code: str | None = None,
    transport_kind: str | None = None,
    can_slow_down: bool = False,
) -> AttemptResult:
    """What an attempt means for the account's health, from plain fields of its outcome.

    ``transport_kind`` is ``TransportFailure.kind`` when no answer arrived; otherwise pass the
    classified answer (``ProviderOutcome``: ``kind.is_success``, ``kind is RETRYABLE``,
    ``http_status``, ``error_code``). Retryable answers that concern one event or one recipient
    (Meta 131056, Zonos "blocked:" states) are per-event failures, not account trouble.
    ``can_slow_down``: the account's adaptive rate is above its floor, so a rate-limit answer
    is ``PACED`` (the rate is cut) rather than ``RATE_LIMITED`` (an outage sign).
    """
    if transport_kind is not None:
        if transport_kind == "timeout":
            return AttemptResult.TIMEOUT
        if transport_kind in {"connect", "dns", "tls"}:
            return AttemptResult.CONNECT_ERROR
        return AttemptResult.RESET
    if success:
        return AttemptResult.SUCCESS
    if error_code in PAIR_LIMIT_CODES:
        return AttemptResult.EVENT_FAILURE
    if error_code in RATE_LIMIT_CODES or http_status == 429:
        return AttemptResult.PACED if can_slow_down else AttemptResult.RATE_LIMITED
    if not retryable or (error_code is not None and error_code.startswith("blocked:")):
        return AttemptResult.EVENT_FAILURE
    return AttemptResult.SERVER_ERROR
