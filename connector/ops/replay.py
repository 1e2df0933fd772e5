"""``order-connector replay``: reprocess input history with the ledger's protection.

Owns offset resets and replay bounds; never sends to providers itself (``redrive`` lives in
``connector.ops.redrive``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from connector.app import ConnectorApp
from connector.config import ConnectorConfig
from connector.delivery.ports import NullObserver
from connector.kafka.consumer import TP, ConsumedRecord, KafkaConsumer
from connector.kafka.group_offsets import (
    GroupOffsetsError,
    commit_offsets,
    committed_offsets,
    group_state,
    offsets_at,
    partition_bounds,
)
from connector.ops.command import command_parser, parse_command_line, parse_time

_DESCRIPTION = (
    "Reprocess input history; the ledger turns what was delivered into skipped_* results. "
    "Prints progress to stderr and a JSON summary to stdout."
)
DEFAULT_REPLAY_MAX_AGE_S = 7 * 24 * 3600.0


class ReplayRefusedError(Exception):
    """The replay cannot start as asked (message says why); nothing was changed."""


def _parse_offsets(text: str) -> dict[int, int]:
    """``P:O,P:O`` to {partition: offset}."""
    out: dict[int, int] = {}
    for part in text.split(","):
        p, sep, o = part.strip().partition(":")
        if not (sep and p.strip().isdigit() and o.strip().isdigit()):
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected PARTITION:OFFSET (e.g. 0:120,3:0)"
            )
        out[int(p)] = int(o)
    return out


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """Per input partition, the first offset to process and the first offset not to process."""

    group: str
    start: dict[int, int]
    stop: dict[int, int]

    @property
    def offsets(self) -> int:
        return sum(max(0, self.stop[p] - self.start[p]) for p in self.stop)

    def open_partitions(self) -> list[int]:
        return [p for p in sorted(self.stop) if self.stop[p] > self.start[p]]


async def plan_replay(
    config: ConnectorConfig,
    group: str,
    *,
    from_time_ms: int | None = None,
    from_offsets: dict[int, int] | None = None,
    until_ms: int | None = None,
) -> ReplayPlan:
    """Start offsets (beginning, ``from_time_ms`` or ``from_offsets``) and stop offsets (the end
    now, or the first record after ``until_ms``). With ``from_offsets``, partitions not listed
    continue from the group's committed offset (none: nothing is processed there)."""
    topic = config.topics.input
    begin, end = await partition_bounds(config.kafka, topic)
    stop = dict(end)
    if until_ms is not None:
        found = await offsets_at(config.kafka, topic, end, until_ms + 1)  # inclusive
        stop = {p: end[p] if o is None else o for p, o in found.items()}
    start = dict(begin)
    if from_time_ms is not None:
        found = await offsets_at(config.kafka, topic, end, from_time_ms)
        start = {p: end[p] if o is None else o for p, o in found.items()}
    if from_offsets is not None:
        unknown = sorted(set(from_offsets) - set(end))
        if unknown:
            raise ReplayRefusedError(
                f"--from-offsets names partitions {unknown} that {topic} does not have "
                f"(it has 0..{max(end)})"
            )
        committed = await committed_offsets(config.kafka, group, topic)
        start = {p: committed.get(p, stop[p]) for p in end}
        for p, o in from_offsets.items():
            start[p] = min(max(o, begin[p]), end[p])
    start = {p: min(start[p], stop[p]) for p in end}
    return ReplayPlan(group=group, start=start, stop=stop)


class BoundedSource:
    """The engine's record source during a replay: records at or past their partition's stop
    offset are dropped (neither processed nor committed) and that partition stays paused."""

    def __init__(self, consumer: KafkaConsumer, stop: dict[int, int], topic: str) -> None:
        self.consumer = consumer
        self._stop = stop
        self._topic = topic
        self._finished: set[TP] = set()

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[ConsumedRecord]:
        records = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        kept: list[ConsumedRecord] = []
        reached: set[TP] = set()
        for r in records:
            if r.offset >= self._stop.get(r.partition, 0):
                reached.add(TP(r.topic, r.partition))
            else:
                kept.append(r)
        if reached:
            self._finished |= reached
            self.consumer.pause(reached)
        return kept

    def assignment(self) -> set[TP]:
        return self.consumer.assignment()

    def pause(self, partitions: Iterable[TP]) -> None:
        self.consumer.pause(partitions)

    def resume(self, partitions: Iterable[TP]) -> None:
        self.consumer.resume(set(partitions) - self._finished)

    async def commit(self, offsets: dict[TP, int]) -> None:
        await self.consumer.commit(offsets)


class ReplayProgress(NullObserver):
    """Engine observer that counts consumed records and outcomes by kind (nothing else)."""

    def __init__(self) -> None:
        self.consumed = 0
        self.outcomes: Counter[str] = Counter()

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    def record_consumed(self, tp: TP) -> None:
        self.consumed += 1

    def outcome(self, provider: str, account: str, outcome: str) -> None:
        self.outcomes[outcome] += 1


@dataclass
class ReplaySummary:
    group: str
    offsets: int
    outcomes: dict[str, int]
    sent_requests: int
    seconds: float
    complete: bool
    unfinished_partitions: list[int] = field(default_factory=list)
    failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "offsets": self.offsets,
            "outcomes": dict(sorted(self.outcomes.items())),
            "total_outcomes": sum(self.outcomes.values()),
            "sent_requests": self.sent_requests,
            "seconds": round(self.seconds, 2),
            "complete": self.complete,
            "unfinished_partitions": self.unfinished_partitions,
            "failure": self.failure,
        }


async def _finished(app: ConnectorApp, source: BoundedSource, plan: ReplayPlan) -> bool:
    """Every open partition is assigned, read up to its stop offset and has no outcome due."""
    topic = app.config.topics.input
    backlog = app.engine.backlog()
    for p in plan.open_partitions():
        tp = TP(topic, p)
        if backlog.get(tp, 1) != 0:
            return False
        if await source.consumer.position(tp) < plan.stop[p]:
            return False
    return True


async def _unfinished_partitions(
    config: ConnectorConfig, plan: ReplayPlan, *, settle_s: float = 10.0
) -> list[int]:
    """Open partitions whose committed offset is short of the stop offset. The drain on stop
    committed what was processed; a transactional commit becomes visible to offset reads a
    moment after the transaction ends, so ask again until ``settle_s`` passes."""
    deadline = time.monotonic() + settle_s
    while True:
        committed = await committed_offsets(config.kafka, plan.group, config.topics.input)
        unfinished = [p for p in plan.open_partitions() if committed.get(p, -1) < plan.stop[p]]
        if not unfinished or time.monotonic() >= deadline:
            return unfinished
        await asyncio.sleep(0.2)


def _bar(done: int, total: int, sent: int, seconds: float, width: int = 30) -> str:
    filled = int(width * min(1.0, done / total)) if total else width
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} outcomes, "
        f"{sent} sent, {seconds:.0f}s"
    )


async def run_replay(
    config: ConnectorConfig,
    plan: ReplayPlan,
    *,
    out: TextIO,
    progress_interval_s: float = 1.0,
    install_signal_handlers: bool = False,
) -> ReplaySummary:
    """Process ``plan`` with a connector in this process; stop when it is done (or on a
    signal), committing what was processed. ``config`` must already name ``plan.group``."""
    progress = ReplayProgress()
    sources: list[BoundedSource] = []

    def bounded(consumer: KafkaConsumer) -> BoundedSource:
        sources.append(BoundedSource(consumer, plan.stop, config.topics.input))
        return sources[-1]

    app = ConnectorApp(config, observer=progress, source_filter=bounded)
    source = sources[0]
    tty = out.isatty()
    started = time.monotonic()
    last_print = 0.0
    line = ""
    runner = asyncio.create_task(app.run(install_signal_handlers=install_signal_handlers))
    try:
        while not runner.done():
            await asyncio.wait({runner}, timeout=0.1)
            now = time.monotonic()
            if now - last_print >= progress_interval_s:
                last_print = now
                line = _bar(
                    progress.done, plan.offsets, app.engine.stats.sent_requests, now - started
                )
                print(f"\r{line}" if tty else line, end="" if tty else "\n", file=out, flush=True)
            if app.started.is_set() and await _finished(app, source, plan):
                break
    finally:
        app.request_stop()
        with contextlib.suppress(Exception):
            await runner
    elapsed = time.monotonic() - started
    final = _bar(progress.done, plan.offsets, app.engine.stats.sent_requests, elapsed)
    if tty or final != line:
        print(f"\r{final}" if tty else final, file=out, flush=True)
    failure: str | None = None
    if runner.done() and not runner.cancelled() and runner.exception() is not None:
        failure = repr(runner.exception())
    elif app.engine.failure is not None:
        failure = repr(app.engine.failure)
    unfinished = await _unfinished_partitions(config, plan)
    return ReplaySummary(
        group=plan.group,
        offsets=plan.offsets,
        outcomes=dict(progress.outcomes),
        sent_requests=app.engine.stats.sent_requests,
        seconds=elapsed,
        complete=not unfinished and failure is None,
        unfinished_partitions=unfinished,
        failure=failure,
    )


def _replay_config(base: ConnectorConfig, group: str, *, dry_run: bool, max_age_s: float) -> Any:
    transactional_id = base.delivery.transactional_id
    if transactional_id is not None and group != base.kafka.group_id:
        # Never fence the running daemon's producer from a replay into another group.
        transactional_id = f"{transactional_id}-replay-{group}"
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"group_id": group}),
            "delivery": base.delivery.model_copy(
                update={
                    "dry_run": dry_run,
                    "max_event_age_s": max_age_s or None,
                    "transactional_id": transactional_id,
                }
            ),
            "server": base.server.model_copy(update={"enabled": False}),
        }
    )


async def _prepare(args: argparse.Namespace, base: ConnectorConfig) -> ReplayPlan:
    """Check the group may be replayed into, plan the offsets and reset the group to them."""
    group = args.group or args.new_group
    if group is None:
        group = base.kafka.group_id
        if args.dry_run:
            group = f"{group}-dry-run-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    if args.dry_run and group == base.kafka.group_id:
        raise ReplayRefusedError(
            "a dry run commits offsets without sending: it must not use the configured group "
            f"{group!r} (leave out --group, or name a fresh one)"
        )
    if base.topics.ledger is None and not args.dry_run:
        raise ReplayRefusedError(
            "topics.ledger is off: a replay would send every event to the providers again"
        )
    state, members = await group_state(base.kafka, group)
    if members:
        raise ReplayRefusedError(
            f"group {group!r} has {members} running member(s) ({state}): stop them first, "
            "or replay into a fresh group with --group NEW"
        )
    if args.new_group and await committed_offsets(base.kafka, group, base.topics.input):
        raise ReplayRefusedError(f"--new-group {group!r} already has committed offsets")
    plan = await plan_replay(
        base,
        group,
        from_time_ms=args.from_time,
        from_offsets=args.from_offsets,
        until_ms=args.until,
    )
    await commit_offsets(base.kafka, group, base.topics.input, plan.start)
    return plan


def replay_main(argv: list[str]) -> int:
    parser = command_parser("order-connector replay", _DESCRIPTION)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true", help="(default)")
    where.add_argument("--from-time", type=parse_time, help="ISO time with zone")
    where.add_argument("--from-offsets", type=_parse_offsets, help="P:O,P:O,...")
    parser.add_argument("--until", type=parse_time, help="process records up to this time")
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        "--group", help="replay into this group (default: kafka.group_id); stop its members"
    )
    who.add_argument("--new-group", help="like --group, refused if it has committed offsets")
    parser.add_argument(
        "--dry-run", action="store_true", help="publish dry_run results, send nothing"
    )
    parser.add_argument(
        "--max-age-s",
        type=float,
        default=DEFAULT_REPLAY_MAX_AGE_S,
        help="events older are 'expired' (default 7 days; 0 = off)",
    )
    loaded = parse_command_line(parser, argv)
    if loaded is None:
        return 2
    args, base = loaded

    async def go() -> ReplaySummary | None:
        try:
            plan = await _prepare(args, base)
        except (ReplayRefusedError, GroupOffsetsError) as exc:
            print(f"replay refused: {exc}", file=sys.stderr)
            return None
        config = _replay_config(base, plan.group, dry_run=args.dry_run, max_age_s=args.max_age_s)
        print(
            f"replaying {config.topics.input} into group {plan.group}: {plan.offsets} offsets in "
            f"{len(plan.open_partitions())} of {len(plan.stop)} partitions"
            f"{' (dry run)' if args.dry_run else ''}",
            file=sys.stderr,
        )
        return await run_replay(config, plan, out=sys.stderr, install_signal_handlers=True)

    summary = asyncio.run(go())
    if summary is None:
        return 2
    print(
        f"replay {'done' if summary.complete else 'INCOMPLETE'}: "
        f"{sum(summary.outcomes.values())} outcomes, {summary.sent_requests} provider requests"
        + (
            f", unfinished partitions {summary.unfinished_partitions}"
            if not summary.complete
            else ""
        )
        + (f", failure {summary.failure}" if summary.failure else ""),
        file=sys.stderr,
    )
    print(orjson.dumps(summary.to_json()).decode())
    return 0 if summary.complete else 1
