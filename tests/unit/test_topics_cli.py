"""`order-connector topics apply` without a cluster: the packaged spec and --wait-s retries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.contract.topics import TopicPlan, TopicsSpec, load_spec
from connector.kafka.admin import TopicAdminError
from connector.ops import topics as topics_cli


class _FlakyCluster:
    """Unreachable for the first `failures` calls, then an empty plan; records the spec used."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.specs: list[TopicsSpec] = []

    async def __call__(self, bootstrap: str, spec: TopicsSpec, **_: Any) -> TopicPlan:
        self.calls += 1
        self.specs.append(spec)
        if self.calls <= self.failures:
            raise TopicAdminError("connect to", bootstrap, -1, "KafkaConnectionError")
        return TopicPlan(creates=(), drifts=(), unchanged=())


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> _FlakyCluster:
    flaky = _FlakyCluster(failures=2)
    monkeypatch.setattr(topics_cli, "apply_topics", flaky)
    monkeypatch.setattr(topics_cli, "RETRY_INTERVAL_S", 0.0)
    return flaky


def test_apply_uses_the_packaged_spec_and_waits_for_the_cluster(
    cluster: _FlakyCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code = topics_cli.topics_main(["apply", "--bootstrap-servers", "kafka:9092", "--wait-s", "30"])
    assert code == topics_cli.EXIT_OK
    assert cluster.calls == 3
    assert cluster.specs[0] == load_spec()
    assert "order.status.changed" in cluster.specs[0].topics
    assert capsys.readouterr().err.count("cluster not reachable yet, retrying") == 2


def test_without_wait_an_unreachable_cluster_fails_at_once(
    cluster: _FlakyCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code = topics_cli.topics_main(["apply", "--bootstrap-servers", "kafka:9092"])
    assert code == topics_cli.EXIT_ERROR
    assert cluster.calls == 1
    assert "connect to 'kafka:9092' failed" in capsys.readouterr().err


def test_spec_stays_an_override(cluster: _FlakyCluster, tmp_path: Path) -> None:
    cluster.failures = 0
    spec = tmp_path / "topics.yaml"
    spec.write_text(
        "version: 1\ndefaults: {replication_factor: 1}\ntopics:\n"
        "  order.status.changed:\n"
        "    {name: in, role: input, key: order id, value: event, partitions: 2}\n"
    )
    code = topics_cli.topics_main(["apply", "--bootstrap-servers", "k:9092", "--spec", str(spec)])
    assert code == topics_cli.EXIT_OK
    assert list(cluster.specs[0].topics) == ["order.status.changed"]
