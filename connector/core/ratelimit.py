"""Send-rate limits: token buckets, the adaptive per-account rate, Meta's pair limit.

Pure: the caller passes the clock reading; nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

from connector.core.bounds import require_count, require_finite

__all__ = ["AdaptiveRate", "PairLimiter", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, bursts up to ``burst``. ``reserve`` never blocks.

    ``reserve(now)`` takes one token and returns how long the caller must wait before using it
    (0.0 when a token was available). Reservations queue up fairly, in call order.
    """

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float | None = None, *, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self._burst
        self._stamp = now

    def reserve(self, now: float) -> float:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._rate

    def try_take(self, now: float) -> float:
        """Take a token if one is there (0.0); else take nothing and return the seconds until
        one is. Waiters then ask again instead of booking the future at today's rate."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class AdaptiveRate:
    """A per-account send rate that finds the provider's real limit below the configured one.

    Starts at ``ceiling`` (the account's ``rate_per_second``) and never exceeds it. A rate-limit
    answer (Meta 130429, YCloud 429) multiplies the rate by ``decrease`` (not below ``floor``),
    at most once per "generation": answers to requests sent before the last cut were caused by
    the old rate and are ignored, so a burst of 429s for one overshoot cuts once. Growth is
    counted per success (``increase_per_s / rate`` each): at full use that is ``increase_per_s``
    per second, while an idle account does not grow on no evidence.

    Growth after a cut is shaped so the rate settles instead of sawing (plain AIMD climbs back
    over the limit every few seconds, since the provider's burst credit hides the overshoot):

    * the rate that was refused is remembered (``refused_rate``); the rate grows back at
      ``increase_per_s`` only up to a plateau, ``plateau_share`` of it (halfway between the cut
      rate and the refused one by default), and stays there;
    * after ``probe_after_s`` on the plateau without a cut it probes upwards slowly
      (``probe_increase_per_s``). A cut while probing doubles the next plateau's hold (up to
      ``probe_after_cap_s``): a limit that stays put is probed more and more rarely;
    * a probe that passes the refused rate without a cut means the provider's limit rose: the
      episode ends and the rate grows at ``increase_per_s`` up to the ceiling again;
    * only a cut that follows at least ``learn_after`` successes since the previous cut teaches
      a refused rate: the rate worked until it went over. A run of refusals with nothing
      accepted in between (a throttle switched on for a while, a scripted run of 429s, an
      outage answering 429) cuts the rate without lowering the plateau, so once it ends the
      rate grows back freely instead of holding near its floor.

    A ``Retry-After`` holds every send until it has passed: it stays a lower bound whatever the
    rate. ``reserve(now)`` works like ``TokenBucket.reserve`` at the current rate, with a burst
    of ``burst_s`` seconds' worth of tokens (short, since the provider's limit is unknown).
    """

    __slots__ = (
        "_base_hold",
        "_burst_s",
        "_ceiling",
        "_cut_at",
        "_decrease",
        "_floor",
        "_hold_cap",
        "_hold_s",
        "_increase",
        "_learn_after",
        "_plateau",
        "_plateau_share",
        "_plateau_since",
        "_probe_increase",
        "_rate",
        "_stamp",
        "_successes",
        "_tokens",
        "cuts",
        "held_until",
        "probes_failed",
        "refused_rate",
    )

    def __init__(
        self,
        ceiling: float,
        *,
        floor: float | None = None,
        decrease: float = 0.7,
        increase_per_s: float | None = None,
        burst_s: float = 0.1,
        plateau_share: float | None = None,
        probe_after_s: float = 60.0,
        probe_after_cap_s: float = 480.0,
        probe_increase_per_s: float | None = None,
        learn_after: int = 5,
        now: float = 0.0,
    ) -> None:
        require_finite("ceiling", ceiling, above=0)
        floor = ceiling / 50 if floor is None else floor
        if not 0 < floor <= ceiling:
            raise ValueError("floor must be in (0, ceiling]")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be in (0, 1)")
        increase = ceiling / 50 if increase_per_s is None else increase_per_s
        require_finite("increase_per_s", increase, above=0)
        require_finite("burst_s", burst_s, above=0)
        share = (1 + decrease) / 2 if plateau_share is None else plateau_share
        if not decrease <= share < 1:
            raise ValueError("plateau_share must be in [decrease, 1)")
        require_finite("probe_after_s", probe_after_s, at_least=0)
        require_finite("probe_after_cap_s", probe_after_cap_s, at_least=probe_after_s)
        probe_increase = increase / 4 if probe_increase_per_s is None else probe_increase_per_s
        require_finite("probe_increase_per_s", probe_increase, above=0)
        self._ceiling = ceiling
        self._floor = floor
        self._decrease = decrease
        self._increase = increase
        self._burst_s = burst_s
        self._plateau_share = share
        self._base_hold = probe_after_s
        self._hold_cap = probe_after_cap_s
        self._hold_s = probe_after_s
        self._probe_increase = probe_increase
        if learn_after < 0:
            raise ValueError("learn_after must be >= 0")
        self._learn_after = learn_after
        self._successes = 0  # since the last cut
        self._rate = ceiling
        self._tokens = self._burst()
        self._stamp = now
        self._cut_at = -math.inf
        self._plateau: float | None = None
        self._plateau_since: float | None = None
        #: sends wait at least until this time (the latest Retry-After)
        self.held_until = -math.inf
        #: how many times the rate was cut
        self.cuts = 0
        #: cuts that ended an upward probe (the limit had not risen)
        self.probes_failed = 0
        #: the rate the provider last refused, while growth is shaped by it (None: free growth)
        self.refused_rate: float | None = None

    @property
    def rate(self) -> float:
        """The current rate, messages per second."""
        return self._rate

    @property
    def ceiling(self) -> float:
        return self._ceiling

    @property
    def floor(self) -> float:
        return self._floor

    @property
    def at_floor(self) -> bool:
        """Whether the rate cannot be cut any further: a rate-limit answer now is no longer a
        pacing signal (the breaker counts it as an outage sign, ``connector.core.breaker``)."""
        return self._rate <= self._floor

    def forget_refusals(self) -> None:
        """Drop what earlier refusals taught (an outage ended: its 429s said nothing about the
        provider's rate): growth is free again up to the ceiling."""
        self.refused_rate = self._plateau = self._plateau_since = None
        self._hold_s = self._base_hold

    def reserve(self, now: float) -> float:
        """Take one send slot; returns how long to wait before using it (0.0: go now)."""
        self._refill(now)
        self._tokens -= 1.0
        wait = 0.0 if self._tokens >= 0 else -self._tokens / self._rate
        return max(wait, self.held_until - now)

    def try_take(self, now: float) -> float:
        """Take a send slot if one is free now (0.0: go); else take nothing and return the
        seconds until one is (a ``Retry-After`` hold included). Unlike ``reserve`` nothing is
        booked ahead, so a cut applies at once to every send still waiting."""
        self._refill(now)
        hold = self.held_until - now
        if hold > 0:
            return hold
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def on_success(self, now: float) -> None:
        """A successful answer (the provider took the message): grow back, shaped by the last
        refused rate (see the class docstring)."""
        self._successes += 1
        rate, plateau = self._rate, self._plateau
        if plateau is None or self.refused_rate is None:
            rate += self._increase / rate
        elif rate < plateau:
            rate = min(plateau, rate + self._increase / rate)
            if rate >= plateau:
                self._plateau_since = now
        elif self._plateau_since is not None and now - self._plateau_since < self._hold_s:
            return  # holding on the plateau
        else:
            rate += self._probe_increase / rate
            if rate > self.refused_rate:  # the provider's limit rose: free growth again
                self.refused_rate = self._plateau = self._plateau_since = None
                self._hold_s = self._base_hold
        self._set_rate(now, min(self._ceiling, rate))

    @property
    def plateau(self) -> float | None:
        """The rate growth stops at until the next probe (None: no cut to learn from)."""
        return self._plateau

    @property
    def probing(self) -> bool:
        """Whether the rate is above its plateau, testing whether the limit rose."""
        return self._plateau is not None and self._rate > self._plateau

    def on_rate_limited(
        self, now: float, *, sent_at: float, retry_after: float | None = None
    ) -> bool:
        """A rate-limit answer to a request sent at ``sent_at``; True when the rate was cut.

        ``retry_after`` (seconds from ``now``) holds every send until then, even when the
        answer belongs to an older generation and the rate is left alone.
        """
        if retry_after is not None and retry_after > 0:
            self.held_until = max(self.held_until, now + retry_after)
        if sent_at < self._cut_at:
            return False
        refused = self._rate
        rate = max(self._floor, refused * self._decrease)
        if self._successes >= self._learn_after:  # it worked until it went over: learn
            if self.probing:  # the probe found no more room: probe more rarely
                self.probes_failed += 1
                self._hold_s = min(self._hold_cap, max(self._hold_s, 1e-9) * 2)
            self.refused_rate = refused
            self._plateau = max(rate, min(self._ceiling, refused * self._plateau_share))
            self._plateau_since = now if rate >= self._plateau else None
        elif self._plateau is not None and rate < self._plateau:
            self._plateau_since = None  # back on the plateau, the hold starts again
        self._successes = 0
        self._set_rate(now, rate)
        self._cut_at = now
        self.cuts += 1
        return True

    def _burst(self) -> float:
        return max(1.0, self._rate * self._burst_s)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(self._burst(), self._tokens + elapsed * self._rate)

    def _set_rate(self, now: float, rate: float) -> None:
        self._refill(now)  # tokens earned so far were earned at the old rate
        self._rate = rate
        self._tokens = min(self._tokens, self._burst())


class PairLimiter:
    """Meta's pair rate limit per (sender, recipient), as a pure scheduler with bounded memory.

    The rule, from ../shared/PROVIDERS.md ("Cross-provider facts" 5, lines 27-28: "a *pair*
    limit of about 1 message per 6 s to the same customer (bursts up to 45, borrowed from
    later). Over the pair limit: code 131056, retry after 4^X seconds"), read as a burst that is
    borrowed and then repaid:

    * a pair that owes nothing (``now >= free_at``) starts a burst at ``now``;
    * inside the burst's first ``period_s`` seconds up to ``burst`` messages go;
    * every message adds ``period_s`` to what the pair owes (``free_at``); after the burst
      window nothing goes until ``free_at``, when the pair owes nothing again.

    So one message per ``period_s`` always goes, and ``n`` messages in a burst block the pair for
    ``n * period_s`` from the burst's start. The sandbox enforces the same rule
    (``connector.dev.sandbox.limits``). ``margin_s`` makes the connector's side stricter than the
    provider's (longer debt per message, shorter burst window) so network jitter between
    scheduling a send and its arrival cannot cross the provider's line.

    A pair that owes nothing behaves exactly like an unknown pair, so it is forgotten: memory is
    bounded by the pairs messaged within the last ``burst * period_s`` seconds.
    """

    __slots__ = ("_burst", "_margin", "_pairs", "_period", "_sweep_at")

    def __init__(self, *, period_s: float = 6.0, burst: int = 45, margin_s: float = 0.25) -> None:
        if not (period_s > 0 and math.isfinite(period_s)):
            raise ValueError("period_s must be finite and positive")
        require_count("burst", burst)
        if not 0 <= margin_s < period_s:
            raise ValueError("margin_s must be in [0, period_s)")
        self._period = period_s
        self._burst = burst
        self._margin = margin_s
        # pair -> (burst start, messages in that burst, free_at)
        self._pairs: dict[Hashable, tuple[float, int, float]] = {}
        self._sweep_at = 1024

    def __len__(self) -> int:
        """Pairs currently remembered (those that still owe time, plus some not yet swept)."""
        return len(self._pairs)

    def available_at(self, pair: Hashable, now: float) -> float:
        """The earliest time at or after ``now`` a message to ``pair`` may go (no change)."""
        state = self._pairs.get(pair)
        if state is None:
            return now
        start, count, free_at = state
        if now >= free_at:
            return now
        if count < self._burst and now < start + self._period - self._margin:
            return max(now, start)  # joins the burst (which may be booked to start later)
        return free_at

    def reserve(self, pair: Hashable, now: float) -> float:
        """Book the pair's next message; returns how long to wait before sending it."""
        at = self.available_at(pair, now)
        state = self._pairs.get(pair)
        cost = self._period + self._margin
        if state is None or at >= state[2]:
            self._pairs[pair] = (at, 1, at + cost)
        else:
            start, count, free_at = state
            self._pairs[pair] = (start, count + 1, free_at + cost)
        if len(self._pairs) >= self._sweep_at:
            self._sweep(now)
        return at - now

    def try_acquire(self, pair: Hashable, now: float) -> bool:
        """Take the pair's message now if the rule allows it (the provider's side)."""
        if self.available_at(pair, now) > now:
            return False
        self.reserve(pair, now)
        return True

    def penalize(self, pair: Hashable, until: float) -> None:
        """The provider refused the pair (131056): send nothing to it before ``until``."""
        state = self._pairs.get(pair)
        free_at = until if state is None else max(until, state[2])
        # A closed burst (count at the limit) so nothing goes before free_at.
        self._pairs[pair] = (-math.inf, self._burst, free_at)

    def _sweep(self, now: float) -> None:
        self._pairs = {k: v for k, v in self._pairs.items() if v[2] > now}
        self._sweep_at = max(1024, 2 * len(self._pairs))  # amortised O(1) per reservation
