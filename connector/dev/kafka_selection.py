"""Which Kafka the tests, benchmarks and demo use: an existing cluster, testcontainers where a
Docker engine can really run it, else the local launcher (`connector.dev.devbroker.LocalKafka`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from connector.dev.devbroker import (
    BOOTSTRAP_ENV,
    LAUNCHER_ENV,
    TESTCONTAINERS_IMAGE,
    DevBrokerError,
    LocalKafka,
)


def docker_kafka_images() -> list[str]:
    """The images testcontainers needs for the Kafka container: Kafka, and Ryuk unless disabled."""
    images = [TESTCONTAINERS_IMAGE]
    try:
        from testcontainers.core.config import testcontainers_config
    except ImportError:
        return images
    if not testcontainers_config.ryuk_disabled:
        images.append(str(testcontainers_config.ryuk_image))
    return images


def docker_kafka_unusable(timeout_s: float = 2.0) -> str | None:
    """Why testcontainers cannot start Kafka here, or None when it can.

    It can when a Docker engine answers and every image it needs (`docker_kafka_images`) is
    present or can be pulled: an engine without registry access fails later with an APIError 500
    (Ryuk, then Kafka), so the registry is asked for each missing image's manifest now, which
    downloads no layers.
    """
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return "no Docker engine (no DOCKER_HOST, no /var/run/docker.sock)"
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return "the docker/testcontainers packages are not installed"
    try:
        client = docker.from_env(timeout=max(1, int(timeout_s)))
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__})"
    try:
        try:
            client.ping()
        except Exception as exc:
            return f"no Docker engine answers ({type(exc).__name__})"
        for image in docker_kafka_images():
            if not _image_present(client, image) and (failure := _not_pullable(client, image)):
                return (
                    f"the Docker engine answers but image {image} is not present and cannot be "
                    f"pulled ({failure})"
                )
        return None
    finally:
        client.close()


def _image_present(client: Any, image: str) -> bool:
    try:
        client.images.get(image)
    except Exception:
        return False
    return True


def _not_pullable(client: Any, image: str) -> str | None:
    """None when the registry knows `image` (its manifest is fetched, no layers), else why not."""
    try:
        client.api.inspect_distribution(image)
    except Exception as exc:
        return type(exc).__name__
    return None


@contextlib.contextmanager
def _testcontainers_kafka() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    container: Any = KafkaContainer(TESTCONTAINERS_IMAGE).with_kraft()
    with container as kafka:
        yield str(kafka.get_bootstrap_server())


@contextlib.contextmanager
def select_kafka(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Yield bootstrap servers of the Kafka to use, started here if needed, stopped afterwards.

    Order: $ORDER_CONNECTOR_BOOTSTRAP_SERVERS (an existing cluster); else testcontainers when a
    Docker engine answers and its images are present or pullable (never in CI, i.e. when $CI is
    set); else `LocalKafka`, with one line on stderr saying why Docker was not used.
    $ORDER_CONNECTOR_KAFKA_LAUNCHER=local|testcontainers forces a launcher. Never skips.
    """
    env = os.environ if env is None else env
    if existing := env.get(BOOTSTRAP_ENV, "").strip():
        yield existing
        return
    launcher = env.get(LAUNCHER_ENV, "auto").strip().lower() or "auto"
    if launcher not in {"auto", "local", "testcontainers"}:
        raise DevBrokerError(f"{LAUNCHER_ENV} must be auto, local or testcontainers: {launcher!r}")
    use_docker = launcher == "testcontainers"
    if launcher == "auto" and not env.get("CI"):
        reason = docker_kafka_unusable()
        use_docker = reason is None
        if reason is not None:
            print(f"devbroker: {reason}; using the local Kafka broker", file=sys.stderr)
    if use_docker:
        with _testcontainers_kafka() as bootstrap:
            yield bootstrap
        return
    with LocalKafka() as bootstrap:
        yield bootstrap
