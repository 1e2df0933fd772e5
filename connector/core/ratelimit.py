"""Token buckets for per-account send rates. Pure: the caller passes the clock reading."""

from __future__ import annotations


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
