"""The topic contract model and the pure planner: no broker needed."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from connector.contract.topics import (
    DriftKind,
    TopicPlan,
    TopicsSpec,
    TopicState,
    load_spec,
    plan,
    render_plan,
)
from tests.support.paths import TOPICS_SPEC_PATH


def _doc(**topics: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "defaults": {"replication_factor": 1}, "topics": topics}


def _state(spec: TopicsSpec, logical: str, **changes: Any) -> TopicState:
    topic = spec.topics[logical]
    fields: dict[str, Any] = {
        "name": topic.name,
        "partitions": topic.partitions,
        "replication_factor": topic.replication_factor,
        "configs": {**topic.configs, "segment.bytes": "1073741824"},
        "overrides": dict(topic.configs),
    }
    fields.update(changes)
    return TopicState(**fields)


@pytest.fixture
def spec() -> TopicsSpec:
    return load_spec(TOPICS_SPEC_PATH)


def test_repository_spec_declares_every_topic_with_its_contract(spec: TopicsSpec) -> None:
    assert set(spec.topics) == {
        "order.status.changed",
        "order.status.results",
        "order.status.errors",
        "order.status.ledger",
        "order.status.correlation",
    }
    changed = spec.topics["order.status.changed"]
    assert changed.partitions == 12
    assert changed.key == "order id"
    assert spec.topics["order.status.errors"].configs["cleanup.policy"] == "delete"
    ledger = spec.topics["order.status.ledger"]
    assert ledger.configs["cleanup.policy"] == "compact"
    assert ledger.co_partitioned_with == "order.status.changed"
    assert ledger.partitions == changed.partitions
    assert "compact" in spec.topics["order.status.correlation"].configs["cleanup.policy"]
    for topic in spec.topics.values():
        assert topic.configs["min.insync.replicas"] == "2"
        assert topic.replication_factor == 3


def test_replication_factor_override_caps_min_insync_replicas(spec: TopicsSpec) -> None:
    single = spec.with_replication_factor(1)
    assert {t.replication_factor for t in single.topics.values()} == {1}
    assert {t.configs["min.insync.replicas"] for t in single.topics.values()} == {"1"}


def test_names_are_overridable_without_touching_logical_names(spec: TopicsSpec) -> None:
    renamed = spec.with_names({"order.status.changed": "shop-a.orders"}).with_affixes(
        prefix="t1.", suffix=".v2"
    )
    assert renamed.name_of("order.status.changed") == "t1.shop-a.orders.v2"
    assert renamed.name_of("order.status.errors") == "t1.order.status.errors.v2"
    assert renamed.topics["order.status.ledger"].co_partitioned_with == "order.status.changed"
    with pytest.raises(KeyError, match=r"no such logical topics"):
        spec.with_names({"order.status.nope": "x"})


@pytest.mark.parametrize(
    ("topics", "message"),
    [
        ({"a": {"role": "input", "key": "k"}}, "declares no partitions"),
        (
            {"a": {"role": "input", "key": "k", "partitions": 2, "configs": {"retention": 1}}},
            "unknown config keys",
        ),
        (
            {
                "a": {
                    "role": "input",
                    "key": "k",
                    "partitions": 2,
                    "configs": {"cleanup.policy": "forever"},
                }
            },
            "cleanup.policy",
        ),
        (
            {
                "a": {
                    "role": "input",
                    "key": "k",
                    "partitions": 2,
                    "configs": {"min.insync.replicas": 2},
                }
            },
            "exceeds replication",
        ),
        (
            {
                "a": {"role": "input", "key": "k", "partitions": 2},
                "b": {"role": "state", "key": "k", "partitions": 3, "co_partitioned_with": "a"},
            },
            "co-partitioned",
        ),
        (
            {"b": {"role": "state", "key": "k", "co_partitioned_with": "missing"}},
            "unknown topic",
        ),
        (
            {
                "a": {"role": "state", "key": "k", "co_partitioned_with": "b"},
                "b": {"role": "state", "key": "k", "co_partitioned_with": "a"},
            },
            "cycle",
        ),
        (
            {
                "a": {"role": "input", "key": "k", "partitions": 1, "name": "same"},
                "b": {"role": "output", "key": "k", "partitions": 1, "name": "same"},
            },
            "same real name",
        ),
        ({"a": {"role": "input", "key": "k", "partitions": 1, "name": "bad name"}}, "pattern"),
        ({"a": {"role": "sink", "key": "k", "partitions": 1}}, "role"),
    ],
)
def test_invalid_specs_are_rejected_with_a_reason(topics: dict[str, Any], message: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        TopicsSpec.parse(_doc(**topics))


def test_co_partitioned_topic_inherits_partition_count() -> None:
    spec = TopicsSpec.parse(
        _doc(
            ledger={"role": "state", "key": "k", "co_partitioned_with": "input"},
            input={"role": "input", "key": "k", "partitions": 7},
        )
    )
    assert spec.topics["ledger"].partitions == 7


def test_plan_creates_everything_on_an_empty_cluster(spec: TopicsSpec) -> None:
    result = plan(spec, {})
    assert [t.name for t in result.creates] == [t.name for t in spec.topics.values()]
    assert result.drifts == ()
    assert not result.is_noop


def test_plan_is_a_noop_when_the_cluster_matches(spec: TopicsSpec) -> None:
    existing = {t.name: _state(spec, logical) for logical, t in spec.topics.items()}
    result = plan(spec, existing)
    assert result.is_noop
    assert set(result.unchanged) == set(existing)


def test_plan_reports_partition_replication_and_config_drift(spec: TopicsSpec) -> None:
    existing = {t.name: _state(spec, logical) for logical, t in spec.topics.items()}
    errors = spec.name_of("order.status.errors")
    existing[errors] = _state(
        spec,
        "order.status.errors",
        partitions=3,
        replication_factor=1,
        configs={"cleanup.policy": "compact", "min.insync.replicas": "2"},
    )
    result = plan(spec, existing)
    found = {(d.kind, d.key): d for d in result.drifts}
    assert set(found) == {
        (DriftKind.PARTITIONS, "partitions"),
        (DriftKind.REPLICATION_FACTOR, "replication_factor"),
        (DriftKind.CONFIG, "cleanup.policy"),
        (DriftKind.CONFIG, "retention.ms"),
        (DriftKind.CONFIG, "max.message.bytes"),
        (DriftKind.CONFIG, "unclean.leader.election.enable"),
    }
    assert {d.topic for d in result.drifts} == {errors}
    assert not found[(DriftKind.PARTITIONS, "partitions")].fixable
    assert found[(DriftKind.CONFIG, "cleanup.policy")].fixable
    assert found[(DriftKind.CONFIG, "retention.ms")].actual is None
    assert errors not in result.unchanged


def test_cleanup_policy_order_is_not_drift(spec: TopicsSpec) -> None:
    correlation = spec.topics["order.status.correlation"]
    state = _state(
        spec,
        "order.status.correlation",
        configs={**correlation.configs, "cleanup.policy": "delete,compact"},
    )
    assert plan(spec, {correlation.name: state}).drifts == ()


def test_render_plan_names_every_change(spec: TopicsSpec) -> None:
    existing = {
        spec.name_of("order.status.errors"): _state(spec, "order.status.errors", partitions=3)
    }
    text = render_plan(plan(spec, existing))
    assert "would create order.status.changed partitions=12 replication_factor=3" in text
    assert "drift        order.status.errors partitions: expected 12, found 3" in text
    assert "needs a human" in text
    assert text.endswith("4 to create, 1 drifted, 0 unchanged (dry run)")
    assert render_plan(TopicPlan(dry_run=False)) == "0 to create, 0 drifted, 0 unchanged"
