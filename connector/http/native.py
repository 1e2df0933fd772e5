"""A lean HTTP/1.1 keep-alive client on asyncio protocols: the ``http.client: native`` sender.

Same contract as ``AiohttpSender`` (docs/http-transport.md): every status returned, no redirects,
body read fully up to ``max_response_bytes`` (after decoding gzip/deflate), one total timeout per
request, no cookies, failures as ``TransportFailure`` with ``written`` set once the request may
have gone out. One pool of keep-alive connections per origin (scheme, host, port) under one
global connection limit; answers with Content-Length, chunked or ending at close; ``Connection:
close`` honoured. Requests through a forward proxy are handed to the aiohttp sender given as
``proxied`` (CONNECT tunnels are not written twice).
"""

# ASYNC109: ``send(timeout=...)`` is the per-request budget the sender itself enforces.

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from collections import deque
from typing import Any, Protocol, Self

import httpx
from yarl import URL

from connector.contract.outbound import PlainRequest
from connector.errors import AccountConfigError
from connector.http.egress import EgressPlan, tls_context
from connector.http.failures import (
    AnswerMalformedError,
    ConnectFailedError,
    PeerClosedError,
    delivery_error,
)
from connector.http.responses import BODY_TRUNCATED, loaded_response, without_encoding


class _Proxied(Protocol):
    """The sender that takes requests routed through a forward proxy (``AiohttpSender``)."""

    async def send(
        self, request: PlainRequest | httpx.Request, *, timeout: float
    ) -> httpx.Response: ...

    async def aclose(self) -> None: ...


Origin = tuple[str, str, int]
#: status, reason, headers, body, truncated, content coding (lower case; b"" for none)
Answer = tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool, bytes]

_MAX_HEAD = 64 * 1024
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE = range(7)
_NO_BODY = frozenset({204, 304})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one answer at a time into ``waiter``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self.waiter: asyncio.Future[Answer] | None = None
        self._buffer = bytearray()
        self._cap = 0
        self._state = _HEAD
        self._head_only = False
        self._remaining = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._coding = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self._state == _UNTIL_CLOSE:
            self._finish(truncated=False)
            return
        failure = PeerClosedError("connection closed before a complete answer")
        failure.__cause__ = exc
        waiter.set_exception(failure)

    def expect(self, waiter: asyncio.Future[Answer], cap: int, head_only: bool) -> None:
        """Parse the next answer into ``waiter``, keeping at most ``cap`` body bytes."""
        self.waiter = waiter
        self._cap = cap
        self._head_only = head_only
        self._state = _HEAD
        self._parts = []
        self._size = 0

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():  # nothing asked: a stray byte spoils the connection
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            return
        self._buffer += data
        try:
            self._advance()
        except (ValueError, IndexError, zlib.error) as exc:
            self.abort()
            if not waiter.done():
                failure = AnswerMalformedError("malformed answer")
                failure.__cause__ = exc
                waiter.set_exception(failure)

    def _advance(self) -> None:
        steps = (
            self._step_head,
            self._step_length,
            self._step_chunk_size,
            self._step_chunk_data,
            self._step_chunk_end,
            self._step_trailer,
            self._step_until_close,
        )
        while self.waiter is not None and not self.waiter.done():
            if not steps[self._state]():  # each step: False when it needs more bytes
                return

    def _line(self, sep: bytes, what: str) -> bytes | None:
        """Take the bytes before ``sep`` (and ``sep``) off the buffer; None until ``sep``
        arrives, and a ``ValueError`` when what waits for it grows past ``_MAX_HEAD``."""
        buffer = self._buffer
        end = buffer.find(sep)
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                raise ValueError(f"{what} too long")
            return None
        line = bytes(buffer[:end])
        del buffer[: end + len(sep)]
        return line

    def _step_head(self) -> bool:
        head = self._line(b"\r\n\r\n", "answer head")
        if head is None:
            return False
        self._parse_head(head)
        return True

    def _step_length(self) -> bool:
        remaining = self._remaining
        if remaining <= self._cap - self._size:
            if len(self._buffer) < remaining:
                return False
            self._take(remaining)
            self._finish(truncated=False)
            return True
        need = self._cap - self._size + 1  # longer than the cap: keep cap bytes, drop the rest
        if len(self._buffer) < need:
            return False
        self._take(need)
        self._finish(truncated=True)
        return True

    def _step_chunk_size(self) -> bool:
        line = self._line(b"\r\n", "chunk size line")
        if line is None:
            return False
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size < 0:
            raise ValueError("negative chunk size")
        self._remaining = size
        self._state = _CHUNK_DATA if size else _TRAILER
        return True

    def _step_chunk_data(self) -> bool:
        if not self._buffer:
            return False
        taken = min(len(self._buffer), self._remaining)
        self._take(taken)
        self._remaining -= taken
        if self._size > self._cap:
            self._finish(truncated=True)
        elif not self._remaining:
            self._state = _CHUNK_END
        return True

    def _step_chunk_end(self) -> bool:
        buffer = self._buffer
        if len(buffer) < 2:
            return False
        if buffer[:2] != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
        del buffer[:2]
        self._state = _CHUNK_SIZE
        return True

    def _step_trailer(self) -> bool:
        buffer = self._buffer
        if buffer[:2] == b"\r\n":
            del buffer[:2]
        else:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            del buffer[: end + 4]
        self._finish(truncated=False)
        return True

    def _step_until_close(self) -> bool:
        if self._buffer:
            self._take(len(self._buffer))
        if self._size > self._cap:
            self._finish(truncated=True)
        return False

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, status, reason = [*lines[0].split(b" ", 2), b"", b""][:3]
        if not version.startswith(b"HTTP/1.") or len(status) != 3:
            raise ValueError("not an HTTP/1.x status line")
        code = int(status)
        headers: list[tuple[bytes, bytes]] = []
        self._coding = b""
        length: int | None = None
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise ValueError("malformed header line")
            value = value.strip()
            headers.append((name, value))
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)
                if length < 0:
                    raise ValueError("negative Content-Length")
            elif lower == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
            elif lower == b"content-encoding":
                self._coding = value.lower()
            elif lower == b"connection":
                keep_alive = b"close" not in value.lower() and (
                    keep_alive or b"keep-alive" in value.lower()
                )
        if 100 <= code < 200:  # an interim answer (100 Continue): the real one follows
            return
        self._status, self._reason, self._headers = code, reason, headers
        self.reusable = self.reusable and keep_alive
        self._begin_body(code, chunked, length)

    def _begin_body(self, code: int, chunked: bool, length: int | None) -> None:
        if self._head_only or code in _NO_BODY:
            self._finish(truncated=False)
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._remaining = length
            self._state = _LENGTH
        else:
            self.reusable = False
            self._state = _UNTIL_CLOSE

    def _take(self, count: int) -> None:
        buffer = self._buffer
        self._parts.append(bytes(buffer[:count]))
        del buffer[:count]
        self._size += count

    def _finish(self, *, truncated: bool) -> None:
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if truncated:
            body = body[: self._cap]
            self.reusable = False
        if self._buffer:  # bytes beyond the answer: nothing was pipelined, so the peer is off
            self.reusable = False
        self._state = _HEAD
        self._parts = []
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(
                (self._status, self._reason, self._headers, body, truncated, self._coding)
            )


def _decoded(
    coding: bytes, headers: list[tuple[bytes, bytes]], body: bytes, cap: int, truncated: bool
) -> tuple[list[tuple[bytes, bytes]], bytes, bool]:
    """The body without its gzip/deflate coding (capped after decoding), and its headers."""
    if not coding:
        return headers, body, truncated
    if coding not in (b"gzip", b"x-gzip", b"deflate"):
        return headers, body, truncated
    wbits = 47 if coding != b"deflate" else 15  # 47: gzip or zlib header, detected
    try:
        try:
            plain = zlib.decompressobj(wbits).decompress(body, cap + 1)
        except zlib.error:
            if coding != b"deflate":
                raise
            plain = zlib.decompressobj(-15).decompress(body, cap + 1)  # raw deflate
    except zlib.error as exc:
        raise AnswerMalformedError("undecodable content coding") from exc
    if len(plain) > cap:
        return without_encoding(headers), plain[:cap], True
    return without_encoding(headers), plain, truncated


def _head(method: str, url: URL, pairs: tuple[tuple[str, str], ...], size: int) -> bytes:
    """The request head: request line, Host unless given, the pairs, Content-Length unless given.

    Built per request in one pass: every request carries its own ``X-Request-Id``
    (``delivery.jobs``), so no two heads are alike."""
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1"]
    has_host = has_length = False
    for name, value in pairs:
        lower = name.lower()
        if lower == "host":
            has_host = True
        elif lower == "content-length":
            has_length = True
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.insert(1, f"Host: {url.raw_authority}")
    if not has_length and (size or method in _BODY_METHODS):
        lines.append(f"Content-Length: {size}")
    lines.append("\r\n")
    text = "\r\n".join(lines)
    breaks = len(lines)  # one after each line, two after the last
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise AccountConfigError("a request header holds a line break")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise AccountConfigError("a request header is not Latin-1 text") from None


async def _unpacked(
    request: httpx.Request,
) -> tuple[URL, tuple[tuple[str, str], ...], bytes]:
    """URL, header pairs (Host and Content-Length included, as httpx sets them) and body."""
    try:
        body = request.content
    except httpx.RequestNotRead:  # a streamed body: buffer it (requests are small)
        body = await request.aread()
    pairs = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw)
    return URL(str(request.url), encoded=True), pairs, body


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class NativeSender:
    """Sends over its own HTTP/1.1 connections (measured in docs/http-transport.md)."""

    def __init__(
        self,
        *,
        max_connections: int = 512,
        keepalive_timeout: float = 30.0,
        max_response_bytes: int = 1 << 20,
        ssl_context: ssl.SSLContext | None = None,
        egress: EgressPlan | None = None,
        proxied: _Proxied | None = None,
    ) -> None:
        """``proxied`` sends what ``egress`` routes through a forward proxy (the aiohttp sender)."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._keepalive = keepalive_timeout
        self._cap = max_response_bytes
        self._egress = egress
        self._proxied = proxied
        self._tls: dict[Any, ssl.SSLContext] = {}
        if egress is not None:  # load every CA bundle now: a bad one fails at start
            for route in {egress.default, *egress.routes()}:
                self._tls_for(route.ca_bundle)
        self._default_tls = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0  # connections open or opening, idle ones included
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def _tls_for(self, ca_bundle: Any) -> ssl.SSLContext:
        found = self._tls.get(ca_bundle)
        if found is None:
            found = self._tls[ca_bundle] = tls_context(ca_bundle)
        return found

    async def send(
        self, request: PlainRequest | httpx.Request, *, timeout: float
    ) -> httpx.Response:
        if self._closed:
            raise RuntimeError("NativeSender is closed")
        answer_to: httpx.Request | None = None
        if isinstance(request, PlainRequest):
            url, pairs, body = request.url, request.header_pairs, request.content
        else:
            url, pairs, body = await _unpacked(request)
            answer_to = request
        scheme = url.scheme
        if scheme not in ("http", "https") or not url.raw_host:
            raise AccountConfigError("the request URL cannot be sent (unsupported URL)")
        tls: ssl.SSLContext | None = None
        if self._egress is not None:
            route = self._egress.for_url(url)
            if route.proxy is not None and self._proxied is not None:
                return await self._proxied.send(request, timeout=timeout)
            if scheme == "https" and route.ca_bundle is not None:
                tls = self._tls_for(route.ca_bundle)
        if scheme == "https" and tls is None:
            tls = self._default_tls or self._tls_for(None)
        method = request.method
        head = _head(method, url, pairs, len(body))
        origin = (scheme, url.raw_host, url.port or (443 if scheme == "https" else 80))
        status, reason, headers, content, truncated, _coding = await self._exchange(
            origin, tls, head + body if body else head, method == "HEAD", timeout
        )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason
        if truncated:
            extensions[BODY_TRUNCATED] = True
        return loaded_response(
            status, headers=headers, content=content, request=answer_to, extensions=extensions
        )

    async def _exchange(
        self,
        origin: Origin,
        tls: ssl.SSLContext | None,
        data: bytes,
        head_only: bool,
        timeout: float,
    ) -> Answer:
        """Write ``data`` on a pooled connection and read its answer, all within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        written = False
        connection: _Connection | None = None
        try:
            connection = await self._acquire(origin, tls, loop, deadline)
            written = True  # from here on the provider may have the request
            waiter: asyncio.Future[Answer] = loop.create_future()
            connection.expect(waiter, self._cap, head_only)
            assert connection.transport is not None
            connection.transport.write(data)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                status, reason, headers, content, truncated, coding = await waiter
            finally:
                timer.cancel()
            headers, content, truncated = _decoded(coding, headers, content, self._cap, truncated)
        except (
            OSError,
            TimeoutError,
            ConnectFailedError,
            PeerClosedError,
            AnswerMalformedError,
        ) as exc:
            self._drop(connection)
            raise delivery_error(exc, timeout=timeout, written=written) from exc
        except BaseException:
            self._drop(connection)
            raise
        self._release(origin, connection, loop)
        return status, reason, headers, content, truncated, coding

    async def _acquire(
        self,
        origin: Origin,
        tls: ssl.SSLContext | None,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
    ) -> _Connection:
        """A live idle connection to ``origin``, else a new one (at the cap: after a slot frees)."""
        while True:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if not connection.closed and loop.time() - connection.idle_since < self._keepalive:
                    return connection
                self._forget(connection)
            if self._open >= self._max_connections and not self._evict_idle():
                await self._wait_for_slot(loop, deadline)
                continue
            self._open += 1
            _scheme, host, port = origin
            try:
                async with asyncio.timeout_at(deadline):
                    _transport, connection = await loop.create_connection(
                        _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                    )
            except BaseException as exc:
                self._open -= 1
                self._wake()
                if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                    # refused, unreachable, DNS (gaierror), TLS (SSLError)
                    raise ConnectFailedError("could not connect") from exc
                raise
            return connection

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        slot: asyncio.Future[None] = loop.create_future()
        self._waiting.append(slot)
        timer = loop.call_at(deadline, _expire, slot)
        try:
            await slot
        except BaseException:
            if slot.done() and not slot.cancelled() and slot.exception() is None:
                self._wake()  # we were woken but leave: pass the turn on
            raise
        finally:
            timer.cancel()

    def _wake(self) -> None:
        while self._waiting:
            slot = self._waiting.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    def _evict_idle(self) -> bool:
        """Close one idle connection of any origin to make room; False if none is idle."""
        for idle in self._idle.values():
            if idle:
                connection = idle.pop(0)
                connection.abort()
                self._open -= 1
                return True
        return False

    def _forget(self, connection: _Connection) -> None:
        connection.abort()
        self._open -= 1

    def _drop(self, connection: _Connection | None) -> None:
        if connection is not None:
            connection.waiter = None
            self._forget(connection)
            self._wake()

    def _release(
        self, origin: Origin, connection: _Connection, loop: asyncio.AbstractEventLoop
    ) -> None:
        if connection.reusable and not connection.closed and not self._closed:
            connection.idle_since = loop.time()
            self._idle.setdefault(origin, []).append(connection)
        else:
            self._forget(connection)
        self._wake()

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()
        for slot in self._waiting:
            if not slot.done():
                slot.set_exception(RuntimeError("NativeSender is closed"))
        self._waiting.clear()
        if self._proxied is not None:
            with contextlib.suppress(Exception):
                await self._proxied.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


__all__ = ["NativeSender"]
