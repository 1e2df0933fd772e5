"""``order-connector replay`` and ``order-connector redrive``: reprocess input history with the
ledger's protection, and re-publish selected error records to the input exactly once each.

Owns offset resets, replay bounds and the redrive log; never sends to providers itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from connector.app import ConnectorApp
from connector.config import ConnectorConfig, load_config
from connector.errors import ConfigError
from connector.kafka.admin import KafkaAdmin
from connector.kafka.connection import client_kwargs
from connector.kafka.consumer import TP, ConsumedRecord, read_topic
from connector.kafka.producer import KafkaProducer
from connector.topics import TopicSpec

DEFAULT_REPLAY_MAX_AGE_S = 7 * 24 * 3600.0
REDRIVE_HEADER = "x-redriven-from"


# ---------------------------------------------------------------------------------- replay


def _parse_time(text: str) -> int:
    """ISO 8601 (with offset) to epoch milliseconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone, e.g. 2026-01-01T00:00Z")
    return int(moment.timestamp() * 1000)


def _parse_offsets(text: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in text.split(","):
        p, _, o = part.partition(":")
        out[int(p)] = int(o)
    return out


async def plan_offsets(
    config: ConnectorConfig,
    *,
    from_time_ms: int | None,
    from_offsets: dict[int, int] | None,
    until_ms: int | None,
) -> tuple[dict[int, int], dict[int, int]]:
    """Start and stop offsets per input partition (stop = first offset not to process)."""
    consumer = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, **client_kwargs(config.kafka)
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(config.topics.input)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(config.topics.input) or set()
        tps = [TopicPartition(config.topics.input, p) for p in sorted(parts)]
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        start = {tp.partition: begin[tp] for tp in tps}
        if from_time_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, from_time_ms))
            start = {tp.partition: (found[tp].offset if found[tp] else end[tp]) for tp in tps}
        if from_offsets is not None:
            start.update(from_offsets)
        stop = {tp.partition: end[tp] for tp in tps}
        if until_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, until_ms))
            stop = {tp.partition: (found[tp].offset if found[tp] else end[tp]) for tp in tps}
    finally:
        await consumer.stop()
    return start, stop


async def reset_group(config: ConnectorConfig, group: str, start: dict[int, int]) -> None:
    """Commit ``start`` for ``group`` (the group must have no running members)."""
    consumer = AIOKafkaConsumer(
        group_id=group, enable_auto_commit=False, **client_kwargs(config.kafka)
    )
    await consumer.start()
    try:
        tps = {TopicPartition(config.topics.input, p): o for p, o in start.items()}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()


class _BoundedSource:
    """Wraps the engine's record source: drops records at or past each partition's stop offset
    (so they are neither processed nor committed) and pauses those partitions."""

    def __init__(self, inner: Any, stop: dict[int, int]) -> None:
        self._inner = inner
        self._stop = stop
        self.finished: set[int] = set()

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[ConsumedRecord]:
        records = await self._inner.getmany(timeout_ms=timeout_ms, max_records=max_records)
        kept = []
        for r in records:
            if r.offset >= self._stop.get(r.partition, 1 << 62):
                if r.partition not in self.finished:
                    self.finished.add(r.partition)
                    self._inner.pause([TP(r.topic, r.partition)])
                continue
            kept.append(r)
        return kept

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def replay(
    config: ConnectorConfig, start: dict[int, int], stop: dict[int, int], *, out: Any
) -> Counter[str]:
    total = sum(max(0, stop[p] - start.get(p, 0)) for p in stop)
    app = ConnectorApp(config)
    bounded = _BoundedSource(app.engine._source, stop)
    app.engine._source = bounded
    runner = asyncio.create_task(app.run())
    started = time.monotonic()
    try:
        while True:
            await asyncio.sleep(1.0)
            if runner.done():
                break
            stats = app.engine.stats
            done = stats.results + stats.errors
            width = 30
            filled = int(width * min(1.0, done / total)) if total else width
            print(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} outcomes, "
                f"{stats.sent_requests} sent, {time.monotonic() - started:.0f}s",
                end="",
                file=out,
                flush=True,
            )
            states = app.engine._states
            if done >= total and all(
                (s.tracker.committed or 0) >= stop.get(tp.partition, 0)
                or stop.get(tp.partition, 0) <= start.get(tp.partition, 0)
                for tp, s in states.items()
            ):
                break
    finally:
        app.request_stop()
        with contextlib.suppress(Exception):
            await runner
    print(file=out)
    counts: Counter[str] = Counter(app.engine.verdicts)
    counts["outcomes"] = app.engine.stats.results + app.engine.stats.errors
    counts["sent_requests"] = app.engine.stats.sent_requests
    counts["errors"] = app.engine.stats.errors
    return counts


def replay_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="order-connector replay",
        description="Reprocess input history; the ledger skips what was delivered.",
    )
    parser.add_argument("--config", type=Path, required=True)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true", help="(default)")
    where.add_argument("--from-time", type=_parse_time, help="ISO time with zone")
    where.add_argument("--from-offsets", type=_parse_offsets, help="P:O,P:O,...")
    parser.add_argument("--until", type=_parse_time, help="stop before records after this time")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--group", help="reset and use this group (stop its members first)")
    who.add_argument("--new-group", help="replay into a fresh group with this id")
    parser.add_argument(
        "--dry-run", action="store_true", help="publish dry_run results, send nothing"
    )
    parser.add_argument(
        "--max-age-s",
        type=float,
        default=DEFAULT_REPLAY_MAX_AGE_S,
        help="events older are 'expired' (0 = off)",
    )
    args = parser.parse_args(argv)
    try:
        base = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration invalid: {exc}", file=sys.stderr)
        return 2
    group = args.new_group or args.group or base.kafka.group_id
    config = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"group_id": group}),
            "delivery": base.delivery.model_copy(
                update={"dry_run": args.dry_run, "max_event_age_s": args.max_age_s or None}
            ),
            "server": base.server.model_copy(update={"enabled": False}),
        }
    )

    async def go() -> Counter[str]:
        start, stop = await plan_offsets(
            config, from_time_ms=args.from_time, from_offsets=args.from_offsets, until_ms=args.until
        )
        await reset_group(config, group, start)
        print(
            f"replaying {config.topics.input} into group {group}: "
            f"{sum(max(0, stop[p] - start[p]) for p in stop)} records",
            file=sys.stderr,
        )
        return await replay(config, start, stop, out=sys.stderr)

    counts = asyncio.run(go())
    print(orjson.dumps(dict(sorted(counts.items()))).decode())
    return 0


# ---------------------------------------------------------------------------------- redrive


def _select(
    error: dict[str, Any],
    classes: set[str],
    providers: set[str],
    since_ms: int | None,
    until_ms: int | None,
) -> bool:
    if classes and error.get("error_class") not in classes:
        return False
    if providers and error.get("provider") not in providers:
        return False
    if error.get("original_value") is None or error.get("source") is None:
        return False  # nothing to re-drive (asynchronous provider errors have no input record)
    at = int(datetime.fromisoformat(error["recorded_at"]).timestamp() * 1000)
    if since_ms is not None and at < since_ms:
        return False
    return until_ms is None or at <= until_ms


async def _ensure_log_topic(config: ConnectorConfig, topic: str) -> None:
    options = client_kwargs(config.kafka)
    bootstrap = options.pop("bootstrap_servers")
    options.pop("client_id", None)
    async with KafkaAdmin(bootstrap, **options) as admin:
        if topic in await admin.list_topics():
            return
        await admin.create_topics(
            [
                TopicSpec(
                    logical_name=topic,
                    name=topic,
                    role="state",
                    key="error coordinates",
                    partitions=1,
                    replication_factor=1,
                    configs={"cleanup.policy": "compact"},
                )
            ]
        )
        await admin.wait_for_topics([topic])


async def redrive(
    config: ConnectorConfig,
    *,
    classes: Iterable[str] = (),
    providers: Iterable[str] = (),
    since_ms: int | None = None,
    until_ms: int | None = None,
    log_topic: str | None = None,
    dry_run: bool = False,
) -> Counter[str]:
    """Re-publish matching error records to the input, each error record at most once.

    The redrive log (compacted, key = ``errors-topic:partition:offset``) remembers what was
    re-driven; the input copy carries the same coordinates in the ``x-redriven-from`` header.
    """
    log_topic = log_topic or f"{config.topics.errors}.redrive-log"
    await _ensure_log_topic(config, log_topic)
    done = {r.key for r in await read_topic(config.kafka, log_topic, idle_timeout_s=1.0) if r.key}
    errors = await read_topic(config.kafka, config.topics.errors, idle_timeout_s=1.0)
    wanted_classes, wanted_providers = set(classes), set(providers)
    counts: Counter[str] = Counter()
    producer = KafkaProducer(config.kafka)
    await producer.start()
    try:
        for record in errors:
            counts["errors_read"] += 1
            error = orjson.loads(record.value or b"{}")
            if not _select(error, wanted_classes, wanted_providers, since_ms, until_ms):
                continue
            coords = f"{record.topic}:{record.partition}:{record.offset}".encode()
            if coords in done:
                counts["already_redriven"] += 1
                continue
            counts["selected"] += 1
            if dry_run:
                continue
            key = base64.b64decode(error["original_key"]) if error.get("original_key") else None
            value = base64.b64decode(error["original_value"])
            headers = [
                (h["key"], base64.b64decode(h["value"]) if h.get("value") else b"")
                for h in error.get("original_headers", [])
                if h["key"] != REDRIVE_HEADER
            ]
            headers.append((REDRIVE_HEADER, coords))
            await (await producer.send(config.topics.input, value, key=key, headers=headers))
            await (
                await producer.send(
                    log_topic, orjson.dumps({"redriven_at": time.time()}), key=coords
                )
            )
            done.add(coords)
            counts["redriven"] += 1
    finally:
        await producer.stop()
    return counts


def redrive_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="order-connector redrive",
        description="Re-publish error records to the input after a fix.",
    )
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument(
        "--class", dest="classes", action="append", default=[], help="error class (repeatable)"
    )
    parser.add_argument("--provider", dest="providers", action="append", default=[])
    parser.add_argument("--since", type=_parse_time)
    parser.add_argument("--until", type=_parse_time)
    parser.add_argument("--log-topic", default=None, help="default: <errors topic>.redrive-log")
    parser.add_argument("--dry-run", action="store_true", help="count, publish nothing")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration invalid: {exc}", file=sys.stderr)
        return 2
    counts = asyncio.run(
        redrive(
            config,
            classes=args.classes,
            providers=args.providers,
            since_ms=args.since,
            until_ms=args.until,
            log_topic=args.log_topic,
            dry_run=args.dry_run,
        )
    )
    print(orjson.dumps(dict(sorted(counts.items()))).decode())
    return 0
