"""Typed wrapper around aiokafka's admin client, and `apply_topics` for topic contracts.

The only module that imports `aiokafka.admin`; everything it returns is a plain typed value.
Planning is pure and lives in `connector.contract.topics`; this module only reads and writes
the cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Self

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from connector.contract.topics import (
    DriftKind,
    TopicPlan,
    TopicRole,
    TopicSpec,
    TopicsSpec,
    TopicState,
    plan,
    same_config_value,
)
from connector.errors import ConfigError
from connector.kafka.connection import client_kwargs
from connector.kafka.producer import error_record_limit

if TYPE_CHECKING:
    from connector.config import KafkaSettings

_NO_ERROR: Final = 0
_UNKNOWN_TOPIC: Final = 3
_TOPIC_ALREADY_EXISTS: Final = 36
_CONFIG_SOURCE_TOPIC: Final = 1  # DescribeConfigs v1+: value set on the topic itself
_MAX_MESSAGE_BYTES: Final = "max.message.bytes"


class TopicAdminError(RuntimeError):
    """The cluster refused or failed a topic operation (error code and broker message kept)."""

    def __init__(self, operation: str, topic: str, error_code: int, message: str | None) -> None:
        super().__init__(f"{operation} {topic!r} failed: error {error_code}: {message or ''}")
        self.operation = operation
        self.topic = topic
        self.error_code = error_code


class KafkaAdmin:
    """Async context manager over `AIOKafkaAdminClient` speaking in `TopicState`/`TopicSpec`."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "order-connector-admin",
        request_timeout_ms: int = 30_000,
        **client_options: Any,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            **client_options,
        )

    async def __aenter__(self) -> Self:
        try:
            await self._client.start()
        except KafkaError as error:
            await self._client.close()
            raise TopicAdminError("connect to", self._bootstrap_servers, -1, str(error)) from error
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._client.close()

    async def list_topics(self) -> set[str]:
        return set(await self._client.list_topics())

    async def describe_topic_metadata(self, names: Iterable[str]) -> dict[str, tuple[int, int]]:
        """(error code, partition count) per named topic that the cluster lists.

        Lists first and describes only listed topics: a metadata request naming a topic
        that does not exist would create it on a broker with ``auto.create.topics.enable``.
        Topics missing from the answer do not exist or are invisible to this principal.
        """
        present = await self.list_topics()
        wanted = sorted(name for name in set(names) if name in present)
        if not wanted:
            return {}
        described = await self._client.describe_topics(wanted)
        return {t["topic"]: (t["error_code"], len(t["partitions"])) for t in described}

    async def describe_topics(self, names: Iterable[str]) -> dict[str, TopicState]:
        """State of the named topics that exist (missing ones are left out), with configs."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        present = await self.list_topics()
        wanted = [name for name in wanted if name in present]
        if not wanted:
            return {}
        described = await self._client.describe_topics(wanted)
        shapes: dict[str, tuple[int, int]] = {}
        for topic in described:
            if topic["error_code"] == _UNKNOWN_TOPIC:
                continue
            if topic["error_code"] != _NO_ERROR:
                raise TopicAdminError("describe", topic["topic"], topic["error_code"], None)
            partitions = topic["partitions"]
            replicas = max((len(p["replicas"]) for p in partitions), default=0)
            shapes[topic["topic"]] = (len(partitions), replicas)
        configs = await self._describe_configs(list(shapes))
        return {
            name: TopicState(
                name=name,
                partitions=count,
                replication_factor=replicas,
                configs=configs.get(name, ({}, {}))[0],
                overrides=configs.get(name, ({}, {}))[1],
            )
            for name, (count, replicas) in shapes.items()
        }

    async def _describe_configs(
        self, names: Sequence[str]
    ) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
        if not names:
            return {}
        responses = await self._client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
        result: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        for response in responses:
            for resource in response.to_object()["resources"]:
                name = resource["resource_name"]
                if resource["error_code"] != _NO_ERROR:
                    raise TopicAdminError(
                        "describe configs", name, resource["error_code"], resource["error_message"]
                    )
                effective: dict[str, str] = {}
                overrides: dict[str, str] = {}
                for entry in resource["config_entries"]:
                    key = entry.get("config_names", entry.get("config_name"))
                    value = entry["config_value"]
                    if key is None or value is None:
                        continue
                    effective[key] = value
                    source = entry.get("config_source")
                    is_override = (
                        source == _CONFIG_SOURCE_TOPIC
                        if source is not None
                        else not entry.get("is_default", True)
                    )
                    if is_override:
                        overrides[key] = value
                result[name] = (effective, overrides)
        return result

    async def max_message_bytes(self, topic: str) -> int:
        """The topic's effective ``max.message.bytes`` (its override, else the broker's default):
        the largest record batch the broker accepts for it. Raises ``TopicAdminError`` when the
        topic does not exist or its configuration cannot be read."""
        try:
            configs = await self._describe_configs([topic])
        except KafkaError as error:
            raise TopicAdminError("describe configs", topic, -1, str(error)) from error
        value = configs.get(topic, ({}, {}))[0].get(_MAX_MESSAGE_BYTES)
        if value is None:
            raise TopicAdminError("describe configs", topic, -1, f"no {_MAX_MESSAGE_BYTES}")
        return int(value)

    async def create_topics(self, topics: Sequence[TopicSpec]) -> None:
        """Create the topics; one that already exists (a concurrent apply) is not an error."""
        if not topics:
            return
        response = await self._client.create_topics(
            [
                NewTopic(
                    name=topic.name,
                    num_partitions=topic.partitions,
                    replication_factor=topic.replication_factor,
                    topic_configs=dict(topic.configs),
                )
                for topic in topics
            ]
        )
        for entry in response.to_object()["topic_errors"]:
            code = entry["error_code"]
            if code not in (_NO_ERROR, _TOPIC_ALREADY_EXISTS):
                raise TopicAdminError("create", entry["topic"], code, entry.get("error_message"))

    async def set_topic_configs(self, name: str, overrides: Mapping[str, str]) -> None:
        """Replace the topic's own config overrides with `overrides` (legacy AlterConfigs).

        AlterConfigs is not incremental: pass every override the topic should keep.
        """
        responses = await self._client.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs=dict(overrides))]
        )
        for response in responses:
            for resource in response.to_object()["resources"]:
                if resource["error_code"] != _NO_ERROR:
                    raise TopicAdminError(
                        "alter configs", name, resource["error_code"], resource["error_message"]
                    )

    async def wait_for_configs(
        self, name: str, expected: Mapping[str, str], *, timeout_s: float = 30.0
    ) -> None:
        """Return once the broker serves `expected` for the topic.

        The controller commits a config change before the broker's metadata cache shows it,
        so a describe right after an alter can still return the old value.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            effective = (await self._describe_configs([name])).get(name, ({}, {}))[0]
            if all(same_config_value(k, v, effective.get(k)) for k, v in expected.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"configs of {name!r} not visible within {timeout_s}s")
            await asyncio.sleep(0.05)

    async def wait_for_topics(self, names: Iterable[str], *, timeout_s: float = 30.0) -> None:
        """Return once every named topic is in the metadata with a leader for each partition."""
        wanted = sorted(set(names))
        deadline = time.monotonic() + timeout_s
        while True:
            described = await self._client.describe_topics(wanted)
            ready = {
                t["topic"]
                for t in described
                if t["error_code"] == _NO_ERROR
                and t["partitions"]
                and all(p["error_code"] == _NO_ERROR and p["leader"] >= 0 for p in t["partitions"])
            }
            if ready >= set(wanted):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"topics not ready within {timeout_s}s: {sorted(set(wanted) - ready)}"
                )
            await asyncio.sleep(0.05)


async def ensure_topic(
    bootstrap_servers: str,
    name: str,
    *,
    partitions: int = 1,
    replication_factor: int = 1,
    configs: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> str:
    """Create one topic outside any spec (tests, demo) unless it exists; wait until usable."""
    topic = TopicSpec(
        logical_name=name,
        name=name,
        role=TopicRole.STATE,
        key="",
        partitions=partitions,
        replication_factor=replication_factor,
        configs=dict(configs or {}),
    )
    async with KafkaAdmin(bootstrap_servers) as admin:
        await admin.create_topics([topic])
        await admin.wait_for_topics([name], timeout_s=timeout_s)
    return name


async def read_max_message_bytes(
    bootstrap_servers: str, topics: Iterable[str], **client_options: Any
) -> dict[str, int]:
    """``max.message.bytes`` of each named topic (read at start to size records and the
    producer's ``max_request_size``); ``TopicAdminError`` names a topic that cannot be read."""
    async with KafkaAdmin(bootstrap_servers, **client_options) as admin:
        return {name: await admin.max_message_bytes(name) for name in sorted(set(topics))}


@dataclass(frozen=True, slots=True)
class PublishLimits:
    """Sizes read from the written topics at start.

    ``max_request_size`` is for ``KafkaSettings.max_request_size`` (the configured value, lowered
    to the smallest ``max.message.bytes`` of the written topics); ``error_record_max_bytes`` is
    the ``max_bytes`` of ``bounded_error_record``.
    """

    max_request_size: int
    error_record_max_bytes: int
    max_message_bytes: Mapping[str, int]


async def read_publish_limits(
    settings: KafkaSettings, *, written: Iterable[str], errors: str
) -> PublishLimits:
    """Read ``max.message.bytes`` of every topic the daemon writes (``errors`` included).

    Raises ``TopicAdminError`` for a topic that cannot be read, ``ConfigError`` when the errors
    topic leaves too little room for an error record.
    """
    options = client_kwargs(settings)
    bootstrap = options.pop("bootstrap_servers")
    options.pop("client_id", None)
    limits = await read_max_message_bytes(bootstrap, {*written, errors}, **options)
    request = min(settings.max_request_size, *limits.values())
    try:
        error_max = error_record_limit(limits[errors], request)
    except ValueError as exc:
        raise ConfigError(f"errors topic {errors!r}: {exc}") from None
    return PublishLimits(request, error_max, limits)


async def apply_topics(
    bootstrap_servers: str,
    spec: TopicsSpec,
    *,
    dry_run: bool,
    fix_drift: bool = False,
    names: Mapping[str, str] | None = None,
    prefix: str = "",
    suffix: str = "",
    replication_factor: int | None = None,
    **client_options: Any,
) -> TopicPlan:
    """Create missing topics and report drift; with `fix_drift`, reset drifted configs.

    `names` maps logical to real names, then prefix/suffix wrap every real name;
    `replication_factor` adapts the spec to the cluster size. Partition-count and replication
    drift are only reported. Running it twice creates nothing the second time.
    """
    if names:
        spec = spec.with_names(names)
    if prefix or suffix:
        spec = spec.with_affixes(prefix=prefix, suffix=suffix)
    if replication_factor is not None:
        spec = spec.with_replication_factor(replication_factor)
    async with KafkaAdmin(bootstrap_servers, **client_options) as admin:
        existing = await admin.describe_topics(t.name for t in spec.topics.values())
        planned = plan(spec, existing)
        if dry_run:
            return planned
        await admin.create_topics(planned.creates)
        if planned.creates:
            await admin.wait_for_topics(t.name for t in planned.creates)
        fixed = []
        if fix_drift:
            by_name = {t.name: t for t in spec.topics.values()}
            drifted = {d.topic for d in planned.drifts if d.kind is DriftKind.CONFIG}
            for name in sorted(drifted):
                await admin.set_topic_configs(
                    name, {**existing[name].overrides, **by_name[name].configs}
                )
            for name in sorted(drifted):
                await admin.wait_for_configs(name, by_name[name].configs)
            fixed = [d for d in planned.drifts if d.kind is DriftKind.CONFIG]
        return planned.model_copy(update={"dry_run": False, "fixed": tuple(fixed)})
