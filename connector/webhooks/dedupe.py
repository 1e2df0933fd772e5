"""A bounded, in-process memory of webhook items already handed on (provider retries).

Bounded by count (oldest dropped first) and by age. Pure and synchronous; it must not do I/O.
It only covers retries that reach this replica: records keep ``dedupe_key`` for consumers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_TTL_S = 7 * 24 * 3600.0  # Meta retries webhooks for up to seven days


class SeenWebhooks:
    """Claim-then-confirm dedupe set.

    ``claim(key)`` is True the first time a key is seen (the caller then publishes it) and
    False while the key is remembered. If publishing fails, ``release(keys)`` forgets the keys
    so the provider's retry is handled again. Claimed keys count as seen, so two concurrent
    deliveries of one webhook publish once.
    """

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl_s: float | None = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError("ttl_s must be positive or None")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # key -> time first claimed

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        self._expire(self._clock())
        return key in self._seen

    def claim(self, key: str) -> bool:
        """True when ``key`` is new (and now remembered); False when it is a repeat."""
        now = self._clock()
        self._expire(now)
        if key in self._seen:
            return False
        self._seen[key] = now
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return True

    def release(self, keys: Iterable[str]) -> None:
        """Forget ``keys`` (their publication failed and the provider will retry)."""
        for key in keys:
            self._seen.pop(key, None)

    def _expire(self, now: float) -> None:
        if self.ttl_s is None:
            return
        horizon = now - self.ttl_s
        while self._seen:
            oldest_key, first_seen = next(iter(self._seen.items()))
            if first_seen > horizon:
                break
            del self._seen[oldest_key]
