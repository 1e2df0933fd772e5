"""One attempt at the provider: send a job's request, count and time it, translate a retryable
transport failure into a RETRYABLE answer, and classify the response (a refusal that only
echoes a late request of the order becomes ``ALREADY_DONE``, ``Flow.echo_outcome``). What the
answer means for the job is the engine's decision, and any other exception (the sender's
``AccountConfigError``, a classifier bug) is raised to the engine, which ends the job."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from connector.errors import RetryableDeliveryError
from connector.providers.base import OutcomeKind, ProviderOutcome

if TYPE_CHECKING:
    from connector.delivery.jobs import Job
    from connector.delivery.ports import EngineObserver, EngineStats
    from connector.http.sender import HttpSender

log = structlog.get_logger("connector.delivery.attempts")


class Attempts:
    """Sends attempts; ``in_flight`` counts requests awaiting their answer."""

    def __init__(
        self,
        sender: HttpSender,
        observer: EngineObserver,
        stats: EngineStats,
        echo: Callable[[Job, ProviderOutcome], ProviderOutcome] | None = None,
    ) -> None:
        self._sender = sender
        self._obs = observer
        self._stats = stats
        self._echo = echo
        self.in_flight = 0

    async def send(self, job: Job) -> ProviderOutcome:
        attempt = job.attempts
        job.attempts += 1
        if job.first_attempt_at is None:
            job.first_attempt_at = datetime.now(UTC)
            job.first_attempt_mono = time.monotonic()
        provider = job.provider
        self.in_flight += 1
        self._obs.request_started(provider.kind)  # request_latency marks its end
        started = time.monotonic()
        job.stage = "send"
        job.last_error = None
        assert job.request is not None, "built when the job first ran"
        try:
            response = await self._sender.send(
                job.request, timeout=provider.settings.request_timeout_s
            )
        except RetryableDeliveryError as exc:
            job.failure = getattr(exc, "kind", None) or "transport"
            job.last_error = exc
            return ProviderOutcome(OutcomeKind.RETRYABLE, detail=exc.detail, error_code=exc.code)
        finally:
            self.in_flight -= 1
            self._obs.request_latency(provider.kind, time.monotonic() - started)
            self._stats.sent_requests += 1
        status = response.status_code
        job.failure = "5xx" if status >= 500 else str(status)
        job.stage = "classify"
        answer = provider.classify(response, attempt=attempt)
        if self._echo is not None and answer.kind is OutcomeKind.PERMANENT:
            return self._echo(job, answer)
        return answer

    async def resend(self, job: Job) -> None:
        """Send ``job``'s request once more (a re-assert of the order's newest status, after
        its outcome was published): no attempt counted, no outcome; the answer is logged."""
        provider = job.provider
        assert job.request is not None, "a re-assert re-sends a request already sent"
        self.in_flight += 1
        self._obs.request_started(provider.kind)
        started = time.monotonic()
        try:
            response = await self._sender.send(
                job.request, timeout=provider.settings.request_timeout_s
            )
        except RetryableDeliveryError as exc:
            log.warning("reassert_unanswered", order_id=job.event.order_id,
                        account=provider.account, code=exc.code)  # fmt: skip
            return
        finally:
            self.in_flight -= 1
            self._obs.request_latency(provider.kind, time.monotonic() - started)
            self._stats.sent_requests += 1
        answer = provider.classify(response, attempt=job.attempts)
        log.info("reassert_sent", order_id=job.event.order_id, account=provider.account,
                 outcome=answer.kind.value, code=answer.error_code)  # fmt: skip
