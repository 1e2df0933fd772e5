"""Request-building pieces every adapter shares: a prepared endpoint (URL and headers parsed
once per account) that makes ``PlainRequest`` values, and the recipient accessor. Pure; never
sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import httpx
from yarl import URL

from connector.contract.events import OrderStatusChanged
from connector.contract.outbound import Header, PlainRequest
from connector.errors import MissingFieldError

JSON_CONTENT_TYPE: Final = ("Content-Type", "application/json")


class Endpoint:
    """One account's target: parsed URL and fixed headers (Host included)."""

    __slots__ = ("headers", "url")

    def __init__(self, url: str, headers: Iterable[Header]) -> None:
        parsed = httpx.URL(url)  # httpx's normalisation, as before; parsed once per account
        self.url = URL(str(parsed), encoded=True)
        self.headers: tuple[Header, ...] = (
            ("Host", parsed.netloc.decode("ascii")),
            *((str(k), str(v)) for k, v in headers),
        )

    def __repr__(self) -> str:  # the URL or headers may hold secrets
        return "Endpoint(...)"

    def post(self, content: bytes) -> PlainRequest:
        # orjson.dumps returns its bytes inside a 4 KiB allocation whatever their length; a
        # buffered request keeps its body until sent, so keep an exact-size copy (0.1 us; saves
        # about 3.7 KiB per buffered record, docs/benchmarks.md).
        return PlainRequest("POST", self.url, self.headers, memoryview(content).tobytes())


def recipient_phone(event: OrderStatusChanged) -> str:
    """The recipient in E.164 (``+`` and digits), or MissingFieldError."""
    if event.recipient is None:
        raise MissingFieldError("missing required field 'recipient.phone'", field="recipient.phone")
    return event.recipient.phone


__all__ = ["JSON_CONTENT_TYPE", "Endpoint", "PlainRequest", "recipient_phone"]
