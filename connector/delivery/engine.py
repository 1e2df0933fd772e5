"""The asyncio dispatch engine around the pure ordering core.

It owns intake (decode, route, build), per-order lanes, bounded concurrency, retries that block
only their own lane, account stops, backpressure (pause/resume), publishing outcomes and the
commit watermark. It never imports aiokafka: Kafka arrives through the small protocols below.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import orjson
import structlog

from connector.contract.events import OrderStatusChanged, decode_event
from connector.contract.records import (
    ErrorRecord,
    ResultOutcome,
    ResultRecord,
    SourceCoordinates,
    encode_bytes,
    original_headers,
)
from connector.core.ledger import PartitionLedger, Verdict, delivery_of, judge, would_be_rejected
from connector.core.ordering import LaneTable, OffsetTracker
from connector.core.ratelimit import TokenBucket
from connector.core.retry import RetryPolicy
from connector.errors import ErrorClass, InvalidEventError, RetryableDeliveryError
from connector.kafka.consumer import TP, CommitRejectedError, ConsumedRecord
from connector.providers.base import OutcomeKind, Provider, ProviderOutcome

if TYPE_CHECKING:
    import httpx

    from connector.config import DeliverySettings, LimitSettings, RoutingSettings, TopicNames
    from connector.http.sender import HttpSender

log = structlog.get_logger("connector.delivery.engine")

LaneKey = tuple[int, str]  # (input partition, provider target key)
TemplateKey = tuple[str, str | None]  # (template name, language; None = every language)

_RESULT_OF_KIND = {
    OutcomeKind.ACCEPTED: ResultOutcome.ACCEPTED,
    OutcomeKind.DELIVERED: ResultOutcome.DELIVERED,
    OutcomeKind.ALREADY_DONE: ResultOutcome.ALREADY_DONE,
    OutcomeKind.SKIPPED: ResultOutcome.SKIPPED_MAPPING,
}


class RecordSource(Protocol):
    """What the engine needs from the consumer."""

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[ConsumedRecord]: ...
    def assignment(self) -> set[TP]: ...
    def pause(self, partitions: Iterable[TP]) -> None: ...
    def resume(self, partitions: Iterable[TP]) -> None: ...
    async def commit(self, offsets: dict[TP, int]) -> None: ...


class RecordSink(Protocol):
    """What the engine needs from the producer: ``send`` returns the broker-ack future."""

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        source: tuple[TP, int] | None = None,
    ) -> asyncio.Future[object]: ...

    async def flush(self) -> None: ...


class TransactionCommitter(Protocol):
    """A transactional sink: everything sent since the last call, plus ``offsets``, is
    committed atomically. Raises when the transaction failed (nothing of it is visible)."""

    async def commit_transaction(self, offsets: dict[TP, int]) -> None: ...

    def discard_held(self, partitions: set[TP]) -> None:
        """Forget outcomes held back for ``partitions`` (revoked: their next owner redoes them)."""
        ...


LedgerLoader = Callable[[set[int]], Awaitable[dict[int, PartitionLedger]]]


class EngineObserver(Protocol):
    """Metrics hooks; every method must be cheap and must not raise."""

    def record_consumed(self, tp: TP) -> None: ...
    def outcome(self, provider: str, account: str, outcome: str) -> None: ...
    def retry(self, provider: str, account: str, rate_limited: bool) -> None: ...
    def rate_limit_wait(self, provider: str, account: str, seconds: float) -> None: ...
    def request_started(self, provider: str) -> None: ...
    def request_latency(self, provider: str, seconds: float) -> None: ...
    def commit_latency(self, seconds: float) -> None: ...
    def gauges(
        self,
        *,
        in_flight: int,
        open_lanes: int,
        buffered_records: int,
        buffered_bytes: int,
        paused_partitions: int,
    ) -> None: ...


class NullObserver:
    """An observer that ignores everything; subclass it to watch only what you need."""

    def record_consumed(self, tp: TP) -> None:
        pass

    def outcome(self, provider: str, account: str, outcome: str) -> None:
        pass

    def retry(self, provider: str, account: str, rate_limited: bool) -> None:
        pass

    def rate_limit_wait(self, provider: str, account: str, seconds: float) -> None:
        pass

    def request_started(self, provider: str) -> None:
        pass

    def request_latency(self, provider: str, seconds: float) -> None:
        pass

    def commit_latency(self, seconds: float) -> None:
        pass

    def gauges(
        self,
        *,
        in_flight: int,
        open_lanes: int,
        buffered_records: int,
        buffered_bytes: int,
        paused_partitions: int,
    ) -> None:
        pass


@dataclass(eq=False, slots=True)
class PartitionState:
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


@dataclass(eq=False, slots=True)
class Job:
    record: ConsumedRecord
    event: OrderStatusChanged
    provider: Provider
    request: httpx.Request
    lane: LaneKey
    state: PartitionState
    consumed_at: float
    attempts: int = 0
    first_attempt_at: datetime | None = None
    first_attempt_mono: float | None = None
    timer: asyncio.TimerHandle | None = None
    probe: bool = False
    template_probe: bool = False


@dataclass(slots=True)
class _StoppedAccount:
    reason: str
    parked: deque[Job] = field(default_factory=deque)
    probe_timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _TemplateHold:
    reason: str
    parked: deque[Job] = field(default_factory=deque)
    probe_timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class EngineStats:
    consumed: int = 0
    results: int = 0
    errors: int = 0
    sent_requests: int = 0
    retries: int = 0
    commits: int = 0


class Engine:
    """Consume, dispatch with per-order ordering, publish outcomes, commit the watermark."""

    def __init__(
        self,
        *,
        source: RecordSource,
        sink: RecordSink,
        sender: HttpSender,
        providers: Mapping[str, Provider],
        routing: RoutingSettings,
        topics: TopicNames,
        limits: LimitSettings,
        retry: RetryPolicy,
        observer: EngineObserver | None = None,
        rand: Callable[[], float] = random.random,
        delivery: DeliverySettings | None = None,
        ledger_loader: LedgerLoader | None = None,
        transactions: TransactionCommitter | None = None,
        on_accepted: Callable[[ResultRecord], Awaitable[None]] | None = None,
        ledger_sink: RecordSink | None = None,
    ) -> None:
        """``on_accepted`` is awaited before a result that names a provider message id is
        published (the app records the message-id correlation there); it must not raise."""
        self._source = source
        self._sink = sink
        self._ledger_sink = ledger_sink or sink
        self._sender = sender
        self._providers = providers
        self._routing = routing
        self._topics = topics
        self._limits = limits
        self._retry = retry
        self._obs: EngineObserver = observer or NullObserver()
        self._rand = rand
        self._states: dict[TP, PartitionState] = {}
        self._lanes: LaneTable[LaneKey, Job] = LaneTable()
        # Slots instead of semaphores: a job becomes a task only when a slot is free, so a
        # backlog of ready orders costs a deque entry each, not a waiting task (CPU, memory).
        self._free_slots = limits.max_in_flight
        self._account_free = {name: p.settings.max_in_flight for name, p in providers.items()}
        self._ready: dict[str, deque[Job]] = {name: deque() for name in providers}
        self._rotation: deque[str] = deque()  # accounts with ready jobs and a free slot
        self._in_rotation: set[str] = set()
        self._buckets: dict[str, TokenBucket] = {}
        now = time.monotonic()
        for name, p in providers.items():
            rate = p.settings.rate_per_second
            if rate:
                self._buckets[name] = TokenBucket(rate, burst=max(1.0, rate / 10), now=now)
        self._stopped: dict[str, _StoppedAccount] = {}
        self._held_templates: dict[TemplateKey, _TemplateHold] = {}
        self._on_accepted = on_accepted
        self._waiting_retry: set[Job] = set()
        self._paused: set[TP] = set()
        self._stopping = asyncio.Event()
        self._buffered_records = 0
        self._buffered_bytes = 0
        self._in_flight = 0
        self.stats = EngineStats()
        self._publish_failures = 0
        self._delivery = delivery
        self._ledger_loader = ledger_loader
        self._transactions = transactions
        self._max_age = (
            timedelta(seconds=delivery.max_event_age_s)
            if delivery is not None and delivery.max_event_age_s is not None
            else None
        )
        self.verdicts: dict[str, int] = {}  # replay outcomes by name (skipped, superseded, ...)
        self.failure: BaseException | None = None  # a fatal error (failed transaction)

    # ------------------------------------------------------------------ public surface

    @property
    def stopped_accounts(self) -> dict[str, str]:
        return {name: s.reason for name, s in self._stopped.items()}

    @property
    def held_templates(self) -> dict[TemplateKey, str]:
        """Templates whose sends are parked, with the reason."""
        return {key: hold.reason for key, hold in self._held_templates.items()}

    @property
    def assigned(self) -> set[TP]:
        return {tp for tp, s in self._states.items() if not s.draining}

    def backlog(self) -> dict[TP, int]:
        """Per assigned partition: records taken in (or held while its ledger loads) whose
        outcome is not acknowledged yet. Zero means every record returned so far is done."""
        return {
            tp: s.tracker.outstanding + len(s.held or ())
            for tp, s in self._states.items()
            if not s.draining
        }

    @property
    def commit_pending(self) -> bool:
        """Whether some assigned partition's commit point moved past its last commit."""
        return any(s.tracker.needs_commit for s in self._states.values() if not s.draining)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Poll until ``request_stop``; then drain in-flight work, commit and return."""
        committer = asyncio.create_task(self._commit_loop(), name="commit-loop")
        try:
            while not self._stopping.is_set():
                self._apply_backpressure()
                room = self._limits.max_buffered_records - self._buffered_records
                records = await self._source.getmany(
                    timeout_ms=100, max_records=max(1, min(self._limits.max_poll_records, room))
                )
                for record in records:
                    self._intake(record)
                self._obs.gauges(
                    in_flight=self._in_flight,
                    open_lanes=len(self._lanes),
                    buffered_records=self._buffered_records,
                    buffered_bytes=self._buffered_bytes,
                    paused_partitions=len(self._paused),
                )
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await self.drain(set(self._states), self._limits.drain_timeout_s)

    # ------------------------------------------------------------------ rebalance hooks

    async def on_assigned(self, assigned: set[TP]) -> None:
        for tp in assigned:
            state = PartitionState(tp, OffsetTracker(tp.partition))
            state.idle.set()
            self._states[tp] = state
        self._paused -= assigned
        log.info("partitions_assigned", partitions=sorted(f"{t}:{p}" for t, p in assigned))
        if self._ledger_loader is not None:
            await self._load_ledgers(assigned)

    async def _load_ledgers(self, assigned: set[TP]) -> None:
        """Restore the ledger of the assigned input partitions before any of their records is
        processed (the consumer may already fetch them: they are paused and held meanwhile)."""
        assert self._ledger_loader is not None
        mine = {tp for tp in assigned if tp.topic == self._topics.input}
        states = [self._states[tp] for tp in mine]
        for state in states:
            state.held = []
        self._source.pause(mine)
        try:
            ledgers = await self._ledger_loader({tp.partition for tp in mine})
        except Exception as exc:
            # Without the ledger a replay would message customers again: stop instead.
            log.exception("ledger_load_failed", error=type(exc).__name__)
            self.failure = exc
            self.request_stop()
            return  # the partitions stay paused with their records held; nothing is committed
        for state in states:
            held, state.held = state.held or [], None
            state.ledger = ledgers.get(state.tp.partition, PartitionLedger())
            for record in held:
                self._intake(record)
        self._source.resume(mine - self._paused)

    async def on_revoked(self, revoked: set[TP]) -> None:
        await self.drain(revoked, self._limits.drain_timeout_s)
        log.info("partitions_revoked", partitions=sorted(f"{t}:{p}" for t, p in revoked))

    async def drain(self, partitions: set[TP], timeout: float) -> None:
        """Stop intake for ``partitions``, let in-flight work finish (deadline), commit, drop."""
        states = [self._states[tp] for tp in partitions if tp in self._states]
        if not states:
            return
        for state in states:
            state.draining = True
        self._abandon_waiting(states)
        deadline = time.monotonic() + timeout
        for state in states:
            remaining = deadline - time.monotonic()
            if state.active and remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.idle.wait(), remaining)
        unfinished = sum(s.active for s in states)
        if unfinished:
            log.warning("drain_deadline_passed", abandoned_jobs=unfinished)
            for state in states:
                for task in list(state.tasks):
                    task.cancel()
        await self._commit({s.tp: s for s in states})
        if self._transactions is not None:
            self._transactions.discard_held({s.tp for s in states})
        drained = {s.tp.partition for s in states if s.tp.topic == self._topics.input}
        self._lanes.remove_where(lambda key: key[0] in drained)
        for state in states:
            state.dropped = True
            self._states.pop(state.tp, None)
            self._paused.discard(state.tp)
            self._buffered_records -= len(state.sizes)
            self._buffered_bytes -= state.buffered_bytes
            state.sizes.clear()
            state.buffered_bytes = 0

    def _abandon_waiting(self, states: list[PartitionState]) -> None:
        """Cancel retry timers and parked jobs of draining partitions (they re-run elsewhere)."""
        draining = {id(s) for s in states}
        for stopped in self._stopped.values():
            stopped.parked = deque(j for j in stopped.parked if id(j.state) not in draining)
        for hold in self._held_templates.values():
            hold.parked = deque(j for j in hold.parked if id(j.state) not in draining)
        # Jobs waiting on a retry timer are in flight in their lane but hold no task.
        for job in list(self._waiting_retry):
            if id(job.state) in draining and job.timer is not None:
                job.timer.cancel()
                job.timer = None
                self._waiting_retry.discard(job)

    # ------------------------------------------------------------------ intake

    def _intake(self, record: ConsumedRecord) -> None:
        state = self._states.get(TP(record.topic, record.partition))
        if state is None or state.draining:
            return  # a record of a partition we no longer own: the next owner reads it
        if state.held is not None:
            state.held.append(record)
            return
        state.tracker.track(record.offset)
        size = len(record.value) if record.value is not None else 0
        state.sizes[record.offset] = size
        state.buffered_bytes += size
        self._buffered_records += 1
        self._buffered_bytes += size
        self.stats.consumed += 1
        self._obs.record_consumed(state.tp)
        try:
            event = decode_event(record.value, record.headers)
            provider = self._route(event)
            built = provider.build_request(event)
        except InvalidEventError as exc:
            self._spawn_publish_error(state, record, None, None, exc.error_class, exc.reason)
            return
        except _UnroutableError as exc:
            self._spawn_publish_error(state, record, None, None, ErrorClass.UNROUTABLE, str(exc))
            return
        if isinstance(built, ProviderOutcome):  # the mapping says: nothing to send
            self._spawn_publish_result(state, record, event, provider, built, attempts=0)
            return
        built.headers["X-Request-Id"] = event.event_id
        if event.traceparent:
            built.headers["traceparent"] = event.traceparent
        job = Job(
            record=record,
            event=event,
            provider=provider,
            request=built,
            lane=(record.partition, provider.target_key(event)),
            state=state,
            consumed_at=time.monotonic(),
        )
        if self._lanes.push(job.lane, job) is not None:
            self._start(job)

    def _route(self, event: OrderStatusChanged) -> Provider:
        name = event.account
        if name is None and event.merchant_id is not None:
            name = self._routing.by_merchant.get(event.merchant_id)
        if name is None:
            name = self._routing.default_account
        if name is None:
            raise _UnroutableError(
                "no account: the event names none, and no route or default matches"
            )
        provider = self._providers.get(name)
        if provider is None:
            raise _UnroutableError(f"account {name!r} is not configured")
        return provider

    # ------------------------------------------------------------------ execution

    def _start(self, job: Job) -> None:
        """Queue ``job`` (its lane's head) for a slot; it runs when its account gets one."""
        job.timer = None
        self._waiting_retry.discard(job)
        if job.state.draining:
            return
        account = job.provider.account
        self._ready[account].append(job)
        if self._account_free[account] > 0 and account not in self._in_rotation:
            self._rotation.append(account)
            self._in_rotation.add(account)
        self._pump()

    def _pump(self) -> None:
        """Start ready jobs while global and account slots are free, accounts in turn."""
        rotation = self._rotation
        while self._free_slots > 0 and rotation:
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
            self._free_slots -= 1
            self._account_free[account] -= 1
            if queue and self._account_free[account] > 0:
                rotation.append(account)
                self._in_rotation.add(account)
            job.state.activate()
            self._spawn(job.state, self._execute(job))

    def _release_slot(self, account: str) -> None:
        self._free_slots += 1
        self._account_free[account] += 1
        if self._ready[account] and account not in self._in_rotation:
            self._rotation.append(account)
            self._in_rotation.add(account)
        self._pump()

    def _spawn(self, state: PartitionState, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        task.add_done_callback(_report_task_failure)

    async def _execute(self, job: Job) -> None:
        """Run one attempt of ``job`` in the global and account slot ``_pump`` gave it."""
        account = job.provider.account
        try:
            if job.state.draining:
                return
            if self._delivery is not None and not job.attempts and await self._screen(job):
                return
            if self._delivery is not None and self._coalesce_now(job):
                return
            stopped = self._stopped.get(account)
            if stopped is not None and not job.probe:
                stopped.parked.append(job)
                return
            if self._held_templates and not job.template_probe:
                hold = self._hold_of(job)
                if hold is not None:
                    self._park_on_template(hold, job)
                    return
            bucket = self._buckets.get(account)
            if bucket is not None:
                wait = bucket.reserve(time.monotonic())
                if wait > 0:
                    self._obs.rate_limit_wait(job.provider.kind, account, wait)
                    await asyncio.sleep(wait)
            outcome = await self._attempt(job)
            # The slot stays taken until the outcome (and ledger entry) is acknowledged:
            # sent-but-not-durable requests, the ones a crash repeats, never exceed the
            # in-flight limit.
            await self._settle(job, outcome)
        finally:
            job.state.deactivate()
            self._release_slot(account)

    async def _attempt(self, job: Job) -> ProviderOutcome:
        attempt = job.attempts
        job.attempts += 1
        if job.first_attempt_at is None:
            job.first_attempt_at = datetime.now(UTC)
            job.first_attempt_mono = time.monotonic()
        self._in_flight += 1
        self._obs.request_started(job.provider.kind)  # request_latency marks its end
        started = time.monotonic()
        try:
            response = await self._sender.send(
                job.request, timeout=job.provider.settings.request_timeout_s
            )
        except RetryableDeliveryError as exc:
            return ProviderOutcome(OutcomeKind.RETRYABLE, detail=exc.detail, error_code=exc.code)
        finally:
            self._in_flight -= 1
            self._obs.request_latency(job.provider.kind, time.monotonic() - started)
            self.stats.sent_requests += 1
        return job.provider.classify(response, attempt=attempt)

    async def _settle(self, job: Job, outcome: ProviderOutcome) -> None:
        if job.state.dropped:
            return  # the partition was released mid-request; its next owner redoes the record
        kind = outcome.kind
        provider = job.provider
        was_probe, job.probe = job.probe, False
        if was_probe and kind is not OutcomeKind.CONFIGURATION:
            self._resume_account(provider.account)  # the account answered: auth works again
        if job.template_probe:
            job.template_probe = False
            key = template_of(job)
            if key is not None and not outcome.pause_template:
                self.release_template(key[0], key[1], reason="probe answered")
        if outcome.pause_template and self._hold_after_outcome(job, outcome):
            return  # parked: the event waits for the template, it does not fail
        if kind is OutcomeKind.RETRYABLE:
            elapsed = time.monotonic() - (job.first_attempt_mono or job.consumed_at)
            delay = self._retry.next_delay(job.attempts, elapsed, outcome.retry_after, self._rand())
            if delay is not None:
                self.stats.retries += 1
                self._obs.retry(provider.kind, provider.account, outcome.retry_after is not None)
                log.info(
                    "delivery_retry_scheduled",
                    order_id=job.event.order_id,
                    account=provider.account,
                    attempt=job.attempts,
                    delay_s=round(delay, 3),
                    code=outcome.error_code,
                )
                self._waiting_retry.add(job)
                job.timer = asyncio.get_running_loop().call_later(delay, self._start, job)
                return
            await self._publish_error(
                job.state,
                job.record,
                job,
                outcome,
                ErrorClass.RETRIES_EXHAUSTED,
                f"retry budget exhausted after {job.attempts} attempts: {outcome.detail or ''}",
                after_enqueue=lambda: self._finish_lane(job),
            )
            return
        if kind is OutcomeKind.CONFIGURATION:
            self._stop_account(job, outcome)
            return

        # The lane moves on once this outcome is handed to the producer, not before: outcomes
        # and ledger entries of one order then reach Kafka in the order of its input records.
        def next_in_lane() -> None:
            self._finish_lane(job)

        if kind is OutcomeKind.PERMANENT:
            await self._publish_error(
                job.state,
                job.record,
                job,
                outcome,
                ErrorClass.PERMANENT,
                outcome.detail or "permanent provider error",
                after_enqueue=next_in_lane,
            )
        else:
            ledger_update = None
            state = job.state
            if state.ledger is not None and kind.is_success and self._topics.ledger:
                value = state.ledger.record(job.event.order_id, job.lane[1], delivery_of(job.event))
                ledger_update = (self._topics.ledger, job.event.order_id.encode(), value)
            await self._publish_result(
                job.state,
                job.record,
                job.event,
                provider,
                outcome,
                job.attempts,
                job.consumed_at,
                ledger_update=ledger_update,
                after_enqueue=next_in_lane,
            )

    def _finish_lane(self, job: Job) -> None:
        if self._coalesces(job):
            nxt, superseded = self._lanes.complete_coalescing(job.lane)
            if job.state.draining:
                return
            for old in superseded:
                self._spawn_verdict(old, ResultOutcome.SUPERSEDED, _SUPERSEDED_DETAIL)
        else:
            nxt = self._lanes.complete(job.lane)
        if nxt is not None:
            if job.state.draining:
                return
            self._start(nxt)

    # ------------------------------------------------------------------ replay protection

    def _coalesces(self, job: Job) -> bool:
        d = self._delivery
        return d is not None and d.coalesces(job.provider.account, job.provider.kind)

    async def _screen(self, job: Job) -> bool:
        """Decide before sending: duplicate, stale, expired, invalid transition, dry run.
        Returns True when the job was finished here (its outcome published, nothing sent)."""
        assert self._delivery is not None
        ledger = job.state.ledger
        last = ledger.last(job.event.order_id, job.lane[1]) if ledger is not None else None
        verdict = judge(
            job.event,
            last,
            provider_kind=job.provider.kind,
            now=datetime.now(UTC),
            max_age=self._max_age,
            guard=self._delivery.transition_guard,
        )
        if verdict is Verdict.SEND:
            if self._coalesce_now(job):
                return True
            if self._delivery.transition_guard == "warn" and would_be_rejected(
                job.provider.kind, last
            ):
                log.warning(
                    "transition_will_be_rejected",
                    order_id=job.event.order_id,
                    account=job.provider.account,
                    last_status=last.status if last else None,
                )
            if not self._delivery.dry_run:
                return False
            await self._publish_verdict(
                job,
                ResultOutcome.DRY_RUN,
                "dry run: built, not sent",
                after_enqueue=lambda: self._finish_lane(job),
            )
            return True
        if verdict is Verdict.INVALID_TRANSITION:
            self._count(verdict.value)
            await self._publish_error(
                job.state,
                job.record,
                job,
                None,
                ErrorClass.INVALID_TRANSITION,
                f"{job.provider.kind} rejects any status after {last.status if last else '?'}"
                " (transition guard: enforce)",
                after_enqueue=lambda: self._finish_lane(job),
            )
        else:
            detail = f"last delivered {last.event_id}" if last is not None else None
            await self._publish_verdict(
                job,
                ResultOutcome(verdict.value),
                detail,
                after_enqueue=lambda: self._finish_lane(job),
            )
        return True

    def _coalesce_now(self, job: Job) -> bool:
        """Supersede ``job`` (and all but the newest queued event) when newer ones wait."""
        if job.probe or not (self._coalesces(job) and self._lanes.queued(job.lane)):
            return False
        nxt, superseded = self._lanes.complete_coalescing(job.lane)
        for old in (job, *superseded):
            self._spawn_verdict(old, ResultOutcome.SUPERSEDED, _SUPERSEDED_DETAIL)
        if nxt is not None:
            self._start(nxt)
        return True

    def _count(self, name: str) -> None:
        self.verdicts[name] = self.verdicts.get(name, 0) + 1

    def _spawn_verdict(self, job: Job, outcome: ResultOutcome, detail: str | None) -> None:
        state = job.state
        state.activate()

        async def publish() -> None:
            try:
                await self._publish_verdict(job, outcome, detail)
            finally:
                state.deactivate()

        self._spawn(state, publish())

    async def _publish_verdict(
        self,
        job: Job,
        outcome: ResultOutcome,
        detail: str | None,
        *,
        after_enqueue: Callable[[], None] | None = None,
    ) -> None:
        self._count(outcome.value)
        record = job.record
        # Built from our own typed values: skip re-validation on the hot path.
        result = ResultRecord.model_construct(
            event_id=job.event.event_id,
            order_id=job.event.order_id,
            outcome=outcome,
            provider=job.provider.kind,
            account=job.provider.account,
            attempts=job.attempts,
            source=SourceCoordinates(
                topic=record.topic, partition=record.partition, offset=record.offset
            ),
            traceparent=job.event.traceparent,
            detail=detail,
            recorded_at=datetime.now(UTC),
        )
        self.stats.results += 1
        self._obs.outcome(job.provider.kind, job.provider.account, outcome.value)
        await self._publish(
            job.state, record, self._topics.results, result.to_bytes(), after_enqueue=after_enqueue
        )

    # ------------------------------------------------------------------ account stops

    def _stop_account(self, job: Job, outcome: ProviderOutcome) -> None:
        account = job.provider.account
        stopped = self._stopped.get(account)
        reason = f"{outcome.error_code or outcome.http_status}: {outcome.detail or ''}".strip()
        if stopped is None:
            stopped = _StoppedAccount(reason=reason)
            self._stopped[account] = stopped
            log.error("account_stopped", account=account, provider=job.provider.kind, reason=reason)
        stopped.parked.appendleft(job)
        if stopped.probe_timer is not None:
            stopped.probe_timer.cancel()
        loop = asyncio.get_running_loop()
        stopped.probe_timer = loop.call_later(
            self._limits.account_probe_interval_s, self._probe_account, account
        )

    def _probe_account(self, account: str) -> None:
        stopped = self._stopped.get(account)
        if stopped is None:
            return
        while stopped.parked:
            job = stopped.parked.popleft()
            if not job.state.draining:
                job.probe = True
                self._start(job)
                return
        # Nothing parked: try again later with whatever arrives.
        self._resume_account(account)

    def _resume_account(self, account: str) -> None:
        stopped = self._stopped.pop(account, None)
        if stopped is None:
            return
        if stopped.probe_timer is not None:
            stopped.probe_timer.cancel()
        log.info("account_resumed", account=account)
        for job in stopped.parked:
            self._start(job)

    # ------------------------------------------------------------------ template holds

    def hold_template(self, name: str, language: str | None, reason: str) -> None:
        """Park sends that use template ``name`` (``language`` None: every language)."""
        key = (name, language)
        if key not in self._held_templates:
            self._held_templates[key] = _TemplateHold(reason=reason)
            log.warning("template_paused", template=name, language=language, reason=reason)

    def release_template(self, name: str, language: str | None, *, reason: str) -> None:
        """Resume template ``name`` and its parked sends: ``language`` None resumes every
        language; a language resumes its own hold and an every-language hold."""
        keys = [
            k
            for k in self._held_templates
            if k[0] == name and (language is None or k[1] in (None, language))
        ]
        for key in keys:
            hold = self._held_templates.pop(key)
            if hold.probe_timer is not None:
                hold.probe_timer.cancel()
            log.info(
                "template_resumed", template=name, language=key[1], reason=reason,
                parked=len(hold.parked),
            )  # fmt: skip
            for job in hold.parked:
                self._start(job)

    def _hold_of(self, job: Job) -> _TemplateHold | None:
        key = template_of(job)
        if key is None:
            return None
        return self._held_templates.get(key) or self._held_templates.get((key[0], None))

    def _hold_after_outcome(self, job: Job, outcome: ProviderOutcome) -> bool:
        key = template_of(job)
        if key is None:
            return False
        reason = f"{outcome.error_code or outcome.http_status}: {outcome.detail or ''}".strip()
        self.hold_template(key[0], key[1], reason)
        hold = self._hold_of(job)
        assert hold is not None
        self._park_on_template(hold, job, front=True)
        return True

    def _park_on_template(self, hold: _TemplateHold, job: Job, *, front: bool = False) -> None:
        if front:
            hold.parked.appendleft(job)
        else:
            hold.parked.append(job)
        if hold.probe_timer is None:
            hold.probe_timer = asyncio.get_running_loop().call_later(
                self._limits.template_probe_interval_s, self._probe_template, hold
            )

    def _probe_template(self, hold: _TemplateHold) -> None:
        hold.probe_timer = None
        while hold.parked:
            job = hold.parked.popleft()
            if not job.state.draining:
                job.template_probe = True
                self._start(job)
                return

    # ------------------------------------------------------------------ publishing

    def _spawn_publish_error(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        job: Job | None,
        outcome: ProviderOutcome | None,
        error_class: ErrorClass,
        reason: str,
    ) -> None:
        state.activate()
        self._spawn(
            state,
            self._publish_error(state, record, job, outcome, error_class, reason, active=True),
        )

    def _spawn_publish_result(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        event: OrderStatusChanged,
        provider: Provider,
        outcome: ProviderOutcome,
        attempts: int,
    ) -> None:
        state.activate()

        async def publish() -> None:
            try:
                await self._publish_result(
                    state, record, event, provider, outcome, attempts, time.monotonic()
                )
            finally:
                state.deactivate()

        self._spawn(state, publish())

    async def _publish_result(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        event: OrderStatusChanged,
        provider: Provider,
        outcome: ProviderOutcome,
        attempts: int,
        since: float,
        *,
        ledger_update: tuple[str, bytes, bytes] | None = None,
        after_enqueue: Callable[[], None] | None = None,
    ) -> None:
        # Built from our own typed values: skip re-validation on the hot path.
        result = ResultRecord.model_construct(
            event_id=event.event_id,
            order_id=event.order_id,
            outcome=_RESULT_OF_KIND[outcome.kind],
            provider=provider.kind,
            account=provider.account,
            provider_message_id=outcome.message_id,
            http_status=outcome.http_status,
            provider_error_code=outcome.error_code,
            attempts=attempts,
            latency_ms=round((time.monotonic() - since) * 1000, 3),
            source=SourceCoordinates(
                topic=record.topic, partition=record.partition, offset=record.offset
            ),
            traceparent=event.traceparent,
            detail=outcome.detail,
            recorded_at=datetime.now(UTC),
        )
        self.stats.results += 1
        self._obs.outcome(provider.kind, provider.account, result.outcome.value)
        if self._on_accepted is not None and result.provider_message_id is not None:
            await self._on_accepted(result)
        await self._publish(
            state,
            record,
            self._topics.results,
            result.to_bytes(),
            ledger_update=ledger_update,
            after_enqueue=after_enqueue,
        )

    async def _publish_error(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        job: Job | None,
        outcome: ProviderOutcome | None,
        error_class: ErrorClass,
        reason: str,
        *,
        active: bool = False,
        after_enqueue: Callable[[], None] | None = None,
    ) -> None:
        try:
            event = job.event if job else None
            provider = job.provider if job else None
            error = ErrorRecord(
                event_id=event.event_id if event else None,
                order_id=event.order_id if event else _key_text(record.key),
                error_class=error_class,
                reason=reason,
                provider=provider.kind if provider else None,
                account=provider.account if provider else None,
                http_status=outcome.http_status if outcome else None,
                provider_error_code=outcome.error_code if outcome else None,
                attempts=job.attempts if job else 0,
                first_attempt_at=job.first_attempt_at if job else None,
                last_attempt_at=datetime.now(UTC) if job and job.attempts else None,
                source=SourceCoordinates(
                    topic=record.topic, partition=record.partition, offset=record.offset
                ),
                original_key=encode_bytes(record.key),
                original_value=encode_bytes(record.value),
                original_headers=original_headers(record.headers),
                traceparent=event.traceparent if event else None,
            )
            self.stats.errors += 1
            self._obs.outcome(
                provider.kind if provider else "none",
                provider.account if provider else "none",
                error_class.value,
            )
            if error_class is not ErrorClass.INVALID_EVENT:
                log.warning(
                    "delivery_failed",
                    error_class=error_class.value,
                    order_id=error.order_id,
                    account=error.account,
                    code=error.provider_error_code,
                    partition=record.partition,
                    offset=record.offset,
                )
            else:
                log.warning(
                    "invalid_event", reason=reason, partition=record.partition, offset=record.offset
                )
            await self._publish(
                state, record, self._topics.errors, error.to_bytes(), after_enqueue=after_enqueue
            )
        finally:
            if active:
                state.deactivate()

    async def _publish(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        topic: str,
        value: bytes,
        *,
        ledger_update: tuple[str, bytes, bytes] | None = None,
        after_enqueue: Callable[[], None] | None = None,
    ) -> None:
        """Hand the outcome to the producer; the offset is done only when the broker acks it.

        A ledger update goes first, to the input record's partition (co-partitioned topics).
        ``after_enqueue`` runs once both are queued in the producer, before the acks arrive.
        """
        while True:
            try:
                if ledger_update is not None:
                    ledger_topic, ledger_key, ledger_value = ledger_update
                    ledger_fut = await self._ledger_sink.send(
                        ledger_topic,
                        ledger_value,
                        key=ledger_key,
                        partition=record.partition,
                        source=(state.tp, record.offset),
                    )
                fut = await self._sink.send(
                    topic, value, key=record.key, source=(state.tp, record.offset)
                )
                if after_enqueue is not None:
                    then, after_enqueue = after_enqueue, None
                    then()
                if ledger_update is not None:
                    await asyncio.shield(ledger_fut)
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._publish_failures += 1
                log.exception("publish_failed", topic=topic, error=type(exc).__name__)
                await asyncio.sleep(min(5.0, 0.1 * self._publish_failures))
                continue
            break
        self._publish_failures = 0
        if state.dropped:
            return  # the partition was released; its next owner re-reads this record
        self._release_buffer(state, record.offset)
        state.tracker.done(record.offset)

    def _release_buffer(self, state: PartitionState, offset: int) -> None:
        size = state.sizes.pop(offset, None)
        if size is None:
            return
        state.buffered_bytes -= size
        self._buffered_bytes -= size
        self._buffered_records -= 1

    # ------------------------------------------------------------------ commits

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._limits.commit_interval_s)
            await self._commit(dict(self._states))

    async def _commit(self, states: dict[TP, PartitionState]) -> None:
        offsets: dict[TP, int] = {}
        for tp, state in states.items():
            point = state.tracker.commit_point
            if point is not None and state.tracker.needs_commit:
                offsets[tp] = point
        if self._transactions is not None:
            if self.failure is not None:
                return  # never commit offsets past outcomes of a failed transaction
            started = time.monotonic()
            try:
                await self._transactions.commit_transaction(offsets)
            except Exception as exc:
                log.exception("transaction_failed", error=type(exc).__name__)
                self.failure = exc
                self.request_stop()
                return
        elif not offsets:
            return
        else:
            started = time.monotonic()
            try:
                await self._source.commit(offsets)
            except CommitRejectedError as exc:
                log.warning("commit_rejected", reason=str(exc))
                return
        if not offsets:
            return
        self._obs.commit_latency(time.monotonic() - started)
        self.stats.commits += 1
        for tp, point in offsets.items():
            states[tp].tracker.advance_committed(point)

    # ------------------------------------------------------------------ backpressure

    def _apply_backpressure(self) -> None:
        if not self._states:
            return
        limits = self._limits
        live = [s for s in self._states.values() if not s.draining]
        share_records = max(1, limits.max_buffered_records // max(1, len(live)))
        share_bytes = max(1, limits.max_buffered_bytes // max(1, len(live)))
        share_span = max(1, limits.max_uncommitted_records // max(1, len(live)))
        over = (
            self._buffered_records >= limits.max_buffered_records
            or self._buffered_bytes >= limits.max_buffered_bytes
        )
        low = (
            self._buffered_records <= limits.max_buffered_records // 2
            and self._buffered_bytes <= limits.max_buffered_bytes // 2
        )
        want: set[TP] = set()
        for s in live:
            outstanding = s.tracker.outstanding
            full = (
                outstanding >= share_records
                or s.buffered_bytes >= share_bytes
                or _uncommitted_span(s.tracker) >= share_span
            )
            if s.tp in self._paused:
                # Resume once this partition is back under half its share and the total is low.
                if full or outstanding >= share_records // 2 or not low:
                    want.add(s.tp)
            elif full or (over and outstanding > 0):
                want.add(s.tp)
        to_pause = want - self._paused
        to_resume = self._paused - want
        if to_pause:
            self._source.pause(to_pause)
            log.info(
                "partitions_paused", count=len(to_pause), buffered_records=self._buffered_records
            )
        if to_resume:
            self._source.resume(to_resume)
        self._paused = want


_SUPERSEDED_DETAIL = "a newer event of the order was queued behind it"


def _uncommitted_span(tracker: OffsetTracker) -> int:
    """Records taken in since the commit point: what a crash would make us redo."""
    last, point = tracker.last_tracked, tracker.commit_point
    if last is None or point is None:
        return 0
    return last + 1 - point


class _UnroutableError(Exception):
    pass


def template_of(job: Job) -> TemplateKey | None:
    """The WhatsApp template a job's request sends (Meta and YCloud bodies), else None."""
    content = job.request.content
    if b'"template"' not in content:
        return None
    try:
        body = orjson.loads(content)
        template = body["template"]
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else language
        name = template["name"]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(name, str):
        return None
    return (name, code if isinstance(code, str) else None)


def _report_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("job_task_failed", error=repr(task.exception()))


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None
