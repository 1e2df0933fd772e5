"""End-to-end pipeline benchmark: broker, sandbox, the connector and a naive baseline, as JSON.

Each system runs in its own process against a sandbox process; this module only produces the
workload, watches CPU/RSS, reads outcomes and the sandbox's request log, and computes figures.
Run ``python -m benchmarks.pipeline --help``. Stdout carries one JSON document; progress goes
to stderr. It never runs in CI (minutes, two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from benchmarks.harness import (
    ROOT,
    ConnectorProcess,
    OutcomeReader,
    ResourceSampler,
    SandboxProcess,
    Workload,
    broker,
    cancel_all,
    child_env,
    command_line,
    create_topics,
    env_secrets,
    machine,
    print_json,
    produce_backlog,
    running,
)
from connector.config import KafkaSettings
from connector.dev.demo import DEMO_ACCOUNTS, sandbox_accounts
from connector.dev.sandbox.config import SandboxConfig
from connector.dev.workload import WorkloadSpec, build_orders
from connector.kafka.producer import KafkaProducer

CPU_TARGET_MS_PER_EVENT = 0.5


def progress(message: str) -> None:
    print(f"[pipeline {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- workload


def build_workload(events: int, orders: int, seed: int) -> Workload:
    if events % orders:
        raise SystemExit("--events must be a multiple of --orders (events per order is fixed)")
    scripts = build_orders(
        WorkloadSpec(
            orders=orders, accounts=DEMO_ACCOUNTS, seed=seed, events_per_order=events // orders
        )
    )
    return Workload.interleaved(scripts, seed)


def prefix_of(workload: Workload, orders: int) -> Workload:
    """The same stream restricted to its first ``orders`` orders (keeps the interleaving)."""
    if orders >= len(workload.order_ids):
        return workload
    kept = workload.order_ids[:orders]
    keys = {oid.encode() for oid in kept}
    wanted = set(kept)
    meta = {eid: m for eid, m in workload.meta.items() if m[0] in wanted}
    records = [(k, v) for k, v in workload.records if k in keys]
    return Workload(records=records, meta=meta, order_ids=kept)


# ----------------------------------------------------------------------------- sandbox


def pipeline_sandbox(latency_ms: float, capacity: int) -> SandboxProcess:
    """The sandbox both systems send to: fixed latency, no rate limits, a request log of
    ``capacity`` entries."""
    latency = f"fixed:{latency_ms:g}" if latency_ms > 0 else "none"
    return SandboxProcess(
        *("--latency", latency, "--no-rate-limits", "--record-capacity", str(capacity))
    )


# ----------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def delivery_figures(
    workload: Workload,
    produced_at: dict[str, float],
    requests: list[dict[str, Any]],
    outcome_ids: set[str],
) -> dict[str, Any]:
    """Latency, ordering, loss and duplicates from the sandbox's arrival-ordered log."""
    seen: Counter[str] = Counter()
    latencies: list[float] = []
    highest: dict[str, int] = {}
    violations = 0
    orders_violated: set[str] = set()
    foreign = 0
    for req in sorted(requests, key=lambda r: r["seq"]):
        eid = req.get("event_id")
        if eid not in workload.meta:
            foreign += 1
            continue
        seen[eid] += 1
        if seen[eid] > 1:
            continue
        order_id, sequence = workload.meta[eid]
        if sequence < highest.get(order_id, 0):
            violations += 1
            orders_violated.add(order_id)
        else:
            highest[order_id] = sequence
        latencies.append((req["received_at"] - produced_at[eid]) * 1000)
    without_request = [e for e in workload.meta if e not in seen]
    return {
        "provider_requests": sum(seen.values()),
        "produce_to_provider_ms": {
            "p50": _round(percentile(latencies, 0.50)),
            "p99": _round(percentile(latencies, 0.99)),
            "max": _round(max(latencies, default=None)),
        },
        "ordering_violations": violations,
        "orders_with_violations": len(orders_violated),
        "lost": sum(1 for e in without_request if e not in outcome_ids),
        "events_without_request": len(without_request),
        "events_without_outcome": sum(1 for e in workload.meta if e not in outcome_ids),
        "duplicate_deliveries": sum(n - 1 for n in seen.values()),
        "unexpected_requests": foreign,
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def cpu_figures(
    sampler: ResourceSampler, start: float, end: float, delivered: int
) -> dict[str, Any]:
    window = max(1e-9, end - start)
    cpu = sampler.cpu_at(end) - sampler.cpu_at(start)
    total_cpu = sampler.samples[-1][1] if sampler.samples else 0.0
    return {
        "elapsed_s": round(window, 3),
        "events_per_s": round(delivered / window, 1),
        "cpu_s": round(cpu, 3),
        "cpu_s_process_total": round(total_cpu, 3),
        "cpu_ms_per_event": round(cpu * 1000 / delivered, 4) if delivered else None,
        "events_per_cpu_s": round(delivered / cpu, 1) if cpu > 0 else None,
        "cpu_utilisation": round(cpu / window, 3),
        "peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
    }


def _context_figures(
    sandbox: SandboxProcess, start: float, end: float, load_before: float
) -> dict[str, Any]:
    """What else was busy: the sandbox's CPU share in the window and the machine's load."""
    assert sandbox.sampler is not None  # started
    window = max(1e-9, end - start)
    used = sandbox.sampler.cpu_at(end) - sandbox.sampler.cpu_at(start)
    return {
        "sandbox_cpu_utilisation": round(used / window, 3),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


# ----------------------------------------------------------------------------- system A


def connector_config(
    *,
    bootstrap: str,
    group: str,
    topics: dict[str, str | None],
    sandbox: SandboxProcess,
    max_in_flight: int,
    account_in_flight: int,
    client: str,
    coalesce: bool,
    correlation: bool,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The connector's config file (secrets as ``env:`` references) and those variables."""
    accounts = sandbox_accounts(
        sandbox.provider_url,
        SandboxConfig(),
        rate_per_second=1_000_000.0,
        max_in_flight=account_in_flight,
        request_timeout_s=10.0,
    )
    env = env_secrets(accounts, "BENCH")
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
        "topics": topics,
        "accounts": accounts,
        # The sandbox here enforces no limits (--no-rate-limits), so neither does the connector:
        # rates are 1e6/s and Meta's pair rule is off. With it on, an uncoalesced backlog of 10
        # statuses per customer is (rightly) paced at one per 6 s once a burst window has passed,
        # which measured as a 30-48 s tail on 20,000 events.
        "limits": {"max_in_flight": max_in_flight, "commit_interval_s": 0.5, "pair_limit": False},
        "http": {"client": client, "max_connections": max_in_flight},
        # Every event must reach the provider for a like-for-like comparison with the baseline;
        # production coalesces WhatsApp backlogs (docs/ordering.md), --coalesce measures that.
        "delivery": {"coalesce_providers": ["meta", "ycloud"] if coalesce else []},
        "correlation": {"enabled": correlation},
        "server": {"enabled": False},
    }
    return config, env


def plain_accounts(sandbox: SandboxProcess) -> list[dict[str, Any]]:
    """Account settings for the baseline (same adapters, literal secrets, in-process)."""
    return sandbox_accounts(sandbox.provider_url, SandboxConfig(), request_timeout_s=10.0)


def _replica_figures(
    replicas: int, samplers: list[ResourceSampler], reader: OutcomeReader, codes: list[int]
) -> dict[str, Any]:
    """With --replicas N > 1: every member's CPU and RSS, and the group's CPU per event (the
    single-process fields above are then the first member's alone)."""
    if replicas <= 1:
        return {}
    start, end, delivered = reader.first_consume, reader.last_outcome, reader.delivered
    members = [cpu_figures(s, start, end, delivered) for s in samplers]
    cpu = sum(m["cpu_s"] for m in members)
    return {
        "replicas": replicas,
        "group_cpu_s": round(cpu, 3),
        "group_cpu_ms_per_event": round(cpu * 1000 / delivered, 4) if delivered else None,
        "group_cpu_utilisation": round(cpu / max(1e-9, end - start), 3),
        "members": [
            {"cpu_s": m["cpu_s"], "peak_rss_mb": m["peak_rss_mb"], "exit_code": c}
            for m, c in zip(members, codes, strict=True)
        ],
    }


async def _connector_run(
    args: argparse.Namespace, bootstrap: str, sandbox: SandboxProcess, workdir: Path
) -> tuple[str, dict[str, str], Path, dict[str, str]]:
    """A run id, its topics (created) and the connector's config file for them (the flags'
    settings), with the secrets that file references."""
    run = uuid.uuid4().hex[:6]
    topics = await create_topics(bootstrap, f"bench-{run}.", args.partitions)
    config_topics: dict[str, str | None] = dict(topics)
    if args.no_ledger:
        config_topics["ledger"] = None
    config, secrets = connector_config(
        bootstrap=bootstrap,
        group=f"bench-{run}",
        topics=config_topics,
        sandbox=sandbox,
        max_in_flight=args.max_in_flight,
        account_in_flight=args.account_in_flight,
        client=args.http_client,
        coalesce=args.coalesce,
        correlation=args.correlation,
    )
    config_path = workdir / f"connector-{run}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return run, topics, config_path, secrets


async def run_connector(
    args: argparse.Namespace,
    bootstrap: str,
    sandbox: SandboxProcess,
    workload: Workload,
    workdir: Path,
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    run, topics, config_path, secrets = await _connector_run(args, bootstrap, sandbox, workdir)
    progress(f"connector: producing {len(workload.records)} events to {topics['input']}")
    produced_at = await produce_backlog(bootstrap, topics["input"], workload)
    log_path = workdir / f"connector-{run}.log"
    reader = OutcomeReader(expected=len(workload.records))
    profile = (
        ("-m", "cProfile", "-o", str(args.profile_connector)) if args.profile_connector else ()
    )
    # --replicas: more members of the same consumer group, started together.
    replica_logs = [workdir / f"connector-{run}-replica{i}.log" for i in range(1, args.replicas)]
    connectors = [
        ConnectorProcess(config_path, secrets, path, python_options=profile)
        for path in (log_path, *replica_logs)
    ]
    progress(f"connector: starting {' '.join(connectors[0].command[1:])} (log {log_path})")
    samplers = [c.start() for c in connectors]
    sampler = samplers[0]
    try:
        async with running(
            *reader.reading(bootstrap, topics, args.timeout_s), *(s.run() for s in samplers)
        ):
            await connectors[0].wait_outcomes(reader, args.timeout_s, "connector", progress)
            for each in samplers:
                each.sample_now()
    finally:
        code, *other_codes = [await asyncio.to_thread(c.stop) for c in connectors]
    progress(f"connector: exited {code}; reading the sandbox log")
    requests = await sandbox.requests()
    figures = {
        "system": "connector (python -m connector.cli run, separate process)",
        "http_client": args.http_client,
        "ledger": not args.no_ledger,
        "coalesce": args.coalesce,
        "correlation": args.correlation,
        "max_in_flight": args.max_in_flight,
        "events": len(workload.records),
        "outcomes": dict(reader.outcomes),
        "delivered": reader.delivered,
        **cpu_figures(sampler, reader.first_consume, reader.last_outcome, reader.delivered),
        **_replica_figures(args.replicas, samplers, reader, [code, *other_codes]),
        **_context_figures(sandbox, reader.first_consume, reader.last_outcome, load_before),
        "consume_to_outcome_ms": {
            "p50": _round(percentile(reader.consume_to_outcome_ms, 0.5)),
            "p99": _round(percentile(reader.consume_to_outcome_ms, 0.99)),
        },
        **delivery_figures(workload, produced_at, requests, reader.ids),
        "exit_code": code,
    }
    await sandbox.reset()
    return figures


# ----------------------------------------------------------------------------- system B


async def run_baseline(
    args: argparse.Namespace,
    bootstrap: str,
    sandbox: SandboxProcess,
    workload: Workload,
    workdir: Path,
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    run = uuid.uuid4().hex[:6]
    topic = (await create_topics(bootstrap, f"bench-{run}.", args.partitions))["input"]
    progress(f"baseline: producing {len(workload.records)} events to {topic}")
    produced_at = await produce_backlog(bootstrap, topic, workload)
    accounts_path = workdir / f"baseline-{run}.accounts.json"
    accounts_path.write_bytes(orjson.dumps(plain_accounts(sandbox)))
    accounts_path.chmod(0o600)
    out_path = workdir / f"baseline-{run}.json"
    command = [
        sys.executable, "-m", "benchmarks.pipeline", "_baseline",
        "--bootstrap", bootstrap, "--topic", topic, "--group", f"bench-{run}",
        "--accounts", str(accounts_path), "--expected", str(len(workload.records)),
        "--out", str(out_path), "--timeout-s", str(args.timeout_s),
    ]  # fmt: skip
    progress("baseline: starting the naive consumer process")
    proc = subprocess.Popen(  # noqa: ASYNC220 - fork+exec returns at once
        command, cwd=ROOT, env=child_env({}), stdout=subprocess.DEVNULL
    )
    sampler = ResourceSampler(proc.pid)
    try:
        async with running(sampler.run()):
            code = await asyncio.to_thread(proc.wait, args.timeout_s + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = orjson.loads(out_path.read_bytes())
    requests = await sandbox.requests()
    delivered = report["delivered"]
    figures = {
        "system": "naive baseline (aiokafka + stock httpx.AsyncClient, one record at a time per "
        "partition, commit after each; separate process)",
        "events": len(workload.records),
        "outcomes": report["outcomes"],
        "delivered": delivered,
        **cpu_figures(sampler, report["first_consume"], report["last_outcome"], delivered),
        **_context_figures(sandbox, report["first_consume"], report["last_outcome"], load_before),
        "consume_to_outcome_ms": {
            "p50": _round(percentile(report["consume_to_outcome_ms"], 0.5)),
            "p99": _round(percentile(report["consume_to_outcome_ms"], 0.99)),
        },
        **delivery_figures(workload, produced_at, requests, set(report["outcome_ids"])),
        "exit_code": code,
    }
    await sandbox.reset()
    return figures


async def baseline_main(args: argparse.Namespace) -> int:
    """The naive consumer: per partition, one record at a time, commit after each."""
    import httpx
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from pydantic import TypeAdapter

    from connector.contract.events import decode_event
    from connector.http.sender import as_httpx_request
    from connector.providers import AccountConfig, ProviderOutcome, build_provider

    accounts = TypeAdapter(list[AccountConfig]).validate_json(args.accounts.read_bytes())
    providers = {a.name: build_provider(a) for a in accounts}
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    client = httpx.AsyncClient()
    outcomes: Counter[str] = Counter()
    ids: list[str] = []
    latencies: list[float] = []
    first_consume = float("inf")
    last_outcome = 0.0
    done = asyncio.Event()
    queues: dict[Any, deque[tuple[Any, float]]] = {}
    wakeups: dict[Any, asyncio.Event] = {}
    workers: list[asyncio.Task[None]] = []

    async def partition_worker(tp: Any) -> None:
        nonlocal last_outcome
        queue, wake = queues[tp], wakeups[tp]
        while True:
            while not queue:
                wake.clear()
                await wake.wait()
            record, consumed = queue.popleft()
            try:
                event = decode_event(record.value, record.headers)
                provider = providers[event.account or ""]
                built = provider.build_request(event)
                if isinstance(built, ProviderOutcome):
                    outcome = built
                else:
                    request = as_httpx_request(
                        built.request.with_headers(("X-Request-Id", event.event_id))
                    )
                    response = await client.send(request)
                    await response.aread()
                    outcome = provider.classify(response, attempt=0)
                label = outcome.kind.value
                ids.append(event.event_id)
            except Exception as exc:  # naive: count and move on
                label = f"error:{type(exc).__name__}"
            await consumer.commit({tp: record.offset + 1})
            last_outcome = time.time()
            outcomes[label] += 1
            latencies.append((time.monotonic() - consumed) * 1000)
            if sum(outcomes.values()) >= args.expected:
                done.set()

    await consumer.start()
    try:
        deadline = time.monotonic() + args.timeout_s
        paused: set[Any] = set()
        while not done.is_set() and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            now = time.monotonic()
            for tp, records in batches.items():
                if tp not in queues:
                    queues[tp] = deque()
                    wakeups[tp] = asyncio.Event()
                    workers.append(asyncio.create_task(partition_worker(tp)))
                if records:
                    first_consume = min(first_consume, time.time())
                queues[tp].extend((r, now) for r in records)
                wakeups[tp].set()
            full = {tp for tp, q in queues.items() if len(q) > 2_000}
            low = {tp for tp in paused if len(queues[tp]) < 500}
            if full - paused:
                consumer.pause(*(full - paused))
            if low:
                consumer.resume(*low)
            paused = (paused | full) - low
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), max(0.1, deadline - time.monotonic()))
    finally:
        await cancel_all(workers)
        await consumer.stop()
        await client.aclose()
    _ = TopicPartition  # aiokafka's partition type is what getmany keys by
    args.out.write_bytes(
        orjson.dumps(
            {
                "outcomes": dict(outcomes),
                "delivered": outcomes["accepted"] + outcomes["delivered"],
                "first_consume": first_consume,
                "last_outcome": last_outcome,
                "consume_to_outcome_ms": latencies,
                "outcome_ids": ids,
            }
        )
    )
    return 0 if done.is_set() else 1


# ----------------------------------------------------------------------------- live stream


async def produce_steady(
    bootstrap: str, topic: str, workload: Workload, rate: float
) -> tuple[dict[str, float], float]:
    """Produce the workload at ``rate`` events/s on an absolute schedule (a late tick catches
    up at once, so a busy machine does not stretch the stream); return event id -> produce
    timestamp (s, the record's CreateTime) and the achieved rate."""
    producer = KafkaProducer(KafkaSettings(bootstrap_servers=bootstrap, linger_ms=0))
    await producer.start()
    futures: list[asyncio.Future[Any]] = []
    tick_s = 0.01
    try:
        started = time.monotonic()
        sent = 0
        total = len(workload.records)
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            for key, value in workload.records[sent:due]:
                futures.append(await producer.send(topic, value, key=key))
            sent = max(sent, due)
            next_at = started + (sent / rate)
            await asyncio.sleep(max(0.0, min(tick_s, next_at - time.monotonic())))
        elapsed = time.monotonic() - started
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    ids = list(workload.meta)
    produced = {eid: md.timestamp / 1000 for eid, md in zip(ids, metadata, strict=True)}
    return produced, total / elapsed if elapsed > 0 else float("inf")


def _spread(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": _round(percentile(values, 0.50)),
        "p99": _round(percentile(values, 0.99)),
        "max": _round(max(values, default=None)),
    }


def live_figures(
    workload: Workload,
    produced_at: dict[str, float],
    requests: list[dict[str, Any]],
    outcome_at: dict[str, float],
    consumed_at: dict[str, float],
    latency_ms: float,
) -> dict[str, Any]:
    """Per-event delays of a live stream, the provider latency taken off.

    The sandbox records a request after its latency sleep, so both figures contain the
    provider latency once; what is left is what the connector (and Kafka) added.
    """
    first_request: dict[str, float] = {}
    for req in sorted(requests, key=lambda r: r["seq"]):
        eid = req.get("event_id")
        if eid in workload.meta and eid not in first_request:
            first_request[eid] = req["received_at"]
    to_provider = [(at - produced_at[eid]) * 1000 - latency_ms for eid, at in first_request.items()]
    to_outcome = [
        (at - produced_at[eid]) * 1000 - latency_ms
        for eid, at in outcome_at.items()
        if eid in produced_at
    ]
    to_consume = [
        (at - produced_at[eid]) * 1000 for eid, at in consumed_at.items() if eid in produced_at
    ]
    return {
        "produce_to_provider_minus_latency_ms": _spread(to_provider),
        "produce_to_outcome_minus_latency_ms": _spread(to_outcome),
        # Where the delay is: before the connector took the record (Kafka, the broker, the
        # benchmark's producer) or inside it (consume_to_outcome = results' latency_ms).
        "produce_to_consume_ms": _spread(to_consume),
    }


LIVE_P99_TARGET_MS = {500.0: 25.0, 1500.0: 100.0}


async def run_live_connector(
    args: argparse.Namespace,
    bootstrap: str,
    sandbox: SandboxProcess,
    rate: float,
    workdir: Path,
) -> dict[str, Any]:
    """The connector against a steady stream: start it, warm it up, then produce at ``rate``."""
    events = int(rate * args.live_duration_s)
    events -= events % 10
    workload = build_workload(events, max(1, events // 10), args.seed)
    warmup = build_workload(100, 10, args.seed + 1000)
    load_before = os.getloadavg()[0]
    run, topics, config_path, secrets = await _connector_run(args, bootstrap, sandbox, workdir)
    log_path = workdir / f"connector-{run}.log"
    reader = OutcomeReader(expected=len(warmup.records) + len(workload.records))
    progress(f"live {rate:g}/s: starting the connector (log {log_path})")
    connector = ConnectorProcess(config_path, secrets, log_path)
    sampler = connector.start()
    try:
        async with running(*reader.reading(bootstrap, topics, args.timeout_s), sampler.run()):
            # Warm-up: the group is joined and every account's connections are open before
            # the measured stream starts; its requests are then cleared from the sandbox log.
            await produce_backlog(bootstrap, topics["input"], warmup)
            deadline = time.monotonic() + 120
            while sum(reader.outcomes.values()) < len(warmup.records):
                if connector.exit_code() is not None or time.monotonic() > deadline:
                    raise RuntimeError("connector: warm-up outcomes did not arrive")
                await asyncio.sleep(0.1)
            await sandbox.reset()
            reader.outcome_at.clear()
            reader.consumed_at.clear()
            progress(f"live {rate:g}/s: producing {events} events for {args.live_duration_s} s")
            stream_start = time.time()
            produced_at, achieved = await produce_steady(bootstrap, topics["input"], workload, rate)
            await connector.wait_outcomes(reader, args.timeout_s, f"live {rate:g}/s", progress)
            stream_end = max(reader.last_outcome, time.time())
            sampler.sample_now()
    finally:
        code = await asyncio.to_thread(connector.stop)
    requests = await sandbox.requests()
    delivery = delivery_figures(workload, produced_at, requests, reader.ids)
    del delivery["produce_to_provider_ms"]  # includes the provider latency; see below
    delivered = sum(1 for eid in reader.outcome_at if eid in workload.meta)
    target = LIVE_P99_TARGET_MS.get(rate)
    figures = live_figures(
        workload, produced_at, requests, reader.outcome_at, reader.consumed_at, args.latency_ms
    )
    p99 = figures["produce_to_outcome_minus_latency_ms"]["p99"]
    await sandbox.reset()
    return {
        "rate_per_s": rate,
        "achieved_rate_per_s": round(achieved, 1),
        "duration_s": args.live_duration_s,
        "events": len(workload.records),
        "outcomes_of_stream": delivered,
        **figures,
        "p99_target_ms": target,
        "p99_target_met": None if target is None or p99 is None else p99 <= target,
        **delivery,
        "connector_cpu_s": round(sampler.cpu_at(stream_end) - sampler.cpu_at(stream_start), 3),
        "connector_cpu_utilisation": round(
            (sampler.cpu_at(stream_end) - sampler.cpu_at(stream_start))
            / max(1e-9, stream_end - stream_start),
            3,
        ),
        "connector_peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        **_context_figures(sandbox, stream_start, stream_end, load_before),
        "exit_code": code,
    }


async def live_benchmark(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    started = time.monotonic()
    capacity = max(200_000, int(2 * max(args.live_rate) * args.live_duration_s) + 10_000)
    runs: list[dict[str, Any]] = []
    async with _sandbox_and_workdir(args, capacity) as (sandbox, workdir):
        for rate in args.live_rate:
            runs.append(await run_live_connector(args, bootstrap, sandbox, rate, workdir))
    return {
        "benchmark": "pipeline-live",
        "command": command_line("benchmarks.pipeline", args.argv),
        "params": {
            "rates_per_s": args.live_rate,
            "duration_s": args.live_duration_s,
            "partitions": args.partitions,
            "providers": sorted(DEMO_ACCOUNTS),
            "sandbox_latency_ms": args.latency_ms,
            "max_in_flight": args.max_in_flight,
            "account_max_in_flight": args.account_in_flight,
            "http_client": args.http_client,
            "ledger": not args.no_ledger,
            "coalesce": args.coalesce,
            "correlation": args.correlation,
        },
        "machine": machine(),
        "runs": runs,
        "wall_s": round(time.monotonic() - started, 1),
    }


# ----------------------------------------------------------------------------- main


@contextlib.asynccontextmanager
async def _sandbox_and_workdir(
    args: argparse.Namespace, capacity: int
) -> AsyncIterator[tuple[SandboxProcess, Path]]:
    """The sandbox process (sampled throughout) and a folder for configs and logs."""
    sandbox = pipeline_sandbox(args.latency_ms, capacity)
    sampler = await sandbox.start()
    progress(f"sandbox process {sampler.pid} at {sandbox.url}, latency {args.latency_ms} ms")
    try:
        async with running(sampler.run()):
            with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
                keep = args.keep_logs
                yield sandbox, Path(tempfile.mkdtemp(prefix="bench-")) if keep else Path(tmp)
    finally:
        sandbox.stop()


async def benchmark(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    started = time.monotonic()
    progress(f"building the workload: {args.events} events over {args.orders} orders")
    workload = build_workload(args.events, args.orders, args.seed)
    baseline_events = min(args.baseline_events, args.events)
    baseline_orders = max(1, baseline_events * args.orders // args.events)
    capacity = max(200_000, 2 * args.events + 10_000)
    systems: dict[str, Any] = {}
    async with _sandbox_and_workdir(args, capacity) as (sandbox, workdir):
        if not args.skip_connector:
            systems["connector"] = await run_connector(args, bootstrap, sandbox, workload, workdir)
        if baseline_events > 0 and not args.skip_baseline:
            systems["naive_baseline"] = await run_baseline(
                args, bootstrap, sandbox, prefix_of(workload, baseline_orders), workdir
            )
    a, b = systems.get("connector"), systems.get("naive_baseline")
    result: dict[str, Any] = {
        "benchmark": "pipeline",
        "command": command_line("benchmarks.pipeline", args.argv),
        "params": {
            "events": args.events,
            "orders": args.orders,
            "events_per_order": args.events // args.orders,
            "partitions": args.partitions,
            "providers": sorted(DEMO_ACCOUNTS),
            "sandbox_latency_ms": args.latency_ms,
            "baseline_events": baseline_events if not args.skip_baseline else 0,
            "max_in_flight": args.max_in_flight,
            "account_max_in_flight": args.account_in_flight,
            "replicas": args.replicas,
        },
        "machine": machine(),
        "systems": systems,
        "ratio": round(a["events_per_s"] / b["events_per_s"], 2)
        if a and b and b["events_per_s"]
        else None,
        "cpu_target": {
            "max_cpu_ms_per_event": CPU_TARGET_MS_PER_EVENT,
            "connector_cpu_ms_per_event": a["cpu_ms_per_event"] if a else None,
            "connector_events_per_cpu_s": a["events_per_cpu_s"] if a else None,
            "met": bool(a and a["cpu_ms_per_event"] <= CPU_TARGET_MS_PER_EVENT),
        },
        "http_transport_comparison": "docs/http-transport.md (benchmarks/http_transport.py)",
        "wall_s": round(time.monotonic() - started, 1),
    }
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline",
        description="Connector vs naive baseline, end to end; prints one JSON document.",
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--orders", type=int, default=None, help="default: events / 10 (10 events per order)"
    )
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="0: CPU-bound run")
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=None,
        help="events (a prefix of the same workload, whole orders) for the naive baseline; "
        "its rate is latency-bound and steady, so the default min(10,000, events/5) keeps the "
        "run short; pass --baseline-events EVENTS for the identical workload",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-connector", action="store_true")
    parser.add_argument(
        "--coalesce",
        action="store_true",
        help="keep production coalescing for Meta/YCloud (backlogged events get superseded)",
    )
    parser.add_argument(
        "--correlation",
        action="store_true",
        help="write correlation records (message id -> event) as a deployment that serves "
        "webhooks does; off by default, as in the product without webhooks",
    )
    parser.add_argument(
        "--no-ledger", action="store_true", help="run the connector with topics.ledger off"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="connector processes in one consumer group (the scaling figure)",
    )
    parser.add_argument("--max-in-flight", type=int, default=512)
    parser.add_argument("--account-in-flight", type=int, default=256)
    parser.add_argument("--http-client", choices=["aiohttp", "httpx", "native"], default="native")
    parser.add_argument(
        "--live-rate",
        type=float,
        action="append",
        help="live-stream mode: produce at this many events/s while the connector runs "
        "(repeat for several rates, e.g. --live-rate 500 --live-rate 1500); no baseline",
    )
    parser.add_argument(
        "--live-duration-s", type=float, default=60.0, help="live-stream length per rate"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--keep-logs", action="store_true", help="keep configs and logs")
    parser.add_argument(
        "--profile-connector", type=Path, help="run the connector under cProfile, stats here"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_baseline":
        sub = argparse.ArgumentParser(prog="pipeline _baseline")
        sub.add_argument("--bootstrap", required=True)
        sub.add_argument("--topic", required=True)
        sub.add_argument("--group", required=True)
        sub.add_argument("--accounts", type=Path, required=True)
        sub.add_argument("--expected", type=int, required=True)
        sub.add_argument("--out", type=Path, required=True)
        sub.add_argument("--timeout-s", type=float, default=900.0)
        return asyncio.run(baseline_main(sub.parse_args(argv[1:])))
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.orders is None:
        args.orders = max(1, args.events // 10)
    if args.baseline_events is None:
        args.baseline_events = min(10_000, args.events // 5)
    # aiokafka warns on stderr while a fresh topic elects leaders; the producer retries.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with broker(progress) as bootstrap:
        if args.live_rate:
            result = asyncio.run(live_benchmark(args, bootstrap))
        else:
            result = asyncio.run(benchmark(args, bootstrap))
    print_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
