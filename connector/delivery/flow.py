"""Provider flow control around each attempt: per-account outage breakers, adaptive rates and
pair limiters, and the per-order settle windows after ambiguous attempts. It applies the pure
rules of ``connector.core`` (breaker, ratelimit, ambiguity) with the loop's clock; it never
sends, parks or publishes: the engine does, from what this answers."""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from connector.core.ambiguity import (
    AmbiguityAction,
    AmbiguityDecision,
    ProviderTraits,
    decide_ambiguous,
    gate_next,
    is_ambiguous,
    traits_for,
)
from connector.core.breaker import (
    PAIR_LIMIT_CODES,
    AccountBreaker,
    AttemptResult,
    BreakerSettings,
    Transition,
    attempt_result,
)
from connector.core.ratelimit import AdaptiveRate, PairLimiter, TokenBucket
from connector.errors import TransportFailure
from connector.providers.base import OutcomeKind

if TYPE_CHECKING:
    from connector.config import LimitSettings
    from connector.delivery.jobs import Job, LaneKey
    from connector.delivery.ports import EngineObserver
    from connector.errors import RetryableDeliveryError
    from connector.providers.base import Provider, ProviderOutcome

#: Providers that speak WhatsApp and so live under Meta's pair rule.
PAIR_LIMITED: Final = frozenset({"meta", "ycloud"})
#: Meta's 131056 answer asks for 4^X s; without a hint the pair waits one period.
_PAIR_PENALTY_S: Final = 6.0


@dataclass(slots=True)
class Settle:
    """An order's open settle window: an ambiguous request of ``event_id`` may land until
    ``until``; newer requests of the order wait for it (``gate_next``)."""

    until: float
    event_id: str


class Flow:
    """Per account: an ``AccountBreaker``, a rate (``AdaptiveRate`` or ``TokenBucket`` when
    ``rate_per_second`` is set) and, for Meta and YCloud, a ``PairLimiter``; per order lane, the
    settle window of its last ambiguous attempt. Memory: accounts are configured; settle windows
    are dropped once passed (``gate``) or when their lane's partition is released."""

    def __init__(
        self, providers: Mapping[str, Provider], limits: LimitSettings, observer: EngineObserver
    ) -> None:
        now = time.monotonic()
        outage = limits.outage
        self.outage_enabled = outage.enabled
        # limits.outage holds the breaker's settings under the same names, plus ``enabled``.
        settings = BreakerSettings(**outage.model_dump(exclude={"enabled"}))
        self.breakers = {name: AccountBreaker(settings) for name in providers}
        self.rates: dict[str, AdaptiveRate] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._pairs: dict[str, PairLimiter] = {}
        self._traits: dict[str, ProviderTraits] = {}
        self._obs = observer
        for name, p in providers.items():
            rate = p.settings.rate_per_second
            if rate and limits.adaptive_rate:
                self.rates[name] = AdaptiveRate(rate, now=now)
                observer.adaptive_rate(p.kind, name, rate)
            elif rate:
                self._buckets[name] = TokenBucket(rate, burst=max(1.0, rate / 10), now=now)
            if limits.pair_limit and p.kind in PAIR_LIMITED:
                period = limits.pair_period_s
                self._pairs[name] = PairLimiter(
                    period_s=period, burst=limits.pair_burst, margin_s=min(0.25, period / 4)
                )
            self._traits[name] = traits_for(p.kind, settle_window_s=limits.settle_window_s)
        self._settle: dict[LaneKey, Settle] = {}
        self._sweep_at = 1024
        #: ambiguous attempts, superseded ambiguous requests, and resends that may show the
        #: customer a status twice (the cost of the invariant)
        self.ambiguous = 0
        self.ambiguous_superseded = 0
        self.extra_messages = 0

    # ------------------------------------------------------------------ outage

    def in_outage(self, account: str) -> bool:
        return self.outage_enabled and self.breakers[account].in_outage

    def outages(self) -> dict[str, float]:
        """Accounts in outage now, with the monotonic time each outage began."""
        return {
            name: b.opened_at or 0.0
            for name, b in self.breakers.items()
            if self.outage_enabled and b.in_outage
        }

    # ------------------------------------------------------------------ rate limits

    def try_send(self, account: str, now: float) -> float:
        """0.0 and a send slot of the account's rate taken, or the seconds until one is free
        (nothing taken: the caller asks again then, at the rate in force then)."""
        rate = self.rates.get(account)
        if rate is not None:
            return rate.try_take(now)
        bucket = self._buckets.get(account)
        return bucket.try_take(now) if bucket is not None else 0.0

    def pair_wait(self, job: Job, now: float) -> float:
        """Seconds before ``job`` may go under the pair rule (0: now); reserves its message.

        A job that already waited for its reservation (``job.pair_ready_at``) is not booked
        twice."""
        limiter = self._pairs.get(job.provider.account)
        if limiter is None or job.event.recipient is None:
            return 0.0
        if job.pair_ready_at is not None:
            return max(0.0, job.pair_ready_at - now)
        wait = limiter.reserve(_pair(job), now)
        if wait > 0:
            job.pair_ready_at = now + wait
        return wait

    # ------------------------------------------------------------------ after an answer

    def answered(
        self,
        job: Job,
        answer: ProviderOutcome,
        error: RetryableDeliveryError | None,
        *,
        sent_at: float,
        probe: bool,
    ) -> tuple[AttemptResult, Transition | None]:
        """Feed one attempt's answer to the account's rate, pair limiter and breaker."""
        now = time.monotonic()
        account = job.provider.account
        job.pair_ready_at = None
        kind = error.kind if isinstance(error, TransportFailure) else None
        result = attempt_result(
            success=answer.kind.is_success,
            retryable=answer.kind is OutcomeKind.RETRYABLE,
            http_status=answer.http_status,
            error_code=answer.error_code,
            transport_kind=kind if error is not None else None,
        )
        if error is not None and kind is None:
            result = AttemptResult.RESET  # no answer and no transport kind: the exchange broke
        rate = self.rates.get(account)
        if rate is not None:
            if result is AttemptResult.SUCCESS:
                rate.on_success(now)
            elif result is AttemptResult.RATE_LIMITED:
                rate.on_rate_limited(now, sent_at=sent_at, retry_after=answer.retry_after)
            self._obs.adaptive_rate(job.provider.kind, account, rate.rate)
        if answer.error_code in PAIR_LIMIT_CODES:
            limiter = self._pairs.get(account)
            if limiter is not None and job.event.recipient is not None:
                limiter.penalize(_pair(job), now + (answer.retry_after or _PAIR_PENALTY_S))
        if not self.outage_enabled:
            return result, None
        breaker = self.breakers[account]
        if not probe and job.attempts > 1:
            # A retry of the same event is no new evidence about the account: one poison
            # event answered 503 again and again must not look like an outage (it would park
            # the account and never spend its own budget). First attempts of many events do.
            return result, None
        try:
            transition = breaker.record(result, now, probe=probe)
        except ValueError:  # a probe answer in a state that no longer expects it
            transition = None
        if transition is not None:
            self._obs.account_outage(job.provider.kind, account, breaker.in_outage)
        return result, transition

    # ------------------------------------------------------------------ ambiguous outcomes

    def ambiguous_attempt(
        self, job: Job, error: RetryableDeliveryError | None, *, newer_queued: bool
    ) -> AmbiguityDecision | None:
        """None unless ``error`` says the request may still be processed; else what to do,
        with the order's settle window moved."""
        if error is None or not is_ambiguous(error):
            return None
        now = time.monotonic()
        current = self._settle.get(job.lane)
        decision = decide_ambiguous(
            now=now,
            newer_queued=newer_queued,
            status=_status(job),
            traits=self._traits[job.provider.account],
            settle_until=current.until if current is not None else None,
        )
        self.ambiguous += 1
        if decision.settle_until is not None:
            self._settle[job.lane] = Settle(decision.settle_until, job.event.event_id)
            if len(self._settle) >= self._sweep_at:  # amortised: windows that passed go
                self._settle = {k: v for k, v in self._settle.items() if v.until > now}
                self._sweep_at = max(1024, 2 * len(self._settle))
        if decision.extra_message:
            self.extra_messages += 1
        if decision.action is AmbiguityAction.SUPERSEDE:
            self.ambiguous_superseded += 1
        self._obs.ambiguous(job.provider.kind, job.provider.account, decision.action.value)
        return decision

    def deferral(self, job: Job, now: float) -> tuple[float, str]:
        """How long ``job`` must wait before sending, and why ("settle": an ambiguous older
        request of its order may still land; "pair": Meta's pair rule wants a pause)."""
        wait = self.gate(job, now)
        if wait > 0:
            return wait, "settle"
        return self.pair_wait(job, now), "pair"

    def gate(self, job: Job, now: float) -> float:
        """Seconds ``job`` must wait so no ambiguous older request of its order can land after
        it (0: go). The retry of the ambiguous request itself is not gated."""
        settle = self._settle.get(job.lane)
        if settle is None:
            return 0.0
        if now >= settle.until:
            del self._settle[job.lane]
            return 0.0
        if settle.event_id == job.event.event_id:
            return 0.0
        gate = gate_next(
            now=now,
            settle_until=settle.until,
            next_status=_status(job),
            traits=self._traits[job.provider.account],
        )
        return max(0.0, gate.send_at - now)

    def forget(self, partitions: set[int]) -> None:
        """Drop the settle windows of released partitions (their next owner starts afresh)."""
        self._settle = {k: v for k, v in self._settle.items() if k[0] not in partitions}


def _pair(job: Job) -> Hashable:
    recipient = job.event.recipient
    return recipient.phone if recipient is not None else None


def _status(job: Job) -> str:
    event = job.event
    if event.native_status is not None:
        return event.native_status
    return event.status.value if event.status is not None else ""
