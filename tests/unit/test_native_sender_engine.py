"""The engine over the native HTTP client against a server that misbehaves per event: every
way an answer can go wrong on the wire (garbage, a close without answer, a reset, a broken
chunk, an undecodable gzip body) still ends each input record in exactly one outcome record,
and every partition's commit point reaches the end."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator

import orjson
import pytest
from yarl import URL

from connector.config import LimitSettings, OutageSettings
from connector.contract.events import OrderStatusChanged
from connector.contract.outbound import PlainRequest
from connector.http.native import NativeSender
from connector.kafka.consumer import TP
from connector.providers.base import BuiltRequest, ProviderOutcome
from tests.support.engine_fakes import (
    INPUT,
    FakeProvider,
    FakeSink,
    FakeSource,
    make_engine,
    make_partitions,
    run_engine_until,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
CHUNKED_OK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
BAD_CHUNK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
BAD_GZIP = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot-gzip!"
GARBAGE = b"NOT-HTTP at all\r\n\r\n"
# What the server does for an order, by the order's number modulo len(MODES).
MODES = ("ok", "chunked", "garbage", "close", "reset", "bad-chunk", "bad-gzip")
FAILING = {"garbage", "close", "reset", "bad-chunk", "bad-gzip"}


def mode_of(order: str) -> str:
    return MODES[int(order[1:]) % len(MODES)]


class Misbehaving:
    """A raw HTTP/1.1 server answering each request as its order's mode says."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                event = orjson.loads(await reader.readexactly(length))
                self.requests[event["event"]] += 1
                mode = mode_of(event["order"])
                if mode in ("ok", "chunked"):
                    writer.write(OK if mode == "ok" else CHUNKED_OK)
                    await writer.drain()
                    continue
                if mode == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if mode != "close":
                    writer.write({"garbage": GARBAGE, "bad-chunk": BAD_CHUNK}.get(mode, BAD_GZIP))
                    await writer.drain()
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


class ServerProvider(FakeProvider):
    """The fake provider, sending to the misbehaving server."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self._url = URL(base + "/acct/send")

    def build_request(self, event: OrderStatusChanged) -> BuiltRequest | ProviderOutcome:
        body = orjson.dumps({"order": event.order_id, "event": event.event_id})
        return BuiltRequest(PlainRequest("POST", self._url, (("Host", "provider"),), body))


@pytest.fixture
async def misbehaving() -> AsyncIterator[tuple[Misbehaving, str]]:
    made = Misbehaving()
    server = await asyncio.start_server(made.handle, "127.0.0.1", 0)
    try:
        yield made, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_every_wire_failure_of_the_native_client_ends_in_exactly_one_outcome(
    misbehaving: tuple[Misbehaving, str],
) -> None:
    server, base = misbehaving
    parts = make_partitions(orders=21, events_per_order=3, partitions=3)
    total = sum(len(records) for records in parts.values())
    source, sink = FakeSource(parts), FakeSink()
    async with NativeSender(max_connections=8) as sender:
        engine = make_engine(
            source,
            sink,
            sender,  # type: ignore[arg-type]
            providers={"acct": ServerProvider(base)},
            # Most orders here fail on purpose: keep the account out of outage mode (which
            # would park them for probes) and retry an ambiguous attempt at once (no settle
            # window), so each failure runs through its retries within the test.
            limits=LimitSettings(
                commit_interval_s=0.01,
                drain_timeout_s=2,
                settle_window_s=0.0,
                outage=OutageSettings(enabled=False),
            ),
        )
        ends = {TP(INPUT, p): len(records) for p, records in parts.items()}
        await run_engine_until(
            engine, source, lambda: len(sink.records) >= total and source.commits == ends
        )
    assert engine.failure is None
    results, errors = sink.by_topic("res"), sink.by_topic("err")
    seen = Counter(
        (r["source"]["partition"], r["source"]["offset"])  # type: ignore[index]
        for r in results + errors
    )
    every = {(p, r.offset) for p, records in parts.items() for r in records}
    assert seen == Counter(dict.fromkeys(every, 1))  # exactly one outcome per input record
    for record in results:  # a failing order's older events are superseded by its newest
        failing = mode_of(str(record["order_id"])) in FAILING
        assert record["outcome"] == ("superseded" if failing else "accepted"), record
    assert errors, "the failing orders must end in error records"
    for record in errors:
        assert mode_of(str(record["order_id"])) in FAILING, record
        assert record["error_class"] == "retries_exhausted", record
    # Every failing mode reached the server, and the working ones were all accepted.
    modes = {mode_of(event.rsplit("-", 1)[0]) for event in server.requests}
    assert modes == set(MODES)
    accepted = sum(1 for r in results if r["outcome"] == "accepted")
    assert accepted == sum(
        1 for records in parts.values() for r in records if mode_of(r.key.decode()) not in FAILING
    )
