"""Who may send next: global and per-account in-flight slots, accounts served in turn, each
account at its send rate. Jobs wait here as deque entries, never as tasks. The rates themselves
live in ``connector.delivery.flow``; here an account whose rate says "not yet" leaves the
rotation until a loop timer brings it back."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.delivery.jobs import Job
    from connector.providers.base import Provider


class Slots:
    """Slots instead of semaphores: a job becomes a task only when a slot is free, so a backlog
    of ready orders costs a deque entry each, not a waiting task (CPU, memory)."""

    def __init__(
        self,
        max_in_flight: int,
        providers: Mapping[str, Provider],
        *,
        pace: Callable[[str, float], float] | None = None,
        wake: Callable[[], None] | None = None,
        clock: Callable[[], float] | None = None,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        """``pace(account, now)`` takes a send of the account's rate (0.0) or says how long
        until one is free; ``wake`` is called when a paced account may send again;
        ``on_wait(account, seconds)`` when one starts waiting (metrics)."""
        self._free = max_in_flight
        self._account_free = {name: p.settings.max_in_flight for name, p in providers.items()}
        self._ready: dict[str, deque[Job]] = {name: deque() for name in providers}
        self._rotation: deque[str] = deque()  # accounts with ready jobs and a free slot
        self._in_rotation: set[str] = set()
        self._pace = pace
        self._wake = wake
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._paced: dict[str, asyncio.TimerHandle] = {}  # accounts waiting for their rate
        self._on_wait = on_wait

    def queue(self, job: Job) -> None:
        """``job`` (its lane's head) waits for a slot of its account."""
        account = job.provider.account
        self._ready[account].append(job)
        self._rotate(account)

    def take(self) -> Job | None:
        """The next ready job, accounts in turn, with a global and an account slot taken for
        it; None when no slot is free or nothing is ready. Jobs of draining partitions drop."""
        rotation = self._rotation
        while self._free > 0 and rotation:
            account = rotation.popleft()
            self._in_rotation.discard(account)
            queue = self._ready[account]
            while queue and queue[0].state.draining:
                queue.popleft()
            if not queue:
                continue
            if self._pace is not None:
                wait = self._pace(account, self._clock())
                if wait > 0:
                    self._hold_back(account, wait)
                    continue
            job = queue.popleft()
            self._free -= 1
            self._account_free[account] -= 1
            if queue and self._account_free[account] > 0:
                rotation.append(account)
                self._in_rotation.add(account)
            return job
        return None

    def release(self, account: str) -> None:
        self._free += 1
        self._account_free[account] += 1
        self._rotate(account)

    def _rotate(self, account: str) -> None:
        if (
            self._ready[account]
            and self._account_free[account] > 0
            and account not in self._in_rotation
            and account not in self._paced
        ):
            self._rotation.append(account)
            self._in_rotation.add(account)

    def _hold_back(self, account: str, wait: float) -> None:
        """The account's rate says wait: out of the rotation until a timer brings it back."""
        if self._on_wait is not None:
            self._on_wait(account, wait)
        self._paced[account] = asyncio.get_running_loop().call_later(wait, self._resume, account)

    def _resume(self, account: str) -> None:
        self._paced.pop(account, None)
        self._rotate(account)
        if self._wake is not None:
            self._wake()
