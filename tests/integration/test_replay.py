"""Replay without customer spam, against the real broker and the sandbox: asserted counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from connector.config import KafkaSettings
from connector.dev.demo import DEMO_ACCOUNTS, produce
from connector.dev.sandbox.server import SandboxServer
from connector.dev.workload import WorkloadSpec, build_orders, interleave
from tests.support.replay_stack import (
    connector_config,
    outcomes,
    quiet_sandbox,
    read_all,
    run_until_outcomes,
    sent_per_event,
)
from tests.support.topics import apply_spec_topics

pytestmark = pytest.mark.integration


async def test_processing_twice_with_a_fresh_group_sends_each_event_once(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topics = await apply_spec_topics(kafka_bootstrap, unique_name("rp") + ".")
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    events = list(interleave(build_orders(WorkloadSpec(orders=80, accounts=DEMO_ACCOUNTS))))
    await produce(kafka, topics.input, events)
    sandbox_config = quiet_sandbox()
    async with SandboxServer(sandbox_config) as sandbox:
        # Coalescing off: every event is its own delivery, so "exactly once" is per event.
        first = connector_config(
            kafka_bootstrap,
            unique_name("g1"),
            topics,
            sandbox,
            sandbox_config,
            coalesce_providers=[],
        )
        await run_until_outcomes(first, len(events))
        assert sent_per_event(sandbox) == Counter({e.event_id: 1 for e in events})

        # A new group reads the whole history again, sharing the ledger.
        second = connector_config(
            kafka_bootstrap,
            unique_name("g2"),
            topics,
            sandbox,
            sandbox_config,
            coalesce_providers=[],
        )
        app = await run_until_outcomes(second, len(events))
        assert app.engine.stats.sent_requests == 0
        assert sent_per_event(sandbox) == Counter({e.event_id: 1 for e in events})

    results = await read_all(kafka, topics.results, 2 * len(events))
    counts = outcomes(results)
    # The ledger keeps each order's last delivery: that event is a duplicate, the earlier
    # ones of the order are stale.
    orders = len({e.order_id for e in events})
    assert counts["skipped_duplicate"] == orders
    assert counts["skipped_stale"] == len(events) - orders
    assert counts["accepted"] + counts["delivered"] + counts["already_done"] == len(events)
    assert len(results) == 2 * len(events)


async def test_coalescing_under_a_backlog_sends_one_per_order(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topics = await apply_spec_topics(kafka_bootstrap, unique_name("co") + ".")
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    whatsapp = {"meta": DEMO_ACCOUNTS["meta"], "ycloud": DEMO_ACCOUNTS["ycloud"]}
    scripts = build_orders(WorkloadSpec(orders=60, accounts=whatsapp, events_per_order=4))
    events = list(interleave(scripts))
    await produce(kafka, topics.input, events)  # the backlog exists before the connector starts
    sandbox_config = quiet_sandbox()
    async with SandboxServer(sandbox_config) as sandbox:
        config = connector_config(
            kafka_bootstrap, unique_name("g"), topics, sandbox, sandbox_config
        )
        await run_until_outcomes(config, len(events))
        sent = sent_per_event(sandbox)
    # One send per order: its newest event; every other event is accounted as superseded.
    assert sorted(sent) == sorted(s.events[-1].event_id for s in scripts)
    assert sum(sent.values()) == len(scripts)
    results = await read_all(kafka, topics.results, len(events))
    counts = outcomes(results)
    assert counts["superseded"] == len(events) - len(scripts)
    assert counts["accepted"] == len(scripts)
    assert len({r["event_id"] for r in results}) == len(events)


async def test_transactional_mode_commits_one_outcome_per_record_for_read_committed(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topics = await apply_spec_topics(kafka_bootstrap, unique_name("tx") + ".")
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    events = list(interleave(build_orders(WorkloadSpec(orders=50, accounts=DEMO_ACCOUNTS))))
    await produce(kafka, topics.input, events)
    sandbox_config = quiet_sandbox()
    async with SandboxServer(sandbox_config) as sandbox:
        config = connector_config(
            kafka_bootstrap,
            unique_name("g"),
            topics,
            sandbox,
            sandbox_config,
            coalesce_providers=[],
            transactional=True,
            transactional_id=unique_name("txn"),
        )
        await run_until_outcomes(config, len(events))
    results = await read_all(kafka, topics.results, len(events), isolation_level="read_committed")
    by_source = Counter((r["source"]["partition"], r["source"]["offset"]) for r in results)
    assert len(by_source) == len(events)
    assert set(by_source.values()) == {1}
