"""What the engine holds per record and per partition: jobs, partition state, and the count of
buffered records and bytes that backpressure reads. Plain state; no scheduling, no I/O."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from connector.core.backpressure import BufferLimits, BufferState, PartitionLoad

if TYPE_CHECKING:
    import httpx

    from connector.config import LimitSettings
    from connector.contract.events import OrderStatusChanged
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

    def activate(self) -> None:
        self.active += 1
        self.idle.clear()

    def deactivate(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.idle.set()

    def uncommitted(self) -> int:
        """Records taken in since the commit point: what a crash would make us redo."""
        last, point = self.tracker.last_tracked, self.tracker.commit_point
        if last is None or point is None:
            return 0
        return last + 1 - point


@dataclass(eq=False, slots=True)
class Job:
    """One decoded, routed event with its built request, from intake until its outcome."""

    record: ConsumedRecord
    event: OrderStatusChanged
    provider: Provider
    request: httpx.Request
    template: TemplateKey | None  # the WhatsApp template the request uses, if any
    lane: LaneKey
    state: PartitionState
    consumed_at: float
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
    record: ConsumedRecord,
    state: PartitionState,
    event: OrderStatusChanged,
    provider: Provider,
    built: BuiltRequest,
) -> Job:
    """The job of a built request; the request gets ``X-Request-Id`` and ``traceparent``."""
    request = built.request
    request.headers["X-Request-Id"] = event.event_id
    if event.traceparent:
        request.headers["traceparent"] = event.traceparent
    return Job(
        record=record,
        event=event,
        provider=provider,
        request=request,
        template=built.template,
        lane=(record.partition, provider.target_key(event)),
        state=state,
        consumed_at=time.monotonic(),
    )


@dataclass(slots=True)
class Buffers:
    """Records taken in whose outcome is not acknowledged yet, in total and per partition."""

    records: int = 0
    bytes: int = 0

    def take(self, state: PartitionState, offset: int, size: int) -> None:
        state.sizes[offset] = size
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
        state.buffered_bytes = 0
