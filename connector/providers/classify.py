"""Response-reading pieces every adapter's ``classify`` shares: safe JSON, ``Retry-After``,
the HTTP-status fallback and scrubbing outcome details with the one ``SecretScrubber``.
Never raises on any response; never logs.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx
import orjson

from connector.core.redaction import SecretScrubber
from connector.providers.base import OutcomeKind, ProviderOutcome

MAX_DETAIL: Final = 300
MAX_RETRY_AFTER_S: Final = 24 * 3600.0


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body as a JSON object, or None for anything else (HTML, garbage, unread stream)."""
    try:
        parsed = orjson.loads(response.content)
    except (orjson.JSONDecodeError, httpx.ResponseNotRead):
        return None
    return parsed if isinstance(parsed, dict) else None


def body_excerpt(response: httpx.Response, limit: int = 120) -> str:
    try:
        text = response.content[:limit].decode("utf-8", "replace")
    except httpx.ResponseNotRead:
        return ""
    return " ".join(text.split())


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or HTTP-date), capped; None if absent/garbled."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_code(value: object) -> int | None:
    """A provider error code given as int or numeric string (YCloud sends Meta codes as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def by_http_status(
    response: httpx.Response,
    *,
    provider: str,
    detail: str | None = None,
    error_code: str | None = None,
) -> ProviderOutcome:
    """The fallback when the body says nothing we recognise: decide by HTTP status alone.

    408/425/429/5xx retryable (honouring ``Retry-After``); 401/403/407 and redirects (a wrong
    base URL) are configuration; every other non-2xx status is permanent for the event.
    """
    status = response.status_code
    text = detail or f"{provider} answered HTTP {status}"
    if status in (408, 425, 429) or status >= 500:
        return ProviderOutcome(
            OutcomeKind.RETRYABLE,
            http_status=status,
            error_code=error_code,
            detail=text,
            retry_after=retry_after(response),
        )
    if status in (401, 403, 407) or 300 <= status < 400:
        return ProviderOutcome(
            OutcomeKind.CONFIGURATION, http_status=status, error_code=error_code, detail=text
        )
    return ProviderOutcome(
        OutcomeKind.PERMANENT, http_status=status, error_code=error_code, detail=text
    )


def scrub_outcome(outcome: ProviderOutcome, scrubber: SecretScrubber) -> ProviderOutcome:
    """``outcome`` with secrets removed from its detail (clipped); the same object if clean."""
    detail = outcome.detail
    if detail is None:
        return outcome
    clean = clip(scrubber.scrub_text(detail))
    if clean == detail:
        return outcome
    return dataclasses.replace(outcome, detail=clean)


def unclassifiable(response: httpx.Response, provider: str) -> ProviderOutcome:
    """Last resort when reading a response failed unexpectedly: never let classify raise."""
    try:
        return by_http_status(response, provider=provider, detail=f"{provider}: unreadable answer")
    except Exception:  # a response object so broken that even its status is unreadable
        return ProviderOutcome(OutcomeKind.RETRYABLE, detail=f"{provider}: unreadable answer")


__all__ = [
    "as_code",
    "body_excerpt",
    "by_http_status",
    "clip",
    "json_object",
    "retry_after",
    "scrub_outcome",
    "unclassifiable",
]
