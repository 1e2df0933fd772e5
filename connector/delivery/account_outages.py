"""Account outage parking: the breaker's admission for a job about to send, and parking on the
account's outage hold (one mechanism with account stops and template holds, ``holds``) until a
probe's success lifts it. Decides nothing about retries; the engine calls it around a send.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from connector.core.breaker import Admission
from connector.delivery.flow import Flow
from connector.delivery.holds import Hold, Holds
from connector.delivery.jobs import Job

log = structlog.get_logger("connector.delivery.account_outages")


@dataclass(slots=True, eq=False)
class AccountOutages:
    """Parks and probes the jobs of accounts whose breaker is open."""

    flow: Flow
    holds: Holds

    def admitted(self, job: Job) -> bool:
        """Ask the account's breaker; park ``job`` (front: it was at its lane's head already)
        while the account is in outage, unless it is the one probe."""
        breaker = self.flow.breakers[job.provider.account]
        admission = breaker.admit(time.monotonic())
        if admission is Admission.GO:
            return True
        if admission is Admission.PROBE:
            job.outage_probe = True
            log.info("account_outage_probe", account=job.provider.account,
                     order_id=job.event.order_id)  # fmt: skip
            return True
        self.park(job)
        return False

    def hold_of(self, job: Job) -> Hold:
        """The account's outage hold (entered now if it is not yet), probing when due."""
        breaker = self.flow.breakers[job.provider.account]
        due = breaker.next_probe_at
        probe_in = breaker.probe_interval_s if due is None else due - time.monotonic()
        return self.holds.enter_outage(job.provider.account, job.provider.kind, probe_in)

    def park(self, job: Job, *, failed_probe: bool = False) -> None:
        """Park ``job`` on its account's outage hold. A job whose probe failed goes to the back,
        so the next probe is another order's event (per-order order is kept by the lanes: only
        lane heads park); any other job goes to the front (it was at its lane's head)."""
        hold = self.hold_of(job)
        job.probing = tuple(h for h in job.probing if h is not hold)
        job.parked_at = time.monotonic()
        self.holds.park(hold, job, front=not failed_probe)

    def probe_abandoned(self, job: Job) -> None:
        """The probe's job went away unanswered (its partition was released): probe again."""
        job.outage_probe = False
        account = job.provider.account
        self.flow.breakers[account].probe_abandoned(time.monotonic())
        hold = self.holds.outages.get(account)
        if hold is not None:
            hold.probe_in_s = 0.0
            self.holds.rearm(hold)
