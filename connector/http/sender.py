"""The one place that sends HTTP: an ``httpx.Request`` in, a fully read ``httpx.Response`` out.

Owns connection pools, per-request total timeouts, the response size cap and the translation of
library exceptions into ``TransportFailure``. Never classifies answers; never logs URLs/headers.
Each failure says whether the request may have been written (``TransportFailure.written``): a
timeout once the request had a connection is ambiguous, one while connecting is not.
"""

# ASYNC109: ``send(timeout=...)`` is the per-request budget the sender itself enforces.

from __future__ import annotations

import asyncio
import errno
import http.cookiejar
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

import aiohttp
import httpx
from aiohttp import hdrs
from yarl import URL

from connector.contract.outbound import PlainRequest
from connector.errors import AccountConfigError, DeliveryError, TransportFailure

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

HttpClientKind = Literal["aiohttp", "httpx"]

DEFAULT_MAX_RESPONSE_BYTES = 1 << 20  # provider answers are a few hundred bytes
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_KEEPALIVE_SECONDS = 30.0

#: ``response.extensions`` key set to True when the body was cut at ``max_response_bytes``.
BODY_TRUNCATED = "connector.body_truncated"

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
) -> AiohttpSender | HttpxSender:
    """The sender named by the ``http.client`` setting, pooled for ``max_connections``."""
    if client == "aiohttp":
        return AiohttpSender(
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            trust_env=trust_env,
        )
    if client == "httpx":
        return HttpxSender(
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            trust_env=trust_env,
        )
    raise ValueError(f"unknown http.client {client!r}: expected 'aiohttp' or 'httpx'")


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
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
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
                    raw_headers = _without_encoding(raw_headers)
                reason = answer.reason
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _delivery_error(exc, timeout=timeout, written=mark.written) from exc
        finally:
            _SENDING.reset(token)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason.encode("latin-1", "replace")
        if truncated:
            extensions[BODY_TRUNCATED] = True
        return _loaded_response(status, raw_headers, content, answer_to, extensions)

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
    ) -> None:
        """``transport`` replaces the network, e.g. ``httpx.MockTransport`` in unit tests."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_response_bytes = max_response_bytes
        self._httpcore = transport is None  # the default transport reports httpcore's traces
        refuse_all = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive_expiry,
            ),
            timeout=None,  # noqa: S113 (asyncio.timeout in send() bounds the whole exchange)
            follow_redirects=False,
            verify=verify,
            trust_env=trust_env,
            cookies=http.cookiejar.CookieJar(policy=refuse_all),
            transport=transport,
        )

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
                answer = await self._client.send(request, stream=True)
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
            raise _delivery_error(exc, timeout=timeout, written=written) from exc
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
            headers = _without_encoding(headers)
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
        await self._client.aclose()

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


def _standard_response(
    status: int,
    headers: Any,
    content: bytes,
    request: httpx.Request | None,
    extensions: dict[str, Any],
) -> httpx.Response:
    return httpx.Response(
        status, headers=headers, content=content, request=request, extensions=extensions
    )


def _preloaded_response(
    status: int,
    headers: Any,
    content: bytes,
    request: httpx.Request | None,
    extensions: dict[str, Any],
) -> httpx.Response:
    """An already-read ``httpx.Response`` without the constructor's content pipeline.

    ``httpx.Response(content=...)`` re-encodes and re-reads the body through its decoders
    (about 19 µs; 3 µs this way). Used only when ``_PRELOAD_MATCHES`` proved at import that the
    result behaves exactly like the standard one on this httpx version.
    """
    response = httpx.Response.__new__(httpx.Response)
    response.status_code = status
    response.headers = httpx.Headers(headers)
    response._request = request
    response.next_request = None
    response.extensions = extensions
    response.history = []
    response.is_closed = True
    response.is_stream_consumed = True
    response.default_encoding = "utf-8"
    response.stream = httpx.ByteStream(content)
    response._content = content
    response._num_bytes_downloaded = len(content)
    return response


def _preload_matches() -> bool:
    """Whether ``_preloaded_response`` equals the standard constructor on this httpx."""
    request = httpx.Request("POST", "http://check.invalid/p", content=b"{}")
    headers = [(b"Content-Type", b"application/json; charset=utf-8"), (b"Retry-After", b"3")]
    body = b'{"a": [1, "\\u00e9"]}'
    ext = {"http_version": b"HTTP/1.1"}
    try:
        fast = _preloaded_response(429, headers, body, request, dict(ext))
        slow = _standard_response(429, headers, body, request, dict(ext))
        return (
            fast.status_code == slow.status_code
            # The standard constructor adds Content-Length when the answer had none.
            and fast.headers.multi_items()
            == [h for h in slow.headers.multi_items() if h[0] != "content-length"]
            and fast.content == slow.content
            and fast.text == slow.text
            and fast.json() == slow.json()
            and fast.request is slow.request
            and fast.is_closed == slow.is_closed
            and fast.reason_phrase == slow.reason_phrase
            and fast.encoding == slow.encoding
        )
    except Exception:
        return False


_PRELOAD_MATCHES = _preload_matches()
_loaded_response = _preloaded_response if _PRELOAD_MATCHES else _standard_response


def fast_responses_active() -> bool:
    """Whether answers are built on the fast path (it matched the standard one at import)."""
    return _loaded_response is _preloaded_response


def _without_encoding(raw_headers: Any) -> list[tuple[bytes, bytes]]:
    """Headers minus Content-Encoding/Content-Length: the body we return is already decoded."""
    drop = (b"content-encoding", b"content-length")
    return [(k, v) for k, v in raw_headers if k.lower() not in drop]


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


def _delivery_error(exc: BaseException, *, timeout: float, written: bool = True) -> DeliveryError:
    """Translate an aiohttp/httpx/OS exception; the only place library errors are mapped.

    ``written`` says whether the request's headers had started to go out; failures that happen
    before any byte can leave (DNS, connect, TLS) are never written whatever it says.
    Messages are built from fixed text, class names and OS error strings only: library messages
    may quote the URL (Z-API carries its token in the path), so they are never copied.
    """
    name = type(exc).__name__
    if isinstance(exc, aiohttp.InvalidURL | httpx.UnsupportedProtocol | httpx.InvalidURL):
        return AccountConfigError(f"the request URL cannot be sent ({name})")
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        # aiohttp's ServerTimeoutError and asyncio.timeout both land here
        stage = "no complete answer" if written else "not sent (still connecting)"
        return TransportFailure(
            f"timeout: {stage} within {timeout:g} s ({name})", kind="timeout", written=written
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or _caused_by(exc, socket.gaierror):
        return TransportFailure(f"dns: name resolution failed ({name})", kind="dns", written=False)
    if isinstance(exc, aiohttp.ClientSSLError) or _caused_by(exc, ssl.SSLError):
        detail = f"tls: handshake or certificate failed ({name})"
        return TransportFailure(detail, kind="tls", written=False)
    if isinstance(exc, aiohttp.ClientConnectorError | httpx.ConnectError | httpx.ProxyError):
        detail = f"connect: {_os_reason(exc)} ({name})"
        return TransportFailure(detail, kind="connect", written=False)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        detail = f"disconnected: server closed the connection ({name})"
        return TransportFailure(detail, kind="disconnected", written=written)
    if isinstance(
        exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError | httpx.ProtocolError
    ):
        detail = f"protocol: malformed or incomplete answer ({name})"
        return TransportFailure(detail, kind="protocol", written=written)
    if isinstance(exc, OSError | httpx.ReadError | httpx.WriteError | httpx.CloseError):
        detail = f"connection: {_os_reason(exc)} ({name})"
        return TransportFailure(detail, kind="connection", written=written)
    return TransportFailure(
        f"transport: request failed ({name})", kind="transport", written=written
    )


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # causes chain shallowly; bound the walk anyway
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _os_reason(exc: BaseException) -> str:
    """The OS error (e.g. "Connection refused (ECONNREFUSED)") on ``exc`` or its causes."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, aiohttp.ClientConnectorError):
            seen = seen.os_error
        if isinstance(seen, OSError) and seen.errno:
            # os.strerror, never seen.strerror: asyncio's text quotes the peer address
            return f"{os.strerror(seen.errno)} ({errno.errorcode.get(seen.errno, seen.errno)})"
        seen = seen.__cause__ or seen.__context__
    return "connection failed"
