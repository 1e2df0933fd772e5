"""What the engine holds per record and per partition: jobs, partition state, and the count of
buffered records and bytes that backpressure reads. Plain state; no scheduling, no I/O."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from connector.core.backpressure import BufferLimits, BufferState, PartitionLoad

if TYPE_CHECKING:
    from connector.config import LimitSettings
    from connector.contract.events import OrderStatusChanged
    from connector.contract.outbound import PlainRequest
    from connector.core.ledger import PartitionLedger
    from connector.core.ordering import OffsetTracker
    from connector.delivery.holds import Hold
    from connector.errors import RetryableDeliveryError
    from connector.kafka.consumer import TP, ConsumedRecord
    from connector.providers.base import BuiltRequest, Provider, TemplateKey

LaneKey = tuple[int, str]  # (input partition, provider target key)


@dataclass(eq=False, slots=True)
class PartitionState:
    """One assigned partition: its offsets, its buffered records and the tasks working on it."""

    tp: TP
    tracker: OffsetTracker
    buffered_bytes: int = 0
    draining: bool = False
    active: int = 0  # jobs executing a request or awaiting their outcome's ack
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    sizes: dict[int, int] = field(default_factory=dict)  # offset -> value size while buffered
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    dropped: bool = False
    ledger: PartitionLedger | None = None
    held: list[ConsumedRecord] | None = None  # records that arrived while the ledger loaded
    # (offset, monotonic time taken in), oldest first; entries below the commit point are
    # dropped lazily by ``progress``.
    taken: deque[tuple[int, float]] = field(default_factory=deque)
    point: int | None = None  # the commit point ``progress`` saw last, and since when
    point_since: float = field(default_factory=time.monotonic)

    def activate(self) -> None:
        self.active += 1
        self.idle.clear()

    def deactivate(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.idle.set()

    def progress(self, now: float) -> PartitionProgress:
        """How old its oldest unfinished record is, and for how long its commit point has not
        moved while records wait (both 0 when nothing waits)."""
        tracker = self.tracker
        point = tracker.commit_point
        if point != self.point or not tracker.outstanding:  # nothing waits: the clock restarts
            self.point, self.point_since = point, now
        if point is None:
            return PartitionProgress(0.0, 0.0)
        self.forget_taken_below(point)
        if not tracker.outstanding:
            return PartitionProgress(0.0, 0.0)
        oldest = now - self.taken[0][1] if self.taken else 0.0
        return PartitionProgress(max(0.0, oldest), max(0.0, now - self.point_since))

    def forget_taken_below(self, point: int) -> None:
        taken = self.taken
        while taken and taken[0][0] < point:
            taken.popleft()

    def uncommitted(self) -> int:
        """Records taken in since the commit point: what a crash would make us redo."""
        last, point = self.tracker.last_tracked, self.tracker.commit_point
        if last is None or point is None:
            return 0
        return last + 1 - point


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """``oldest_pending_s``: age of the oldest record taken in whose outcome is not
    acknowledged; ``point_stalled_s``: how long the commit point has stood still meanwhile."""

    oldest_pending_s: float
    point_stalled_s: float


@dataclass(eq=False, slots=True)
class Job:
    """One decoded, routed event from intake until its outcome. Its request is built when the
    job first runs (``Screening.prepare``; at intake where the account coalesces), so a
    buffered, superseded or skipped record never holds one."""

    record: ConsumedRecord
    event: OrderStatusChanged
    provider: Provider
    lane: LaneKey
    state: PartitionState
    consumed_at: float
    request: PlainRequest | None = None  # None until built
    template: TemplateKey | None = None  # the WhatsApp template the request uses, if any
    attempts: int = 0
    first_attempt_at: datetime | None = None
    first_attempt_mono: float | None = None
    timer: asyncio.TimerHandle | None = None
    probing: tuple[Hold, ...] = ()  # the holds this job was sent to test
    stage: str = "intake"  # where it is (named in an internal_error record if that fails)
    failure: str | None = None  # what made the last attempt fail (timeout, reset, 5xx, ...)
    last_error: RetryableDeliveryError | None = None  # the last attempt's failure, no answer
    outage_probe: bool = False  # this attempt is the one probe of its account's outage
    parked_at: float | None = None  # parked in an outage since (monotonic)
    paused_s: float = 0.0  # time parked in outages: it does not count against the budget
    pair_ready_at: float | None = None  # its pair-limit reservation (monotonic), if waiting
    rate_taken_at: float = 0.0  # when its account's rate let it go (monotonic)


def new_job(
    record: ConsumedRecord, state: PartitionState, event: OrderStatusChanged, provider: Provider
) -> Job:
    """The job of a routed event, its request not built yet."""
    return Job(
        record=record,
        event=event,
        provider=provider,
        lane=(record.partition, provider.target_key(event)),
        state=state,
        consumed_at=time.monotonic(),
    )


def set_request(job: Job, built: BuiltRequest) -> None:
    """Give ``job`` its built request, with ``X-Request-Id`` and ``traceparent``."""
    event = job.event
    job.request = (
        built.request.with_headers(
            ("X-Request-Id", event.event_id), ("traceparent", event.traceparent)
        )
        if event.traceparent
        else built.request.with_headers(("X-Request-Id", event.event_id))
    )
    job.template = built.template


@dataclass(slots=True)
class Buffers:
    """Records taken in whose outcome is not acknowledged yet, in total and per partition."""

    records: int = 0
    bytes: int = 0

    def take(self, state: PartitionState, offset: int, size: int) -> None:
        state.sizes[offset] = size
        state.taken.append((offset, time.monotonic()))
        if not len(state.taken) & 0xFFF and (point := state.tracker.commit_point) is not None:
            state.forget_taken_below(point)  # bounded even when nobody asks for progress
        state.buffered_bytes += size
        self.records += 1
        self.bytes += size

    def done(self, state: PartitionState, offset: int) -> None:
        """The outcome of ``offset`` is durable: the record is done (unless the partition was
        released meanwhile: its next owner re-reads it)."""
        if state.dropped:
            return
        self.release(state, offset)
        state.tracker.done(offset)

    def release(self, state: PartitionState, offset: int) -> None:
        size = state.sizes.pop(offset, None)
        if size is None:
            return
        state.buffered_bytes -= size
        self.bytes -= size
        self.records -= 1

    def state(
        self, live: list[PartitionState], paused: set[TP], limits: LimitSettings
    ) -> BufferState[TP]:
        """What backpressure's ``plan`` reads, for the ``live`` (not draining) partitions."""
        loads = [
            PartitionLoad(
                s.tp, s.tracker.outstanding, s.buffered_bytes, s.uncommitted(), s.tp in paused
            )
            for s in live
        ]
        bounds = BufferLimits(
            limits.max_buffered_records, limits.max_buffered_bytes, limits.max_uncommitted_records
        )
        return BufferState(loads, self.records, self.bytes, bounds)

    def drop(self, state: PartitionState) -> None:
        """Forget everything ``state`` still buffers (its partition was released)."""
        self.records -= len(state.sizes)
        self.bytes -= state.buffered_bytes
        state.sizes.clear()
        state.taken.clear()
        state.buffered_bytes = 0
