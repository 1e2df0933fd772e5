"""Repeated ``kill -9`` under the transactional mode (issue 5): nothing lost, order held,
duplicates within the in-flight limit per crash, exactly one committed outcome per record."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from connector.dev.demo import DEMO_ACCOUNTS
from connector.dev.sandbox.server import SandboxServer
from connector.dev.workload import WorkloadSpec, build_orders, interleave
from tests.support.pipeline import (
    ConnectorProcess,
    assert_logs_hold_no_secret,
    check_deliveries,
    make_pipeline,
    outcome_counts,
    quiet_sandbox,
)

pytestmark = pytest.mark.integration

KILLS = 3
MAX_IN_FLIGHT = 48


@pytest.mark.parametrize("transactional", [True, False], ids=["transactional", "plain"])
async def test_repeated_kill_minus_9_keeps_every_invariant(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    transactional: bool,
) -> None:
    sandbox_config = quiet_sandbox(latency={"kind": "uniform", "min_ms": 2, "max_ms": 25})
    async with SandboxServer(sandbox_config) as sandbox:
        pipe = await make_pipeline(
            kafka_bootstrap,
            unique_name,
            partitions=6,
            sandbox_config=sandbox_config,
            sandbox=sandbox,
        )
        scripts = build_orders(
            WorkloadSpec(orders=700, accounts=DEMO_ACCOUNTS, events_per_order=5, seed=29)
        )
        events = list(interleave(scripts, seed=3))
        await pipe.produce(events)
        config = pipe.config(
            kafka={"session_timeout_ms": 6_000},
            limits={"max_in_flight": MAX_IN_FLIGHT, "commit_interval_s": 0.2},
            delivery={
                "coalesce_providers": [],
                "transactional": transactional,
                "transactional_id": unique_name("txn"),
            },
        )
        rng = random.Random(99)
        # Kill at random points spread over the run (fractions of the events sent so far).
        marks = sorted(rng.uniform(0.1, 0.8) for _ in range(KILLS))
        procs: list[ConnectorProcess] = []
        try:
            for i, mark in enumerate(marks):
                proc = ConnectorProcess(config, tmp_path, f"run-{i}")
                procs.append(proc)
                proc.start()
                with anyio.fail_after(120):
                    while len(sandbox.requests()) < mark * len(events):
                        await asyncio.sleep(0.02)
                proc.kill9()
            last = ConnectorProcess(config, tmp_path, "final")
            procs.append(last)
            last.start()
            results, errors = await pipe.outcomes(
                len(events), deadline_s=240, isolation="read_committed"
            )
            assert last.terminate() == 0, last.log_path.read_text()[-3000:]
        finally:
            for proc in procs:
                proc.ensure_stopped()

        phones = {e.recipient.phone for e in events if e.recipient is not None}
        scanned = assert_logs_hold_no_secret(config, procs, phones=phones)
        assert scanned > 20  # the processes did log (start, assignment, ledger, stop)
        done = {r["event_id"] for r in results} | {e["event_id"] for e in errors}
        assert done == {e.event_id for e in events}, "lost events"
        check = check_deliveries(scripts, sandbox.requests())
        assert check.violations == [], check.violations[:5]
        assert check.missing == []
        print(
            f"\n{'transactional' if transactional else 'plain'}: {KILLS} kills at "
            f"{[round(m, 2) for m in marks]}, {check.requests} provider requests for "
            f"{len(events)} events, {check.duplicates} duplicates "
            f"(limit {MAX_IN_FLIGHT} per crash)"
        )
        assert check.duplicates <= MAX_IN_FLIGHT * KILLS
        per_source = outcome_counts(results, errors)
        assert len(per_source) == len(events)
        if transactional:
            # read_committed: exactly one outcome per input record, across every crash.
            assert set(per_source.values()) == {1}, sorted(
                k for k, v in per_source.items() if v != 1
            )[:10]
