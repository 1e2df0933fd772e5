"""Broker selection and jar caching rules, without starting a JVM."""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.dev import devbroker, kafka_selection
from connector.dev.devbroker import (
    BOOTSTRAP_ENV,
    LAUNCHER_ENV,
    DevBrokerError,
    broker_is_serving,
    ensure_jars,
    free_port,
)
from connector.dev.kafka_selection import select_kafka


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
    monkeypatch.setattr(kafka_selection, "LocalKafka", _FakeLocalKafka)
    monkeypatch.setattr(kafka_selection, "_testcontainers_kafka", _fake_container)
    monkeypatch.setattr(kafka_selection, "docker_kafka_unusable", lambda timeout_s=2.0: None)


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
def test_an_engine_without_the_images_falls_back_to_the_local_broker_saying_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "the Docker engine answers but image x/kafka:1 is not present and cannot be pulled"
    monkeypatch.setattr(kafka_selection, "docker_kafka_unusable", lambda timeout_s=2.0: reason)
    with select_kafka({}) as bootstrap:
        assert bootstrap == "127.0.0.1:1111"
    assert _FakeLocalKafka.started == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"devbroker: {reason}; using the local Kafka broker"]


class _FakeDockerClient:
    """An engine that answers; `present` images are local, `pullable` ones in a registry."""

    def __init__(self, present: set[str], pullable: set[str]) -> None:
        self.present, self.pullable = present, pullable
        self.images = types.SimpleNamespace(get=self._get)
        self.api = types.SimpleNamespace(inspect_distribution=self._inspect)
        self.closed = False

    def ping(self) -> bool:
        return True

    def _get(self, image: str) -> object:
        if image not in self.present:
            raise LookupError(f"No such image: {image}")
        return object()

    def _inspect(self, image: str) -> dict[str, Any]:
        if image not in self.pullable:
            raise RuntimeError(
                "500 Server Error: dial tcp: lookup registry-1.docker.io: no such host"
            )
        return {"Descriptor": {}}

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("present", "pullable", "usable"),
    [
        ({"kafka:1", "ryuk:1"}, set(), True),
        ({"kafka:1"}, {"ryuk:1"}, True),
        (set(), {"kafka:1", "ryuk:1"}, True),
        ({"kafka:1"}, set(), False),  # the case that used to fail with APIError 500 (Ryuk)
        (set(), set(), False),
    ],
)
def test_testcontainers_is_usable_only_with_every_image_present_or_pullable(
    monkeypatch: pytest.MonkeyPatch, present: set[str], pullable: set[str], usable: bool
) -> None:
    client = _FakeDockerClient(present, pullable)
    fake_docker = types.ModuleType("docker")
    fake_docker.from_env = lambda timeout=None: client  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "docker", fake_docker)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    monkeypatch.setattr(kafka_selection, "docker_kafka_images", lambda: ["kafka:1", "ryuk:1"])
    reason = kafka_selection.docker_kafka_unusable()
    assert (reason is None) is usable
    if not usable:
        assert "is not present and cannot be pulled" in (reason or "")
    assert client.closed


def test_no_engine_is_a_reason_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(kafka_selection.Path, "exists", lambda self: False)
    assert kafka_selection.docker_kafka_unusable() == (
        "no Docker engine (no DOCKER_HOST, no /var/run/docker.sock)"
    )


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


def test_the_packaged_pom_is_the_default_and_missing_tools_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(devbroker.POM_ENV, raising=False)
    monkeypatch.setattr(devbroker.shutil, "which", lambda name: None)  # no mvn, no java
    packaged = Path(str(devbroker.PACKAGED_POM))
    assert "<artifactId>kafka_2.13</artifactId>" in packaged.read_text()
    home = tmp_path / "cache" / "kafka-9.9.9"
    (home / "lib").mkdir(parents=True)
    (home / ".complete").write_text(devbroker._pom_digest(packaged, "9.9.9"))
    assert ensure_jars("9.9.9", cache_dir=tmp_path / "cache") == home / "lib"
    with pytest.raises(DevBrokerError, match=r"Maven \(mvn\).*JDK 17\+"):
        ensure_jars("9.9.8", cache_dir=tmp_path / "cache")


class _Kernel:
    """Hands out the lowest port not bound right now, as a kernel may: a port released a
    moment ago comes back to the next bind."""

    def __init__(self) -> None:
        self.bound: set[int] = set()

    def socket(self, *_args: object) -> _KernelSocket:
        return _KernelSocket(self)


class _KernelSocket:
    def __init__(self, kernel: _Kernel) -> None:
        self._kernel = kernel
        self._port: int | None = None

    def bind(self, address: tuple[str, int]) -> None:
        self._port = min(set(range(40_000, 40_100)) - self._kernel.bound)
        self._kernel.bound.add(self._port)

    def getsockname(self) -> tuple[str, int]:
        assert self._port is not None
        return ("127.0.0.1", self._port)

    def close(self) -> None:
        self._kernel.bound.discard(self._port or 0)

    def __enter__(self) -> _KernelSocket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def test_client_and_controller_ports_differ_even_when_the_kernel_reuses_ports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two ports picked one after another came back equal on CI (the broker refused to format:
    "two listeners on the same port"); they are now picked while both are held."""
    kernel = _Kernel()
    monkeypatch.setattr(devbroker.socket, "socket", kernel.socket)
    assert free_port() == free_port() == 40_000  # what the kernel does to one-by-one picks
    broker = devbroker.LocalKafka(data_dir=tmp_path / "a")
    assert (broker.port, broker.controller_port) == (40_000, 40_001)
    given = devbroker.LocalKafka(data_dir=tmp_path / "b", port=40_000)
    assert (given.port, given.controller_port) == (40_000, 40_001)
    assert devbroker.free_ports(3, besides={40_001}) == [40_000, 40_002, 40_003]
    assert not kernel.bound
