"""Logging set-up: structlog JSON lines (or console text) for our events and stdlib loggers.

Every line passes a scrubber that removes registered secret values and masks phone numbers.
Configured once at the edge (CLI) with ``configure_logging``; modules only call ``get_logger``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

from connector.core.redaction import SecretScrubber

_OUR_HANDLER = "_connector_log_handler"


class _ScrubEventDict:
    """Processor: scrub every value of the event dict (not the ``_record`` internals)."""

    def __init__(self, scrubber: SecretScrubber) -> None:
        self._scrubber = scrubber

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        return {
            key: value if key.startswith("_") else self._scrubber.scrub(value, key=key)
            for key, value in event_dict.items()
        }


class _ScrubRendered:
    """Last processor: scrub the rendered line itself (covers anything a renderer added)."""

    def __init__(self, scrubber: SecretScrubber) -> None:
        self._scrubber = scrubber

    def __call__(self, _logger: WrappedLogger, _name: str, line: EventDict | str) -> str:
        return self._scrubber.scrub_text(line if isinstance(line, str) else str(line))


def configure_logging(
    level: str | int = "INFO",
    secrets: Iterable[str | SecretStr] = (),
    json: bool = True,
    *,
    stream: TextIO | None = None,
) -> SecretScrubber:
    """Send structlog and stdlib logging through one scrubbing formatter to ``stream``.

    ``secrets`` are every configured secret value (tokens, API keys, webhook secrets): they
    are replaced by ``[REDACTED]`` wherever they appear. Calling it again replaces the set-up.
    """
    scrubber = SecretScrubber(secrets)
    if isinstance(level, str):
        numeric_level = logging.getLevelNamesMapping().get(level.upper())
        if numeric_level is None:
            raise ValueError(f"unknown log level {level!r}")
    else:
        numeric_level = level

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=str, sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _ScrubEventDict(scrubber),
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
            _ScrubRendered(scrubber),
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _OUR_HANDLER, True)

    root = logging.getLogger()
    _remove_our_handlers(root)
    root.addHandler(handler)
    root.setLevel(numeric_level)

    structlog.configure(
        processors=[*pre_chain, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=False,
    )
    return scrubber


def reset_logging() -> None:
    """Undo ``configure_logging`` (tests, and embedding applications)."""
    _remove_our_handlers(logging.getLogger())
    structlog.reset_defaults()


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A structlog logger with ``context`` bound once (provider, topic, partition...)."""
    logger = structlog.get_logger(name)
    return logger.bind(**context) if context else logger


def _remove_our_handlers(root: logging.Logger) -> None:
    for existing in list(root.handlers):
        if getattr(existing, _OUR_HANDLER, False):
            root.removeHandler(existing)
            existing.close()
