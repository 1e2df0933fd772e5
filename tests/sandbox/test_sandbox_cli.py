"""``python -m connector.dev.sandbox`` in its own process: starts, serves, applies flags, and
exits cleanly on SIGTERM; bad flags are refused with exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio

from connector.dev.devbroker import free_port
from connector.dev.sandbox.cli import build_parser, config_from_args, main
from tests.support.sandbox_client import META_HEADERS, meta_body

ROOT = Path(__file__).resolve().parents[2]


def test_flags_build_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--latency",
            "lognormal:20:200",
            "--server-error-rate",
            "0.1",
            "--pair-limit",
            "0.2:45",
            "--meta-webhook-url",
            "http://127.0.0.1:9/hook",
            "--status-reports",
            "sent,delivered",
            "--record-capacity",
            "500",
        ]
    )
    config = config_from_args(args)
    assert config.faults.zonos.latency.p99_ms == 200
    assert config.faults.meta.server_error_rate == 0.1
    assert (config.limits.pair.per_second, config.limits.pair.burst) == (0.2, 45)
    assert config.limits.meta_per_sender.per_second == 80  # untouched default
    assert config.webhooks.meta_url == "http://127.0.0.1:9/hook"
    assert config.webhooks.status_reports == ["sent", "delivered"]
    assert config.record_capacity == 500
    off = config_from_args(build_parser().parse_args(["--no-rate-limits"]))
    assert not off.limits.meta_per_sender.enabled
    assert not off.limits.ycloud_queued_per_sender.enabled


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults:\n  meta:\n    reset_rate: 3\n")
    assert main(["--config", str(bad)]) == 2


async def test_runs_in_its_own_process_on_the_port_it_was_given() -> None:
    port = free_port()
    proc = await anyio.open_process(
        [sys.executable, "-m", "connector.dev.sandbox", "--port", str(port), "--loop", "asyncio"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        with anyio.fail_after(15):
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive(1)
        text = line.decode().strip()
        assert text == f"sandbox listening on http://127.0.0.1:{port}"
        base = text.split()[-1]
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{base}/meta/v21.0/1/messages", json=meta_body(), headers=META_HEADERS
            ) as resp:
                assert resp.status == 200
            async with session.get(f"{base}/_sandbox/stats") as resp:
                assert (await resp.json())["accepted"] == 1
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.aclose()
