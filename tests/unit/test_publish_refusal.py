"""Which publish failures are refusals (``PublishRefusedError``), the error record budget, and
the producer settings that keep the broker from refusing a batch for its size. Plain values;
the broker side is in tests/integration/test_publish_limits.py."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import errors as kafka_errors
from pydantic import ValidationError

from connector.config import KafkaSettings
from connector.contract.records import MIN_ERROR_RECORD_BYTES
from connector.errors import ErrorClass, ProducerFailedError, PublishRefusedError
from connector.kafka.producer import (
    ERROR_RECORD_HEADERS_ROOM,
    ERROR_RECORD_KEY_ROOM,
    RECORD_BATCH_OVERHEAD,
    error_record_limit,
    idempotent_kwargs,
    is_refused,
    translated_publish_error,
)

REFUSED = [
    kafka_errors.MessageSizeTooLargeError(),
    kafka_errors.RecordListTooLargeError(),
    kafka_errors.CorruptRecordException(),
    kafka_errors.InvalidTimestampError(),
    kafka_errors.UnknownError(),  # e.g. INVALID_RECORD (87), a code aiokafka does not know
    kafka_errors.TopicAuthorizationFailedError("t"),
    kafka_errors.ClusterAuthorizationFailedError(),
    kafka_errors.TransactionalIdAuthorizationFailed(),
    kafka_errors.OutOfOrderSequenceNumber(),
    kafka_errors.ProducerFenced(),
]
NOT_REFUSED = [
    kafka_errors.NotLeaderForPartitionError(),
    kafka_errors.RequestTimedOutError(),
    kafka_errors.NotEnoughReplicasError(),
    kafka_errors.UnknownTopicOrPartitionError(),
    kafka_errors.KafkaConnectionError(),
    kafka_errors.KafkaTimeoutError(),
    kafka_errors.NodeNotReadyError(),
    RuntimeError("anything else"),
]


@pytest.mark.parametrize("exc", REFUSED, ids=lambda e: type(e).__name__)
def test_refusals(exc: BaseException) -> None:
    assert is_refused(exc)


@pytest.mark.parametrize("exc", NOT_REFUSED, ids=lambda e: type(e).__name__)
def test_not_refusals(exc: BaseException) -> None:
    assert not is_refused(exc)


async def test_the_ack_raises_one_class_for_refusals_and_passes_the_rest_through() -> None:
    loop = asyncio.get_running_loop()
    refused_ack: asyncio.Future[object] = loop.create_future()
    other_ack: asyncio.Future[object] = loop.create_future()
    ok_ack: asyncio.Future[object] = loop.create_future()
    refused, other, ok = (
        translated_publish_error(f, "errors") for f in (refused_ack, other_ack, ok_ack)
    )
    cause = kafka_errors.MessageSizeTooLargeError()
    refused_ack.set_exception(cause)
    other_ack.set_exception(kafka_errors.KafkaConnectionError())
    ok_ack.set_result("metadata")
    with pytest.raises(PublishRefusedError, match="'errors'") as caught:
        await refused
    assert caught.value.__cause__ is cause
    with pytest.raises(kafka_errors.KafkaConnectionError):
        await other
    assert await ok == "metadata"


async def test_a_broken_partition_sequence_is_a_failed_producer_not_a_refusal() -> None:
    ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    translated = translated_publish_error(ack, "errors")
    ack.set_exception(kafka_errors.OutOfOrderSequenceNumber())
    with pytest.raises(ProducerFailedError, match="'errors'"):
        await translated


def test_publish_refused_is_outside_the_retry_tree() -> None:
    assert not issubclass(PublishRefusedError, kafka_errors.KafkaError)
    assert ErrorClass.INTERNAL_ERROR.value == "internal_error"
    assert list(ErrorClass)[-1] is ErrorClass.INTERNAL_ERROR


def test_error_record_limit_leaves_room_for_framing_key_and_headers() -> None:
    mib = 1024 * 1024
    room = RECORD_BATCH_OVERHEAD + 5 + ERROR_RECORD_KEY_ROOM + ERROR_RECORD_HEADERS_ROOM
    assert error_record_limit(mib + 12, mib) == mib - room  # the tighter of the two wins
    assert error_record_limit(64 * 1024, mib) == 64 * 1024 - room
    assert error_record_limit(mib, mib, key_room=10, headers_room=0) == mib - 82 - 5 - 10
    with pytest.raises(ValueError, match="at least"):
        error_record_limit(MIN_ERROR_RECORD_BYTES, mib)


def test_max_request_size_is_a_setting_and_bounds_the_batches() -> None:
    assert KafkaSettings().max_request_size == 1024 * 1024
    small = KafkaSettings(max_request_size=100_000)
    kwargs = idempotent_kwargs(small)
    assert kwargs["max_request_size"] == 100_000
    assert kwargs["max_batch_size"] == 100_000
    assert idempotent_kwargs(KafkaSettings())["max_batch_size"] == 256 * 1024
    with pytest.raises(ValidationError):
        KafkaSettings(max_request_size=1000)
