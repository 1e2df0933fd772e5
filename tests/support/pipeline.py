"""Shared plumbing for pipeline tests: topics, configs, connector processes and the checks.

Everything goes through the real broker and the sandbox over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import yaml
from pydantic import SecretStr

from connector.config import ConnectorConfig, KafkaSettings, TopicNames
from connector.contract.events import OrderStatusChanged
from connector.dev.demo import produce, sandbox_accounts
from connector.dev.sandbox.config import SandboxConfig
from connector.dev.sandbox.server import SandboxServer
from connector.dev.workload import OrderScript
from connector.kafka.admin import ensure_topic
from connector.kafka.consumer import read_topic
from tests.support.paths import REPO_ROOT


@dataclass
class Pipeline:
    bootstrap: str
    topics: TopicNames
    group: str
    sandbox: SandboxServer
    sandbox_config: SandboxConfig
    partitions: int

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            session_timeout_ms=10_000,
            rebalance_timeout_ms=20_000,
        )

    def config(self, **sections: Any) -> ConnectorConfig:
        """A connector config aimed at this pipeline; ``sections`` override top-level keys."""
        raw: dict[str, Any] = {
            "kafka": self.kafka.model_dump(mode="json"),
            "topics": self.topics.model_dump(),
            "accounts": sandbox_accounts(
                self.sandbox.provider_url,
                self.sandbox_config,
                rate_per_second=sections.pop("rate_per_second", 100_000.0),
                max_in_flight=sections.pop("account_max_in_flight", 64),
                request_timeout_s=sections.pop("request_timeout_s", 5.0),
            ),
            "limits": {"commit_interval_s": 0.2, "drain_timeout_s": 10.0},
            "retry": {"max_attempts": 8, "max_elapsed_s": 60, "base_s": 0.05, "cap_s": 1.0},
            "server": {"enabled": False},
            # Every event is sent (these tests check per-order order on the provider side);
            # coalescing has its own tests.
            "delivery": {"coalesce_providers": []},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return ConnectorConfig.model_validate(raw)

    async def produce(
        self, items: Iterable[OrderStatusChanged | tuple[bytes | None, bytes]]
    ) -> int:
        return await produce(self.kafka, self.topics.input, items)

    async def outcomes(
        self, expected: int, *, deadline_s: float = 120.0, isolation: str = "read_uncommitted"
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Read results and errors until ``expected`` distinct input records have an outcome."""
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        with anyio.fail_after(deadline_s):
            while True:
                res = await read_topic(
                    self.kafka,
                    self.topics.results,
                    idle_timeout_s=0.5,
                    deadline_s=deadline_s,
                    isolation_level=isolation,
                )
                err = await read_topic(
                    self.kafka,
                    self.topics.errors,
                    idle_timeout_s=0.5,
                    deadline_s=deadline_s,
                    isolation_level=isolation,
                )
                results = [orjson.loads(r.value or b"{}") for r in res]
                errors = [orjson.loads(r.value or b"{}") for r in err]
                # Distinct input records with an outcome: after a crash some records have two
                # (plain mode), so counting outcome records would stop early.
                if len(outcome_counts(results, errors)) >= expected:
                    return results, errors
                await asyncio.sleep(0.5)


async def make_pipeline(
    bootstrap: str,
    unique_name: Callable[[str], str],
    *,
    partitions: int,
    sandbox_config: SandboxConfig,
    sandbox: SandboxServer,
) -> Pipeline:
    topics = TopicNames(
        input=unique_name("in"),
        results=unique_name("results"),
        errors=unique_name("errors"),
        ledger=unique_name("ledger"),
    )
    for name in (topics.input, topics.results, topics.errors):
        await ensure_topic(bootstrap, name, partitions=partitions)
    assert topics.ledger is not None
    await ensure_topic(
        bootstrap, topics.ledger, partitions=partitions, configs={"cleanup.policy": "compact"}
    )
    return Pipeline(bootstrap, topics, unique_name("group"), sandbox, sandbox_config, partitions)


def quiet_sandbox(**faults: Any) -> SandboxConfig:
    """No sender throttling (the connector is what we measure) plus the given faults for all."""
    return SandboxConfig.model_validate(
        {
            "faults": dict.fromkeys(("meta", "ycloud", "zapi", "zonos"), faults),
            "limits": {
                "meta_per_sender": {"per_second": 0},
                "ycloud_send_directly_per_sender": {"per_second": 0},
                "ycloud_queued_per_sender": {"per_second": 0},
            },
        }
    )


# ---------------------------------------------------------------------------------- checks


@dataclass
class DeliveryCheck:
    """What the sandbox saw against what was produced, per order."""

    requests: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: int = 0
    violations: list[str] = field(default_factory=list)


def check_deliveries(
    scripts: Sequence[OrderScript],
    requests: Sequence[Any],
    *,
    expect_sent: Callable[[OrderStatusChanged], bool] = lambda e: True,
) -> DeliveryCheck:
    """Per order, the FIRST arrival of each event must follow input order; count duplicates."""
    seq_of = {e.event_id: (s.order_id, e.sequence or 0) for s in scripts for e in s.events}
    arrivals: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    check = DeliveryCheck(requests=len(requests))
    for req in requests:
        event_id = req.event_id
        if event_id not in seq_of:
            continue
        if event_id in seen:
            check.duplicates += 1
            continue
        seen.add(event_id)
        order, seq = seq_of[event_id]
        arrivals[order].append(seq)
    for order, seqs in arrivals.items():
        if seqs != sorted(seqs):
            check.violations.append(f"{order}: {seqs}")
    check.missing = [
        e.event_id for s in scripts for e in s.events if expect_sent(e) and e.event_id not in seen
    ]
    return check


def outcome_counts(
    results: Sequence[Mapping[str, Any]], errors: Sequence[Mapping[str, Any]]
) -> dict[str, int]:
    """Outcome records per source offset (one per input record is the invariant)."""
    per_source: dict[str, int] = defaultdict(int)
    for rec in (*results, *errors):
        src = rec.get("source") or {}
        per_source[f"{src.get('partition')}:{src.get('offset')}"] += 1
    return per_source


# ------------------------------------------------------------------- connector processes


class ConnectorProcess:
    """``order-connector run`` in a child process, with secrets passed through the environment."""

    def __init__(self, config: ConnectorConfig, workdir: Path, name: str) -> None:
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        raw = config.model_dump(mode="json")
        env: dict[str, str] = {}
        for account in raw["accounts"]:
            for key in list(account):
                value = config_secret(config, account["name"], key)
                if value is not None:
                    var = f"OSC_TEST_{account['name']}_{key}".upper().replace("-", "_")
                    env[var] = value
                    account[key] = f"env:{var}"
        self.config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self._spawn(log)

    def _spawn(self, log: Any) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "connector.cli",
                "run",
                "--config",
                str(self.config_path),
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=REPO_ROOT,
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def assert_logs_hold_no_secret(
    config: ConnectorConfig, procs: Iterable[ConnectorProcess], *, phones: Iterable[str] = ()
) -> int:
    """Scan every process log for every configured secret and full phone number; return the
    number of log lines scanned (so a test can tell an empty log from a clean one)."""
    needles = [s for s in config.secret_values() if len(s) >= 6]
    assert needles, "the config holds no secret to look for"
    phone_list = [p for p in phones if p]
    lines = 0
    for proc in procs:
        text = proc.log_path.read_text(encoding="utf-8", errors="replace")
        lines += text.count("\n")
        for secret in needles:
            assert secret not in text, f"{proc.name} logged a configured secret"
        for phone in phone_list:
            assert phone.lstrip("+") not in text, f"{proc.name} logged an unmasked phone"
    return lines


def config_secret(config: ConnectorConfig, account_name: str, key: str) -> str | None:
    for account in config.accounts:
        if account.name == account_name:
            value = getattr(account, key, None)
            if isinstance(value, SecretStr):
                return value.get_secret_value()
    return None


__all__ = [
    "ConnectorProcess",
    "DeliveryCheck",
    "Pipeline",
    "assert_logs_hold_no_secret",
    "check_deliveries",
    "make_pipeline",
    "outcome_counts",
    "quiet_sandbox",
]
