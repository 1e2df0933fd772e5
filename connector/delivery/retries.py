"""Retry waits: a retrying job keeps its lane (its order waits) but holds no slot and no task;
a loop timer puts it back in line for a slot after the policy's delay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from connector.core.retry import RetryPolicy
    from connector.delivery.jobs import Job, PartitionState
    from connector.delivery.ports import EngineObserver, EngineStats
    from connector.providers.base import ProviderOutcome

log = structlog.get_logger("connector.delivery.retries")


class Retries:
    """``start`` puts a job whose delay passed back in line for a slot."""

    def __init__(
        self,
        policy: RetryPolicy,
        rand: Callable[[], float],
        observer: EngineObserver,
        stats: EngineStats,
        start: Callable[[Job], None],
    ) -> None:
        self._policy = policy
        self._rand = rand
        self._obs = observer
        self._stats = stats
        self._start = start
        self._waiting: set[Job] = set()

    def schedule(self, job: Job, answer: ProviderOutcome) -> bool:
        """Schedule another attempt of ``job``; False when the retry budget is spent."""
        # time parked in an account outage is not the event's fault: it spends no budget
        elapsed = time.monotonic() - (job.first_attempt_mono or job.consumed_at) - job.paused_s
        delay = self._policy.next_delay(job.attempts, elapsed, answer.retry_after, self._rand())
        if delay is None:
            return False
        provider = job.provider
        self._stats.retries += 1
        self._obs.retry(provider.kind, provider.account, answer.retry_after is not None)
        log.info(
            "delivery_retry_scheduled",
            order_id=job.event.order_id,
            account=provider.account,
            attempt=job.attempts,
            delay_s=round(delay, 3),
            failure=job.failure,  # timeout, connect, reset, 5xx, 429, ...
            code=answer.error_code,
        )
        self._waiting.add(job)
        job.timer = asyncio.get_running_loop().call_later(delay, self._start, job)
        return True

    def defer(self, job: Job, delay: float) -> None:
        """Put ``job`` back in line after ``delay`` without an attempt or a retry counted (a
        pair-limit or settle-window wait); it holds no slot meanwhile."""
        self._waiting.add(job)
        job.timer = asyncio.get_running_loop().call_later(delay, self._start, job)

    def started(self, job: Job) -> None:
        """``job`` is back in line (its timer fired, or a hold released it)."""
        job.timer = None
        self._waiting.discard(job)

    def abandon(self, states: set[PartitionState]) -> None:
        """Cancel the timers of jobs of draining partitions (they re-run elsewhere)."""
        for job in list(self._waiting):
            if job.state in states and job.timer is not None:
                job.timer.cancel()
                job.timer = None
                self._waiting.discard(job)
