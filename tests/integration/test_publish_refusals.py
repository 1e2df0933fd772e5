"""The producer wrapper translates the broker's for-good refusals into PublishRefusedError
(decided by aiokafka's error class) through the ack, and the broken sequence
that a broker-side refusal leaves in aiokafka's idempotent producer into ProducerFailedError:
against the real broker."""

from __future__ import annotations

import anyio
import pytest

from connector.config import KafkaSettings
from connector.errors import ProducerFailedError, PublishRefusedError
from connector.kafka.producer import KafkaProducer
from tests.support.topics import TopicFactory

pytestmark = pytest.mark.integration


async def test_refusals_are_translated_and_a_broken_partition_sequence_is_fatal(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    # The topic takes at most 4 KiB per record batch; the producer itself up to 1 MiB.
    small = await topic_factory(configs={"max.message.bytes": "4096"}, label="small")
    other = await topic_factory(label="other")
    producer = KafkaProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap, linger_ms=0))
    await producer.start()
    try:
        with anyio.fail_after(30):
            await (await producer.send(small, b"fits", key=b"k"))
            # Over the producer's own limit: refused before anything is sent...
            with pytest.raises(PublishRefusedError, match="MessageSizeTooLarge"):
                await (await producer.send(small, b"x" * (2 * 1024 * 1024), key=b"k"))
            # ...so the partition stays writable.
            await (await producer.send(small, b"still fine", key=b"k"))
            # Over the topic's limit: the broker refuses it, through the ack...
            too_big_for_topic = await producer.send(small, b"x" * 20_000, key=b"k")
            with pytest.raises(PublishRefusedError, match="TooLarge"):
                await too_big_for_topic
            # ...and aiokafka's sequence for that partition is broken for good.
            after = await producer.send(small, b"fits", key=b"k")
            with pytest.raises(ProducerFailedError, match="OutOfOrderSequenceNumber"):
                await after
            await (await producer.send(other, b"fits", key=b"k"))  # other partitions still work
    finally:
        await producer.stop()
