"""Consumer-group offsets for the replay tools: partition bounds, offsets by time, a group's
committed offsets and members, and committing offsets for a group that has no running members.

Owns only these broker round trips; never consumes records or joins the group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from connector.kafka.connection import client_kwargs

if TYPE_CHECKING:
    from connector.config import KafkaSettings


class GroupOffsetsError(RuntimeError):
    """The broker refused an offset operation (message says which and why)."""


async def partition_bounds(
    settings: KafkaSettings, topic: str
) -> tuple[dict[int, int], dict[int, int]]:
    """Per partition of ``topic``: (beginning offsets, end offsets). Raises if it has none."""
    # Subscribing (without a group) makes start() fetch the topic's metadata.
    consumer = AIOKafkaConsumer(
        topic, group_id=None, enable_auto_commit=False, **client_kwargs(settings)
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise GroupOffsetsError(f"topic {topic!r} does not exist (or has no partitions)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: begin[tp] for tp in tps}, {tp.partition: end[tp] for tp in tps}


async def offsets_at(
    settings: KafkaSettings, topic: str, partitions: Iterable[int], at_ms: int
) -> dict[int, int | None]:
    """Per partition, the first offset whose timestamp is >= ``at_ms`` (None: no such record)."""
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        found = await consumer.offsets_for_times(dict.fromkeys(tps, at_ms))
    finally:
        await consumer.stop()
    return {tp.partition: (found[tp].offset if found[tp] is not None else None) for tp in tps}


def _admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    options = client_kwargs(settings)
    return AIOKafkaAdminClient(**options)


async def group_state(settings: KafkaSettings, group: str) -> tuple[str, int]:
    """The group's state (``Empty``, ``Dead`` for an unknown group, ``Stable``...) and its
    member count."""
    admin = _admin(settings)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    for response in responses:
        for entry in response.to_object()["groups"]:
            if entry["group"] == group:
                return str(entry["state"]), len(entry["members"])
    return "Dead", 0


async def committed_offsets(settings: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """The offsets ``group`` has committed for ``topic`` (partitions without one are absent)."""
    admin = _admin(settings)
    await admin.start()
    try:
        found: dict[Any, OffsetAndMetadata] = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in found.items() if tp.topic == topic}


async def commit_offsets(
    settings: KafkaSettings, group: str, topic: str, offsets: dict[int, int]
) -> None:
    """Commit ``offsets`` for ``group``; the group must have no running members."""
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        tps = {TopicPartition(topic, p): OffsetAndMetadata(o, "") for p, o in offsets.items()}
        consumer.assign(list(tps))
        try:
            await consumer.commit(tps)
        except KafkaError as exc:
            raise GroupOffsetsError(
                f"committing offsets for group {group!r} failed ({type(exc).__name__}); "
                "stop its running members first"
            ) from None
    finally:
        await consumer.stop()
