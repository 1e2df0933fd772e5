"""What the end-to-end benchmarks share: the broker, the sandbox and connector processes, the
workload's records on the input topic, the outcome topics read back, and a process's CPU and RSS.

Used by ``pipeline``, ``flow_control``, ``kill_storm`` (and the broker by ``ledger_load`` and
``txn_throughput``). Computes no benchmark's figures; each benchmark keeps its own CLI and JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil  # type: ignore[import-untyped]  # no stubs in the venv

from connector.config import KafkaSettings
from connector.contract.events import OrderStatusChanged, encode_event
from connector.dev.workload import OrderScript, interleave
from connector.kafka.consumer import ConsumedRecord, read_topic
from connector.kafka.producer import KafkaProducer

ROOT = Path(__file__).resolve().parent.parent
#: Account fields that hold a secret: moved into the environment, never into a config file.
SECRET_FIELDS = ("access_token", "api_key", "instance_token", "client_token", "secret")

Say = Callable[[str], None]  # a benchmark's progress line on stderr


# ----------------------------------------------------------------------------- run and report


@contextlib.contextmanager
def broker(say: Say | None = None, bootstrap: str | None = None) -> Iterator[str]:
    """``bootstrap`` when given, else a local Kafka broker for the run (kafka_selection)."""
    if bootstrap:
        yield bootstrap
        return
    from connector.dev.kafka_selection import select_kafka

    if say is not None:
        say("starting the local Kafka broker")
    with select_kafka() as started:
        if say is not None:
            say(f"broker at {started}")
        yield started


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def command_line(module: str, argv: Sequence[str]) -> str:
    """How the benchmark was run, for its JSON document."""
    return shlex.join(["python", "-m", module, *argv])


def print_json(result: dict[str, Any]) -> None:
    """The benchmark's one JSON document on stdout (progress went to stderr)."""
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")


@contextlib.asynccontextmanager
async def running(*coroutines: Coroutine[Any, Any, Any]) -> AsyncIterator[None]:
    """Run ``coroutines`` as tasks for the block; cancel and await them when it ends."""
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
    finally:
        await cancel_all(tasks)


async def cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ----------------------------------------------------------------------------- processes


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment with the repository importable, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 30.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


@dataclass(slots=True)
class ResourceSampler:
    """Samples a process's CPU seconds (user+sys, children excluded) and RSS every period."""

    pid: int
    period_s: float = 0.1
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # wall, cpu, rss
    peak_rss: int = 0

    async def run(self) -> None:
        proc = psutil.Process(self.pid)
        with contextlib.suppress(psutil.Error):
            while True:
                self.sample(proc)
                await asyncio.sleep(self.period_s)

    def sample(self, proc: psutil.Process) -> None:
        cpu = proc.cpu_times()
        rss = proc.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss, _vm_hwm(self.pid))
        self.samples.append((time.time(), cpu.user + cpu.system, rss))

    def sample_now(self) -> None:
        """One last sample, if the process is still there."""
        with contextlib.suppress(psutil.Error):
            self.sample(psutil.Process(self.pid))

    def cpu_at(self, wall: float) -> float:
        """CPU seconds used by ``wall`` (linear between samples)."""
        s = self.samples
        if not s:
            return 0.0
        if wall <= s[0][0]:
            return s[0][1]
        for (t0, c0, _), (t1, c1, _) in itertools.pairwise(s):
            if t0 <= wall <= t1:
                return c0 + (c1 - c0) * ((wall - t0) / (t1 - t0) if t1 > t0 else 0.0)
        return s[-1][1]


def _vm_hwm(pid: int) -> int:
    """Peak resident set size (Linux VmHWM) in bytes, 0 where unavailable."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class SandboxProcess:
    """``python -m connector.dev.sandbox`` with ``options`` in a process of its own.

    The first ``start`` takes a free port; a ``start`` after ``stop`` serves on the same one, so
    the connector's account URLs stay valid across a stopped provider.
    """

    def __init__(self, *options: str, name: str = "", sampling_period_s: float = 0.25) -> None:
        self.options = options
        self.name = name
        self.sampling_period_s = sampling_period_s
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.sampler: ResourceSampler | None = None

    async def start(self) -> ResourceSampler:
        """Start the process; the sampler of this start (run it with ``sampler.run()``)."""
        self.proc = proc = subprocess.Popen(  # noqa: ASYNC220 - fork+exec returns at once
            [
                sys.executable,
                "-m",
                "connector.dev.sandbox",
                "--port",
                str(self.port),
                *self.options,
            ],
            cwd=ROOT,
            env=child_env({}),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        line = (await asyncio.to_thread(proc.stdout.readline)).strip()
        if not line.startswith("sandbox listening on "):
            self.stop()
            raise RuntimeError(f"{f'sandbox {self.name}'.strip()} did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.sampler = ResourceSampler(proc.pid, period_s=self.sampling_period_s)
        return self.sampler

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=10)
            self.proc = None

    def provider_url(self, provider: str) -> str:
        return f"{self.url}/{provider}"

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        """One call of the sandbox's control API (``/_sandbox/...``); its JSON answer."""
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, json=body) as answer,
        ):
            answer.raise_for_status()
            return orjson.loads(await answer.read())

    async def requests(self) -> list[dict[str, Any]]:
        """The sandbox's whole request log, in arrival order."""
        out: list[dict[str, Any]] = []
        since = 0
        while True:
            page = await self.control("GET", f"/_sandbox/requests?since={since}&limit=20000")
            if page.get("dropped"):
                raise RuntimeError("sandbox request log overflowed; raise --record-capacity")
            out.extend(page["requests"])
            if not page["requests"]:
                return out
            since = page["next_since"]

    async def reset(self) -> None:
        await self.control("POST", "/_sandbox/reset")


class ConnectorProcess:
    """``python -m connector.cli run --config <config_path>`` in a process of its own.

    Restartable: every ``start`` appends to ``log_path`` and samples the new process.
    ``python_options`` go before ``-m`` (``-m cProfile -o FILE``).
    """

    def __init__(
        self,
        config_path: Path,
        env: dict[str, str],
        log_path: Path,
        *,
        python_options: Sequence[str] = (),
        sampling_period_s: float = 0.1,
    ) -> None:
        self.command = [
            sys.executable,
            *python_options,
            *("-m", "connector.cli", "run", "--config", str(config_path)),
        ]
        self.log_path = log_path
        self._env = child_env(env)
        self._sampling_period_s = sampling_period_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: ResourceSampler | None = None
        self.starts = 0

    def start(self) -> ResourceSampler:
        """Start the process; the sampler of this start (run it with ``sampler.run()``)."""
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self._env, stdout=log_file, stderr=log_file
            )
        self.starts += 1
        self.sampler = ResourceSampler(self.proc.pid, period_s=self._sampling_period_s)
        return self.sampler

    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return self.proc.poll() if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL, and wait for it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        """SIGTERM (the daemon drains), SIGKILL after 30 s; the exit code."""
        return stop_process(self.proc) if self.proc is not None else 0

    def check_alive(self, name: str = "the connector") -> None:
        code = self.exit_code()
        if code is not None:
            raise RuntimeError(f"{name} exited early with code {code}")

    async def wait_outcomes(
        self, reader: OutcomeReader, timeout_s: float, name: str, say: Say
    ) -> None:
        """Until every expected event has an outcome (``reader.done``); raises when the process
        exits first, returns at ``timeout_s`` (the figures then show what is missing)."""
        deadline = time.monotonic() + timeout_s
        last = -1
        while not reader.done.is_set():
            self.check_alive(name)
            if time.monotonic() > deadline:
                say(f"{name}: timed out waiting for outcomes")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.done.wait(), 2.0)
            done = sum(reader.outcomes.values())
            if done != last:
                say(f"{name}: {done}/{reader.expected} outcomes")
                last = done


def env_secrets(accounts: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    """Move the accounts' secrets into variables ``<prefix>_<ACCOUNT>_<FIELD>``, leaving
    ``env:`` references in their place (a config file holds no secret); those variables."""
    env: dict[str, str] = {}
    for account in accounts:
        for name in SECRET_FIELDS:
            if name in account:
                var = f"{prefix}_{account['name'].upper().replace('-', '_')}_{name.upper()}"
                env[var] = account[name]
                account[name] = f"env:{var}"
    return env


# ----------------------------------------------------------------------------- Kafka


@dataclass(frozen=True, slots=True)
class Workload:
    """Encoded records in produce order plus what each event id means."""

    records: list[tuple[bytes, bytes]]  # (key, value)
    meta: dict[str, tuple[str, int]]  # event id -> (order id, sequence)
    order_ids: list[str]  # in creation order (providers alternate)

    @classmethod
    def interleaved(cls, scripts: list[OrderScript], seed: int) -> Workload:
        """The orders' events merged at random (each order keeps its own order)."""
        stream: list[OrderStatusChanged] = list(interleave(scripts, seed=seed + 4))
        return cls(
            records=[(e.order_id.encode(), encode_event(e)) for e in stream],
            meta={e.event_id: (e.order_id, e.sequence or 0) for e in stream},
            order_ids=[s.order_id for s in scripts],
        )


async def create_topics(bootstrap: str, prefix: str, partitions: int) -> dict[str, str]:
    """Apply the topic contracts under ``prefix`` (input and ledger get ``partitions``)."""
    from connector.contract.topics import load_spec
    from connector.kafka.admin import apply_topics

    spec = load_spec()
    co_partitioned = {"order.status.changed", "order.status.ledger"}
    spec = spec.model_copy(
        update={
            "topics": {
                name: topic.model_copy(update={"partitions": partitions})
                if name in co_partitioned
                else topic
                for name, topic in spec.topics.items()
            }
        }
    )
    await apply_topics(bootstrap, spec, dry_run=False, prefix=prefix, replication_factor=1)
    return {
        "input": f"{prefix}order.status.changed",
        "results": f"{prefix}order.status.results",
        "errors": f"{prefix}order.status.errors",
        "ledger": f"{prefix}order.status.ledger",
        "correlation": f"{prefix}order.status.correlation",
    }


async def produce_backlog(bootstrap: str, topic: str, workload: Workload) -> dict[str, float]:
    """Produce every record keyed by order id; return event id -> produce timestamp (s)."""
    producer = KafkaProducer(KafkaSettings(bootstrap_servers=bootstrap, linger_ms=5))
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in workload.records]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    ids = list(workload.meta)  # same order as records (both follow the stream)
    return {eid: md.timestamp / 1000 for eid, md in zip(ids, metadata, strict=True)}  # type: ignore[attr-defined]


@dataclass(slots=True)
class OutcomeReader:
    """Counts results/errors records of one system and keeps what the figures need."""

    expected: int
    ids: set[str] = field(default_factory=set)
    delivered: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    first_consume: float = float("inf")
    last_outcome: float = 0.0
    consume_to_outcome_ms: list[float] = field(default_factory=list)
    outcome_at: dict[str, float] = field(default_factory=dict)  # event id -> record timestamp
    consumed_at: dict[str, float] = field(default_factory=dict)  # event id -> taken (results)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def reading(
        self, bootstrap: str, topics: dict[str, str], deadline_s: float
    ) -> list[Coroutine[Any, Any, Any]]:
        """Readers of the results and errors topics feeding this reader (run them with
        ``running``)."""
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        return [
            read_topic(
                kafka,
                topics[name],
                expected=None,
                idle_timeout_s=1e9,
                deadline_s=deadline_s,
                on_batch=callback,
            )
            for name, callback in (("results", self.on_results), ("errors", self.on_errors))
        ]

    def on_results(self, batch: list[ConsumedRecord]) -> None:
        for record in batch:
            body = orjson.loads(record.value or b"{}")
            self.ids.add(body.get("event_id"))
            self.outcome_at.setdefault(body.get("event_id"), record.timestamp_ms / 1000)
            self.outcomes[body["outcome"]] += 1
            if body["outcome"] in ("accepted", "delivered"):
                self.delivered += 1
            at = datetime.fromisoformat(body["recorded_at"]).timestamp()
            latency = float(body.get("latency_ms") or 0.0)
            self.consume_to_outcome_ms.append(latency)
            self.first_consume = min(self.first_consume, at - latency / 1000)
            self.consumed_at.setdefault(body.get("event_id"), at - latency / 1000)
            self.last_outcome = max(self.last_outcome, at)
        self._check()

    def on_errors(self, batch: list[ConsumedRecord]) -> None:
        for record in batch:
            body = orjson.loads(record.value or b"{}")
            if body.get("event_id"):
                self.ids.add(body["event_id"])
                self.outcome_at.setdefault(body["event_id"], record.timestamp_ms / 1000)
            self.outcomes[f"error:{body.get('error_class')}"] += 1
            self.last_outcome = max(self.last_outcome, record.timestamp_ms / 1000)
        self._check()

    def _check(self) -> None:
        # Distinct events, not outcome records: with --replicas a rebalance may write a
        # record's outcome twice, and counting records would stop the run early.
        if len(self.ids) >= self.expected:
            self.done.set()
