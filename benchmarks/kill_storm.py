"""The kill -9 storm: the connector, killed with SIGKILL again and again while it works through a
backlog, loses nothing, reorders nothing, and repeats at most its in-flight window per kill.

One broker, one sandbox process and the connector as ``python -m connector.cli run`` in its own
process. The backlog is produced first; then the connector starts, and each time another
``1 / (kills + 1)`` of the events has an outcome it is killed with SIGKILL and started again at
once (a new process of the same consumer group). After the last restart it runs until every event
has an outcome, then stops with SIGTERM. The sandbox's request log says what reached the
provider: lost (no request and no outcome), ordering violations (an order's first requests out
of sequence order) and duplicates (requests beyond the first per event), in total and per kill.

Run ``python -m benchmarks.kill_storm --kills 10 --events 20000``. Stdout carries one JSON
document; progress goes to stderr. It never runs in CI (minutes, two cores). It runs on the
shared harness (``benchmarks.harness``) and the pipeline benchmark's workload and figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness import (
    ConnectorProcess,
    OutcomeReader,
    Workload,
    broker,
    command_line,
    create_topics,
    machine,
    print_json,
    produce_backlog,
    running,
)
from benchmarks.pipeline import (
    build_workload,
    connector_config,
    delivery_figures,
    pipeline_sandbox,
)


def progress(message: str) -> None:
    print(f"[kill_storm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _until(
    reader: OutcomeReader,
    wanted: set[str],
    count: int,
    connector: ConnectorProcess,
    deadline: float,
) -> bool:
    """Wait until ``count`` of the ``wanted`` events have an outcome; False at the deadline."""
    last = -1
    while True:
        done = len(reader.ids & wanted)
        if done >= count:
            return True
        connector.check_alive()
        if time.monotonic() > deadline:
            progress(f"timed out at {done}/{count} events with an outcome")
            return False
        if done != last and done // 1000 != last // 1000:
            progress(f"{done}/{len(wanted)} events have an outcome")
        last = done
        await asyncio.sleep(0.05)


async def storm(args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    workload: Workload = build_workload(args.events, args.orders, args.seed)
    sandbox = pipeline_sandbox(args.latency_ms, max(200_000, 3 * args.events))
    await sandbox.start()
    try:
        run = uuid.uuid4().hex[:6]
        topics = await create_topics(bootstrap, f"storm-{run}.", args.partitions)
        progress(f"producing {len(workload.records)} events to {topics['input']}")
        produced_at = await produce_backlog(bootstrap, topics["input"], workload)
        config, secrets = connector_config(
            bootstrap=bootstrap,
            group=f"storm-{run}",
            topics=dict(topics),
            sandbox=sandbox,
            max_in_flight=args.max_in_flight,
            account_in_flight=args.account_in_flight,
            client="aiohttp",
            coalesce=False,
            correlation=False,
        )
        config_path = workdir / "connector.yaml"
        config_path.write_text(yaml.safe_dump(config))
        connector = ConnectorProcess(config_path, secrets, workdir / "connector.log")
        reader = OutcomeReader(expected=len(workload.records))
        wanted = set(workload.meta)
        deadline = time.monotonic() + args.timeout_s
        kills: list[dict[str, Any]] = []
        complete = False
        async with running(*reader.reading(bootstrap, topics, args.timeout_s)):
            try:
                connector.start()
                for k in range(1, args.kills + 1):
                    at = len(wanted) * k // (args.kills + 1)
                    if not await _until(reader, wanted, at, connector, deadline):
                        break
                    before = await sandbox.requests()
                    connector.kill()
                    kills.append(
                        {"kill": k, "events_with_outcome": len(reader.ids & wanted),
                         "provider_requests": len(before)}
                    )  # fmt: skip
                    progress(
                        f"kill {k}/{args.kills}: SIGKILL at {kills[-1]['events_with_outcome']}"
                    )
                    connector.start()
                else:
                    complete = await _until(reader, wanted, len(wanted), connector, deadline)
                # Let outcomes of re-read records arrive before counting them.
                await asyncio.sleep(args.settle_s)
            finally:
                code = await asyncio.to_thread(connector.stop)
        requests = await sandbox.requests()
    finally:
        sandbox.stop()
    figures = delivery_figures(workload, produced_at, requests, reader.ids)
    duplicates = figures["duplicate_deliveries"]
    per_event: Counter[str] = Counter(r.get("event_id") for r in requests)
    return {
        "benchmark": "kill_storm",
        "command": command_line("benchmarks.kill_storm", args.argv),
        "params": {
            "events": args.events,
            "orders": args.orders,
            "partitions": args.partitions,
            "kills": args.kills,
            "max_in_flight": args.max_in_flight,
            "sandbox_latency_ms": args.latency_ms,
        },
        "machine": machine(),
        "complete": complete,
        "kills_done": len(kills),
        "starts": connector.starts,
        "lost": figures["lost"],
        "events_without_outcome": figures["events_without_outcome"],
        "ordering_violations": figures["ordering_violations"],
        "duplicate_deliveries": duplicates,
        "duplicates_per_kill": round(duplicates / len(kills), 1) if kills else None,
        "max_sends_of_one_event": max(per_event.values(), default=0),
        "provider_requests": figures["provider_requests"],
        "outcomes": dict(reader.outcomes),
        "kill_points": kills,
        "exit_code_at_end": code,
        "wall_s": round(time.monotonic() - started, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.kill_storm",
        description="SIGKILL the connector repeatedly under load; prints one JSON document.",
    )
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--orders", type=int, default=None, help="default: events / 10")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--max-in-flight", type=int, default=512)
    parser.add_argument("--account-in-flight", type=int, default=256)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--keep-logs", action="store_true", help="keep the config and log")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.orders is None:
        args.orders = max(1, args.events // 10)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with broker(progress) as bootstrap:
        if args.keep_logs:
            workdir = Path(tempfile.mkdtemp(prefix="kill-storm-"))
            progress(f"logs in {workdir}")
            result = asyncio.run(storm(args, bootstrap, workdir))
        else:
            with tempfile.TemporaryDirectory(prefix="kill-storm-") as tmp:
                result = asyncio.run(storm(args, bootstrap, Path(tmp)))
    print_json(result)
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
