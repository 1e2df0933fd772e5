"""The one place that sends HTTP: an ``httpx.Request`` in, a fully read ``httpx.Response`` out.

Owns connection pools, per-request total timeouts, the response size cap and the translation of
library exceptions into ``TransportFailure``. Never classifies answers; never logs URLs/headers.
Each failure says whether the request may have been written (``TransportFailure.written``): a
timeout once the request had a connection is ambiguous, one while connecting is not.
"""

# ASYNC109: ``send(timeout=...)`` is the per-request budget the sender itself enforces.

from __future__ import annotations

import asyncio
import http.cookiejar
import ssl
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

import aiohttp
import httpx
from aiohttp import hdrs
from yarl import URL

from connector.contract.outbound import PlainRequest
from connector.http.egress import AnyURL, Egress, EgressPlan, tls_context
from connector.http.failures import delivery_error
from connector.http.native import NativeSender
from connector.http.responses import (
    BODY_TRUNCATED,
    fast_responses_active,
    loaded_response,
    without_encoding,
)

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

HttpClientKind = Literal["aiohttp", "httpx", "native"]

DEFAULT_MAX_RESPONSE_BYTES = 1 << 20  # provider answers are a few hundred bytes
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_KEEPALIVE_SECONDS = 30.0


_READ_CHUNK = 64 * 1024


class HttpSender(Protocol):
    """Sends one request and returns its answer with the body fully read (up to the cap).

    Raises ``TransportFailure`` when no usable answer arrived, ``AccountConfigError`` when the
    request cannot be sent at all (unsupported URL). HTTP error statuses are returned, not raised.
    """

    async def send(
        self, request: PlainRequest | httpx.Request, *, timeout: float
    ) -> httpx.Response: ...

    async def aclose(self) -> None: ...


def create_sender(
    client: HttpClientKind,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    trust_env: bool = False,
    egress: EgressPlan | None = None,
) -> AiohttpSender | HttpxSender | NativeSender:
    """The sender named by the ``http.client`` setting, pooled for ``max_connections``;
    ``egress`` says which proxy and CA bundle each request uses."""
    if client == "native":  # proxied origins go through aiohttp (CONNECT, proxy auth)
        return NativeSender(
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            egress=egress,
            proxied=AiohttpSender(
                max_connections=max_connections,
                max_response_bytes=max_response_bytes,
                trust_env=trust_env,
                egress=egress,
            ),
        )
    senders: dict[str, type[AiohttpSender] | type[HttpxSender]] = {
        "aiohttp": AiohttpSender,
        "httpx": HttpxSender,
    }
    sender = senders.get(client)
    if sender is None:
        raise ValueError(f"unknown http.client {client!r}: expected 'aiohttp', 'httpx' or 'native'")
    return sender(
        max_connections=max_connections,
        max_response_bytes=max_response_bytes,
        trust_env=trust_env,
        egress=egress,
    )


class AiohttpSender:
    """Sends over one ``aiohttp.ClientSession`` (the measured choice: docs/http-transport.md).

    The session is created on first use inside the running loop. Cookies are never kept, so
    accounts cannot leak state into each other; compression is not requested.
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_host: int = 0,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_SECONDS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = False,
        egress: EgressPlan | None = None,
    ) -> None:
        """``egress``: per-origin proxy and CA bundle (None: direct, the system CA store)."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._egress = egress
        self._tls: dict[Path | None, ssl.SSLContext] = {}
        if egress is not None:  # load every CA bundle now: a bad one fails at start, not later
            for route in {egress.default, *egress.routes()}:
                self._tls_for(route.ca_bundle)
            if ssl_context is None and egress.default.ca_bundle is not None:
                ssl_context = self._tls_for(egress.default.ca_bundle)
        self._max_connections = max_connections
        self._max_connections_per_host = max_connections_per_host
        self._keepalive_timeout = keepalive_timeout
        self._max_response_bytes = max_response_bytes
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("AiohttpSender is closed")
        connector = _MarkingConnector(
            limit=self._max_connections,
            limit_per_host=self._max_connections_per_host,
            keepalive_timeout=self._keepalive_timeout,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=(hdrs.ACCEPT_ENCODING,),
            trust_env=self._trust_env,
            raise_for_status=False,
        )
        return self._session

    def _tls_for(self, ca_bundle: Path | None) -> ssl.SSLContext:
        found = self._tls.get(ca_bundle)
        if found is None:
            found = self._tls[ca_bundle] = tls_context(ca_bundle)
        return found

    def _route(self, url: AnyURL) -> dict[str, Any]:
        """``session.request`` options for this URL's egress (none without a plan)."""
        if self._egress is None:
            return {}
        route = self._egress.for_url(url)
        options: dict[str, Any] = {}
        if route.proxy is not None:
            options["proxy"] = route.proxy
        if route.ca_bundle is not None and url.scheme == "https":
            options["ssl"] = self._tls_for(route.ca_bundle)
        return options

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        found = self._timeouts.get(seconds)
        if found is None:
            if len(self._timeouts) > 64:  # callers use a handful of values; stay bounded
                self._timeouts.clear()
            found = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return found

    async def send(
        self, request: PlainRequest | httpx.Request, *, timeout: float
    ) -> httpx.Response:
        session = self._session or self._open()
        url: URL
        headers: Any
        if isinstance(request, PlainRequest):  # the adapters' value: handed over as it is
            url, headers, body = request.url, request.header_pairs, request.content
            answer_to: httpx.Request | None = None
        else:
            try:
                body = request.content
            except httpx.RequestNotRead:  # a streamed body: buffer it (requests are small)
                body = await request.aread()
            url = URL(str(request.url), encoded=True)
            # Raw pairs: multi_items() re-derives the header encoding for every item.
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
            answer_to = request
        truncated = False
        mark = _WriteMark()
        token = _SENDING.set(mark)
        try:
            async with session.request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(timeout),
                **self._route(request.url),
            ) as answer:
                length = answer.content_length
                if (
                    length is not None
                    and length <= self._max_response_bytes
                    and hdrs.CONTENT_ENCODING not in answer.headers  # decoded size is unknown
                ):
                    content = await answer.read()
                else:
                    content, truncated = await self._read_capped(answer)
                status = answer.status
                raw_headers: Any = answer.raw_headers
                if hdrs.CONTENT_ENCODING in answer.headers:  # aiohttp already decoded the body
                    raw_headers = without_encoding(raw_headers)
                reason = answer.reason
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise delivery_error(exc, timeout=timeout, written=mark.written) from exc
        finally:
            _SENDING.reset(token)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason.encode("latin-1", "replace")
        if truncated:
            extensions[BODY_TRUNCATED] = True
        return loaded_response(
            status, headers=raw_headers, content=content, request=answer_to, extensions=extensions
        )

    async def _read_capped(self, answer: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        cap = self._max_response_bytes
        parts: list[bytes] = []
        size = 0
        async for chunk in answer.content.iter_chunked(_READ_CHUNK):
            parts.append(chunk)
            size += len(chunk)
            if size > cap:  # leaving early closes the connection instead of reusing it
                return b"".join(parts)[:cap], True
        return b"".join(parts), False

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


class HttpxSender:
    """Sends over a stock ``httpx.AsyncClient``: the fallback (``http.client: httpx``).

    Measured several times slower per request than ``AiohttpSender`` (docs/http-transport.md).
    The total timeout wraps the whole exchange; cookies are never kept.
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_SECONDS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | bool = True,
        trust_env: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        egress: EgressPlan | None = None,
    ) -> None:
        """``transport`` replaces the network, e.g. ``httpx.MockTransport`` in unit tests.
        ``egress``: per-origin proxy and CA bundle; one client per distinct egress."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_response_bytes = max_response_bytes
        self._httpcore = transport is None  # the default transport reports httpcore's traces
        self._egress = egress if transport is None else None
        self._options: dict[str, Any] = {
            "max_connections": max_connections,
            "keepalive_expiry": keepalive_expiry,
            "trust_env": trust_env,
        }
        self._clients: dict[Egress, httpx.AsyncClient] = {}
        if self._egress is not None:
            for route in {self._egress.default, *self._egress.routes()}:
                tls_context(route.ca_bundle)  # a bad bundle fails at start, not on a send
            if verify is True and self._egress.default.ca_bundle is not None:
                verify = tls_context(self._egress.default.ca_bundle)
        self._client = self._new_client(verify=verify, transport=transport, proxy=None)

    def _new_client(
        self,
        *,
        verify: ssl.SSLContext | bool,
        transport: httpx.AsyncBaseTransport | None,
        proxy: str | None,
    ) -> httpx.AsyncClient:
        refuse_all = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
        size = self._options["max_connections"]
        return httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=size,
                max_keepalive_connections=size,
                keepalive_expiry=self._options["keepalive_expiry"],
            ),
            timeout=None,  # noqa: S113 (asyncio.timeout in send() bounds the whole exchange)
            follow_redirects=False,
            verify=verify,
            trust_env=self._options["trust_env"],
            cookies=http.cookiejar.CookieJar(policy=refuse_all),
            transport=transport,
            proxy=proxy,
        )

    def _client_for(self, url: httpx.URL) -> httpx.AsyncClient:
        if self._egress is None:
            return self._client
        route = self._egress.for_url(url)
        if route.proxy is None and route.ca_bundle == self._egress.default.ca_bundle:
            return self._client
        client = self._clients.get(route)
        if client is None:
            verify: ssl.SSLContext | bool = (
                tls_context(route.ca_bundle) if route.ca_bundle is not None else True
            )
            client = self._clients[route] = self._new_client(
                verify=verify, transport=None, proxy=route.proxy
            )
        return client

    async def send(
        self, request: PlainRequest | httpx.Request, *, timeout: float
    ) -> httpx.Response:
        if isinstance(request, PlainRequest):
            request = as_httpx_request(request)
        cap = self._max_response_bytes
        mark = _WriteMark()
        # httpcore's trace hook tells when the headers start to go out; the caller's own trace
        # callback, if any, is put back afterwards.
        caller_trace = request.extensions.get("trace")
        request.extensions["trace"] = mark.httpcore_trace(caller_trace)
        try:
            async with asyncio.timeout(timeout):
                answer = await self._client_for(request.url).send(request, stream=True)
                try:
                    parts: list[bytes] = []
                    size = 0
                    truncated = False
                    async for chunk in answer.aiter_bytes():  # decoded, like aiohttp's
                        parts.append(chunk)
                        size += len(chunk)
                        if size > cap:
                            truncated = True
                            break
                finally:
                    await answer.aclose()
        except (httpx.TransportError, OSError, TimeoutError) as exc:
            written = mark.written
            if not self._httpcore:  # a transport without httpcore's trace hook (a mock): by class
                written = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                written = written and not isinstance(exc, httpx.PoolTimeout | httpx.ProxyError)
            raise delivery_error(exc, timeout=timeout, written=written) from exc
        finally:
            if caller_trace is None:
                request.extensions.pop("trace", None)
            else:
                request.extensions["trace"] = caller_trace
        content = b"".join(parts)
        headers: Any = answer.headers.raw
        if truncated:
            content = content[:cap]
        if "content-encoding" in answer.headers:
            headers = without_encoding(headers)
        extensions = {k: v for k, v in answer.extensions.items() if k != "network_stream"}
        if truncated:
            extensions[BODY_TRUNCATED] = True
        return httpx.Response(
            answer.status_code,
            headers=headers,
            content=content,
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in (self._client, *clients):
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


def as_httpx_request(request: PlainRequest) -> httpx.Request:
    """The ``httpx.Request`` of an adapter's plain request (the httpx sender, the baseline)."""
    return _RedactedRequest(
        request.method,
        str(request.url),
        headers=list(request.header_pairs),
        content=request.content,
    )


class _RedactedRequest(httpx.Request):
    """An ``httpx.Request`` whose repr hides the URL (Z-API's token is in its path); httpx
    exceptions carry their request."""

    def __repr__(self) -> str:
        return f"<Request('{self.method}', '[url redacted]')>"


class _WriteMark:
    """Per request: whether it may have started to go out.

    aiohttp: set when the pool hands over a connection (``_MarkingConnector``), right before the
    request is written; httpx: set by httpcore's ``send_request_headers`` trace. Either way it is
    set before the first byte leaves, so "not written" is certain and "written" the cautious side.
    """

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written = False

    def httpcore_trace(
        self, inner: Callable[[str, dict[str, Any]], Awaitable[None]] | None
    ) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
        async def trace(event: str, info: dict[str, Any]) -> None:
            if "send_request_headers" in event:
                self.written = True
            if inner is not None:
                await inner(event, info)

        return trace


#: The ``_WriteMark`` of the request the current task is sending (aiohttp only).
_SENDING: ContextVar[_WriteMark | None] = ContextVar("connector_sending", default=None)


class _MarkingConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that marks the sending request once it has a connection.

    Cheaper than aiohttp's ``on_request_headers_sent`` trace: a trace config builds parameter
    objects for every signal of every request, measured at roughly 15 µs of CPU per loopback
    request on a loaded 2-core machine; this is a context-variable read (no difference within
    the noise). After ``connect`` returns aiohttp writes the request
    without awaiting anything else, so the mark precedes the first byte.
    """

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        mark = _SENDING.get()
        if mark is not None:
            mark.written = True
        return connection


__all__ = [
    "BODY_TRUNCATED",
    "AiohttpSender",
    "HttpClientKind",
    "HttpSender",
    "HttpxSender",
    "NativeSender",
    "as_httpx_request",
    "create_sender",
    "fast_responses_active",
]
