"""Logging set-up: structlog JSON lines (or console text) for our events and stdlib loggers.

Every line passes a scrubber that removes registered secret values and masks phone numbers,
and aiokafka's own lines pass a per-kind rate limiter (a broker outage must not flood the log)
and become structured events (``kafka_connect_failed``...) with sensible levels.
Configured once at the edge (CLI) with ``configure_logging``; modules only call ``get_logger``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

from connector.core.redaction import SecretScrubber

_OUR_HANDLER = "_connector_log_handler"

# Loggers whose lines are rate limited: a stopped broker makes aiokafka log thousands of
# identical connection errors per second (issue 10: 23.5 MB in 18 s).
RATE_LIMITED_LOGGERS = ("aiokafka",)
RATE_LIMIT_WINDOW_S = 10.0
RATE_LIMIT_LINES_PER_WINDOW = 3


@dataclass(slots=True)
class _Window:
    started: float
    passed: int = 0
    suppressed: int = 0


class LogRateLimiter(logging.Filter):
    """Handler filter: at most ``per_window`` lines per message kind per ``window_s``.

    A kind is the logger name plus the unformatted message template, so "Unable connect to
    node 1" and "... node 2" are one kind. What a window suppressed is reported once, as a
    ``log_lines_suppressed`` warning, when that window has ended: on the next line of any kind,
    or on ``flush()`` (the daemon calls it every second). Lines of other loggers pass untouched.
    """

    def __init__(
        self,
        *,
        prefixes: Iterable[str] = RATE_LIMITED_LOGGERS,
        per_window: int = RATE_LIMIT_LINES_PER_WINDOW,
        window_s: float = RATE_LIMIT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        report: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        super().__init__()
        if per_window < 1 or window_s <= 0:
            raise ValueError("per_window must be >= 1 and window_s > 0")
        self._prefixes = tuple(prefixes)
        self._per_window = per_window
        self._window_s = window_s
        self._clock = clock
        self._report = report or _report_suppressed
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self.suppressed_total = 0

    def _limited(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self._prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._limited(record.name):
            return True
        now = self._clock()
        self.flush(now)
        kind = (record.name, str(record.msg))
        with self._lock:
            window = self._windows.get(kind)
            if window is None:
                window = self._windows[kind] = _Window(started=now)
            if window.passed < self._per_window:
                window.passed += 1
                return True
            window.suppressed += 1
            self.suppressed_total += 1
            return False

    def clock(self) -> float:
        return self._clock()

    def flush(self, now: float | None = None) -> None:
        """Report and forget every window that has ended."""
        now = self._clock() if now is None else now
        ended: list[tuple[tuple[str, str], _Window]] = []
        with self._lock:
            for kind, window in list(self._windows.items()):
                if now - window.started >= self._window_s:
                    del self._windows[kind]
                    if window.suppressed:
                        ended.append((kind, window))
        for (logger_name, template), window in ended:
            self._report(logger_name, template, window.suppressed, self._window_s)


def _report_suppressed(logger_name: str, template: str, count: int, window_s: float) -> None:
    structlog.get_logger("connector.logs").warning(
        "log_lines_suppressed",
        source_logger=logger_name,
        message=template[:200],
        suppressed=count,
        window_s=window_s,
    )


#: aiokafka's message templates (their fixed start), the structured event each becomes and its
#: level. Kafka clients log routine recovery at ERROR: a first start's group coordinator churn
#: (``GroupCoordinatorNotAvailableError`` while the broker elects one) is normal and INFO here.
_KAFKA_EVENTS: tuple[tuple[str, str, int], ...] = (
    ("Group Coordinator Request failed", "kafka_coordinator_not_ready", logging.WARNING),
    ("FindCoordinator Request failed", "kafka_coordinator_not_ready", logging.WARNING),
    ("Unable connect to", "kafka_connect_failed", logging.WARNING),
    ("Unable to update metadata", "kafka_metadata_failed", logging.WARNING),
    ("Topic %s not found in cluster metadata", "kafka_topic_not_found", logging.WARNING),
    ("Heartbeat", "kafka_heartbeat_failed", logging.WARNING),
    ("OffsetCommit failed", "kafka_commit_failed", logging.WARNING),
    ("Auto offset commit failed", "kafka_commit_failed", logging.WARNING),
    ("Failed fetch", "kafka_fetch_failed", logging.WARNING),
    ("Got error produce response", "kafka_produce_failed", logging.WARNING),
    ("Unexpected error", "kafka_client_error", logging.ERROR),
)
#: Errors that only say the group coordinator is not there yet (start-up, leader moves).
_COORDINATOR_CHURN = ("CoordinatorNotAvailable", "NotCoordinator", "CoordinatorLoadInProgress")
_KAFKA_EVENT_ATTR = "connector_event"


def kafka_event(template: str, text: str, level: int) -> tuple[str, int]:
    """The structured event name and level of one aiokafka line (``template`` unformatted).

    Known lines get a snake_case name and a sensible level (never above the original);
    coordinator churn is INFO; anything else is ``kafka_client_log`` at its own level.
    """
    for start, event, usual in _KAFKA_EVENTS:
        if template.startswith(start):
            mapped = usual
            if event == "kafka_coordinator_not_ready" and any(
                c in text for c in _COORDINATOR_CHURN
            ):
                mapped = logging.INFO
            return event, min(level, mapped)
    return "kafka_client_log", level


class KafkaLogEvents(logging.Filter):
    """Handler filter: names aiokafka's free-text lines as structured events and sets their level.

    The text stays in ``message``. A line demoted below the root logger's level is dropped.
    Runs after the rate limiter, which counts by the original template.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == "aiokafka" or record.name.startswith("aiokafka.")):
            return True
        event, level = kafka_event(str(record.msg), record.getMessage(), record.levelno)
        if level != record.levelno:
            record.levelno, record.levelname = level, logging.getLevelName(level)
            if level < logging.getLogger().getEffectiveLevel():
                return False
        setattr(record, _KAFKA_EVENT_ATTR, event)
        return True


def _name_library_event(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Pre-chain processor: a mapped aiokafka line's text moves to ``message``."""
    record = event_dict.get("_record")
    event = getattr(record, _KAFKA_EVENT_ATTR, None)
    if event is not None:
        event_dict["message"] = event_dict.get("event")
        event_dict["event"] = event
    return event_dict


_limiter: LogRateLimiter | None = None


def flush_suppressed_logs(*, ahead_s: float = 0.0) -> None:
    """Report the suppression counts of ended windows (no-op before ``configure_logging``).

    ``ahead_s`` judges the windows as if that much more time had passed (tests, final flush).
    """
    if _limiter is not None:
        _limiter.flush(now=_limiter.clock() + ahead_s)


@contextlib.contextmanager
def silenced(logger_name: str) -> Iterator[None]:
    """Drop a library's lines below CRITICAL for a while (unless the root logs at DEBUG).

    Start-up uses it while probing the broker: our own one line per attempt says it all.
    """
    logger = logging.getLogger(logger_name)
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


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
    foreign_pre_chain = [*pre_chain, _name_library_event]
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=str, sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign_pre_chain,
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
    global _limiter  # noqa: PLW0603  (logging is process-wide; one limiter per handler)
    _limiter = LogRateLimiter()
    handler.addFilter(_limiter)
    handler.addFilter(KafkaLogEvents())
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
    global _limiter  # noqa: PLW0603
    _limiter = None
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
