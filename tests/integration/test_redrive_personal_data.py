"""``redrive`` with ``errors.original_value`` (issue 14, personal data), against the real
broker: an encrypted original value is decrypted and re-published, a redacted one is refused
with a clear message, a kept one is re-published as it was."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from connector.config import load_config
from connector.contract.records import ErrorRecord, SourceCoordinates
from connector.core.personal_data import OriginalValuePolicy
from connector.kafka.consumer import read_topic
from connector.kafka.producer import KafkaProducer
from connector.logs import reset_logging
from connector.ops.redrive import redrive_main
from tests.support.topics import apply_spec_topics

pytestmark = pytest.mark.integration

KEY = bytes(range(32))


def event(order: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{order}-1",
            "occurred_at": "2026-01-01T00:00:00+00:00",
            "order_id": order,
            "status": "shipped",
            "recipient": {"phone": "+5511987654321"},
        }
    )


def error_record(order: str, offset: int, policy: OriginalValuePolicy) -> bytes:
    kept, protection = policy.protect(event(order))
    return ErrorRecord(
        event_id=f"{order}-1",
        order_id=order,
        error_class="permanent",
        reason="rejected",
        source=SourceCoordinates(topic="in", partition=0, offset=offset),
        original_key=base64.b64encode(order.encode()).decode(),
        original_value=base64.b64encode(kept).decode(),
        original_value_protection=protection,
    ).to_bytes()


def test_redrive_decrypts_encrypted_values_and_refuses_redacted_ones(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = asyncio.run(apply_spec_topics(kafka_bootstrap, unique_name("pd") + "."))
    monkeypatch.setenv("OSC_PD_KEY", base64.b64encode(KEY).decode())
    monkeypatch.setenv("OSC_PD_SECRET", "zonos-secret")
    path = tmp_path / "c.yaml"
    path.write_text(
        f"kafka: {{bootstrap_servers: '{kafka_bootstrap}', group_id: {unique_name('g')}}}\n"
        f"topics: {{input: {topics.input}, results: {topics.results}, errors: {topics.errors},"
        f" ledger: {topics.ledger}, correlation: {topics.correlation}}}\n"
        "accounts:\n  - {provider: zonos, name: z, store: '1', secret: env:OSC_PD_SECRET}\n"
        "errors: {original_value: encrypt, encryption_key: env:OSC_PD_KEY}\n"
    )
    config = load_config(path)
    records = [
        error_record("o-enc", 0, config.errors.policy()),
        error_record("o-red", 1, OriginalValuePolicy("redact")),
        error_record("o-keep", 2, OriginalValuePolicy()),
    ]

    async def publish() -> None:
        producer = KafkaProducer(config.kafka)
        await producer.start()
        try:
            for value in records:
                await asyncio.wait_for(
                    await producer.send(topics.errors, value, key=b"k"), timeout=30
                )
        finally:
            await producer.stop()

    asyncio.run(publish())
    try:
        code = redrive_main(["--config", str(path)])
    finally:
        reset_logging()
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = orjson.loads(out.out.strip().splitlines()[-1])
    assert summary["errors_read"] == 3
    assert summary["redriven"] == 2
    assert summary["refused_redacted"] == 1
    assert "refused 1 error records whose original value was redacted" in out.err
    back = asyncio.run(read_topic(config.kafka, topics.input, expected=2, idle_timeout_s=3.0))
    assert sorted(r.value for r in back if r.value) == sorted([event("o-enc"), event("o-keep")])
