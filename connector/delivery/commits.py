"""The commit loop: every ``commit_interval_s`` the commit point of each partition whose point
moved, through the consumer (plain) or with the transaction that holds the outcomes below it.
A failed transaction is fatal (``on_fatal``); it never moves offsets itself otherwise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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


class Committer:
    """Commits commit points. ``failed()`` says a fatal error happened: in transactional mode
    nothing is committed after it (offsets past outcomes of a failed transaction)."""

    def __init__(
        self,
        source: RecordSource,
        transactions: TransactionCommitter | None,
        observer: EngineObserver,
        stats: EngineStats,
        *,
        failed: Callable[[], bool],
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self._source = source
        self._transactions = transactions
        self._obs = observer
        self._stats = stats
        self._failed = failed
        self._on_fatal = on_fatal

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
        if self._transactions is not None:
            if self._failed():
                return  # never commit offsets past outcomes of a failed transaction
            try:
                await self._transactions.commit_transaction(offsets)
            except Exception as exc:
                log.exception("transaction_failed", error=type(exc).__name__)
                self._on_fatal(exc)
                return
        elif not offsets:
            return
        else:
            try:
                await self._source.commit(offsets)
            except CommitRejectedError as exc:
                log.warning("commit_rejected", reason=str(exc))
                return
        if not offsets:
            return
        self._obs.commit_latency(time.monotonic() - started)
        self._stats.commits += 1
        for tp, point in offsets.items():
            states[tp].tracker.advance_committed(point)

    def discard_held(self, partitions: set[TP]) -> None:
        """Revoked partitions: drop outcomes a transactional sink still holds for them."""
        if self._transactions is not None:
            self._transactions.discard_held(partitions)
