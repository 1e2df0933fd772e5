"""The ``order-connector`` command: loads configuration once and hands it down.

Sub-commands: run, check-config, topics, sandbox, demo, replay, redrive.
Exit codes: 0 ok, 1 failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from connector.errors import ConfigError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("order-status-connector")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="order-connector",
        description="Kafka order.status.changed events to provider order-status requests.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the connector daemon")
    run.add_argument("--config", type=Path, required=True, help="YAML or TOML config file")
    run.add_argument("--log-level", default="info")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", type=Path, required=True)
    sub.add_parser("topics", help="topic contracts: apply (see 'topics --help')", add_help=False)
    sub.add_parser("sandbox", help="run the provider sandbox server", add_help=False)
    sub.add_parser("replay", help="reprocess input history (see 'replay --help')", add_help=False)
    sub.add_parser("redrive", help="re-publish error records to the input", add_help=False)
    demo = sub.add_parser("demo", help="broker + sandbox + connector + a realistic stream")
    demo.add_argument("--orders", type=int, default=1_200)
    demo.add_argument("--keep-going", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Sub-commands with their own parsers get the rest of the line untouched.
    if args_list and args_list[0] == "topics":
        from connector.ops.topics import topics_main

        return topics_main(args_list[1:])
    if args_list and args_list[0] in ("replay", "redrive"):
        from connector.ops.replay import redrive_main, replay_main

        return (replay_main if args_list[0] == "replay" else redrive_main)(args_list[1:])
    if args_list and args_list[0] == "sandbox":
        from connector.dev.sandbox.cli import main as sandbox_main

        return sandbox_main(args_list[1:])
    args = _parser().parse_args(args_list)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "run":
        return _run(args.config, args.log_level)
    if args.command == "demo":
        from connector.dev.demo import run_demo

        return run_demo(orders=args.orders)
    return 2


def _check_config(path: Path) -> int:
    from connector.config import load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"configuration invalid: {exc}", file=sys.stderr)
        return 2
    print(
        f"configuration ok: {len(config.accounts)} account(s) "
        f"({', '.join(f'{a.name}:{a.provider}' for a in config.accounts)}), "
        f"input topic {config.topics.input}, group {config.kafka.group_id}"
    )
    return 0


# Young-generation size and promotion counts for the daemon (CPython defaults: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Make the cyclic GC cheap for a daemon holding thousands of buffered records.

    With the defaults, a backlog keeps promoting buffered records into the old generation and
    full collections rescan the whole heap: 37% of the connector's CPU in the CPU-bound
    benchmark (docs/benchmarks.md). Startup objects are frozen (never rescanned) and young
    collections run every 50,000 net allocations; full collections still run, just rarely.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _run(path: Path, level: str) -> int:
    from connector.app import ConnectorApp
    from connector.config import load_config
    from connector.logs import configure_logging

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"configuration invalid: {exc}", file=sys.stderr)
        return 2
    configure_logging(level=level, secrets=config.secret_values(), json=True)
    tune_gc()

    async def serve() -> int:
        # aiokafka clients must be built inside the running loop.
        app = ConnectorApp(config)
        await app.run(install_signal_handlers=True)
        return 1 if app.engine.failure is not None else 0

    return run_loop(serve(), os.environ.get(LOOP_ENV, "auto"))


LOOP_ENV = "ORDER_CONNECTOR_EVENT_LOOP"


def run_loop(main_coro: Coroutine[Any, Any, int], kind: str) -> int:
    """Run on uvloop when installed (``auto``) or asked for, else on asyncio's own loop."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise SystemExit(f"{LOOP_ENV}=uvloop but uvloop is not installed") from None
        else:
            return uvloop.run(main_coro)
    elif kind != "asyncio":
        raise SystemExit(f"{LOOP_ENV} must be auto, uvloop or asyncio, not {kind!r}")
    return asyncio.run(main_coro)


if __name__ == "__main__":
    raise SystemExit(main())
