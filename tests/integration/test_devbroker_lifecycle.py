"""The local launcher: restart on the same port with the same data, and no stray JVM ever.

These tests start their own brokers (never the session one, which other tests share).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connector.dev.devbroker import LocalKafka, broker_is_serving
from connector.kafka.admin import ensure_topic

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"order-1")
    finally:
        await producer.stop()


async def _consume_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    try:
        with anyio.fail_after(30):
            while len(values) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    values.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return values


def test_stop_keep_data_then_start_serves_same_port_and_data() -> None:
    broker = LocalKafka()
    try:
        bootstrap = broker.start()
        first_pid = broker.pid
        assert first_pid is not None
        with anyio.from_thread.start_blocking_portal() as portal:
            portal.call(ensure_topic, bootstrap, "kept")
            portal.call(_produce, bootstrap, "kept", b"before-restart")

        broker.stop(keep_data=True)
        assert _wait_gone(first_pid, 5)
        assert not broker_is_serving("127.0.0.1", broker.port, timeout_s=0.5)
        assert broker.data_dir.is_dir()

        assert broker.start() == bootstrap
        with anyio.from_thread.start_blocking_portal() as portal:
            portal.call(_produce, bootstrap, "kept", b"after-restart")
            values = portal.call(_consume_all, bootstrap, "kept", 2)
        assert values == [b"before-restart", b"after-restart"]

        broker.pause_broker()
        assert not broker_is_serving("127.0.0.1", broker.port, timeout_s=0.5)
        broker.resume_broker()
        assert broker_is_serving("127.0.0.1", broker.port, timeout_s=5)
        second_pid = broker.pid
    finally:
        broker.stop()
    assert second_pid is not None
    assert _wait_gone(second_pid, 5)
    assert not broker.data_dir.exists()


def test_broker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\nfrom connector.dev.devbroker import LocalKafka\n"
        f"broker = LocalKafka(data_dir=Path({str(tmp_path)!r}))\n"
        "broker.start()\n"
        "print(broker.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        assert child.stdout is not None
        jvm_pid = int(child.stdout.readline())
        assert _alive(jvm_pid)
        child.kill()  # no atexit, no cleanup: only the kernel's parent-death signal is left
        child.wait(timeout=10)
        assert _wait_gone(jvm_pid, 20), "the broker JVM outlived the process that started it"
        assert (tmp_path / "broker.log").read_text().count("Kafka Server started") == 1
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
