"""aiokafka 0.14 against the project's broker: every Kafka feature the connector relies on.

This is the evidence behind docs/kafka-version.md; if it fails after a Kafka upgrade, the
version is not usable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.support.topics import TopicFactory

pytestmark = pytest.mark.integration


async def _read(consumer: AIOKafkaConsumer, count: int) -> list[tuple[bytes | None, bytes]]:
    records: list[tuple[bytes | None, bytes]] = []
    while len(records) < count:
        batch = await consumer.getmany(timeout_ms=200)
        for messages in batch.values():
            records.extend((m.key, m.value) for m in messages)
    return records


async def test_produce_and_consume_round_trip(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    try:
        with anyio.fail_after(30):
            sent = [(f"order-{i % 4}".encode(), f"v{i}".encode()) for i in range(20)]
            for key, value in sent:
                await producer.send_and_wait(topic, value, key=key)
            got = await _read(consumer, len(sent))
    finally:
        await consumer.stop()
        await producer.stop()
    assert sorted(got) == sorted(sent)
    # Per key, records come back in the order they were produced (same key, same partition).
    for key in {k for k, _ in sent}:
        assert [v for k, v in got if k == key] == [v for k, v in sent if k == key]


async def test_consumer_group_manual_commit_resumes_after_committed_offset(
    kafka_bootstrap: str, topic_factory: TopicFactory, unique_name: Callable[[str], str]
) -> None:
    topic = await topic_factory(partitions=1)
    group = unique_name("group")
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=b"k")
    finally:
        await producer.stop()

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    first = member()
    await first.start()
    try:
        with anyio.fail_after(30):
            got = await _read(first, 6)
            await first.commit({tp: 4})  # processed v0..v3 only
            assert await first.committed(tp) == 4
    finally:
        await first.stop()
    assert [v for _, v in got] == [f"v{i}".encode() for i in range(6)]

    second = member()
    await second.start()
    try:
        with anyio.fail_after(30):
            resumed = await _read(second, 2)
    finally:
        await second.stop()
    assert [v for _, v in resumed] == [b"v4", b"v5"]


async def test_transactional_producer_hides_aborted_records_from_read_committed(
    kafka_bootstrap: str, topic_factory: TopicFactory, unique_name: Callable[[str], str]
) -> None:
    source = await topic_factory(partitions=1, label="in")
    sink = await topic_factory(partitions=1, label="out")
    group = unique_name("group")
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("txn")
    )
    await producer.start()
    try:
        with anyio.fail_after(30):
            async with producer.transaction():
                await producer.send(sink, b"committed-1", key=b"k")
                await producer.send_offsets_to_transaction({TopicPartition(source, 0): 7}, group)

            async def abort_one() -> None:
                async with producer.transaction():
                    await producer.send(sink, b"aborted", key=b"k")
                    raise RuntimeError("abort me")

            with pytest.raises(RuntimeError, match="abort me"):
                await abort_one()
            async with producer.transaction():
                await producer.send(sink, b"committed-2", key=b"k")
    finally:
        await producer.stop()

    committed_reader = AIOKafkaConsumer(
        sink,
        bootstrap_servers=kafka_bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    uncommitted_reader = AIOKafkaConsumer(
        sink,
        bootstrap_servers=kafka_bootstrap,
        isolation_level="read_uncommitted",
        auto_offset_reset="earliest",
    )
    offsets = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await committed_reader.start()
    await uncommitted_reader.start()
    await offsets.start()
    try:
        with anyio.fail_after(30):
            visible = [v for _, v in await _read(committed_reader, 2)]
            everything = [v for _, v in await _read(uncommitted_reader, 3)]
            group_offset = await offsets.committed(TopicPartition(source, 0))
            # Nothing else arrives for the committed reader: the aborted record stays hidden.
            extra = await committed_reader.getmany(timeout_ms=500)
    finally:
        await offsets.stop()
        await uncommitted_reader.stop()
        await committed_reader.stop()
    assert visible == [b"committed-1", b"committed-2"]
    assert everything == [b"committed-1", b"aborted", b"committed-2"]
    assert group_offset == 7
    assert not any(extra.values())


async def test_admin_client_creates_and_describes_topics_and_configs(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("admin")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        with anyio.fail_after(30):
            await admin.create_topics(
                [NewTopic(topic, 4, 1, topic_configs={"cleanup.policy": "compact"})]
            )
            # A new topic's metadata reaches the broker's cache a moment after the create
            # returns (UNKNOWN_TOPIC_OR_PARTITION meanwhile): poll under the deadline.
            while True:
                described = await admin.describe_topics([topic])
                if described[0]["error_code"] == 0 and len(described[0]["partitions"]) == 4:
                    break
                await asyncio.sleep(0.1)
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
    finally:
        await admin.close()
    assert described[0]["error_code"] == 0
    assert len(described[0]["partitions"]) == 4
    entries = {
        e["config_names"]: e["config_value"]
        for r in configs
        for res in r.to_object()["resources"]
        for e in res["config_entries"]
    }
    assert entries["cleanup.policy"] == "compact"
