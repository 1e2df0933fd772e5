"""Parking: sends wait while their account is stopped (a configuration answer), in outage (its
breaker is open) or their template is held (paused or disabled). One mechanism for all three: a
hold parks jobs in lane order, a timer sends one of them as a probe, and an answer that does not
confirm the hold lifts it (an outage: the engine lifts it when the breaker closes). It decides
nothing about outcomes and never publishes."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

from connector.providers.base import OutcomeKind, ProviderOutcome

if TYPE_CHECKING:
    from connector.delivery.jobs import Job, PartitionState
    from connector.providers.base import TemplateKey

log = structlog.get_logger("connector.delivery.holds")


class Scope(StrEnum):
    ACCOUNT = "account"
    OUTAGE = "outage"  # the account's breaker is open (connector.core.breaker)
    TEMPLATE = "template"


@dataclass(eq=False, slots=True)
class Hold:
    scope: Scope
    name: str  # the account, or the template
    language: str | None  # a template's language (None: every language); None for accounts
    reason: str
    parked: deque[Job] = field(default_factory=deque)
    probe_timer: asyncio.TimerHandle | None = None
    probe_in_s: float | None = None  # the next probe's delay (outage: the breaker's interval)

    def confirmed_by(self, outcome: ProviderOutcome) -> bool:
        """Whether a probe's answer says the cause of the hold persists (an outage's probe is
        judged by the account's breaker, never here)."""
        if self.scope is Scope.ACCOUNT:
            return outcome.kind is OutcomeKind.CONFIGURATION
        if self.scope is Scope.OUTAGE:
            return True
        return outcome.pause_template


def reason_of(outcome: ProviderOutcome) -> str:
    return f"{outcome.error_code or outcome.http_status}: {outcome.detail or ''}".strip()


class Holds:
    """Account stops and template holds. ``start`` puts a job back in line for a slot.

    Rules, the same for both scopes: parking arms the scope's probe timer when none is armed;
    the timer sends the first parked job as a probe; an answer to the probe that does not
    confirm the hold lifts it and restarts every parked job in lane order; a probe timer that
    finds nothing parked lifts the hold (the next send tests it). Only a probe lifts an account
    stop: a success of a request already in flight when the stop happened proves nothing.
    """

    def __init__(
        self, account_probe_s: float, template_probe_s: float, *, start: Callable[[Job], None]
    ) -> None:
        self.accounts: dict[str, Hold] = {}
        self.outages: dict[str, Hold] = {}
        self.templates: dict[TemplateKey, Hold] = {}
        self._probe_s = {
            Scope.ACCOUNT: account_probe_s,
            Scope.OUTAGE: account_probe_s,  # unused: an outage hold carries its probe_in_s
            Scope.TEMPLATE: template_probe_s,
        }
        self._start = start

    def blocking(self, job: Job) -> Hold | None:
        """The hold ``job`` must wait for, unless it is that hold's probe."""
        account = job.provider.account
        for holds in (self.accounts, self.outages):
            hold = holds.get(account)
            if hold is not None and hold not in job.probing:
                return hold
        key = job.template
        if self.templates and key is not None:
            hold = self.templates.get(key) or self.templates.get((key[0], None))
            if hold is not None and hold not in job.probing:
                return hold
        return None

    def stop_account(self, account: str, provider_kind: str, reason: str) -> Hold:
        hold = self.accounts.get(account)
        if hold is None:
            hold = self.accounts[account] = Hold(Scope.ACCOUNT, account, None, reason)
            log.error("account_stopped", account=account, provider=provider_kind, reason=reason)
        return hold

    def enter_outage(self, account: str, provider_kind: str, probe_in_s: float) -> Hold:
        """The account's breaker is open: its sends park until ``lift_outage``; the first
        parked job probes after ``probe_in_s``."""
        hold = self.outages.get(account)
        if hold is None:
            hold = self.outages[account] = Hold(Scope.OUTAGE, account, None, "outage")
            log.warning("account_outage_started", account=account, provider=provider_kind)
        hold.probe_in_s = max(0.0, probe_in_s)
        return hold

    def lift_outage(self, account: str, reason: str) -> None:
        """The breaker closed: every parked job of the account restarts, in lane order."""
        hold = self.outages.get(account)
        if hold is not None:
            self._lift(hold, reason)

    def rearm(self, hold: Hold) -> None:
        """Arm ``hold``'s probe timer if none is armed (its probe went away unanswered)."""
        if hold.probe_timer is None:
            hold.probe_timer = asyncio.get_running_loop().call_later(
                hold.probe_in_s or 0.0, self._probe, hold
            )

    def hold_template(self, name: str, language: str | None, reason: str) -> Hold:
        key = (name, language)
        hold = self.templates.get(key)
        if hold is None:
            hold = self.templates[key] = Hold(Scope.TEMPLATE, name, language, reason)
            log.warning("template_paused", template=name, language=language, reason=reason)
        return hold

    def park(self, hold: Hold, job: Job, *, front: bool = False) -> None:
        """Park ``job`` on ``hold``; ``front`` for a job that was at its lane's head already."""
        if front:
            hold.parked.appendleft(job)
        else:
            hold.parked.append(job)
        if hold.probe_timer is None:
            delay = hold.probe_in_s if hold.probe_in_s is not None else self._probe_s[hold.scope]
            hold.probe_timer = asyncio.get_running_loop().call_later(delay, self._probe, hold)

    def answered(self, job: Job, outcome: ProviderOutcome) -> None:
        """A provider answered ``job``: lift every hold it probed that the answer disproves."""
        probing, job.probing = job.probing, ()
        for hold in probing:
            if hold.confirmed_by(outcome):
                continue
            if hold.scope is Scope.ACCOUNT:
                self._lift(hold, "probe answered")
            elif job.template is not None:
                self.release_template(*job.template, reason="probe answered")

    def release_template(self, name: str, language: str | None, *, reason: str) -> None:
        """``language`` None lifts every language of ``name``; a language lifts its own hold
        and an every-language hold."""
        keys = [
            k
            for k in self.templates
            if k[0] == name and (language is None or k[1] in (None, language))
        ]
        for key in keys:
            self._lift(self.templates[key], reason)

    def abandon(self, states: set[PartitionState]) -> None:
        """Forget parked jobs of draining partitions (their next owner redoes them)."""
        for hold in (*self.accounts.values(), *self.outages.values(), *self.templates.values()):
            hold.parked = deque(j for j in hold.parked if j.state not in states)
            if hold.parked:
                self.rearm(hold)  # its probe may have been a job of a draining partition

    def _probe(self, hold: Hold) -> None:
        hold.probe_timer = None
        while hold.parked:
            job = hold.parked.popleft()
            if not job.state.draining:
                job.probing = (*job.probing, hold)
                self._start(job)
                return
        self._lift(hold, "nothing parked to probe with")

    def _lift(self, hold: Hold, reason: str) -> None:
        if hold.scope is Scope.ACCOUNT:
            if self.accounts.get(hold.name) is not hold:
                return
            del self.accounts[hold.name]
            log.info("account_resumed", account=hold.name, reason=reason)
        elif hold.scope is Scope.OUTAGE:
            if self.outages.get(hold.name) is not hold:
                return
            del self.outages[hold.name]
            log.info("account_outage_ended", account=hold.name, reason=reason,
                     parked=len(hold.parked))  # fmt: skip
        else:
            key = (hold.name, hold.language)
            if self.templates.get(key) is not hold:
                return
            del self.templates[key]
            log.info(
                "template_resumed", template=hold.name, language=hold.language, reason=reason,
                parked=len(hold.parked),
            )  # fmt: skip
        if hold.probe_timer is not None:
            hold.probe_timer.cancel()
        for job in hold.parked:
            self._start(job)
