"""Library failures of a provider request as our errors: the one place where aiohttp, httpx and
OS exceptions are mapped (to ``AccountConfigError`` or ``TransportFailure``). Pure; never copies a
library message (it may quote the URL, and Z-API carries its token in the path).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl

import aiohttp
import httpx

from connector.errors import AccountConfigError, DeliveryError, TransportFailure


class ConnectFailedError(Exception):
    """The native client could not open a connection (the cause is the OS or TLS error)."""


class PeerClosedError(Exception):
    """The native client's connection closed before a complete answer arrived."""


class AnswerMalformedError(Exception):
    """The native client could not parse the answer (head, chunking or content coding)."""


def delivery_error(exc: BaseException, *, timeout: float, written: bool = True) -> DeliveryError:
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
    if isinstance(
        exc,
        ConnectFailedError | aiohttp.ClientConnectorError | httpx.ConnectError | httpx.ProxyError,
    ):
        detail = f"connect: {_os_reason(exc)} ({name})"
        return TransportFailure(detail, kind="connect", written=False)
    if isinstance(exc, PeerClosedError | aiohttp.ServerDisconnectedError):
        detail = f"disconnected: server closed the connection ({name})"
        return TransportFailure(detail, kind="disconnected", written=written)
    if isinstance(
        exc,
        AnswerMalformedError
        | aiohttp.ClientPayloadError
        | aiohttp.ClientResponseError
        | httpx.ProtocolError,
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
