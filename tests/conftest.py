"""Shared fixtures: one real Kafka broker per test session and unique names per test.

The broker comes from `connector.dev.kafka_selection.select_kafka`
($ORDER_CONNECTOR_BOOTSTRAP_SERVERS, else testcontainers where Docker answers outside CI, else
the local KRaft launcher). It is started only when a test asks for `kafka_bootstrap`, and a
missing broker fails: never a skip.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest

from connector.contract.topics import TopicsSpec, load_spec
from connector.dev.kafka_selection import select_kafka
from connector.kafka.admin import ensure_topic
from tests.support.paths import TOPICS_SPEC_PATH
from tests.support.topics import TopicFactory


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers ("host:port") of the session's real Kafka broker."""
    with select_kafka() as bootstrap:
        yield bootstrap


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`unique_name("orders")` -> a topic/group-safe name unique to this test and call."""
    test = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    run = uuid.uuid4().hex[:8]

    def make(label: str = "t") -> str:
        return f"{test}-{label}-{run}-{uuid.uuid4().hex[:4]}"

    return make


@pytest.fixture
def topic_factory(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> TopicFactory:
    """`await topic_factory(partitions=3, configs={...}, label="in")` creates a unique topic."""

    async def create(
        *, partitions: int = 1, configs: Mapping[str, str] | None = None, label: str = "topic"
    ) -> str:
        return await ensure_topic(
            kafka_bootstrap, unique_name(label), partitions=partitions, configs=configs
        )

    return create


@pytest.fixture
def topics_spec(unique_name: Callable[[str], str]) -> TopicsSpec:
    """The repository's topic contracts with unique real names and replication factor 1."""
    spec = load_spec(TOPICS_SPEC_PATH)
    return spec.with_affixes(prefix=unique_name("spec") + ".").with_replication_factor(1)
