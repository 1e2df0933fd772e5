"""The plain request value provider adapters produce and the HTTP sender sends: method, URL,
header pairs, body bytes. Immutable and library-neutral: the aiohttp sender hands it to aiohttp
as it is, only the httpx sender converts it. Building an ``httpx.Request`` per event just to
convert it for aiohttp cost more than the rest of request building (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

Header = tuple[str, str]


@dataclass(frozen=True, slots=True, repr=False)
class PlainRequest:
    """One request to a provider. ``url`` is parsed once per account (``providers.request``)."""

    method: str
    url: URL
    header_pairs: tuple[Header, ...]
    content: bytes

    def __repr__(self) -> str:  # the URL (Z-API's token) or headers may hold secrets
        return f"PlainRequest({self.method}, [url and headers redacted])"

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The headers as a case-insensitive read-only mapping (tests, diagnostics)."""
        return CIMultiDictProxy(CIMultiDict(self.header_pairs))

    def with_headers(self, *extra: Header) -> PlainRequest:
        """A copy with ``extra`` header pairs appended (same-named ones replaced)."""
        names = {name.lower() for name, _ in extra}
        kept = tuple(h for h in self.header_pairs if h[0].lower() not in names)
        return PlainRequest(self.method, self.url, kept + extra, self.content)


__all__ = ["Header", "PlainRequest"]
