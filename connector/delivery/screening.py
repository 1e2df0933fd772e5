"""Decisions taken before a send: building the request (or the mapping's skip, or the event
that cannot be sent), the ledger's verdict on a replayed event (duplicate, stale, expired,
invalid transition), dry run, and whether an account coalesces a backlog. Each decision is an
``Ending`` (or None: send); this module never publishes and never starts jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from connector.contract.records import ResultOutcome
from connector.core.ledger import Verdict, judge, would_be_rejected
from connector.delivery.jobs import set_request
from connector.delivery.outcomes import Ending, internal
from connector.errors import ErrorClass, InvalidEventError
from connector.providers.base import ProviderOutcome

if TYPE_CHECKING:
    from connector.config import DeliverySettings
    from connector.core.ledger import Delivery, GuardMode
    from connector.core.redaction import SecretScrubber
    from connector.delivery.jobs import Job

log = structlog.get_logger("connector.delivery.screening")

SUPERSEDED = Ending(
    result=ResultOutcome.SUPERSEDED,
    detail="a newer event of the order was queued behind it",
    verdict=True,
)
DRY_RUN = Ending(result=ResultOutcome.DRY_RUN, detail="dry run: built, not sent", verdict=True)


class Screening:
    """``active`` is False without delivery settings (tests, tools): nothing is screened."""

    def __init__(self, delivery: DeliverySettings | None, scrubber: SecretScrubber) -> None:
        self._delivery = delivery
        self._scrubber = scrubber
        self.active = delivery is not None
        self._max_age = (
            timedelta(seconds=delivery.max_event_age_s)
            if delivery is not None and delivery.max_event_age_s is not None
            else None
        )

    def coalesces(self, job: Job) -> bool:
        d = self._delivery
        return d is not None and d.coalesces(job.provider.account, job.provider.kind)

    def prepare(self, job: Job) -> Ending | None:
        """Build ``job``'s request (once): None when it is ready to go on, else how the record
        ends (the mapping says skip, or the event cannot be sent). ``job.stage`` is "build".

        The engine calls it when the job first runs, so buffered and superseded records hold
        no request; where the account coalesces, at intake instead: an event that cannot be
        sent must not supersede the ones queued before it."""
        job.stage = "build"
        try:
            built = job.provider.build_request(job.event)
        except InvalidEventError as exc:  # any other failure: the caller's internal_error
            return Ending(error=exc.error_class, detail=exc.reason)
        if isinstance(built, ProviderOutcome):  # the mapping says: nothing to send
            return Ending.of_answer(built)
        set_request(job, built)
        return None

    def verdict(self, job: Job) -> Ending | None:
        """What the ledger says about a first attempt: None to go on, else how it ends."""
        assert self._delivery is not None
        last = self._last(job)
        verdict = self._judge(job, last, self._max_age, self._delivery.transition_guard)
        if verdict is Verdict.SEND:
            return None
        if verdict is Verdict.INVALID_TRANSITION:
            return Ending(
                error=ErrorClass.INVALID_TRANSITION,
                detail=f"{job.provider.kind} rejects any status after "
                f"{last.status if last else '?'} (transition guard: enforce)",
                verdict=True,
            )
        detail = f"last delivered {last.event_id}" if last is not None else None
        return Ending(result=ResultOutcome(verdict.value), detail=detail, verdict=True)

    def before_send(self, job: Job) -> Ending | None:
        """The last word before a first attempt: warn of a transition the provider will
        reject (guard: warn), and end a dry run here."""
        assert self._delivery is not None
        if self._delivery.transition_guard == "warn":
            last = self._last(job)
            if would_be_rejected(job.provider.kind, last):
                log.warning(
                    "transition_will_be_rejected",
                    order_id=job.event.order_id,
                    account=job.provider.account,
                    last_status=last.status if last else None,
                )
        return DRY_RUN if self._delivery.dry_run else None

    def superseded(self, job: Job) -> Ending:
        """``job`` is superseded by a newer event of its order, unless the ledger already knows
        its delivery (re-read after a crash: its first outcome said delivered): then it is a
        ``skipped_duplicate``, so a second outcome never contradicts the first."""
        try:
            last = self._last(job)
        except Exception as exc:
            return internal(exc, "ledger", self._scrubber)
        if last is None or self._judge(job, last, None, "off") is not Verdict.DUPLICATE:
            return SUPERSEDED
        detail = f"last delivered {last.event_id}"  # as the verdict of a lane's head says
        return Ending(result=ResultOutcome.SKIPPED_DUPLICATE, detail=detail, verdict=True)

    @staticmethod
    def _judge(
        job: Job, last: Delivery | None, max_age: timedelta | None, guard: GuardMode
    ) -> Verdict:
        return judge(
            job.event, last, provider_kind=job.provider.kind, now=datetime.now(UTC),
            max_age=max_age, guard=guard,
        )  # fmt: skip

    @staticmethod
    def _last(job: Job) -> Delivery | None:
        ledger = job.state.ledger
        return ledger.last(job.event.order_id, job.lane[1]) if ledger is not None else None
