"""``order-connector replay`` and ``redrive`` as users run them: the CLI in a subprocess, secrets
from the environment, against the real broker and the sandbox, with asserted counts."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from connector.contract.events import OrderStatusChanged
from connector.dev.demo import DEMO_ACCOUNTS
from connector.dev.sandbox.server import SandboxServer
from connector.dev.workload import OrderScript, WorkloadSpec, build_orders, interleave
from connector.kafka.group_offsets import committed_offsets, partition_bounds
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import (
    ConnectorProcess,
    Pipeline,
    make_pipeline,
    quiet_sandbox,
)
from tests.support.replay_stack import read_all, run_until_outcomes, sent_per_event

pytestmark = pytest.mark.integration


@dataclass
class CliRun:
    code: int
    summary: dict[str, Any]
    stderr: str


class Stack:
    """A pipeline plus a config file whose secrets are ``env:`` references."""

    def __init__(self, pipe: Pipeline, workdir: Path) -> None:
        self.pipe = pipe
        self.config = pipe.config()
        self.file = ConnectorProcess(self.config, workdir, "connector")  # writes the file only
        text = self.file.config_path.read_text(encoding="utf-8")
        assert "sandbox-meta-token" not in text
        assert "env:OSC_TEST_" in text

    async def cli(self, command: str, *args: str, timeout_s: float = 90.0) -> CliRun:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "connector.cli",
            command,
            "--config",
            str(self.file.config_path),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.file.env,
            cwd=REPO_ROOT,
        )
        try:
            with anyio.fail_after(timeout_s):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        stderr = err.decode()
        assert proc.returncode is not None
        lines = out.decode().strip().splitlines()
        summary = orjson.loads(lines[-1]) if lines else {}
        return CliRun(proc.returncode, summary, stderr)

    async def process(self, expected: int) -> None:
        """Run the connector (configured group) in-process until ``expected`` outcomes."""
        await run_until_outcomes(self.config, expected, timeout=60)

    async def committed(self, group: str | None = None) -> dict[int, int]:
        return await committed_offsets(
            self.pipe.kafka, group or self.pipe.group, self.pipe.topics.input
        )

    async def end_offsets(self) -> dict[int, int]:
        return (await partition_bounds(self.pipe.kafka, self.pipe.topics.input))[1]


@asynccontextmanager
async def stack(
    bootstrap: str, unique_name: Callable[[str], str], workdir: Path
) -> AsyncIterator[Stack]:
    sandbox_config = quiet_sandbox()
    async with SandboxServer(sandbox_config) as sandbox:
        pipe = await make_pipeline(
            bootstrap, unique_name, partitions=3, sandbox_config=sandbox_config, sandbox=sandbox
        )
        yield Stack(pipe, workdir)


def workload(orders: int, seed: int, accounts: dict[str, str] | None = None) -> list[OrderScript]:
    return build_orders(
        WorkloadSpec(
            orders=orders, accounts=accounts or DEMO_ACCOUNTS, events_per_order=3, seed=seed
        )
    )


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def produce_then_mark(pipe: Pipeline, events: Sequence[OrderStatusChanged]) -> int:
    """Produce ``events`` and return a millisecond strictly after their broker timestamps
    (it waits until the clock shows it, so later records get later timestamps)."""
    await pipe.produce(events)
    mark = int(time.time() * 1000) + 1
    with anyio.fail_after(1):
        while int(time.time() * 1000) <= mark:
            await asyncio.sleep(0.001)
    return mark


# ------------------------------------------------------------------------------------ replay


async def test_replay_from_the_beginning_skips_everything_already_delivered(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    async with stack(kafka_bootstrap, unique_name, tmp_path) as s:
        scripts = workload(24, seed=21)
        events = list(interleave(scripts))
        await s.pipe.produce(events)
        await s.process(len(events))
        assert sent_per_event(s.pipe.sandbox) == Counter({e.event_id: 1 for e in events})

        run = await s.cli("replay")

        assert run.code == 0, run.stderr
        assert run.summary["complete"] is True
        assert run.summary["group"] == s.pipe.group
        assert run.summary["offsets"] == len(events)
        assert run.summary["sent_requests"] == 0
        # The ledger keeps each order's last delivery: that one is a duplicate, earlier stale.
        assert run.summary["outcomes"] == {
            "skipped_duplicate": len(scripts),
            "skipped_stale": len(events) - len(scripts),
        }
        assert f"replaying {s.pipe.topics.input} into group {s.pipe.group}" in run.stderr
        assert f"{len(events)}/{len(events)} outcomes" in run.stderr
        assert "replay done" in run.stderr
        # The sandbox got nothing new; the group ends at the end of the input again.
        assert sent_per_event(s.pipe.sandbox) == Counter({e.event_id: 1 for e in events})
        assert await s.committed() == await s.end_offsets()
        results = await read_all(s.pipe.kafka, s.pipe.topics.results, 2 * len(events))
        assert len(results) == 2 * len(events)


async def test_replay_refuses_a_group_with_running_members(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    async with stack(kafka_bootstrap, unique_name, tmp_path) as s:
        events = list(interleave(workload(4, seed=22)))
        await s.pipe.produce(events)
        daemon = ConnectorProcess(s.config, tmp_path, "daemon")
        daemon.start()
        try:
            await s.pipe.outcomes(len(events), deadline_s=60)
            run = await s.cli("replay")
        finally:
            assert daemon.terminate() == 0
        assert run.code == 2
        assert "running member(s)" in run.stderr
        assert run.summary == {}


async def test_replay_a_time_window_into_a_fresh_group_then_from_offsets(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    async with stack(kafka_bootstrap, unique_name, tmp_path) as s:
        # No Zonos: its sandbox order ids (9999-n) repeat across seeds, which would turn a
        # later seed's sends into already_done answers the sandbox does not record.
        no_zonos = {k: v for k, v in DEMO_ACCOUNTS.items() if k != "zonos"}
        before = list(interleave(workload(6, seed=31, accounts=no_zonos)))
        window = list(interleave(workload(9, seed=32, accounts=no_zonos)))
        after = list(interleave(workload(5, seed=33, accounts=no_zonos)))
        window_start = await produce_then_mark(s.pipe, before)
        window_end = await produce_then_mark(s.pipe, window) - 1
        await s.pipe.produce(after)
        fresh = unique_name("fresh")

        run = await s.cli(
            "replay",
            "--group",
            fresh,
            "--from-time",
            iso_ms(window_start),
            "--until",
            iso_ms(window_end),
        )

        assert run.code == 0, run.stderr
        assert run.summary["complete"] is True
        assert run.summary["offsets"] == len(window)
        assert run.summary["sent_requests"] == len(window)
        assert sum(run.summary["outcomes"].values()) == len(window)
        assert set(run.summary["outcomes"]) <= {"accepted", "delivered", "already_done"}
        assert sent_per_event(s.pipe.sandbox) == Counter({e.event_id: 1 for e in window})
        # The fresh group stops at the first record after the window; the configured one is
        # untouched.
        ends = await s.end_offsets()
        committed = await s.committed(fresh)
        assert sum(ends.values()) - sum(committed.values()) == len(after)
        assert await s.committed() == {}

        # Same group, every partition from offset 0: the window is skipped by the ledger,
        # the records before and after it are sent.
        run = await s.cli("replay", "--group", fresh, "--from-offsets", "0:0,1:0,2:0")
        assert run.code == 0, run.stderr
        assert run.summary["complete"] is True
        total = len(before) + len(window) + len(after)
        assert run.summary["offsets"] == total
        assert run.summary["sent_requests"] == len(before) + len(after)
        outcomes = Counter(run.summary["outcomes"])
        skipped = outcomes["skipped_duplicate"] + outcomes["skipped_stale"]
        assert skipped == len(window)
        assert outcomes.total() == total
        assert sent_per_event(s.pipe.sandbox) == Counter(
            {e.event_id: 1 for e in (*before, *window, *after)}
        )
        assert await s.committed(fresh) == ends


async def test_replay_dry_run_writes_to_dry_run_topics_and_sends_nothing(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    async with stack(kafka_bootstrap, unique_name, tmp_path) as s:
        events = list(interleave(workload(10, seed=41)))
        await s.pipe.produce(events)

        run = await s.cli("replay", "--dry-run")

        assert run.code == 0, run.stderr
        assert run.summary["complete"] is True
        assert run.summary["group"].startswith(f"{s.pipe.group}-dry-run-")
        assert run.summary["outcomes"] == {"dry_run": len(events)}
        assert run.summary["sent_requests"] == 0
        assert s.pipe.sandbox.requests() == []
        assert f"results to {s.pipe.topics.results}.dry-run" in run.stderr
        dry = f"{s.pipe.topics.results}.dry-run"
        results = await read_all(s.pipe.kafka, dry, len(events))
        assert Counter(r["outcome"] for r in results) == {"dry_run": len(events)}
        # Nothing reached the production topics: their consumers never see dry_run records.
        for topic in (s.pipe.topics.results, s.pipe.topics.errors):
            _, end = await partition_bounds(s.pipe.kafka, topic)
            assert sum(end.values()) == 0, topic
        assert await s.committed() == {}  # the configured group was not touched

        named = unique_name("dry-results")
        again = await s.cli("replay", "--dry-run", "--dry-run-results", named)
        assert again.code == 0, again.stderr
        assert len(await read_all(s.pipe.kafka, named, len(events))) == len(events)
        clash = await s.cli("replay", "--dry-run", "--dry-run-results", s.pipe.topics.results)
        assert clash.code == 2
        assert "is a production topic" in clash.stderr
        alone = await s.cli("replay", "--dry-run-results", named)
        assert alone.code == 2
        assert alone.stderr.count("\n") == 1
        assert "need --dry-run" in alone.stderr

        refused = await s.cli("replay", "--dry-run", "--group", s.pipe.group)
        assert refused.code == 2
        assert "must not use the configured group" in refused.stderr


# ----------------------------------------------------------------------------------- redrive


async def test_redrive_sends_fixed_errors_once_and_never_twice(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    async with stack(kafka_bootstrap, unique_name, tmp_path) as s:
        scripts = workload(12, seed=51, accounts={"meta": DEMO_ACCOUNTS["meta"]})
        failing = scripts[:3]
        for script in failing:
            assert script.events[0].whatsapp is not None
            s.pipe.sandbox.add_rule(
                {
                    "provider": "meta",
                    "action": "error",
                    "code": "131026",
                    "count": 100,
                    "key": script.events[0].whatsapp.reference_id,
                }
            )
        events = list(interleave(scripts))
        failed_ids = {e.event_id for sc in failing for e in sc.events}
        await s.pipe.produce(events)
        await s.process(len(events))
        errors = await read_all(s.pipe.kafka, s.pipe.topics.errors, len(failed_ids))
        assert {e["event_id"] for e in errors} == failed_ids
        assert {e["error_class"] for e in errors} == {"permanent"}
        assert not set(sent_per_event(s.pipe.sandbox)) & failed_ids  # rejected, not accepted
        before = iso_ms(int(time.time() * 1000) - 600_000)

        # The fix: the provider accepts these orders again.
        s.pipe.sandbox.engine.rules.clear()

        # Selection that matches nothing: another provider, another class, an earlier window.
        for args in (
            ("--provider", "zonos"),
            ("--class", "retries_exhausted"),
            ("--until", before),
        ):
            none = await s.cli("redrive", *args)
            assert none.code == 0, none.stderr
            assert none.summary["redriven"] == 0
            assert none.summary["errors_read"] == len(failed_ids)

        run = await s.cli("redrive", "--class", "permanent", "--provider", "meta")
        assert run.code == 0, run.stderr
        assert run.summary["selected"] == len(failed_ids)
        assert run.summary["redriven"] == len(failed_ids)
        assert f"re-drove {len(failed_ids)}" in run.stderr
        # Progress like replay's: what was read and selected, then a bar to the last record.
        n = len(failed_ids)
        assert f"redrive: read {n} error records, selected {n}" in run.stderr
        assert f"{'#' * 30}] {n}/{n} re-driven" in run.stderr

        # The connector picks the re-driven records up (original key: same order partition).
        await s.process(len(failed_ids))
        sent = sent_per_event(s.pipe.sandbox)
        assert sent == Counter({e.event_id: 1 for e in events})
        results = await read_all(s.pipe.kafka, s.pipe.topics.results, len(events))
        assert len(results) == len(events)
        redriven = [r for r in results if r["event_id"] in failed_ids]
        assert {r["outcome"] for r in redriven} == {"accepted"}

        again = await s.cli("redrive", "--class", "permanent")
        assert again.code == 0, again.stderr
        assert again.summary["redriven"] == 0
        assert again.summary["already_redriven"] == len(failed_ids)
        # Nothing new reached the input: its end is the original events plus one re-drive each.
        assert sum((await s.end_offsets()).values()) == len(events) + len(failed_ids)
