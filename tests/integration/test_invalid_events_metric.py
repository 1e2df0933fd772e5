"""The daemon counts the invalid input it rejects: invalid records produced to the input topic
show up in /metrics as ``connector_invalid_events_total``, labelled with that topic."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from connector.dev.demo import invalid_records, produce
from tests.support.webhook_stack import event, read_json, running_connector, total

pytestmark = pytest.mark.integration


async def test_invalid_records_are_counted_by_the_daemon(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    async with running_connector(kafka_bootstrap, unique_name("inv") + ".") as run:
        broken = invalid_records()
        valid = event("ord-ok", 1, "processing", "meta")
        await produce(
            run.kafka,
            run.topics.input,
            [*broken, (b"ord-ok", orjson.dumps(valid))],
        )
        errors = await read_json(run.kafka, run.topics.errors, expected=len(broken))
        results = await read_json(run.kafka, run.topics.results, expected=1)
        assert [e["error_class"] for e in errors] == ["invalid_event"] * len(broken), errors
        assert [r["event_id"] for r in results] == ["ord-ok-e1"]

        # Each error record's outcome is counted before the record is published: no waiting.
        samples = await run.metrics()
        assert total(samples, "connector_invalid_events_total") == len(broken)
        assert total(
            samples,
            "connector_invalid_events_total",
            topic=run.topics.input,
            kind="invalid_event",
        ) == len(broken)
        assert total(samples, "connector_outcomes_total", outcome="invalid_event") == len(broken)
        assert total(samples, "connector_records_consumed_total") == len(broken) + 1
