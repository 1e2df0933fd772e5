"""The one parking mechanism for account stops and template holds (``delivery.holds.Holds``),
driven with stand-in jobs: what parks, what probes, what lifts a hold."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from connector.delivery.holds import Holds, Scope
from connector.providers.base import OutcomeKind, ProviderOutcome

CONFIG = ProviderOutcome(OutcomeKind.CONFIGURATION, http_status=401, detail="auth")
PAUSED = ProviderOutcome(OutcomeKind.PERMANENT, error_code="132015", pause_template=True)
OK = ProviderOutcome(OutcomeKind.ACCEPTED, message_id="m")


@dataclass
class StubProvider:
    account: str = "acct"


@dataclass
class StubState:
    draining: bool = False


@dataclass(eq=False)
class StubJob:
    """The attributes of ``delivery.jobs.Job`` that ``Holds`` reads."""

    name: str
    template: tuple[str, str | None] | None = None
    provider: StubProvider = field(default_factory=StubProvider)
    state: StubState = field(default_factory=StubState)
    probing: tuple[Any, ...] = ()


def make(probe_s: float = 0.02) -> tuple[Holds, list[StubJob]]:
    started: list[StubJob] = []
    holds = Holds(probe_s, probe_s, start=started.append)
    return holds, started


async def wait_for(predicate: Any) -> None:
    with anyio.fail_after(2):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("scope", list(Scope))
async def test_account_and_template_holds_park_and_probe_the_same_way(scope: Scope) -> None:
    holds, started = make()
    first, second = StubJob("a", ("tpl", "pt_BR")), StubJob("b", ("tpl", "pt_BR"))
    if scope is Scope.ACCOUNT:
        hold, answer = holds.stop_account("acct", "fake", "401: auth"), CONFIG
    else:
        hold, answer = holds.hold_template("tpl", None, "paused"), PAUSED
    assert holds.blocking(first) is hold
    holds.park(hold, first)
    holds.park(hold, second)
    await wait_for(lambda: started)
    assert started == [first]  # one probe, the first parked job
    assert holds.blocking(first) is None  # the probe may go
    holds.answered(first, answer)  # confirmed: the hold stays
    assert holds.accounts if scope is Scope.ACCOUNT else holds.templates
    holds.park(hold, first, front=True)
    await wait_for(lambda: len(started) == 2)
    assert started[1] is first  # probed again, still in lane order
    holds.answered(first, OK)  # disproved: lifted, all restart
    assert not holds.accounts
    assert not holds.templates
    assert started[2:] == [second]


async def test_a_probe_timer_with_nothing_parked_lifts_the_hold() -> None:
    holds, started = make()
    job = StubJob("a")
    hold = holds.stop_account("acct", "fake", "401: auth")
    holds.park(hold, job)
    job.state.draining = True  # its partition was revoked meanwhile
    await wait_for(lambda: not holds.accounts)
    assert started == []


async def test_a_language_release_lifts_its_own_and_the_every_language_hold() -> None:
    holds, _ = make(probe_s=60)
    holds.hold_template("tpl", None, "paused")
    holds.hold_template("tpl", "pt_BR", "paused")
    holds.hold_template("tpl", "en_US", "paused")
    holds.release_template("tpl", "pt_BR", reason="APPROVED")
    assert set(holds.templates) == {("tpl", "en_US")}
