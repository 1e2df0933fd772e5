"""Start-up and broker outages, through ``order-connector run`` as a child process.

A misspelled output topic exits 2 with one line; an absent broker is waited for with one line
per attempt, and one that never comes exits 1 with one line; a broker that appears late is
used; a broker outage leaves a short log (aiokafka's lines are rate limited). The broker tests
use their own LocalKafka so stopping it disturbs no other test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml

from connector.config import TopicNames
from connector.dev.demo import sandbox_accounts
from connector.dev.devbroker import LocalKafka, free_port
from connector.dev.sandbox.config import SandboxConfig
from connector.kafka.admin import ensure_topic

REPO = Path(__file__).resolve().parents[2]
WAITING = "kafka_waiting"
DEAD_PROVIDER = "http://127.0.0.1:9"  # never called: these tests produce no events


def write_config(
    path: Path, bootstrap: str, group: str, topics: TopicNames, **sections: Any
) -> dict[str, str]:
    """Write a YAML config (secrets as env: references); return the environment to run it."""
    accounts = sandbox_accounts(lambda _provider: DEAD_PROVIDER, SandboxConfig())
    env: dict[str, str] = {}
    for account in accounts:
        for key in list(account):
            if any(word in key for word in ("token", "secret", "api_key")) and not key.endswith(
                "_id"
            ):
                var = f"OSC_STARTUP_{account['name']}_{key}".upper().replace("-", "_")
                env[var] = str(account[key])
                account[key] = f"env:{var}"
    raw: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "session_timeout_ms": 6000},
        "topics": topics.model_dump(),
        "accounts": accounts,
        "limits": {"commit_interval_s": 0.2, "drain_timeout_s": 5},
        "server": {"enabled": False},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return {**os.environ, **env}


def command(config: Path, level: str = "info") -> list[str]:
    return [sys.executable, "-m", "connector.cli", "run", "--config", str(config),
            "--log-level", level]  # fmt: skip


async def run_cli(
    config: Path, env: dict[str, str], level: str = "info"
) -> subprocess.CompletedProcess[str]:
    """Run the daemon to its end (these runs fail at start) and capture its output."""
    return await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            command(config, level),
            check=False,
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    )


def plain_lines(stderr: str) -> list[str]:
    """The lines that are not JSON log events (what a failure prints)."""
    out = []
    for line in stderr.splitlines():
        try:
            json.loads(line)
        except ValueError:
            out.append(line)
    return out


def log_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


async def make_topics(bootstrap: str, name: Callable[[str], str], partitions: int) -> TopicNames:
    topics = TopicNames(
        input=name("in"), results=name("results"), errors=name("errors"), ledger=name("ledger")
    )
    for topic in (topics.input, topics.results, topics.errors):
        await ensure_topic(bootstrap, topic, partitions=partitions)
    assert topics.ledger is not None
    await ensure_topic(
        bootstrap, topics.ledger, partitions=partitions, configs={"cleanup.policy": "compact"}
    )
    return topics


# ------------------------------------------------------------------ against the session broker


async def test_a_misspelled_results_topic_exits_2_with_one_line_naming_it(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topics = await make_topics(kafka_bootstrap, unique_name, partitions=2)
    wrong = topics.results.replace("results", "reslts")
    config = tmp_path / "c.yaml"
    env = write_config(
        config, kafka_bootstrap, unique_name("group"), topics.model_copy(update={"results": wrong})
    )
    done = await run_cli(config, env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("order-connector: configuration error: results topic ")
    assert repr(wrong) in lines[0]
    assert "does not exist" in lines[0]
    # The check must not have created it (auto.create.topics.enable would on a naive check).
    from connector.kafka.admin import KafkaAdmin

    async with KafkaAdmin(kafka_bootstrap) as admin:
        assert wrong not in await admin.list_topics()


async def test_a_ledger_with_another_partition_count_exits_2(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topics = await make_topics(kafka_bootstrap, unique_name, partitions=2)
    other = await ensure_topic(kafka_bootstrap, unique_name("ledger3"), partitions=3)
    config = tmp_path / "c.yaml"
    env = write_config(
        config, kafka_bootstrap, unique_name("group"), topics.model_copy(update={"ledger": other})
    )
    done = await run_cli(config, env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "co-partitioned" in lines[0]
    assert repr(other) in lines[0]


async def test_an_unreachable_broker_is_retried_then_exits_1_with_one_line(
    unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    port = free_port()
    topics = TopicNames(input="in", results="results", errors="errors", ledger="ledger")
    config = tmp_path / "c.yaml"
    env = write_config(
        config, f"127.0.0.1:{port}", unique_name("group"), topics, kafka={"startup_timeout_s": 3}
    )
    began = time.monotonic()
    done = await run_cli(config, env)
    took = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    failure = plain_lines(done.stderr)
    assert len(failure) == 1, done.stderr
    assert failure[0].startswith("order-connector: kafka unreachable: no Kafka broker answered")
    assert f"127.0.0.1:{port}" in failure[0]
    waits = log_events(done.stderr)
    # One line per attempt, nothing else: aiokafka's own connection errors are silenced.
    assert len(waits) >= 2, done.stderr
    assert {e["event"] for e in waits} == {"kafka_waiting"}
    assert [e["attempt"] for e in waits] == list(range(1, len(waits) + 1))
    assert took >= 3  # it did wait for the broker
    # With --log-level debug the same failure shows its traceback.
    debug = await run_cli(config, env, "debug")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


# ------------------------------------------------------------------ with a broker of their own


@pytest.fixture(scope="module")
def own_broker() -> Iterator[LocalKafka]:
    broker = LocalKafka()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Daemon:
    """``order-connector run`` with stderr (the JSON log) going to a file we can read."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                command(config), env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return log_events(self.text())

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], t: float) -> None:
        with anyio.fail_after(t):
            while not predicate(self.events()):
                assert self.proc.poll() is None, f"daemon exited early:\n{self.text()[-3000:]}"
                await anyio.sleep(0.2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


async def wait_ready(url: str, timeout_s: float) -> None:
    async with aiohttp.ClientSession() as http:
        with anyio.fail_after(timeout_s):
            while True:
                try:
                    async with http.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await anyio.sleep(0.2)


def _started(events: list[dict[str, Any]]) -> bool:
    return any(e.get("event") == "connector_started" for e in events)


async def test_a_broker_that_appears_late_is_waited_for(
    own_broker: LocalKafka, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topics = await make_topics(own_broker.bootstrap_servers, unique_name, partitions=2)
    await anyio.to_thread.run_sync(lambda: own_broker.stop(keep_data=True))
    web_port = free_port()
    config = tmp_path / "c.yaml"
    env = write_config(
        config, own_broker.bootstrap_servers, unique_name("group"), topics,
        kafka={"startup_timeout_s": 120},
        server={"enabled": True, "port": web_port, "kafka_check_interval_s": 0.5},
    )  # fmt: skip
    began = time.monotonic()
    daemon = Daemon(config, env, tmp_path / "daemon.log")
    try:
        # Let it wait 18 s by its own account (the broker then takes a few seconds more to come
        # up, so it appears about 20 s after the daemon started).
        await daemon.wait_for(
            lambda ev: any(
                e.get("elapsed_s", 0) >= 18 for e in ev if e["event"] == "kafka_waiting"
            ),
            60,
        )
        await anyio.to_thread.run_sync(own_broker.start)
        appeared_after = time.monotonic() - began
        await daemon.wait_for(_started, 90)
        await wait_ready(f"http://127.0.0.1:{web_port}", 60)
        waits = [e for e in daemon.events() if e["event"] == "kafka_waiting"]
        assert appeared_after >= 18  # the daemon logged 18 s of waiting before this began
        assert len(waits) >= 4  # one line per attempt, backoff capped at 5 s
        assert all(e["bootstrap_servers"] == own_broker.bootstrap_servers for e in waits)
        assert daemon.proc.poll() is None
    finally:
        code = daemon.stop()
    assert code == 0, daemon.text()[-3000:]


async def test_a_broker_outage_leaves_a_short_log(
    own_broker: LocalKafka, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    await anyio.to_thread.run_sync(own_broker.start)  # running whatever the last test did
    topics = await make_topics(own_broker.bootstrap_servers, unique_name, partitions=2)
    web_port = free_port()
    config = tmp_path / "c.yaml"
    env = write_config(
        config, own_broker.bootstrap_servers, unique_name("group"), topics,
        server={"enabled": True, "port": web_port, "kafka_check_interval_s": 0.5},
    )  # fmt: skip
    daemon = Daemon(config, env, tmp_path / "daemon.log")
    try:
        await daemon.wait_for(_started, 90)
        await wait_ready(f"http://127.0.0.1:{web_port}", 60)
        before = len(daemon.text().splitlines())
        await anyio.to_thread.run_sync(lambda: own_broker.stop(keep_data=True))
        stopped_at = time.monotonic()
        with anyio.fail_after(30):
            while time.monotonic() - stopped_at < 15:  # a 15 s outage, watched all along
                assert daemon.proc.poll() is None, daemon.text()[-3000:]
                await anyio.sleep(0.5)
        await anyio.to_thread.run_sync(own_broker.start)
        await wait_ready(f"http://127.0.0.1:{web_port}", 90)
        await anyio.sleep(1.5)  # the limiter reports what it suppressed once its window ends
        lines = daemon.text().splitlines()[before:]
        outage_events = log_events("\n".join(lines))
        assert len(lines) < 100, "\n".join(lines[:200])
        suppressed = sum(
            e.get("suppressed", 0) for e in outage_events if e["event"] == "log_lines_suppressed"
        )
        print(f"outage: {len(lines)} log lines, {suppressed} aiokafka lines suppressed")
        assert suppressed > 0  # the flood happened and was counted, not silently dropped
    finally:
        code = daemon.stop()
    assert code == 0, daemon.text()[-3000:]
