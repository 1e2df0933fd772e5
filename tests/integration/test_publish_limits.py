"""Publish limits against the real broker: reading a topic's ``max.message.bytes``, the error
record budget (``error_record_limit``) measured against what the broker accepts, and refused
publishes raised as ``PublishRefusedError`` from the ack."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import anyio
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import MessageSizeTooLargeError, OutOfOrderSequenceNumber
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from connector.config import KafkaSettings
from connector.contract.records import (
    ErrorRecord,
    SourceCoordinates,
    bounded_error_record,
    encode_bytes,
)
from connector.errors import ConfigError, ErrorClass, ProducerFailedError, PublishRefusedError
from connector.kafka.admin import (
    KafkaAdmin,
    TopicAdminError,
    read_max_message_bytes,
    read_publish_limits,
)
from connector.kafka.producer import (
    ERROR_RECORD_HEADERS_ROOM,
    ERROR_RECORD_KEY_ROOM,
    KafkaProducer,
    TransactionalProducer,
    error_record_limit,
)
from tests.support.topics import TopicFactory

pytestmark = pytest.mark.integration

TOPIC_MAX = 64 * 1024
MIB = 1024 * 1024


def _settings(bootstrap: str, **overrides: object) -> KafkaSettings:
    return KafkaSettings.model_validate({"bootstrap_servers": bootstrap, **overrides})


def _key_and_headers_filling_their_rooms() -> tuple[bytes, list[tuple[str, bytes]]]:
    """A key and headers that take exactly ERROR_RECORD_KEY_ROOM and ERROR_RECORD_HEADERS_ROOM
    bytes of record framing (as Kafka's record format counts them)."""
    key = b"k" * (ERROR_RECORD_KEY_ROOM - 2)  # plus a 2-byte length varint
    headers = [("traceparent", b"t" * (ERROR_RECORD_HEADERS_ROOM - 15))]
    key_size = DefaultRecordBatchBuilder.size_of(key, None, []) - 2  # value null, no headers
    headers_size = DefaultRecordBatchBuilder.size_of(None, None, headers) - 2
    assert key_size == ERROR_RECORD_KEY_ROOM
    assert headers_size == ERROR_RECORD_HEADERS_ROOM
    return key, headers


async def test_max_message_bytes_reads_the_override_and_the_default(
    kafka_bootstrap: str, topic_factory: TopicFactory, unique_name: Callable[[str], str]
) -> None:
    small = await topic_factory(configs={"max.message.bytes": str(TOPIC_MAX)}, label="small")
    plain = await topic_factory(label="plain")
    with anyio.fail_after(30):
        limits = await read_max_message_bytes(kafka_bootstrap, [small, plain])
        assert limits[small] == TOPIC_MAX
        assert limits[plain] == 1024 * 1024 + 12  # Kafka's default (a batch of 1 MiB + header)
        async with KafkaAdmin(kafka_bootstrap) as admin:
            with pytest.raises(TopicAdminError, match="describe configs"):
                await admin.max_message_bytes(unique_name("missing"))


async def test_publish_limits_follow_the_smallest_written_topic(
    kafka_bootstrap: str, topic_factory: TopicFactory, unique_name: Callable[[str], str]
) -> None:
    errors = await topic_factory(configs={"max.message.bytes": str(256 * 1024)}, label="errors")
    results = await topic_factory(configs={"max.message.bytes": str(TOPIC_MAX * 2)}, label="res")
    ledger = await topic_factory(label="ledger")
    tiny = await topic_factory(configs={"max.message.bytes": "8192"}, label="tiny")
    settings = _settings(kafka_bootstrap)
    with anyio.fail_after(30):
        limits = await read_publish_limits(settings, written=[results, ledger], errors=errors)
        assert limits.max_request_size == TOPIC_MAX * 2  # results is the tightest written topic
        assert limits.error_record_max_bytes == error_record_limit(256 * 1024, TOPIC_MAX * 2)
        assert limits.max_message_bytes[ledger] == MIB + 12
        with pytest.raises(ConfigError, match=tiny):
            await read_publish_limits(settings, written=[results], errors=tiny)
        with pytest.raises(TopicAdminError):
            await read_publish_limits(settings, written=[unique_name("missing")], errors=errors)


async def test_an_error_record_at_exactly_the_limit_is_accepted_and_the_margin_is_small(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """The budget holds with a full key and full headers, and is tight: measured against the
    broker, a value only a few bytes larger than the limit is refused."""
    probes = 16
    topic = await topic_factory(
        partitions=probes + 1, configs={"max.message.bytes": str(TOPIC_MAX)}, label="errors"
    )
    limit = error_record_limit(TOPIC_MAX, MIB)
    key, headers = _key_and_headers_filling_their_rooms()
    # The producer allows more than the topic: what is measured here is the broker's own check.
    producer = KafkaProducer(_settings(kafka_bootstrap, max_request_size=MIB))
    await producer.start()
    try:
        with anyio.fail_after(60):
            value = os.urandom(limit)
            ack = await producer.send(topic, value, key=key, headers=headers, partition=0)
            await ack
            # A real error record of a 1 MiB input value, cut to the limit, goes through too.
            record = ErrorRecord(
                event_id=None,
                order_id="order-1",
                error_class=ErrorClass.INVALID_EVENT,
                reason="event is not a JSON object",
                source=SourceCoordinates(topic="in", partition=0, offset=1),
                original_key=encode_bytes(b"order-1"),
                original_value=encode_bytes(os.urandom(MIB)),
            )
            cut = bounded_error_record(record, max_bytes=limit)
            assert limit - 4 < len(cut) <= limit
            await (await producer.send(topic, cut, key=key, headers=headers, partition=0))

            # Largest accepted value, by bisection; each probe uses its own partition, since a
            # batch the broker refuses breaks the idempotent sequence of its partition.
            accepted, refused = limit, TOPIC_MAX
            partition = 1
            while refused - accepted > 1:
                size = (accepted + refused) // 2
                # A first record gives the producer a sequence on the probe's partition.
                await (await producer.send(topic, b"x", key=b"k", partition=partition))
                probe = await producer.send(
                    topic, b"v" * size, key=key, headers=headers, partition=partition
                )
                outcome = (await asyncio.gather(probe, return_exceptions=True))[0]
                if isinstance(outcome, BaseException):
                    assert isinstance(outcome, PublishRefusedError)
                    assert isinstance(outcome.__cause__, MessageSizeTooLargeError)
                    refused = size
                    # Every later batch of that partition fails: the producer's sequence for it
                    # has a gap (why max_request_size must not exceed the topic's limit), which
                    # the engine treats as fatal (ProducerFailedError, a restart).
                    after = await producer.send(topic, b"x", key=b"k", partition=partition)
                    with pytest.raises(ProducerFailedError) as later:
                        await after
                    assert isinstance(later.value.__cause__, OutOfOrderSequenceNumber)
                    partition += 1
                else:
                    accepted = size
                assert partition <= probes
    finally:
        await producer.stop()
    margin = accepted - limit
    print(f"error_record_limit={limit} largest accepted value={accepted} margin={margin} bytes")
    assert 0 <= margin <= 64


async def test_a_record_over_max_request_size_is_refused_before_the_broker(
    kafka_bootstrap: str, topic_factory: TopicFactory, unique_name: Callable[[str], str]
) -> None:
    topic = await topic_factory(configs={"max.message.bytes": str(TOPIC_MAX)}, label="out")
    producer = KafkaProducer(_settings(kafka_bootstrap, max_request_size=TOPIC_MAX))
    await producer.start()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_name("group"),
        auto_offset_reset="earliest",
    )
    try:
        with anyio.fail_after(60):
            big = await producer.send(topic, b"v" * (TOPIC_MAX + 1), key=b"o-1", partition=0)
            with pytest.raises(PublishRefusedError, match="refused") as caught:
                await big
            assert isinstance(caught.value.__cause__, MessageSizeTooLargeError)
            # Nothing reached the broker: the partition's sequence is intact.
            await (await producer.send(topic, b"after", key=b"o-1", partition=0))
            await consumer.start()
            seen: list[bytes] = []
            while not seen:
                batch = await consumer.getmany(timeout_ms=200)
                seen.extend(m.value for ms in batch.values() for m in ms if m.value is not None)
            assert seen == [b"after"]
    finally:
        await consumer.stop()
        await producer.stop()


async def test_transactional_producer_refuses_an_oversized_record_without_failing_the_txn(
    kafka_bootstrap: str, topic_factory: TopicFactory, unique_name: Callable[[str], str]
) -> None:
    topic = await topic_factory(configs={"max.message.bytes": str(TOPIC_MAX)}, label="txn")
    producer = TransactionalProducer(
        _settings(kafka_bootstrap, max_request_size=TOPIC_MAX),
        transactional_id=unique_name("txn"),
        group_id=unique_name("group"),
    )
    await producer.start()
    try:
        with anyio.fail_after(60):
            big = await producer.send(topic, b"v" * (TOPIC_MAX + 1), key=b"o-1", partition=0)
            with pytest.raises(PublishRefusedError):
                await big
            ok = await producer.send(topic, b"fits", key=b"o-1", partition=0)
            await ok
            await producer.commit_transaction({})
            assert producer.transactions == 1
    finally:
        await producer.stop()
