"""The HTTP senders against real loopback servers: round trips, failures, caps, pooling.

Every test runs against every sender: aiohttp (the default), httpx (the fallback) and the native
HTTP/1.1 client (``http.client: native``), which must keep the same contract.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx
import pytest
from aiohttp import test_utils, web

from connector.errors import AccountConfigError, RetryableDeliveryError, TransportFailure
from connector.http.sender import (
    BODY_TRUNCATED,
    AiohttpSender,
    HttpSender,
    HttpxSender,
    NativeSender,
    create_sender,
    fast_responses_active,
)
from connector.providers.request import Endpoint

SECRET_PATH = "/instances/INSTANCE-SECRET-123/token/TOKEN-SECRET-456/send-text"
SECRET_HEADER = "HEADER-SECRET-789"
SECRETS = ("INSTANCE-SECRET-123", "TOKEN-SECRET-456", SECRET_HEADER)
CAP = 64 * 1024
BIG = 300 * 1024


def secret_request(base: str) -> httpx.Request:
    return httpx.Request(
        "POST",
        base + SECRET_PATH + "?token=TOKEN-SECRET-456",
        headers={"Client-Token": SECRET_HEADER},
        json={"phone": "5511999990000", "message": "shipped"},
    )


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), getattr(exc, "detail", "")):
        for secret in SECRETS:
            assert secret not in text, text
        assert "127.0.0.1" not in text, text


@pytest.fixture(params=["aiohttp", "httpx", "native"])
async def sender(request: pytest.FixtureRequest) -> AsyncIterator[HttpSender]:
    made: AiohttpSender | HttpxSender | NativeSender
    if request.param == "aiohttp":
        made = AiohttpSender(max_connections=4, max_response_bytes=CAP)
    elif request.param == "native":
        made = NativeSender(max_connections=4, max_response_bytes=CAP)
    else:
        made = HttpxSender(max_connections=4, max_response_bytes=CAP)
    async with made:
        yield made


class Web:
    """A real aiohttp.web server with the handlers the tests need."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.hanging = False
        self.peers: set[tuple[str, int]] = set()
        app = web.Application()
        app.router.add_route("*", "/echo/{tail:.*}", self.echo)
        app.router.add_route("*", SECRET_PATH, self.hang)
        app.router.add_get("/hang", self.hang)
        app.router.add_post("/stall-body", self.stall_body)
        app.router.add_post("/big", self.big)
        app.router.add_post("/big-chunked", self.big_chunked)
        app.router.add_post("/gzip", self.gzipped)
        app.router.add_post("/gzip-bomb", self.gzip_bomb)
        app.router.add_post("/status/{code}", self.status)
        self.server = test_utils.TestServer(app, host="127.0.0.1", port=0)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def echo(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.add(peer)
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "target": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body": body.decode(),
            },
            status=201,
            headers={"X-Answer": "yes"},
        )

    async def hang(self, request: web.Request) -> web.Response:
        self.hanging = True
        await self.release.wait()
        return web.json_response({})

    async def stall_body(self, request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(status=200)
        answer.content_length = 100
        await answer.prepare(request)
        await answer.write(b'{"partial":')
        await self.release.wait()
        return answer

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * BIG, content_type="application/octet-stream")

    async def big_chunked(self, request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(status=200)
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        for _ in range(BIG // 8192):
            await answer.write(b"y" * 8192)
        await answer.write_eof()
        return answer

    async def gzipped(self, request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b'{"id": "wamid.1", "ok": true}'),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def gzip_bomb(self, request: web.Request) -> web.Response:
        return web.Response(  # ~1 KiB on the wire, 4 MiB once decoded
            body=gzip.compress(b"0" * (4 << 20)),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"code": 131000}}, status=int(request.match_info["code"])
        )


@pytest.fixture
async def server() -> AsyncIterator[Web]:
    made = Web()
    await made.server.start_server()
    try:
        yield made
    finally:
        made.release.set()
        await made.server.close()


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """Starts plain TCP servers whose handler misbehaves on purpose; returns their base URL."""
    servers: list[asyncio.Server] = []

    async def start(handler: RawHandler) -> str:
        made = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(made)
        return f"http://127.0.0.1:{made.sockets[0].getsockname()[1]}"

    yield start
    for made in servers:
        made.close()
        await made.wait_closed()


async def failure_of(sender: HttpSender, base: str, timeout: float = 5) -> TransportFailure:
    """The transport failure sending a secret-bearing request to ``base`` ends in; its text
    holds none of the request's secrets."""
    with anyio.fail_after(5), pytest.raises(TransportFailure) as caught:
        await sender.send(secret_request(base), timeout=timeout)
    assert_no_secret(caught.value)
    return caught.value


async def read_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def test_round_trip_carries_method_path_query_headers_and_body(
    sender: HttpSender, server: Web
) -> None:
    request = httpx.Request(
        "PUT",
        server.url("/echo/v21.0/123/messages"),
        params={"x": "1", "y": "two words"},
        headers={"Authorization": "Bearer abc", "X-Custom": "value"},
        json={"order": {"status": "shipped"}},
    )
    with anyio.fail_after(5):
        answer = await sender.send(request, timeout=5)

    assert answer.status_code == 201
    assert answer.headers["x-answer"] == "yes"
    assert answer.request is request
    seen = answer.json()
    assert seen["method"] == "PUT"
    assert seen["path"] == "/echo/v21.0/123/messages"
    assert seen["target"] == request.url.raw_path.decode()  # path and query byte for byte
    assert "x=1&y=two" in seen["target"]
    assert json.loads(seen["body"]) == {"order": {"status": "shipped"}}
    headers = [(k.lower(), v) for k, v in seen["headers"]]
    assert ("authorization", "Bearer abc") in headers
    assert ("x-custom", "value") in headers
    assert ("content-type", "application/json") in headers
    assert [v for k, v in headers if k == "content-length"] == [str(len(request.content))]
    assert [k for k, _ in headers].count("host") == 1
    assert not any(k == "accept-encoding" for k, _ in headers)
    assert BODY_TRUNCATED not in answer.extensions


async def test_a_plain_request_is_sent_as_it_is(sender: HttpSender, server: Web) -> None:
    """The adapters' ``PlainRequest`` (no httpx in between on the aiohttp sender) goes out with
    its method, target, headers (one Host) and body byte for byte."""
    endpoint = Endpoint(
        server.url("/echo/v21.0/123/messages?x=1"), [("Authorization", "Bearer abc")]
    )
    body = b'{"order":{"status":"shipped"}}'
    request = endpoint.post(body).with_headers(("X-Request-Id", "evt-1"))
    with anyio.fail_after(5):
        answer = await sender.send(request, timeout=5)

    assert answer.status_code == 201
    assert answer.headers["x-answer"] == "yes"
    seen = answer.json()
    assert seen["method"] == "POST"
    assert seen["target"] == "/echo/v21.0/123/messages?x=1"
    assert seen["body"].encode() == body
    headers = [(k.lower(), v) for k, v in seen["headers"]]
    assert ("authorization", "Bearer abc") in headers
    assert ("x-request-id", "evt-1") in headers
    assert [v for k, v in headers if k == "content-length"] == [str(len(body))]
    assert [k for k, _ in headers].count("host") == 1
    assert not any(k == "accept-encoding" for k, _ in headers)


async def test_a_plain_request_that_times_out_keeps_its_secrets(
    sender: HttpSender, server: Web
) -> None:
    endpoint = Endpoint(server.url(SECRET_PATH), [("Client-Token", SECRET_HEADER)])
    request = endpoint.post(b"{}")
    assert all(secret not in repr(request) for secret in SECRETS)
    with anyio.fail_after(5), pytest.raises(TransportFailure) as caught:
        await sender.send(request, timeout=0.3)
    assert caught.value.kind == "timeout"
    assert caught.value.written
    assert_no_secret(caught.value)


async def test_error_statuses_are_returned_not_raised(sender: HttpSender, server: Web) -> None:
    with anyio.fail_after(5):
        answer = await sender.send(httpx.Request("POST", server.url("/status/503")), timeout=5)
    assert answer.status_code == 503
    assert answer.json() == {"error": {"code": 131000}}


async def test_timeout_without_answer_is_a_transport_failure(
    sender: HttpSender, server: Web
) -> None:
    with anyio.fail_after(5), pytest.raises(TransportFailure) as caught:
        await sender.send(secret_request(server.url("")), timeout=0.3)
    assert caught.value.kind == "timeout"
    assert caught.value.written  # the provider has the request: the outcome is ambiguous
    assert caught.value.retriable
    assert isinstance(caught.value, RetryableDeliveryError)
    assert_no_secret(caught.value)


@pytest.mark.parametrize("client", ["aiohttp", "httpx", "native"])
async def test_a_timeout_before_the_request_left_says_it_was_never_written(
    client: str, server: Web
) -> None:
    """Waiting for the only pooled connection times out: nothing reached the provider."""
    made = create_sender(client, max_connections=1)  # type: ignore[arg-type]
    async with made:
        first = asyncio.ensure_future(
            made.send(httpx.Request("GET", server.url("/hang")), timeout=5)
        )
        try:
            await asyncio.sleep(0)  # let the first request take the connection
            with anyio.fail_after(5):
                while not server.hanging:
                    await asyncio.sleep(0.01)
            with anyio.fail_after(5), pytest.raises(TransportFailure) as caught:
                await made.send(httpx.Request("POST", server.url("/echo/x")), timeout=0.3)
        finally:
            server.release.set()
            with anyio.fail_after(5):
                await first
    assert caught.value.kind == "timeout"
    assert not caught.value.written
    assert "not sent" in caught.value.detail


async def test_a_refused_connection_was_never_written(sender: HttpSender) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with anyio.fail_after(5), pytest.raises(TransportFailure) as caught:
        await sender.send(httpx.Request("POST", f"http://127.0.0.1:{port}/x"), timeout=5)
    assert not caught.value.written


async def test_a_reset_after_the_request_arrived_is_written(
    sender: HttpSender, raw_server: Callable[[RawHandler], Awaitable[str]]
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    base = await raw_server(reset)
    failure = await failure_of(sender, base)
    assert failure.written


@pytest.mark.parametrize(
    ("raised", "written"),
    [
        (httpx.ConnectTimeout("x"), False),
        (httpx.ConnectError("x"), False),
        (httpx.PoolTimeout("x"), False),
        (httpx.ReadTimeout("x"), True),
        (httpx.WriteTimeout("x"), True),
        (httpx.RemoteProtocolError("x"), True),
    ],
)
async def test_without_httpcore_traces_httpx_failures_are_judged_by_class(
    raised: Exception, written: bool
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise raised

    async with HttpxSender(transport=httpx.MockTransport(fail)) as mocked:
        with pytest.raises(TransportFailure) as caught:
            await mocked.send(httpx.Request("POST", "http://provider.test/x"), timeout=1)
    assert caught.value.written is written


async def test_httpx_sender_keeps_the_callers_trace_hook(server: Web) -> None:
    seen: list[str] = []

    async def trace(event: str, info: dict[str, object]) -> None:
        seen.append(event)

    request = httpx.Request("POST", server.url("/echo/t"), extensions={"trace": trace})
    async with HttpxSender() as made:
        with anyio.fail_after(5):
            await made.send(request, timeout=5)
    assert any("send_request_headers" in event for event in seen)
    assert request.extensions["trace"] is trace
    plain = httpx.Request("POST", server.url("/echo/u"))
    async with HttpxSender() as made:
        with anyio.fail_after(5):
            await made.send(plain, timeout=5)
    assert "trace" not in plain.extensions


async def test_timeout_covers_a_body_that_stops_arriving(sender: HttpSender, server: Web) -> None:
    with anyio.fail_after(5), pytest.raises(TransportFailure) as caught:
        await sender.send(httpx.Request("POST", server.url("/stall-body")), timeout=0.3)
    assert caught.value.kind == "timeout"


async def test_connection_refused_is_a_transport_failure(sender: HttpSender) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with anyio.fail_after(5), pytest.raises(TransportFailure) as caught:
        await sender.send(secret_request(f"http://127.0.0.1:{port}"), timeout=5)
    assert caught.value.kind == "connect"
    assert "refused" in caught.value.detail.lower()
    assert isinstance(caught.value.__cause__, Exception)  # re-raised from the library error
    assert_no_secret(caught.value)


async def test_connection_reset_is_a_transport_failure(
    sender: HttpSender, raw_server: Callable[[RawHandler], Awaitable[str]]
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # linger 0: the peer sees RST

    base = await raw_server(reset)
    failure = await failure_of(sender, base)
    assert failure.kind in {"connection", "disconnected", "protocol"}


async def test_server_closing_without_answer_is_a_transport_failure(
    sender: HttpSender, raw_server: Callable[[RawHandler], Awaitable[str]]
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.close()

    base = await raw_server(hang_up)
    failure = await failure_of(sender, base)
    assert failure.kind in {"disconnected", "protocol", "connection"}


async def test_garbage_answer_is_a_protocol_failure(
    sender: HttpSender, raw_server: Callable[[RawHandler], Awaitable[str]]
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"NOT-HTTP at all\r\n\r\n")
        await writer.drain()
        writer.close()

    base = await raw_server(garbage)
    failure = await failure_of(sender, base)
    assert failure.kind == "protocol"


@pytest.mark.parametrize(
    "opening",
    [
        b"HTTP/1.1 200 OK\r\nX-Endless: ",  # a head that never ends
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1",  # a chunk size line
    ],
    ids=["head", "chunk-size-line"],
)
async def test_a_line_that_never_ends_is_a_protocol_failure_not_a_wait(
    sender: HttpSender, raw_server: Callable[[RawHandler], Awaitable[str]], opening: bytes
) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(opening + b"0" * (256 * 1024))  # far past any client's head limit
        await writer.drain()
        await reader.read()  # keep the connection open: only the client's limit ends this
        writer.close()

    base = await raw_server(endless)
    failure = await failure_of(sender, base, timeout=30)
    assert failure.kind == "protocol"


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_large_answer_is_capped_and_flagged(
    sender: HttpSender, server: Web, path: str
) -> None:
    with anyio.fail_after(5):
        answer = await sender.send(httpx.Request("POST", server.url(path)), timeout=5)
        assert answer.status_code == 200
        assert len(answer.content) == CAP
        assert answer.extensions[BODY_TRUNCATED] is True
        after = await sender.send(httpx.Request("GET", server.url("/echo/after")), timeout=5)
    assert after.json()["path"] == "/echo/after"  # the pool still works after a cut read


async def test_compressed_answer_arrives_decoded(sender: HttpSender, server: Web) -> None:
    with anyio.fail_after(5):
        answer = await sender.send(httpx.Request("POST", server.url("/gzip")), timeout=5)
    assert answer.json() == {"id": "wamid.1", "ok": True}
    assert "content-encoding" not in answer.headers


async def test_compressed_answer_is_capped_after_decoding(sender: HttpSender, server: Web) -> None:
    with anyio.fail_after(5):
        answer = await sender.send(httpx.Request("POST", server.url("/gzip-bomb")), timeout=5)
    assert len(answer.content) == CAP
    assert answer.extensions[BODY_TRUNCATED] is True


async def test_concurrent_requests_reuse_pooled_connections(
    sender: HttpSender, server: Web
) -> None:
    async def one(i: int) -> int:
        answer = await sender.send(
            httpx.Request("POST", server.url(f"/echo/{i}"), json={"i": i}), timeout=5
        )
        assert answer.json()["path"] == f"/echo/{i}"
        return answer.status_code

    with anyio.fail_after(10):
        for _ in range(3):
            statuses = await asyncio.gather(*(one(i) for i in range(40)))
            assert statuses == [201] * 40
    # 120 requests, at most max_connections=4 sockets, kept alive across the batches
    assert 1 <= len(server.peers) <= 4


async def test_create_sender_names_the_three_clients() -> None:
    aio = create_sender("aiohttp", max_connections=8)
    via_httpx = create_sender("httpx", max_connections=8)
    native = create_sender("native", max_connections=8)
    try:
        assert isinstance(aio, AiohttpSender)
        assert isinstance(via_httpx, HttpxSender)
        assert isinstance(native, NativeSender)
    finally:
        await aio.aclose()
        await via_httpx.aclose()
        await native.aclose()
    with pytest.raises(ValueError, match=r"http\.client"):
        create_sender("requests", max_connections=8)  # type: ignore[arg-type]


def test_errors_are_typed_for_the_retry_policy() -> None:
    failure = TransportFailure("timeout: no complete answer within 1 s", kind="timeout")
    assert failure.written  # the cautious default: it may have reached the provider
    assert failure.retriable
    assert failure.code is None
    assert failure.detail.startswith("timeout")
    assert isinstance(failure, RetryableDeliveryError)


async def test_httpx_sender_accepts_a_mock_transport_for_unit_tests() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, json={"seen": request.url.path})

    async with HttpxSender(transport=httpx.MockTransport(answer)) as mocked:
        got = await mocked.send(httpx.Request("POST", "http://provider.test/v1/x"), timeout=1)
    assert got.status_code == 202
    assert got.json() == {"seen": "/v1/x"}


def test_the_fast_response_matches_the_standard_constructor_on_this_httpx() -> None:
    # If httpx changes its internals the sender falls back to the standard constructor; this
    # test says so loudly instead of letting the fast path silently disappear.
    assert fast_responses_active()


async def test_chunked_answer_with_extensions_and_trailers_is_read_whole(
    sender: HttpSender, raw_server: Callable[[RawHandler], Awaitable[str]]
) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(2):
                await read_head(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                writer.write(b'7;ext=1\r\n{"ok": \r\n')
                await writer.drain()
                writer.write(b"5\r\ntrue}\r\n0\r\nX-Trailer: yes\r\n\r\n")
                await writer.drain()
            await reader.read()  # until the client closes
        finally:
            writer.close()

    base = await raw_server(chunked)
    with anyio.fail_after(5):
        for _ in range(2):  # the connection stays usable after a chunked answer
            answer = await sender.send(httpx.Request("POST", base + "/c"), timeout=5)
            assert answer.json() == {"ok": True}


async def test_an_answer_ending_at_close_is_read_until_the_close(
    sender: HttpSender, raw_server: Callable[[RawHandler], Awaitable[str]]
) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b'HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\n{"queued": ')
        await writer.drain()
        writer.write(b"1}")
        writer.close()

    base = await raw_server(until_close)
    with anyio.fail_after(5):
        first = await sender.send(httpx.Request("POST", base + "/a"), timeout=5)
        second = await sender.send(httpx.Request("POST", base + "/b"), timeout=5)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json() == {"queued": 1}


async def test_a_connection_close_answer_is_not_reused(
    sender: HttpSender, raw_server: Callable[[RawHandler], Awaitable[str]]
) -> None:
    connections = 0

    async def one_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
        finally:
            writer.close()

    base = await raw_server(one_each)
    with anyio.fail_after(5):
        for _ in range(3):
            answer = await sender.send(httpx.Request("POST", base + "/x"), timeout=5)
            assert answer.status_code == 200
    assert connections == 3


async def test_the_native_sender_refuses_a_header_with_a_line_break(server: Web) -> None:
    endpoint = Endpoint(server.url("/echo/x"), [("X-Note", "a\r\nX-Injected: 1")])
    async with NativeSender() as made:
        with anyio.fail_after(5), pytest.raises(AccountConfigError):
            await made.send(endpoint.post(b"{}"), timeout=5)
