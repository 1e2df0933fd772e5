"""Request-building pieces every adapter shares: a prepared endpoint (URL and headers parsed
once per account, since httpx's URL parsing costs more than the rest of a request) and the
recipient accessor. Pure; never sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import httpx

from connector.contract.events import OrderStatusChanged
from connector.errors import MissingFieldError

JSON_CONTENT_TYPE: Final = ("Content-Type", "application/json")


class Endpoint:
    """One account's target: method, parsed URL and fixed headers (Host included)."""

    __slots__ = ("headers", "url")

    def __init__(self, url: str, headers: Iterable[tuple[str, str]]) -> None:
        self.url = httpx.URL(url)
        self.headers = httpx.Headers([("Host", self.url.netloc.decode("ascii")), *headers])

    def __repr__(self) -> str:  # the URL or headers may hold secrets
        return "Endpoint(...)"

    def post(self, content: bytes) -> httpx.Request:
        return httpx.Request("POST", self.url, headers=self.headers, content=content)


def recipient_phone(event: OrderStatusChanged) -> str:
    """The recipient in E.164 (``+`` and digits), or MissingFieldError."""
    if event.recipient is None:
        raise MissingFieldError("missing required field 'recipient.phone'", field="recipient.phone")
    return event.recipient.phone


__all__ = ["JSON_CONTENT_TYPE", "Endpoint", "recipient_phone"]
