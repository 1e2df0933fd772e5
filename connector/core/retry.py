"""The retry budget as a pure policy: how long to wait before the next attempt, or give up.

It never sleeps, reads clocks or draws random numbers: the engine passes elapsed time and a
random draw in, so tests are exact and never wait.
"""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from connector.core.bounds import Settings

__all__ = ["RetryPolicy"]


class RetryPolicy(Settings):
    """Exponential backoff with jitter inside a budget of attempts and elapsed time.

    The n-th wait (after attempt n) is ``min(cap_s, base_s * 2**(n-1))`` scaled by a factor in
    ``[1 - jitter, 1 + jitter)``, so waits at the cap keep their spread. A provider's hint
    (Retry-After, Meta's 4^X) is a lower bound and is not capped by ``cap_s``.
    """

    max_attempts: int = Field(default=8, ge=1)
    max_elapsed_s: float = Field(default=300.0, ge=0)
    base_s: float = Field(default=0.5, gt=0)
    cap_s: float = Field(default=60.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, lt=1)

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetryPolicy:
        if self.cap_s < self.base_s:
            raise ValueError(f"cap_s must be >= base_s ({self.base_s:g}), got {self.cap_s:g}")
        return self

    def backoff(self, attempt: int, rand: float) -> float:
        """The jittered exponential wait after ``attempt`` attempts, ignoring the budget."""
        if attempt < 1:
            raise ValueError(f"attempt counts attempts made so far and must be >= 1, got {attempt}")
        if not 0 <= rand < 1:
            raise ValueError(f"rand must be in [0, 1), got {rand}")
        # 2.0**1024 raises OverflowError; the cap is reached long before that exponent.
        raw = min(self.cap_s, self.base_s * 2.0 ** min(attempt - 1, 1023))
        return raw * (1 + self.jitter * (2 * rand - 1))

    def next_delay(
        self, attempt: int, elapsed_s: float, hint_s: float | None, rand: float
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when the budget is spent.

        ``attempt`` is the number of attempts made so far (>= 1), ``elapsed_s`` the time since
        the first attempt started, ``hint_s`` the provider's requested wait (negative hints
        count as 0), ``rand`` a uniform draw in ``[0, 1)``. ``None`` when ``max_attempts`` are
        made or when waiting would end after ``max_elapsed_s`` (a hint beyond the remaining
        budget therefore gives up rather than retrying early).
        """
        delay = self.backoff(attempt, rand)
        if attempt >= self.max_attempts:
            return None
        if hint_s is not None:
            if math.isnan(hint_s):
                raise ValueError("hint_s is NaN")
            delay = max(delay, hint_s)
        if elapsed_s + delay > self.max_elapsed_s:
            return None
        return delay
