"""The commit loop: every ``commit_interval_s`` the commit point of each partition whose point
moved, through the consumer (plain) or with the transaction that holds the outcomes below it.
A failed transaction is fatal (``on_fatal``); it never moves offsets itself otherwise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

import structlog

from connector.kafka.consumer import CommitRejectedError

if TYPE_CHECKING:
    from connector.delivery.jobs import PartitionState
    from connector.delivery.ports import (
        EngineObserver,
        EngineStats,
        RecordSource,
        TransactionCommitter,
    )
    from connector.kafka.consumer import TP

log = structlog.get_logger("connector.delivery.commits")


@dataclass(slots=True, eq=False)
class Committer:
    """Commits commit points. ``failed()`` says a fatal error happened: in transactional mode
    nothing is committed after it (offsets past outcomes of a failed transaction)."""

    source: RecordSource
    transactions: TransactionCommitter | None
    observer: EngineObserver
    stats: EngineStats
    _: KW_ONLY
    failed: Callable[[], bool]
    on_fatal: Callable[[BaseException], None]

    async def run(self, interval_s: float, states: dict[TP, PartitionState]) -> None:
        """Commit every ``interval_s`` until cancelled (``states`` is the engine's live map)."""
        while True:
            await asyncio.sleep(interval_s)
            await self.commit(dict(states))

    async def commit(self, states: dict[TP, PartitionState]) -> None:
        offsets: dict[TP, int] = {}
        for tp, state in states.items():
            point = state.tracker.commit_point
            if point is not None and state.tracker.needs_commit:
                offsets[tp] = point
        started = time.monotonic()
        if self.transactions is not None:
            if self.failed():
                return  # never commit offsets past outcomes of a failed transaction
            try:
                await self.transactions.commit_transaction(offsets)
            except Exception as exc:
                log.exception("transaction_failed", error=type(exc).__name__)
                self.on_fatal(exc)
                return
        elif not offsets:
            return
        else:
            try:
                await self.source.commit(offsets)
            except CommitRejectedError as exc:
                log.warning("commit_rejected", reason=str(exc))
                return
        if not offsets:
            return
        self.observer.commit_latency(time.monotonic() - started)
        self.stats.commits += 1
        for tp, point in offsets.items():
            states[tp].tracker.advance_committed(point)

    def discard_held(self, partitions: set[TP]) -> None:
        """Revoked partitions: drop outcomes a transactional sink still holds for them."""
        if self.transactions is not None:
            self.transactions.discard_held(partitions)
