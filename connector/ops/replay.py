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
from connector.contract.topics import TopicSpec
from connector.delivery.ports import NullObserver
from connector.kafka.admin import KafkaAdmin, TopicAdminError
from connector.kafka.connection import client_kwargs
from connector.kafka.consumer import TP, ConsumedRecord, KafkaConsumer
from connector.kafka.group_offsets import (
    GroupOffsetsError,
    commit_offsets,
    committed_offsets,
    group_state,
    offsets_at,
    partition_bounds,
)
from connector.ops import command

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


DRY_RUN_SUFFIX = ".dry-run"
DRY_RUN_RETENTION_MS = 7 * 24 * 3600 * 1000


async def dry_run_topics(
    config: ConnectorConfig, *, results: str | None = None, errors: str | None = None
) -> ConnectorConfig:
    """``config`` writing results and errors to separate dry-run topics (created when missing,
    partitioned like the production ones, kept 7 days), so a dry run never writes to the
    topics consumers of the real outcomes read."""
    topics = config.topics
    targets = {
        "results": (results or f"{topics.results}{DRY_RUN_SUFFIX}", topics.results),
        "errors": (errors or f"{topics.errors}{DRY_RUN_SUFFIX}", topics.errors),
    }
    for name, (target, production) in targets.items():
        if target in (production, topics.input, topics.ledger, topics.correlation):
            raise ReplayRefusedError(
                f"--dry-run-{name} {target!r} is a production topic: name a separate one"
            )
    options = client_kwargs(config.kafka)
    bootstrap = options.pop("bootstrap_servers")
    options.pop("client_id", None)
    async with KafkaAdmin(bootstrap, **options) as admin:
        existing = await admin.list_topics()
        wanted = [(t, p) for t, p in targets.values() if t not in existing]
        if wanted:
            like = await admin.describe_topics([p for _, p in wanted])
            specs = []
            for target, production in wanted:
                found = like.get(production)
                specs.append(
                    TopicSpec(
                        logical_name=target,
                        name=target,
                        role="output",
                        key="order id",
                        partitions=found.partitions if found else 1,
                        replication_factor=found.replication_factor if found else 1,
                        configs={"retention.ms": str(DRY_RUN_RETENTION_MS)},
                    )
                )
            await admin.create_topics(specs)
            await admin.wait_for_topics([t for t, _ in wanted])
    return config.model_copy(
        update={
            "topics": topics.model_copy(
                update={"results": targets["results"][0], "errors": targets["errors"][0]}
            )
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


def replay_parser() -> argparse.ArgumentParser:
    parser = command.command_parser("order-connector replay", _DESCRIPTION)
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the beginning of the input topic (the default)",
    )
    command.add_time_option(
        where, "--from-time", "start at the first record at or after TIME (ISO 8601 with zone)"
    )
    where.add_argument(
        "--from-offsets",
        type=_parse_offsets,
        metavar="P:O,...",
        help="start partition P at offset O; partitions not named continue from the group",
    )
    command.add_time_option(
        parser, "--until", "process records up to TIME (ISO 8601 with zone; default: the end now)"
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        "--group",
        metavar="GROUP",
        help="replay into this group (default: kafka.group_id); stop its members",
    )
    who.add_argument(
        "--new-group",
        metavar="GROUP",
        help="like --group, refused if it has committed offsets",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing; write dry_run results to --dry-run-results, never to the "
        "production topics",
    )
    parser.add_argument(
        "--dry-run-results",
        metavar="TOPIC",
        help="with --dry-run: the topic for dry_run results (default: <results topic>.dry-run; "
        "created if missing)",
    )
    parser.add_argument(
        "--dry-run-errors",
        metavar="TOPIC",
        help="with --dry-run: the topic for error records (default: <errors topic>.dry-run; "
        "created if missing)",
    )
    parser.add_argument(
        "--max-age-s",
        type=float,
        default=DEFAULT_REPLAY_MAX_AGE_S,
        metavar="SECONDS",
        help="events older are 'expired' (default 7 days; 0 = off)",
    )
    return parser


def replay_main(argv: list[str]) -> int:
    parser = replay_parser()
    args, base = command.parse_command_line(parser, argv)
    if not args.dry_run and (args.dry_run_results or args.dry_run_errors):
        parser.error("--dry-run-results and --dry-run-errors need --dry-run")

    async def go() -> ReplaySummary | None:
        try:
            outputs = base
            if args.dry_run:
                outputs = await dry_run_topics(
                    base, results=args.dry_run_results, errors=args.dry_run_errors
                )
            plan = await _prepare(args, base)
        except (ReplayRefusedError, GroupOffsetsError, TopicAdminError) as exc:
            print(f"order-connector replay: refused: {command.one_line(str(exc))}", file=sys.stderr)
            return None
        config = _replay_config(outputs, plan.group, dry_run=args.dry_run, max_age_s=args.max_age_s)
        if args.dry_run:
            print(
                f"dry run: results to {config.topics.results}, errors to {config.topics.errors}",
                file=sys.stderr,
            )
        print(
            f"replaying {config.topics.input} into group {plan.group}: {plan.offsets} offsets in "
            f"{len(plan.open_partitions())} of {len(plan.stop)} partitions"
            f"{' (dry run)' if args.dry_run else ''}",
            file=sys.stderr,
        )
        return await run_replay(config, plan, out=sys.stderr, install_signal_handlers=True)

    try:
        summary = asyncio.run(go())
    except Exception as exc:  # one line for the operator, never a traceback
        print(command.failure_line(parser.prog, exc, base.secret_values()), file=sys.stderr)
        return 1
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
