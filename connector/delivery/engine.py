"""The asyncio dispatch engine around the pure ordering core: the run loop, intake (decode,
route, build), execution of one attempt, the one settle point every record leaves through,
rebalance and drain. Its parts live beside it (jobs, slots, holds, screening, outcomes,
commits; backpressure in ``core``). It never imports aiokafka: Kafka arrives through ``ports``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING

import structlog

from connector.contract.events import OrderStatusChanged, decode_event
from connector.core.ambiguity import AmbiguityAction
from connector.core.backpressure import plan
from connector.core.breaker import Transition
from connector.core.ledger import PartitionLedger
from connector.core.ordering import LaneTable, OffsetTracker
from connector.core.redaction import SecretScrubber
from connector.delivery.account_outages import AccountOutages
from connector.delivery.attempts import Attempts
from connector.delivery.commits import Committer
from connector.delivery.flow import Flow
from connector.delivery.holds import Holds, reason_of
from connector.delivery.jobs import (
    Buffers,
    Job,
    LaneKey,
    PartitionState,
    new_job,
)
from connector.delivery.outage import PublishGate
from connector.delivery.outcomes import AcceptedHook, Ending, Outcomes, internal, key_mismatch
from connector.delivery.ports import EngineStats, LoadGauges, NullObserver
from connector.delivery.retries import Retries
from connector.delivery.routing import Router, UnroutableError
from connector.delivery.screening import Screening
from connector.delivery.slots import Slots
from connector.delivery.views import EngineViews
from connector.errors import ErrorClass, InvalidEventError
from connector.kafka.consumer import TP, ConsumedRecord
from connector.providers.base import OutcomeKind, Provider, ProviderOutcome

if TYPE_CHECKING:
    from connector.config import DeliverySettings, LimitSettings, RoutingSettings, TopicNames
    from connector.core.personal_data import OriginalValuePolicy
    from connector.core.retry import RetryPolicy
    from connector.delivery.ports import (
        EngineObserver,
        LedgerLoader,
        RecordSink,
        RecordSource,
        TransactionCommitter,
    )
    from connector.http.sender import HttpSender

log = structlog.get_logger("connector.delivery.engine")


class Engine(EngineViews):
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
        on_accepted: AcceptedHook | None = None,
        ledger_sink: RecordSink | None = None,
        original_value: OriginalValuePolicy | None = None,
        scrubber: SecretScrubber | None = None,
    ) -> None:
        """``on_accepted`` is awaited before a result that names a provider message id is
        published (the app records the message-id correlation there); it must not raise.
        ``scrubber`` removes secrets from the detail of ``internal_error`` records."""
        self._source = source
        self._router = Router(routing, providers)
        self._topics = topics
        self._limits = limits
        self._obs: EngineObserver = observer or NullObserver()
        self._scrubber = scrubber or SecretScrubber(())
        self._ledger_loader = ledger_loader
        self._states: dict[TP, PartitionState] = {}
        self._lanes: LaneTable[LaneKey, Job] = LaneTable()
        self._buffers = Buffers()
        self._flow = Flow(providers, limits, self._obs)
        self._slots = Slots(
            limits.max_in_flight, providers, pace=self._flow.try_send, wake=self._pump,
            clock=time.monotonic,
            on_wait=lambda account, s: self._obs.rate_limit_wait(
                providers[account].kind, account, s
            ),
        )  # fmt: skip
        probe_s = (limits.account_probe_interval_s, limits.template_probe_interval_s)
        self._holds = Holds(*probe_s, start=self._start)
        self._outages = AccountOutages(self._flow, self._holds)
        self._screening = Screening(delivery, self._scrubber)
        self.stats = EngineStats()
        self._attempts = Attempts(sender, self._obs, self.stats, self._flow.echo_outcome)
        self._flow.resend = lambda job: self._spawn(job.state, self._attempts.resend(job))
        self._outcomes = Outcomes(
            sink, ledger_sink or sink, topics, self._obs, self.stats, scrubber=self._scrubber,
            on_durable=self._buffers.done, on_fatal=self._fatal, on_accepted=on_accepted,
            original_value=original_value,  # errors.original_value (personal data)
        )  # fmt: skip
        self._committer = Committer(
            source, transactions, self._obs, self.stats,
            failed=lambda: self.failure is not None, on_fatal=self._fatal,
        )  # fmt: skip
        self._retries = Retries(retry, rand, self._obs, self.stats, self._start)
        self._paused: set[TP] = set()
        # Records whose key is not their order id: an error record unless accepted.
        self._refuse_key_mismatch = delivery is None or delivery.key_mismatch == "error"
        # Closed during a publish outage: no provider request starts, intake is paused.
        self._gate = PublishGate(self._outcomes.watch, limits.publish_outage_s, source)
        self._stopping = asyncio.Event()
        self.verdicts: dict[str, int] = {}  # replay outcomes by name (skipped, superseded, ...)
        self.failure: BaseException | None = None  # a fatal error (failed transaction)

    # ------------------------------------------------------------------ run loop

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Poll until ``request_stop``; then drain in-flight work, commit and return."""
        committer = asyncio.create_task(
            self._committer.run(self._limits.commit_interval_s, self._states), name="commit-loop"
        )
        try:
            while not self._stopping.is_set():
                self._gate.check(
                    {tp for tp, s in self._states.items() if not s.draining}, self._paused
                )
                self._apply_backpressure()
                room = self._limits.max_buffered_records - self._buffers.records
                records = await self._source.getmany(
                    timeout_ms=100, max_records=max(1, min(self._limits.max_poll_records, room))
                )
                for record in records:
                    self._intake(record)
                self._obs.gauges(
                    LoadGauges(
                        in_flight=self._attempts.in_flight,
                        open_lanes=len(self._lanes),
                        buffered_records=self._buffers.records,
                        buffered_bytes=self._buffers.bytes,
                        paused_partitions=len(self._paused),
                    )
                )
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await self.drain(set(self._states), self._limits.drain_timeout_s)

    def _fatal(self, exc: BaseException) -> None:
        self.failure = exc
        self.request_stop()

    # ------------------------------------------------------------------ rebalance and drain

    async def on_assigned(self, assigned: set[TP]) -> None:
        for tp in assigned:
            state = PartitionState(tp, OffsetTracker(tp.partition))
            state.idle.set()
            self._states[tp] = state
        self._paused -= assigned
        log.info("partitions_assigned", partitions=sorted(f"{t}:{p}" for t, p in assigned))
        if self._ledger_loader is not None:
            await self._load_ledgers(self._ledger_loader, assigned)

    async def _load_ledgers(self, loader: LedgerLoader, assigned: set[TP]) -> None:
        """Restore the ledger of the assigned input partitions before any of their records is
        processed (the consumer may already fetch them: they are paused and held meanwhile)."""
        mine = {tp for tp in assigned if tp.topic == self._topics.input}
        states = [self._states[tp] for tp in mine]
        for state in states:
            state.held = []
        self._source.pause(mine)
        try:
            ledgers = await loader({tp.partition for tp in mine})
        except Exception as exc:
            # Without the ledger a replay would message customers again: stop instead.
            log.exception("ledger_load_failed", error=type(exc).__name__)
            self._fatal(exc)
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
        draining = set(states)  # their parked jobs and retries re-run at the next owner
        self._holds.abandon(draining)
        self._retries.abandon(draining)
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
        await self._committer.commit({s.tp: s for s in states})
        self._committer.discard_held({s.tp for s in states})
        drained = {s.tp.partition for s in states if s.tp.topic == self._topics.input}
        self._lanes.remove_where(lambda key: key[0] in drained)
        self._flow.forget(drained)
        for state in states:
            state.dropped = True
            self._states.pop(state.tp, None)
            self._paused.discard(state.tp)
            self._buffers.drop(state)

    def _apply_backpressure(self) -> None:
        if not self._states:
            return
        live = [s for s in self._states.values() if not s.draining]
        pause, resume = plan(self._buffers.state(live, self._paused, self._limits))
        if pause:
            self._source.pause(pause)
            log.info("partitions_paused", count=len(pause), buffered_records=self._buffers.records)
        if resume and self._gate.is_open:  # an outage keeps everything paused
            self._source.resume(resume)
            self._paused -= resume
        self._paused |= pause

    # ------------------------------------------------------------------ intake

    def _intake(self, record: ConsumedRecord) -> None:
        state = self._states.get(TP(record.topic, record.partition))
        if state is None or state.draining:
            return  # a record of a partition we no longer own: the next owner reads it
        if state.held is not None:
            state.held.append(record)
            return
        state.tracker.track(record.offset)
        self._buffers.take(state, record.offset, len(record.value or b""))
        self.stats.consumed += 1
        self._obs.record_consumed(state.tp)
        event: OrderStatusChanged | None = None
        provider: Provider | None = None
        try:
            event = decode_event(record.value, record.headers)
            if self._refuse_key_mismatch and record.key != event.order_id.encode():
                self._spawn_settle(state, record, key_mismatch(record, event))
                return
            provider = self._router.route(event)
            job = new_job(record, state, event, provider)
            # Built when the job first runs; at intake where a newer event supersedes older ones.
            if self._screening.coalesces(job) and (early := self._screening.prepare(job)):
                self._spawn_settle(state, record, early, job)
                return
        except InvalidEventError as exc:
            ending = Ending(
                error=exc.error_class, detail=exc.reason, event=event, provider=provider
            )
        except UnroutableError as exc:
            ending = Ending(error=ErrorClass.UNROUTABLE, detail=str(exc), event=event)
        except Exception as exc:
            stage = "decode" if event is None else "route" if provider is None else "build"
            ending = internal(exc, stage, self._scrubber, event=event, provider=provider)
        else:
            if self._lanes.push(job.lane, job) is not None:
                self._start(job)
            return
        self._spawn_settle(state, record, ending)

    # ------------------------------------------------------------------ execution

    def _start(self, job: Job) -> None:
        """Queue ``job`` (its lane's head) for a slot; it runs when its account gets one."""
        self._retries.started(job)
        if job.parked_at is not None:  # back from an outage: that wait spent no budget
            job.paused_s += time.monotonic() - job.parked_at
            job.parked_at = None
        if job.state.draining:
            return
        self._slots.queue(job)
        self._pump()

    def _pump(self) -> None:
        """Start ready jobs while global and account slots are free, accounts in turn."""
        while (job := self._slots.take()) is not None:
            job.rate_taken_at = time.monotonic()
            job.state.activate()
            self._spawn(job.state, self._execute(job))

    def _spawn(self, state: PartitionState, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        task.add_done_callback(_report_task_failure)

    async def _execute(self, job: Job) -> None:
        """Run one attempt of ``job`` in the global and account slot ``_pump`` gave it.

        The slot stays taken until the outcome (and ledger entry) is acknowledged: sent-but-
        not-durable requests, the ones a crash repeats, never exceed the in-flight limit.
        """
        try:
            try:
                ending = await self._run(job)
            except Exception as exc:  # whatever failed, the record ends and its lane moves on
                ending = internal(exc, job.stage, self._scrubber)
            if ending is not None and not job.state.dropped:
                await self._settle(job.state, job.record, ending, job, lane=True)
        finally:
            if job.outage_probe:  # the probe went away without an answer (drain, error)
                self._outages.probe_abandoned(job)
            job.state.deactivate()
            self._slots.release(job.provider.account)
            self._pump()

    async def _run(self, job: Job) -> Ending | None:
        """Screen, wait for holds and the rate limit, send, decide: an ending, or None when
        the job is parked, waits for a retry, was superseded or its partition was released."""
        if job.state.draining:
            return None
        screening = self._screening
        if job.request is None and (ending := screening.prepare(job)) is not None:
            return ending
        job.stage = "screen"
        if screening.active:
            if not job.attempts and (ending := screening.verdict(job)) is not None:
                return ending
            if self._coalesce_now(job):
                return None
            if not job.attempts and (ending := screening.before_send(job)) is not None:
                return ending
        hold = self._holds.blocking(job)
        if hold is not None:
            self._holds.park(hold, job)
            return None
        wait, limiter = self._flow.deferral(job, time.monotonic())
        if wait > 0:  # waits without a slot: a settle window, or Meta's pair rule
            self._obs.limiter_wait(job.provider.kind, job.provider.account, limiter, wait)
            self._retries.defer(job, wait)
            return None
        account, flow = job.provider.account, self._flow
        if flow.outage_enabled and not self._outages.admitted(job):
            return None
        while not self._gate.is_open:  # a publish outage: send nothing new
            await self._gate.wait()
            if job.state.draining:
                return None  # its partition's next owner sends it
        # The account's rate was taken when ``Slots`` handed out this job (it waited there as
        # a deque entry, never booking ahead), so a rate cut applies at once to every waiter.
        booked_at = job.rate_taken_at
        answer = await self._attempts.send(job)
        probe, job.outage_probe = job.outage_probe, False
        if job.state.dropped:
            if probe:
                self._outages.probe_abandoned(job)
            return None  # the partition was released mid-request; its next owner redoes it
        job.stage = "decide"
        transient, transition = flow.answered(
            job, answer, job.last_error, sent_at=booked_at, probe=probe
        )
        if transition is Transition.CLOSED:
            self._holds.lift_outage(account, "probe answered")
        elif transition is Transition.OPENED:
            self._outages.hold_of(job)
        return self._decide(job, answer, transient=transient.transient, probe=probe)

    def _decide(
        self, job: Job, answer: ProviderOutcome, *, transient: bool = False, probe: bool = False
    ) -> Ending | None:
        """What a provider's answer means: an ending, or None (parked, retry scheduled).

        ``transient``: the answer counts towards an account outage (5xx, timeout, reset, 429).
        While the account is in outage such a failure parks the job without spending its retry
        budget; an ambiguous one (no answer, but the request went out) is first superseded
        when a newer status of the order is queued (``connector.core.ambiguity``)."""
        holds, kind = self._holds, answer.kind
        holds.answered(job, answer)
        if kind is OutcomeKind.RETRYABLE:
            newer = self._lanes.queued(job.lane) > 0
            decision = self._flow.ambiguous_attempt(job, job.last_error, newer_queued=newer)
            if decision is not None and decision.action is AmbiguityAction.SUPERSEDE:
                log.info("ambiguous_superseded", order_id=job.event.order_id,
                         account=job.provider.account)  # fmt: skip
                return self._screening.superseded(job)
            if transient and self._flow.in_outage(job.provider.account):
                job.attempts -= 1  # the account failed, not the event
                self.stats.outage_parks += 1
                self._outages.park(job, failed_probe=probe)
                return None
        if answer.pause_template and job.template is not None:
            # Parked: the event waits for the template, it does not fail.
            holds.park(holds.hold_template(*job.template, reason_of(answer)), job, front=True)
            return None
        if kind is OutcomeKind.CONFIGURATION:
            hold = holds.stop_account(job.provider.account, job.provider.kind, reason_of(answer))
            holds.park(hold, job, front=True)
            return None
        if kind is OutcomeKind.RETRYABLE:
            if self._retries.schedule(job, answer):
                return None
            detail = f"retry budget exhausted after {job.attempts} attempts: {answer.detail or ''}"
            return Ending(error=ErrorClass.RETRIES_EXHAUSTED, detail=detail, answer=answer)
        if kind is OutcomeKind.PERMANENT:
            detail = answer.detail or "permanent provider error"
            return Ending(error=ErrorClass.PERMANENT, detail=detail, answer=answer)
        return Ending.of_answer(answer)

    # ------------------------------------------------------------------ settle

    def _spawn_settle(
        self, state: PartitionState, record: ConsumedRecord, ending: Ending, job: Job | None = None
    ) -> None:
        """Settle in a task of its own (no slot held): intake errors, skips, superseded."""
        state.activate()

        async def settle() -> None:
            try:
                await self._settle(state, record, ending, job)
            finally:
                state.deactivate()

        self._spawn(state, settle())

    async def _settle(
        self,
        state: PartitionState,
        record: ConsumedRecord,
        ending: Ending,
        job: Job | None = None,
        *,
        lane: bool = False,
    ) -> None:
        """The one point every record leaves through; it cannot raise. Build its outcome
        record, publish it until acknowledged (the offset is then done). ``lane``: ``job``
        heads its lane, which moves on once the outcome is handed to the producer, so outcomes
        and ledger entries of one order reach Kafka in the order of its input records."""
        if ending.verdict:
            self.verdicts[ending.name] = self.verdicts.get(ending.name, 0) + 1
        after = (lambda: self._finish_lane(job)) if lane and job is not None else None
        await self._outcomes.settle(state, record, ending, job, after)

    def _finish_lane(self, job: Job) -> None:
        if self._screening.coalesces(job):
            nxt, superseded = self._lanes.complete_coalescing(job.lane)
            if job.state.draining:
                return
            for old in superseded:
                self._spawn_settle(old.state, old.record, self._screening.superseded(old), old)
        else:
            nxt = self._lanes.complete(job.lane)
        if nxt is not None and not job.state.draining:
            self._start(nxt)

    def _coalesce_now(self, job: Job) -> bool:
        """Supersede ``job`` (and all but the newest queued event) when newer ones wait."""
        if job.probing or not (self._screening.coalesces(job) and self._lanes.queued(job.lane)):
            return False
        nxt, superseded = self._lanes.complete_coalescing(job.lane)
        for old in (job, *superseded):
            self._spawn_settle(old.state, old.record, self._screening.superseded(old), old)
        if nxt is not None:
            self._start(nxt)
        return True


def _report_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("job_task_failed", error=repr(task.exception()))
