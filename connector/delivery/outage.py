"""The publish outage gate: while outcomes have waited for the broker's acknowledgement longer
than ``limits.publish_outage_s``, intake pauses and no provider request starts (a request whose
outcome cannot be recorded is a customer message with no record of it). It reads the outcomes'
``PublishWatch`` and pauses and resumes partitions through the source; it never sends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from connector.delivery.outcomes import PublishWatch
    from connector.delivery.ports import RecordSource
    from connector.kafka.consumer import TP

log = structlog.get_logger("connector.delivery.outage")


class PublishGate:
    """Open while publishing works; ``check`` (each poll) closes and reopens it."""

    def __init__(self, watch: PublishWatch, bound_s: float, source: RecordSource) -> None:
        self._watch = watch
        self._bound_s = bound_s
        self._source = source
        self._open = asyncio.Event()
        self._open.set()
        self._paused: set[TP] = set()  # what the outage paused (to resume it after)

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    @property
    def outage_s(self) -> float | None:
        """How long outcomes have waited with no ack, while the gate is closed; else None."""
        return None if self.is_open else self._watch.stalled_s(time.monotonic())

    def check(self, live: set[TP], held: set[TP]) -> None:
        """Close (pausing ``live``) past the bound; reopen on the next ack, resuming what the
        outage paused except ``held`` (partitions backpressure still holds)."""
        stalled = self._watch.stalled_s(time.monotonic())
        if stalled >= self._bound_s:
            if self.is_open:
                self._open.clear()
                self._paused = set(live)
                self._source.pause(live)
                log.error(
                    "publish_outage",
                    stalled_s=round(stalled, 1),
                    waiting_outcomes=self._watch.pending,
                )
        elif not self.is_open:
            self._open.set()
            self._source.resume((self._paused & live) - held)
            self._paused = set()
            log.info("publish_recovered")

    async def wait(self, poll_s: float = 0.5) -> None:
        """Return once the gate is open, or after ``poll_s`` at most (so the caller can see
        that its partition was released meanwhile)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._open.wait(), poll_s)
