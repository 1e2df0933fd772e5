"""CPU per event of the real daemon on a small pipeline, printed in CI's output (issue 12).

No timing assertion: CI machines are shared and noisy; the target is judged by
``python -m benchmarks.pipeline --latency-ms 0`` (docs/benchmarks.md). This test keeps the figure
visible in every CI log and checks that the run it measures was a correct one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import anyio
import psutil  # type: ignore[import-untyped]  # no stubs in the venv
import pytest

from connector.dev.demo import DEMO_ACCOUNTS
from connector.dev.sandbox.server import SandboxServer
from connector.dev.workload import WorkloadSpec, build_orders, interleave
from tests.support.pipeline import (
    ConnectorProcess,
    check_deliveries,
    make_pipeline,
    outcome_counts,
    quiet_sandbox,
)

pytestmark = pytest.mark.integration

EVENTS = 5_000


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def test_cpu_per_event_is_printed_for_a_5000_event_pipeline(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = quiet_sandbox()  # latency 0: the connector's own CPU is what is measured
    async with SandboxServer(config) as sandbox:
        pipe = await make_pipeline(
            kafka_bootstrap, unique_name, partitions=6, sandbox_config=config, sandbox=sandbox
        )
        scripts = build_orders(
            WorkloadSpec(orders=EVENTS // 10, accounts=DEMO_ACCOUNTS, events_per_order=10, seed=12)
        )
        events = list(interleave(scripts, seed=3))
        assert len(events) == EVENTS
        daemon = ConnectorProcess(
            pipe.config(limits={"max_in_flight": 512}, account_max_in_flight=256),
            tmp_path,
            "cpu",
        )
        try:
            daemon.start()
            assert daemon.proc is not None
            # Start-up (imports, group join, ledger load) is not part of the figure.
            with anyio.fail_after(60):
                while "ledger_loaded" not in daemon.log_path.read_text(errors="replace"):
                    assert daemon.proc.poll() is None, daemon.log_path.read_text()[-2000:]
                    await asyncio.sleep(0.05)
            proc = psutil.Process(daemon.proc.pid)
            cpu_before = _cpu_s(proc)
            await pipe.produce(events)
            results, errors = await pipe.outcomes(EVENTS, deadline_s=240)
            cpu_s = _cpu_s(proc) - cpu_before
            assert daemon.terminate() == 0, daemon.log_path.read_text()[-2000:]
        finally:
            daemon.ensure_stopped()
        requests = sandbox.requests()
    # The run measured must be a correct one: every event sent once, in order, one outcome each.
    assert errors == []
    assert len(outcome_counts(results, errors)) == EVENTS
    assert {r["outcome"] for r in results} <= {"accepted", "delivered"}
    check = check_deliveries(scripts, requests)
    assert check.missing == []
    assert check.violations == []
    assert cpu_s > 0
    with capsys.disabled():
        print(
            f"\n[cpu-per-event] {EVENTS} events, latency 0, ledger on: connector CPU "
            f"{cpu_s:.2f} s = {cpu_s * 1000 / EVENTS:.3f} ms per event "
            "(benchmark target 0.25 ms: python -m benchmarks.pipeline --latency-ms 0)"
        )
