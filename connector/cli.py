"""The ``order-connector`` command: loads configuration once and hands it down.

Sub-commands: run, check-config, topics, templates, sandbox, demo, replay, redrive.
Exit codes: 0 ok, 1 failure, 2 usage or configuration error. ``run`` reports a failure as one
line on stderr (a traceback only with ``--log-level debug``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from connector.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("order-status-connector")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def main_parser() -> argparse.ArgumentParser:
    """The top-level parser (``run``, ``check-config``, ``demo``; the other sub-commands bring
    their own parsers, see ``command_parsers``)."""
    from connector.ops.command import CommandParser

    parser = CommandParser(
        prog="order-connector",
        description="Kafka order.status.changed events to provider order-status requests.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the connector daemon", description="Run the daemon.")
    run.add_argument("--config", type=Path, required=True, help="YAML or TOML config file")
    run.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="JSON log lines on stderr at this level and above (debug adds tracebacks)",
    )
    check = sub.add_parser(
        "check-config",
        help="validate a config file and exit",
        description="Validate a config file; exit 0 when it is valid, 2 when it is not.",
    )
    check.add_argument("--config", type=Path, required=True, help="YAML or TOML config file")
    check.add_argument(
        "--online",
        action="store_true",
        help="also call each provider: credentials (a harmless read) and template status",
    )
    sub.add_parser(
        "templates", help="order-status WhatsApp templates: ensure, status", add_help=False
    )
    sub.add_parser("topics", help="create the Kafka topics from their contracts", add_help=False)
    sub.add_parser("sandbox", help="run the provider sandbox server", add_help=False)
    sub.add_parser("replay", help="reprocess input history safely", add_help=False)
    sub.add_parser("redrive", help="re-publish error records to the input", add_help=False)
    demo = sub.add_parser(
        "demo",
        help="broker + sandbox + connector + a realistic stream",
        description="Start a local broker, the sandbox and the connector, then stream orders.",
    )
    demo.add_argument(
        "--orders", type=int, default=1_200, help="orders in the demo stream (default: 1200)"
    )
    demo.add_argument("--keep-going", action="store_true", help=argparse.SUPPRESS)
    return parser


def parser_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's options (``-x``/``--name`` arguments), help and choices included."""
    return [action for action in parser._actions if action.option_strings]


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser a user can reach, by command line (``"templates ensure"``...), for help
    and documentation checks."""
    from connector.dev.sandbox.cli import build_parser as sandbox_parser
    from connector.ops.redrive import redrive_parser
    from connector.ops.replay import replay_parser
    from connector.ops.templates import templates_parser
    from connector.ops.topics import topics_parser

    found: dict[str, argparse.ArgumentParser] = {}

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found[name] = parser
        for action in parser._actions:  # argparse keeps sub-parsers only here
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    if sub.add_help:  # the placeholders of commands with their own parser
                        walk(f"{name} {sub_name}", sub)

    walk("order-connector", main_parser())
    for name, build in (
        ("templates", templates_parser),
        ("topics", topics_parser),
        ("replay", replay_parser),
        ("redrive", redrive_parser),
        ("sandbox", sandbox_parser),
    ):
        walk(f"order-connector {name}", build())
    return found


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Sub-commands with their own parsers get the rest of the line untouched.
    if args_list and args_list[0] == "topics":
        from connector.ops.topics import topics_main

        return topics_main(args_list[1:])
    if args_list and args_list[0] in ("replay", "redrive"):
        from connector.ops.redrive import redrive_main
        from connector.ops.replay import replay_main

        return (replay_main if args_list[0] == "replay" else redrive_main)(args_list[1:])
    if args_list and args_list[0] == "templates":
        from connector.ops.templates import templates_main

        return templates_main(args_list[1:])
    if args_list and args_list[0] == "sandbox":
        from connector.dev.sandbox.cli import main as sandbox_main

        return sandbox_main(args_list[1:])
    args = main_parser().parse_args(args_list)
    if args.command == "check-config":
        code = _check_config(args.config)
        return _check_online(args.config) if code == 0 and args.online else code
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


def _check_online(path: Path) -> int:
    from connector.config import load_config
    from connector.ops.online_check import online_lines

    lines, ok = asyncio.run(online_lines(load_config(path), timeout_s=15.0))
    for line in lines:
        print(line)
    return 0 if ok else 1


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


def one_line(text: str) -> str:
    """A message on one line: every run of whitespace (newlines too) becomes one space."""
    return " ".join(text.split())


def fail(
    code: int,
    what: str,
    exc: BaseException | str,
    *,
    debug: bool = False,
    scrub: Callable[[str], str] | None = None,
) -> int:
    """Print ``order-connector: <what>: <message>`` as one line on stderr; return ``code``.

    ``exc`` may be an exception (its type is named unless it is one of ours) or a text.
    With ``debug`` the traceback follows the line. ``scrub`` removes secrets from the text.
    """
    if isinstance(exc, BaseException):
        message = str(exc)
        if not isinstance(exc, ConfigError) and type(exc).__module__.split(".")[0] != "connector":
            message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    else:
        message = exc
    line = f"order-connector: {what}: {one_line(message)}"
    if scrub is not None:
        line = scrub(line)
    print(line, file=sys.stderr, flush=True)
    if debug and isinstance(exc, BaseException):
        traceback.print_exception(exc, file=sys.stderr)
    return code


def _run(path: Path, level: str) -> int:
    from connector.app import ConnectorApp
    from connector.config import load_config
    from connector.kafka.startup import BrokerUnreachableError
    from connector.logs import configure_logging

    debug = level.lower() == "debug"
    try:
        config = load_config(path)
    except ConfigError as exc:
        return fail(2, "configuration invalid", exc, debug=debug)
    try:
        scrubber = configure_logging(level=level, secrets=config.secret_values(), json=True)
    except ValueError as exc:
        return fail(2, "invalid --log-level", str(exc))
    tune_gc()

    async def serve() -> int:
        # aiokafka clients must be built inside the running loop.
        try:
            app = ConnectorApp(config)
            await app.run(install_signal_handlers=True)
        except ConfigError as exc:
            return fail(2, "configuration error", exc, debug=debug, scrub=scrubber.scrub_text)
        except BrokerUnreachableError as exc:
            return fail(1, "kafka unreachable", exc, debug=debug, scrub=scrubber.scrub_text)
        except Exception as exc:
            return fail(1, "fatal", exc, debug=debug, scrub=scrubber.scrub_text)
        if app.engine.failure is not None:
            return fail(1, "fatal", app.engine.failure, debug=debug, scrub=scrubber.scrub_text)
        return 0

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
