"""Records that fail after validation, or whose error record is too large to publish as it is,
still end in exactly one outcome with the real broker: the valid events around them are
delivered in order and the commit point reaches the end of the partition (issue 10)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from connector.app import ConnectorApp
from connector.dev.demo import DEMO_ACCOUNTS
from connector.dev.sandbox.server import SandboxServer
from connector.dev.workload import WorkloadSpec, build_orders, interleave
from connector.kafka.group_offsets import committed_offsets
from tests.support.pipeline import (
    check_deliveries,
    make_pipeline,
    outcome_counts,
    quiet_sandbox,
)

pytestmark = pytest.mark.integration


async def test_oversized_and_unsendable_records_get_one_outcome_and_the_partition_flows(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    config = quiet_sandbox()
    async with SandboxServer(config) as sandbox:
        pipe = await make_pipeline(
            kafka_bootstrap, unique_name, partitions=1, sandbox_config=config, sandbox=sandbox
        )
        scripts = build_orders(WorkloadSpec(orders=20, accounts=DEMO_ACCOUNTS, seed=8))
        events = list(interleave(scripts, seed=2))
        victim = events[len(events) // 2]
        # ~900 KB of invalid JSON: its error record (value in base64, +33%) exceeds 1 MiB.
        huge = b'{"event_id":"huge","pad":"' + b"x" * 900_000 + b'"}'
        # A header-unsafe event id: valid JSON, fails when it becomes X-Request-Id. (An order
        # of its own: a copy of the victim's step would be a duplicate the ledger skips.)
        ctl_order = victim.order_id + "-ctl"
        unsafe = victim.model_copy(update={"event_id": "ctl\u0001id", "order_id": ctl_order})
        mixed: list[Any] = []
        for i, event in enumerate(events):
            mixed.append(event)
            if i == len(events) // 3:
                mixed.append((victim.order_id.encode(), huge))
            if i == len(events) // 2:
                mixed.append(unsafe)
        total = await pipe.produce(mixed)
        app = ConnectorApp(pipe.config())
        task = asyncio.create_task(app.run())
        try:
            results, errors = await pipe.outcomes(total, deadline_s=120)
            with anyio.fail_after(30):
                while (await committed_offsets(pipe.kafka, pipe.group, pipe.topics.input)).get(
                    0
                ) != total:
                    await asyncio.sleep(0.2)  # polling the broker under a deadline
        finally:
            app.request_stop()
            with anyio.fail_after(30):
                await task
        assert app.engine.failure is None
        counts = outcome_counts(results, errors)
        assert len(counts) == total
        assert set(counts.values()) == {1}, "exactly one outcome per input record"
        oversized = [
            e for e in errors if e["event_id"] is None and e["order_id"] == victim.order_id
        ]
        assert len(oversized) == 1
        assert oversized[0]["error_class"] == "invalid_event"
        # The contract refuses a header-unsafe event id at decode (invalid_event, event id not
        # trusted, so None); an engine without that check ends it at build (internal_error).
        ctl = [e for e in errors if e["order_id"] == ctl_order]
        assert len(ctl) == 1
        assert ctl[0]["error_class"] in {"internal_error", "invalid_event"}
        assert ctl[0]["event_id"] in {None, "ctl\u0001id"}
        check = check_deliveries(scripts, sandbox.requests())
        assert check.violations == []
        assert check.missing == []
