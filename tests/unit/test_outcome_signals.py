"""Outcome records carry the event's ``traceparent`` as a Kafka header; ``invalid_event`` log
lines name the topic and the (masked) key (issue 14, signals)."""

from __future__ import annotations

import orjson
from structlog.testing import capture_logs

from connector.core.redaction import mask_key
from connector.kafka.consumer import ConsumedRecord
from tests.support.engine_fakes import (
    INPUT,
    FakeSender,
    FakeSink,
    FakeSource,
    event_bytes,
    make_engine,
    run_until,
)

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def traced(order: str, seq: int) -> bytes:
    return orjson.dumps({**orjson.loads(event_bytes(order, seq)), "traceparent": TRACE})


async def test_results_and_errors_carry_the_traceparent_header() -> None:
    records = [
        ConsumedRecord(INPUT, 0, 0, b"o1", traced("o1", 1), (), 0),
        ConsumedRecord(INPUT, 0, 1, b"o2", traced("o2", 1), (), 0),
        ConsumedRecord(INPUT, 0, 2, b"o3", event_bytes("o3", 1), (), 0),
    ]
    source, sink, sender = FakeSource({0: records}), FakeSink(), FakeSender()
    sender.script["o2-1"] = [400]  # permanent: an error record
    engine = make_engine(source, sink, sender)
    await run_until(engine, source, sink, 3)
    by_event = {
        orjson.loads(value)["event_id"]: (topic, headers)
        for (topic, value, _), (_, headers) in zip(sink.records, sink.headers, strict=True)
    }
    assert by_event["o1-1"] == ("res", [("traceparent", TRACE.encode())])
    assert by_event["o2-1"] == ("err", [("traceparent", TRACE.encode())])
    assert by_event["o3-1"] == ("res", [])  # no trace context: no header


async def test_invalid_event_log_names_topic_and_masked_key() -> None:
    records = [ConsumedRecord(INPUT, 0, 0, b"+5511987654321", b"not json", (), 0)]
    source, sink, sender = FakeSource({0: records}), FakeSink(), FakeSender()
    engine = make_engine(source, sink, sender)
    with capture_logs() as logs:
        await run_until(engine, source, sink, 1)
    invalid = [line for line in logs if line["event"] == "invalid_event"]
    assert len(invalid) == 1
    assert invalid[0]["topic"] == INPUT
    assert invalid[0]["key"] == "+55*********21"
    assert invalid[0]["offset"] == 0


def test_mask_key_masks_phones_clips_and_decodes() -> None:
    assert mask_key(None) is None
    assert mask_key(b"order-42") == "order-42"
    assert mask_key(b"5511987654321") == "55*********21"
    assert mask_key(b"\xff\xfeok") == "\ufffd\ufffdok"
    long = mask_key(b"x" * 500)
    assert long is not None
    assert len(long) == 64
