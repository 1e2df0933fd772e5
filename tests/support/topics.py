"""Real topics for integration tests: the repository's contracts under a unique prefix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from connector.config import TopicNames
from connector.contract.topics import load_spec
from connector.kafka.admin import apply_topics
from tests.support.paths import TOPICS_SPEC_PATH

#: The ``topic_factory`` fixture: ``await topic_factory(partitions=3, configs={...}, label="in")``.
TopicFactory = Callable[..., Awaitable[str]]


async def apply_spec_topics(bootstrap: str, prefix: str) -> TopicNames:
    """Create every topic of the packaged topic spec under ``prefix`` (replication factor 1)."""
    await apply_topics(
        bootstrap, load_spec(TOPICS_SPEC_PATH), dry_run=False, prefix=prefix, replication_factor=1
    )
    return TopicNames(
        input=f"{prefix}order.status.changed",
        results=f"{prefix}order.status.results",
        errors=f"{prefix}order.status.errors",
        ledger=f"{prefix}order.status.ledger",
        correlation=f"{prefix}order.status.correlation",
    )
