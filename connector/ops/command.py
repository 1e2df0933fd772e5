"""What the operator commands share: the parser's common arguments, loading the configuration
once and setting up logging, and the ISO time argument. Owns no command of its own.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from connector.config import ConnectorConfig, load_config
from connector.errors import ConfigError
from connector.logs import configure_logging


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the required ``--config`` every operator command takes."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, required=True)
    return parser


def parse_command_line(
    parser: argparse.ArgumentParser, argv: list[str]
) -> tuple[argparse.Namespace, ConnectorConfig] | None:
    """Parse ``argv`` (adding ``--log-level`` last), load the configuration and set up logging
    to stderr with its secrets registered; None (after saying why on stderr) if it is invalid."""
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration invalid: {exc}", file=sys.stderr)
        return None
    configure_logging(level=args.log_level, secrets=config.secret_values(), stream=sys.stderr)
    return args, config


def parse_time(text: str) -> int:
    """ISO 8601 with a zone (``2026-01-01T00:00Z``) to epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone, e.g. 2026-01-01T00:00Z")
    return int(moment.timestamp() * 1000)
