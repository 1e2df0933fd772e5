"""Shared fixtures: one real Kafka broker per test session and unique names per test.

Copied from the broker branch's pattern (the lead reconciles): the broker comes from
`connector.devbroker.select_kafka`, is started only when a test asks for `kafka_bootstrap`,
and a missing broker fails: never a skip.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connector.devbroker import select_kafka

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPICS_SPEC_PATH = REPO_ROOT / "topics" / "topics.yaml"


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
