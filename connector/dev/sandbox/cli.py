"""Command line of the provider sandbox (``python -m connector.dev.sandbox``, mounted by the main
CLI as ``order-connector sandbox``): builds a SandboxConfig from flags and an optional
JSON/YAML file, then serves until SIGINT/SIGTERM.

It only parses and runs; behaviour lives in the server and provider modules.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from connector.dev.sandbox.config import PROVIDERS, SandboxConfig
from connector.dev.sandbox.server import SandboxServer


def _latency(spec: str) -> dict[str, Any]:
    """``none``, ``fixed:MS``, ``uniform:MIN:MAX`` or ``lognormal:P50:P99``."""
    parts = spec.split(":")
    try:
        numbers = [float(p) for p in parts[1:]]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad latency {spec!r}") from exc
    kind = parts[0]
    if kind == "none" and not numbers:
        return {"kind": "none"}
    if kind == "fixed" and len(numbers) == 1:
        return {"kind": "fixed", "ms": numbers[0]}
    if kind == "uniform" and len(numbers) == 2:
        return {"kind": "uniform", "min_ms": numbers[0], "max_ms": numbers[1]}
    if kind == "lognormal" and len(numbers) == 2:
        return {"kind": "lognormal", "p50_ms": numbers[0], "p99_ms": numbers[1]}
    raise argparse.ArgumentTypeError(
        f"bad latency {spec!r}: none | fixed:MS | uniform:MIN:MAX | lognormal:P50:P99"
    )


def _limit(spec: str) -> dict[str, Any]:
    """``RATE`` or ``RATE:BURST`` (per second; 0 turns the limit off)."""
    try:
        parts = [float(p) for p in spec.split(":")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad limit {spec!r}") from exc
    if len(parts) == 1:
        return {"per_second": parts[0], "burst": None}
    if len(parts) == 2:
        return {"per_second": parts[0], "burst": parts[1]}
    raise argparse.ArgumentTypeError(f"bad limit {spec!r}: RATE or RATE:BURST")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="order-connector sandbox",
        description="Run the provider sandbox (Meta, YCloud, Z-API, Zonos) on loopback.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--config", type=Path, help="JSON or YAML file with a partial config")
    parser.add_argument("--meta-webhook-url", help="where Meta-style status webhooks go")
    parser.add_argument("--ycloud-webhook-url", help="where YCloud-style webhooks go")
    parser.add_argument(
        "--status-reports",
        help="comma list of extra reports for accepted messages: sent,delivered,read",
    )
    parser.add_argument(
        "--webhook-delay-ms", type=float, help="delay before each status webhook is sent"
    )
    parser.add_argument("--latency", type=_latency, help="for all providers, e.g. fixed:20")
    parser.add_argument(
        "--server-error-rate", type=float, help="share of requests answered 5xx (0..1)"
    )
    parser.add_argument(
        "--timeout-rate", type=float, help="share of requests held unanswered (0..1)"
    )
    parser.add_argument(
        "--reset-rate", type=float, help="share of connections reset before answering (0..1)"
    )
    parser.add_argument("--meta-rate", type=_limit, help="Meta per-sender limit RATE[:BURST]")
    parser.add_argument("--pair-limit", type=_limit, help="per-recipient pair limit RATE[:BURST]")
    parser.add_argument(
        "--no-rate-limits", action="store_true", help="turn every throughput limit off"
    )
    parser.add_argument(
        "--record-capacity", type=int, help="accepted requests kept for /_sandbox/requests"
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop (auto: uvloop when installed)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    patch: dict[str, Any] = {}
    if args.config is not None:
        text = args.config.read_text()
        loaded = (
            yaml.safe_load(text) if args.config.suffix in (".yaml", ".yml") else orjson.loads(text)
        )
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping")
        patch = loaded
    config = SandboxConfig().merged(patch)
    changes: dict[str, Any] = {}
    if webhooks := _webhook_changes(args):
        changes["webhooks"] = webhooks
    if fault := _fault_changes(args):
        changes["faults"] = dict.fromkeys(PROVIDERS, fault)
    if limits := _limit_changes(args):
        changes["limits"] = limits
    if args.record_capacity is not None:
        changes["record_capacity"] = args.record_capacity
    return config.merged(changes)


def _webhook_changes(args: argparse.Namespace) -> dict[str, Any]:
    webhooks: dict[str, Any] = {}
    if args.meta_webhook_url:
        webhooks["meta_url"] = args.meta_webhook_url
    if args.ycloud_webhook_url:
        webhooks["ycloud_url"] = args.ycloud_webhook_url
    if args.status_reports is not None:
        webhooks["status_reports"] = [s for s in args.status_reports.split(",") if s]
    if args.webhook_delay_ms is not None:
        webhooks["delay_ms"] = args.webhook_delay_ms
    return webhooks


def _fault_changes(args: argparse.Namespace) -> dict[str, Any]:
    fault: dict[str, Any] = {}
    if args.latency is not None:
        fault["latency"] = args.latency
    for name in ("server_error_rate", "timeout_rate", "reset_rate"):
        if getattr(args, name) is not None:
            fault[name] = getattr(args, name)
    return fault


def _limit_changes(args: argparse.Namespace) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if args.no_rate_limits:
        off = {"per_second": 0}
        names = (
            "meta_per_sender",
            "ycloud_send_directly_per_sender",
            "ycloud_queued_per_sender",
            "pair",
        )
        limits = dict.fromkeys(names, off)
    if args.meta_rate is not None:
        limits["meta_per_sender"] = args.meta_rate
    if args.pair_limit is not None:
        limits["pair"] = args.pair_limit
    return limits


async def serve(config: SandboxConfig, host: str, port: int) -> None:
    """Run the sandbox until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    sandbox = SandboxServer(config)
    await sandbox.start(host, port)
    try:
        print(f"sandbox listening on {sandbox.url}", flush=True)
        await stop.wait()
    finally:
        await sandbox.stop()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"sandbox: invalid configuration: {exc}", file=sys.stderr)
        return 2
    runner: Any = asyncio.run
    if args.loop in ("auto", "uvloop"):
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            if args.loop == "uvloop":
                print("sandbox: uvloop is not installed", file=sys.stderr)
                return 2
    runner(serve(config, args.host, args.port))
    return 0
