"""Who may send next: global and per-account in-flight slots, accounts served in turn. Jobs
wait here as deque entries, never as tasks. Send rates live in ``connector.delivery.flow``."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.delivery.jobs import Job
    from connector.providers.base import Provider


class Slots:
    """Slots instead of semaphores: a job becomes a task only when a slot is free, so a backlog
    of ready orders costs a deque entry each, not a waiting task (CPU, memory)."""

    def __init__(self, max_in_flight: int, providers: Mapping[str, Provider]) -> None:
        self._free = max_in_flight
        self._account_free = {name: p.settings.max_in_flight for name, p in providers.items()}
        self._ready: dict[str, deque[Job]] = {name: deque() for name in providers}
        self._rotation: deque[str] = deque()  # accounts with ready jobs and a free slot
        self._in_rotation: set[str] = set()

    def queue(self, job: Job) -> None:
        """``job`` (its lane's head) waits for a slot of its account."""
        account = job.provider.account
        self._ready[account].append(job)
        if self._account_free[account] > 0 and account not in self._in_rotation:
            self._rotation.append(account)
            self._in_rotation.add(account)

    def take(self) -> Job | None:
        """The next ready job, accounts in turn, with a global and an account slot taken for
        it; None when no slot is free or nothing is ready. Jobs of draining partitions drop."""
        rotation = self._rotation
        while self._free > 0 and rotation:
            account = rotation.popleft()
            self._in_rotation.discard(account)
            queue = self._ready[account]
            job = None
            while queue:
                candidate = queue.popleft()
                if not candidate.state.draining:
                    job = candidate
                    break
            if job is None:
                continue
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
        if self._ready[account] and account not in self._in_rotation:
            self._rotation.append(account)
            self._in_rotation.add(account)
