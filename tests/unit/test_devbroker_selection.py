"""Broker selection and jar caching rules, without starting a JVM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.dev import devbroker
from connector.dev.devbroker import (
    BOOTSTRAP_ENV,
    LAUNCHER_ENV,
    DevBrokerError,
    broker_is_serving,
    ensure_jars,
    free_port,
    select_kafka,
)


class _FakeLocalKafka:
    started = 0

    def __enter__(self) -> str:
        type(self).started += 1
        return "127.0.0.1:1111"

    def __exit__(self, *exc: object) -> None:
        return None


@contextlib.contextmanager
def _fake_container() -> Iterator[str]:
    yield "docker-host:9092"


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    _FakeLocalKafka.started = 0
    monkeypatch.setattr(devbroker, "LocalKafka", _FakeLocalKafka)
    monkeypatch.setattr(devbroker, "_testcontainers_kafka", _fake_container)
    monkeypatch.setattr(devbroker, "docker_engine_answers", lambda timeout_s=2.0: True)


@pytest.mark.usefixtures("fakes")
def test_bootstrap_variable_names_an_existing_cluster_and_starts_nothing() -> None:
    with select_kafka({BOOTSTRAP_ENV: "kafka-1:9092,kafka-2:9092", "CI": "true"}) as bootstrap:
        assert bootstrap == "kafka-1:9092,kafka-2:9092"
    assert _FakeLocalKafka.started == 0


@pytest.mark.usefixtures("fakes")
def test_docker_is_used_outside_ci_when_an_engine_answers() -> None:
    with select_kafka({}) as bootstrap:
        assert bootstrap == "docker-host:9092"


@pytest.mark.usefixtures("fakes")
def test_ci_always_uses_the_local_launcher_even_with_docker() -> None:
    with select_kafka({"CI": "true"}) as bootstrap:
        assert bootstrap == "127.0.0.1:1111"
    assert _FakeLocalKafka.started == 1


@pytest.mark.usefixtures("fakes")
def test_launcher_can_be_forced_and_typos_are_refused() -> None:
    with select_kafka({LAUNCHER_ENV: "local"}) as bootstrap:
        assert bootstrap == "127.0.0.1:1111"
    with pytest.raises(DevBrokerError, match="must be auto, local or testcontainers"):  # noqa: SIM117
        with select_kafka({LAUNCHER_ENV: "docker"}):
            pass


def test_cached_jars_are_reused_without_running_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    monkeypatch.setattr(devbroker.shutil, "which", lambda name: None)  # no mvn at all
    home = tmp_path / "cache" / "kafka-9.9.9"
    (home / "lib").mkdir(parents=True)
    (home / ".complete").write_text(devbroker._pom_digest(pom, "9.9.9"))
    assert ensure_jars("9.9.9", cache_dir=tmp_path / "cache", pom=pom) == home / "lib"
    # A changed pom invalidates the cache: now Maven is needed, and it is missing.
    pom.write_text("<project><!-- changed --></project>")
    with pytest.raises(DevBrokerError, match="Maven"):
        ensure_jars("9.9.9", cache_dir=tmp_path / "cache", pom=pom)


def test_server_properties_are_single_node_kraft_with_fast_test_settings(tmp_path: Path) -> None:
    props = devbroker._server_properties(
        node_id=1, port=1234, controller_port=1235, log_dir=tmp_path, auto_create_topics=False
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:1235"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1234"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"


def test_nothing_listening_is_not_serving() -> None:
    assert not broker_is_serving("127.0.0.1", free_port(), timeout_s=0.5)
