"""Provider flow control around each attempt: per-account outage breakers, adaptive rates and
pair limiters, and the per-order settle windows after ambiguous attempts. It applies the pure
rules of ``connector.core`` (breaker, ratelimit, ambiguity) with the loop's clock; it never
sends, parks or publishes: the engine does, from what this answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from connector.core.ambiguity import (
    AmbiguityAction,
    AmbiguityDecision,
    LateGuard,
    ProviderTraits,
    decide_ambiguous,
    gate_next,
    is_ambiguous,
    refusal_is_late_echo,
    traits_for,
)
from connector.core.breaker import (
    PAIR_LIMIT_CODES,
    AccountBreaker,
    AttemptResult,
    Transition,
    attempt_result,
)
from connector.core.ratelimit import AdaptiveRate, PairLimiter, TokenBucket
from connector.errors import TransportFailure
from connector.providers.base import OutcomeKind, ProviderOutcome
from connector.providers.refusals import sent_status, transition_refusal

if TYPE_CHECKING:
    from connector.config import LimitSettings
    from connector.delivery.jobs import Job, LaneKey
    from connector.delivery.ports import EngineObserver
    from connector.errors import RetryableDeliveryError
    from connector.providers.base import Provider

#: Providers that speak WhatsApp and so live under Meta's pair rule.
PAIR_LIMITED: Final = frozenset({"meta", "ycloud"})
_RATE_LIMITED: Final = frozenset({AttemptResult.RATE_LIMITED, AttemptResult.PACED})
#: How long an ambiguous attempt is remembered for recognising its late echo (a Meta 2046
#: webhook for a request that landed late arrives seconds to minutes after it), and at most how
#: many are remembered (the oldest go first).
_ECHO_MEMORY_S: Final = 900.0
_ECHO_MEMORY_MAX: Final = 100_000
#: Meta's 131056 answer asks for 4^X s; without a hint the pair waits one period.
_PAIR_PENALTY_S: Final = 6.0


@dataclass(slots=True)
class Settle:
    """An order's open settle window: an ambiguous request of ``event_id`` may land until
    ``until``; newer requests of the order wait for it (``gate_next``)."""

    until: float
    event_id: str


@dataclass(slots=True)
class Reassert:
    """The order's newest status goes once more at ``at`` (guard ``reassert``): ``event_id``
    was sent before an ambiguous older request's window had passed. ``job`` and ``timer`` are
    set once it was answered."""

    at: float
    event_id: str
    job: Job | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True, frozen=True)
class Sent:
    """An ambiguous attempt's request: its order lane, the status as sent, its account, and
    what its outcome records carry (order id, input coordinates, trace context), so a webhook
    report of the request the connector never learned the message id of can be tied to its order
    (``Flow.attempt_origin``)."""

    lane: LaneKey
    status: str
    account: str
    at: float
    order_id: str
    source: tuple[str, int, int]  # topic, partition, offset (a tuple: ~100 B, a model ~520 B)
    traceparent: str | None


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
        self.breakers = {name: AccountBreaker(outage) for name in providers}
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
            guard = limits.late_guard.get(p.kind)
            self._traits[name] = traits_for(
                p.kind,
                settle_window_s=limits.settle_window_s,
                guard=LateGuard(guard) if guard is not None else None,
            )
        self._settle: dict[LaneKey, Settle] = {}
        self._sweep_at = 1024
        #: ambiguous attempts, superseded ambiguous requests, and resends that may show the
        #: customer a status twice (the cost of the invariant)
        self.ambiguous = 0
        self.ambiguous_superseded = 0
        self.extra_messages = 0
        # Late echoes: ambiguous events (event id -> Sent) and, per lane that had one, the
        # newest status accepted or ambiguously sent since (event id, status).
        self._echo_events: dict[str, Sent] = {}
        self._newest: dict[LaneKey, tuple[str, str]] = {}
        #: transition refusals recognised as the harmless echo of a late request
        self.late_echoes = 0
        # Re-asserts due per lane (guard "reassert"); ``resend`` sends a job's request once
        # more without an outcome (the engine sets it: ``Attempts.resend`` in a task).
        self._reasserts: dict[LaneKey, Reassert] = {}
        self.resend: Callable[[Job], None] | None = None
        #: newest statuses sent once more after a settle window (each an extra message)
        self.reasserted = 0

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
        rate = self.rates.get(account)
        result = attempt_result(
            success=answer.kind.is_success,
            retryable=answer.kind is OutcomeKind.RETRYABLE,
            http_status=answer.http_status,
            error_code=answer.error_code,
            transport_kind=kind if error is not None else None,
            # a rate-limit answer is an outage sign only once the rate cannot be cut further
            can_slow_down=rate is not None and not rate.at_floor,
        )
        if error is not None and kind is None:
            result = AttemptResult.RESET  # no answer and no transport kind: the exchange broke
        if result is AttemptResult.SUCCESS and job.lane in self._newest:
            self._newest[job.lane] = (job.event.event_id, self._sent_status(job))
        if job.lane in self._reasserts:
            if result is AttemptResult.SUCCESS:
                self._arm_reassert(job, now)
            elif answer.kind is OutcomeKind.PERMANENT:  # it ends unsent: nothing to re-assert
                pending = self._reasserts[job.lane]
                if pending.event_id == job.event.event_id and pending.timer is None:
                    del self._reasserts[job.lane]
        if rate is not None:
            if result is AttemptResult.SUCCESS:
                rate.on_success(now)
            elif result in _RATE_LIMITED:
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
        retry_in = None
        if probe and result is AttemptResult.RATE_LIMITED and rate is not None:
            # asked to slow down at the floor: probe again at the floor's pace or Retry-After
            retry_in = max(1.0 / rate.floor, answer.retry_after or 0.0)
        try:
            transition = breaker.record(result, now, probe=probe, retry_in=retry_in)
        except ValueError:  # a probe answer in a state that no longer expects it
            transition = None
        if transition is not None:
            self._obs.account_outage(job.provider.kind, account, breaker.in_outage)
        if transition is Transition.CLOSED and rate is not None:
            rate.forget_refusals()  # 429s of the outage taught nothing about the provider's rate
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
            status=self._sent_status(job),
            traits=self._traits[job.provider.account],
            settle_until=current.until if current is not None else None,
        )
        self.ambiguous += 1
        if decision.settle_until is not None:
            self._settle[job.lane] = Settle(decision.settle_until, job.event.event_id)
            if len(self._settle) >= self._sweep_at:  # amortised: windows that passed go
                self._settle = {k: v for k, v in self._settle.items() if v.until > now}
                self._sweep_at = max(1024, 2 * len(self._settle))
        self._remember_ambiguous(job, now)
        if decision.extra_message:
            self.extra_messages += 1
            self._obs.extra_message(job.provider.kind, job.provider.account, "retry")
        if decision.action is AmbiguityAction.SUPERSEDE:
            self.ambiguous_superseded += 1
        self._obs.ambiguous(job.provider.kind, job.provider.account, decision.action.value)
        return decision

    # ------------------------------------------------------------------ late echoes

    def late_echo(self, event_id: str, provider_kind: str, error_code: str | int | None) -> bool:
        """Whether a transition refusal (Meta 2046, Zonos "cannot be moved ... while in" a
        terminal status) of ``event_id`` is the harmless echo of a late request: the event had
        an ambiguous attempt and its order's newest status was accepted or ambiguously sent
        since (``connector.core.ambiguity.refusal_is_late_echo``). Otherwise it stays an error.
        """
        refusal = transition_refusal(provider_kind, error_code)
        sent = self._echo_events.get(event_id) if refusal is not None else None
        newest = self._newest.get(sent.lane) if sent is not None else None
        if refusal is None or sent is None or newest is None:
            return False
        newest_id, newest_status = newest
        echo = refusal_is_late_echo(
            refused_status=sent.status,
            newest_status=newest_status,
            refused_is_newest=newest_id == event_id,
            newest_was_ambiguous=newest_id in self._echo_events,
            traits=self._traits[sent.account],
            provider_status=refusal.provider_status,
        )
        if echo:
            self.late_echoes += 1
        return echo

    def echo_outcome(self, job: Job, answer: ProviderOutcome) -> ProviderOutcome:
        """``answer``, or ``ALREADY_DONE`` when it is a refusal that only echoes a late request
        of the order (the provider holds the order's newest status already)."""
        if answer.kind is not OutcomeKind.PERMANENT or not self.late_echo(
            job.event.event_id, job.provider.kind, answer.error_code
        ):
            return answer
        return ProviderOutcome(
            OutcomeKind.ALREADY_DONE,
            http_status=answer.http_status,
            error_code=answer.error_code,
            detail=f"late echo (the provider holds the newest status): {answer.detail or ''}",
        )

    def attempt_origin(self, event_id: str) -> Sent | None:
        """The remembered ambiguous attempt of ``event_id`` (``webhooks.sink.AttemptOrigins``):
        its late original's webhook report carries the event id but a message id never seen."""
        return self._echo_events.get(event_id)

    def _remember_ambiguous(self, job: Job, now: float) -> None:
        status, record, event = self._sent_status(job), job.record, job.event
        source = (record.topic, record.partition, record.offset)
        self._echo_events[event.event_id] = Sent(
            job.lane, status, job.provider.account, now, event.order_id, source, event.traceparent
        )
        self._newest[job.lane] = (job.event.event_id, status)
        if len(self._echo_events) > _ECHO_MEMORY_MAX or (
            next(iter(self._echo_events.values())).at < now - _ECHO_MEMORY_S
        ):
            self._expire_echoes(now)

    def _expire_echoes(self, now: float) -> None:
        horizon = now - _ECHO_MEMORY_S
        events = self._echo_events
        while events:
            oldest_id, oldest = next(iter(events.items()))
            if oldest.at >= horizon and len(events) <= _ECHO_MEMORY_MAX:
                break
            del events[oldest_id]
        lanes = {sent.lane for sent in events.values()}
        self._newest = {k: v for k, v in self._newest.items() if k in lanes}

    def _sent_status(self, job: Job) -> str:
        """The status as the provider knows it: the request's own (Zonos), else the event's."""
        assert job.request is not None, "built when the job first ran"
        return sent_status(job.provider.kind, job.request.content) or _status(job)

    def deferral(self, job: Job, now: float) -> tuple[float, str]:
        """How long ``job`` must wait before sending, and why ("settle": an ambiguous older
        request of its order may still land; "pair": Meta's pair rule wants a pause)."""
        wait = self.gate(job, now)
        if wait > 0:
            return wait, "settle"
        return self.pair_wait(job, now), "pair"

    def gate(self, job: Job, now: float) -> float:
        """Seconds ``job`` must wait so no ambiguous older request of its order can land after
        it (0: go). The retry of the ambiguous request itself is not gated. A newer request
        of the order makes a re-assert of an older one moot (past the window it is the last
        one processed; before it, it takes the re-assert over)."""
        pending = self._reasserts.get(job.lane)
        if pending is not None and pending.event_id != job.event.event_id:
            self._drop_reassert(job.lane)
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
            next_status=self._sent_status(job),
            traits=self._traits[job.provider.account],
        )
        if gate.reassert_at is not None and gate.send_at <= now:
            # it goes now, before the window passed: the newest status is re-sent then
            self._reasserts[job.lane] = Reassert(gate.reassert_at, job.event.event_id)
        return max(0.0, gate.send_at - now)

    # ------------------------------------------------------------------ re-assert

    def _arm_reassert(self, job: Job, now: float) -> None:
        """``job`` was answered: if it is the lane's pending re-assert, time the resend."""
        pending = self._reasserts[job.lane]
        if pending.event_id != job.event.event_id or pending.timer is not None:
            return
        pending.job = job
        loop = asyncio.get_running_loop()
        pending.timer = loop.call_later(max(0.0, pending.at - now), self._reassert, job.lane)

    @property
    def pending_reasserts(self) -> int:
        """Re-asserts timed and not yet sent."""
        return sum(1 for r in self._reasserts.values() if r.timer is not None)

    def _drop_reassert(self, lane: LaneKey) -> None:
        pending = self._reasserts.pop(lane, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()

    def _reassert(self, lane: LaneKey) -> None:
        """Send the lane's newest status once more, unless its partition went away. Paced by
        the account's rate like any send (one extra message per such order)."""
        pending = self._reasserts.get(lane)
        job = pending.job if pending is not None else None
        if pending is None or job is None or job.state.draining or job.state.dropped:
            self._reasserts.pop(lane, None)
            return
        wait = self.try_send(job.provider.account, time.monotonic())
        if wait > 0:
            pending.timer = asyncio.get_running_loop().call_later(wait, self._reassert, lane)
            return
        del self._reasserts[lane]
        if self.resend is None:
            return
        self.reasserted += 1
        self.extra_messages += 1
        self._obs.extra_message(job.provider.kind, job.provider.account, "reassert")
        self.resend(job)

    def forget(self, partitions: set[int]) -> None:
        """Drop the settle windows of released partitions (their next owner starts afresh)."""
        self._settle = {k: v for k, v in self._settle.items() if k[0] not in partitions}
        self._echo_events = {
            k: v for k, v in self._echo_events.items() if v.lane[0] not in partitions
        }
        self._newest = {k: v for k, v in self._newest.items() if k[0] not in partitions}
        for lane in [k for k in self._reasserts if k[0] in partitions]:
            self._drop_reassert(lane)


def _pair(job: Job) -> Hashable:
    recipient = job.event.recipient
    return recipient.phone if recipient is not None else None


def _status(job: Job) -> str:
    event = job.event
    if event.native_status is not None:
        return event.native_status
    return event.status.value if event.status is not None else ""
