"""What the operator commands share: the parser's common arguments, loading the configuration
once and setting up logging, and the ISO time argument. Owns no command of its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import NoReturn, TextIO

from connector.config import ConnectorConfig, load_config
from connector.core.redaction import SecretScrubber
from connector.errors import ConfigError
from connector.logs import configure_logging

LOG_LEVELS = ("debug", "info", "warning", "error")


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit 2), naming the
    command and where its help is, instead of the usage block plus the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} -h')\n")


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the required ``--config`` every operator command takes."""
    parser = CommandParser(prog=prog, description=description)
    parser.add_argument(
        "--config", type=Path, required=True, help="the connector's YAML or TOML config file"
    )
    add_log_level(parser, "warning")
    return parser


def add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-level",
        default=default,
        choices=LOG_LEVELS,
        help=f"log lines on stderr at this level and above (default: {default})",
    )


def parse_command_line(
    parser: argparse.ArgumentParser, argv: list[str]
) -> tuple[argparse.Namespace, ConnectorConfig]:
    """Parse ``argv``, load the configuration and set up logging to stderr with its secrets
    registered. An invalid configuration exits with status 2 (after saying why on stderr), as
    ``parse_args`` does for a usage error, so no command has to check for it."""
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: configuration invalid: {exc}\n")
    configure_logging(level=args.log_level, secrets=config.secret_values(), stream=sys.stderr)
    return args, config


class ProgressLine:
    """A progress bar on ``out`` like ``replay``'s: rewritten in place on a terminal, one line
    per update elsewhere (a log file), at most one update per ``interval_s``."""

    def __init__(self, out: TextIO, total: int, what: str, *, interval_s: float = 1.0) -> None:
        self._out = out
        self._total = total
        self._what = what
        self._interval_s = interval_s
        self._tty = out.isatty()
        self._started = time.monotonic()
        self._last = -interval_s
        self._shown = ""

    def line(self, done: int, width: int = 30) -> str:
        total = self._total
        filled = int(width * min(1.0, done / total)) if total else width
        seconds = time.monotonic() - self._started
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {self._what}, {seconds:.0f}s"
        )

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last < self._interval_s:
            return
        self._last = now
        self._show(self.line(done), final=False)

    def finish(self, done: int) -> None:
        line = self.line(done)
        if self._tty or line != self._shown:
            self._show(line, final=True)

    def _show(self, line: str, *, final: bool) -> None:
        self._shown = line
        end = "\n" if final or not self._tty else ""
        print(f"\r{line}" if self._tty else line, end=end, file=self._out, flush=True)


def failure_line(prog: str, exc: BaseException, secrets: list[str]) -> str:
    """``<prog>: failed: <Type>: <message>`` on one line, without the configured secrets: what
    an operator command prints for an error it did not expect (no traceback)."""
    text = one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return f"{prog}: failed: {SecretScrubber(secrets, min_length=4).scrub_text(text)}"


def one_line(text: str) -> str:
    """A message on one line: every run of whitespace (newlines too) becomes one space."""
    return " ".join(text.split())


def parse_time(text: str) -> int:
    """ISO 8601 with a zone (``2026-01-01T00:00Z``) to epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone, e.g. 2026-01-01T00:00Z")
    return int(moment.timestamp() * 1000)


def add_time_option(
    options: argparse._ActionsContainer,
    flag: str,
    help: str,
    *,
    dest: str | None = None,
    metavar: str = "TIME",
) -> None:
    """An option that takes a time (ISO 8601 with a zone) as epoch milliseconds (parse_time);
    ``options`` is a parser or one of its groups."""
    options.add_argument(flag, type=parse_time, dest=dest, metavar=metavar, help=help)
