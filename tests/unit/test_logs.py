"""Logs are JSON lines with context bound once; secrets never appear; phones are masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from pydantic import SecretStr

from connector.core.redaction import SecretScrubber, mask_phone
from connector.logs import configure_logging, get_logger, reset_logging

SECRETS = (
    "EAAG-meta-access-token-9f8e7d",
    "zonos-body-secret-44",
    'ycloud"key\\with-quotes',  # JSON escaping must not hide it from the scrubber
    "segredo-çã-unicode",
)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", [*SECRETS[:-1], SecretStr(SECRETS[-1])], json=True, stream=stream)
    try:
        yield stream
    finally:
        reset_logging()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        assert json.dumps(secret)[1:-1] not in text
        assert json.dumps(secret, ensure_ascii=True)[1:-1] not in text


def test_secrets_never_reach_the_log(captured: io.StringIO) -> None:
    log = get_logger("connector.test", provider="meta", topic="order.status.changed", partition=3)
    log.info("provider_rejected", detail=f"token {SECRETS[0]} refused")
    log.info(f"message with {SECRETS[1]}")
    log.warning("config_loaded", nested={"zonos": {"secret": SECRETS[1]}, "list": [SECRETS[2]]})
    log.info("secretstr_field", api_key=SecretStr("never-seen-plain-9"))
    log.info("plain_value_of_secretstr", value=SECRETS[3])
    try:
        raise RuntimeError(f"request failed with body secret={SECRETS[1]}")
    except RuntimeError:
        log.exception("delivery_crashed")
    try:
        raise ValueError(SECRETS[2])
    except ValueError as exc:
        log.error("delivery_failed", error=exc)
    # stdlib loggers (aiohttp, aiokafka) go through the same scrubber
    logging.getLogger("aiohttp.access").warning("GET /webhooks/zapi/%s 401", SECRETS[0])
    try:
        raise KeyError(SECRETS[3])
    except KeyError:
        logging.getLogger("aiokafka").exception("consumer error %s", SECRETS[1])

    text = captured.getvalue()
    _assert_no_secret(text)
    assert "never-seen-plain-9" not in text
    lines = _lines(captured)
    assert len(lines) == 9
    assert text.count("[REDACTED]") >= 9
    by_event = {str(line["event"]): line for line in lines}
    assert by_event["provider_rejected"]["provider"] == "meta"
    assert by_event["provider_rejected"]["partition"] == 3
    assert by_event["provider_rejected"]["level"] == "info"
    assert by_event["secretstr_field"]["api_key"] == "**********"
    assert "RuntimeError" in str(by_event["delivery_crashed"]["exception"])
    assert "timestamp" in by_event["delivery_crashed"]


def test_phone_numbers_are_masked(captured: io.StringIO) -> None:
    log = get_logger("connector.test")
    log.info("report_received", recipient="5511987654321", to="+14155550123", wa_id=5511987654321)
    log.info("free_text", detail="customer +5511987654321 unreachable")
    text = captured.getvalue()
    assert "5511987654321" not in text
    assert "4155550123" not in text
    first, second = _lines(captured)
    assert first["recipient"] == "55*********21"
    assert first["to"] == "+1********23"
    assert first["wa_id"] == "55*********21"
    assert second["detail"] == "customer +55*********21 unreachable"


def test_order_ids_and_offsets_are_not_mistaken_for_phones(captured: io.StringIO) -> None:
    get_logger().info("record_done", order_id="100200300400500", offset=123456789012)
    (line,) = _lines(captured)
    assert line["order_id"] == "100200300400500"
    assert line["offset"] == 123456789012


def test_level_filters(captured: io.StringIO) -> None:
    reset_logging()
    stream = io.StringIO()
    configure_logging("WARNING", SECRETS, json=True, stream=stream)
    get_logger().info("too_quiet")
    get_logger().warning("loud_enough")
    assert [line["event"] for line in _lines(stream)] == ["loud_enough"]


def test_console_mode_is_scrubbed_too() -> None:
    stream = io.StringIO()
    configure_logging("INFO", SECRETS, json=False, stream=stream)
    try:
        structlog.get_logger().info("console_line", token=SECRETS[0])
    finally:
        reset_logging()
    assert "console_line" in stream.getvalue()
    _assert_no_secret(stream.getvalue())


def test_unknown_level_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", (), json=True, stream=io.StringIO())


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+5511987654321", "+55*********21"),
        ("14155550123", "1********23"),
        ("+351912345678", "+351*******78"),
        ("79161234567", "7********67"),
        ("12345", "*****"),
        ("55*********21", "55*********21"),
    ],
)
def test_mask_phone(raw: str, masked: str) -> None:
    assert mask_phone(raw) == masked


# --- aiokafka's lines pass a per-kind rate limiter ------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_rate_limiter_passes_a_few_lines_per_kind_then_reports_the_suppressed_count() -> None:
    from connector.logs import LogRateLimiter

    clock = _Clock()
    reports: list[tuple[str, str, int, float]] = []
    limiter = LogRateLimiter(
        per_window=3, window_s=10.0, clock=clock, report=lambda *a: reports.append(a)
    )
    template = "Unable connect to node with id %s: %s"
    passed = [limiter.filter(_record("aiokafka.conn", template, n, "refused")) for n in range(500)]
    assert passed.count(True) == 3
    assert passed[:3] == [True, True, True]
    # Another kind has its own budget; other loggers are never limited.
    assert limiter.filter(_record("aiokafka.client", "Unable to update metadata from %s", 1))
    assert all(limiter.filter(_record("connector.app", "x")) for _ in range(50))
    assert reports == []  # the window has not ended yet
    clock.now += 9.9
    limiter.flush()
    assert reports == []
    clock.now += 0.2
    limiter.flush()
    assert reports == [("aiokafka.conn", template, 497, 10.0)]
    assert limiter.suppressed_total == 497
    # A new window starts with a fresh budget; a window with nothing suppressed reports nothing.
    assert limiter.filter(_record("aiokafka.conn", template, 1, "refused"))
    clock.now += 11
    limiter.flush()
    assert len(reports) == 1


def test_a_flood_of_aiokafka_lines_becomes_a_few_lines_and_one_count(
    captured: io.StringIO,
) -> None:
    from connector.logs import flush_suppressed_logs

    noisy = logging.getLogger("aiokafka.conn")
    for n in range(2_000):
        noisy.error("Unable connect to node with id %s: %s", n % 3, "Connect call failed")
    lines = _lines(captured)
    assert len(lines) == 3
    flush_suppressed_logs()  # the window (10 s) has not ended: nothing to report yet
    assert len(_lines(captured)) == 3
    flush_suppressed_logs(ahead_s=60)
    report = _lines(captured)[-1]
    assert report["event"] == "log_lines_suppressed"
    assert report["suppressed"] == 1_997
    assert report["source_logger"] == "aiokafka.conn"


def test_scrubber_min_length_leaves_shorter_values_alone() -> None:
    # Provider accounts pass min_length=4: a three-character value is not a meaningful secret
    # and replacing it would mangle ordinary text.
    scrubber = SecretScrubber(["abc", "tok-secret"], min_length=4)
    assert scrubber.scrub_text("abc tok-secret") == "abc [REDACTED]"
    assert SecretScrubber(["abc"]).scrub_text("abc") == "[REDACTED]"


def test_aiokafka_lines_become_structured_events_with_sensible_levels() -> None:
    """Issue 14: a first start's coordinator churn is info; the text is kept in ``message``."""
    stream = io.StringIO()
    configure_logging("INFO", [], json=True, stream=stream)
    try:
        coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
        coordinator.error(
            "Group Coordinator Request failed: %s",
            "[Error 15] CoordinatorNotAvailableError: GroupCoordinatorNotAvailableError",
        )
        coordinator.error("Group Coordinator Request failed: %s", "[Error 29] Unauthorized")
        logging.getLogger("aiokafka.client").error('Unable connect to "%s:%s": %s', "h", 1, "x")
        logging.getLogger("aiokafka.cluster").info("something %s", "else")
        lines = _lines(stream)
    finally:
        reset_logging()
    assert [(line["event"], line["level"]) for line in lines] == [
        ("kafka_coordinator_not_ready", "info"),
        ("kafka_coordinator_not_ready", "warning"),
        ("kafka_connect_failed", "warning"),
        ("kafka_client_log", "info"),
    ]
    assert lines[0]["message"] == (
        "Group Coordinator Request failed: [Error 15] CoordinatorNotAvailableError: "
        "GroupCoordinatorNotAvailableError"
    )
    assert lines[0]["logger"] == "aiokafka.consumer.group_coordinator"


def test_demoted_aiokafka_lines_below_the_root_level_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", [], json=True, stream=stream)
    try:
        logging.getLogger("aiokafka.producer.sender").error(
            "FindCoordinator Request failed: %s", "NotCoordinatorError"
        )
        logging.getLogger("connector.x").warning("kept")
        lines = _lines(stream)
    finally:
        reset_logging()
    assert [line["event"] for line in lines] == ["kept"]
