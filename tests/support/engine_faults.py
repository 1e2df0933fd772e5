"""Port fakes that fail on purpose, for fault-injection tests of the engine.

A record is marked for a fault at one stage by its event's ``description`` (``fault:<stage>``),
or for ``route`` by naming the account ``route-fault``; ``decode`` faults are injected by
``faulty_decode`` (a drop-in for ``connector.contract.events.decode_event``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import orjson
from yarl import URL

from connector.contract.events import OrderStatusChanged, decode_event
from connector.contract.outbound import PlainRequest
from connector.core.ledger import Delivery, PartitionLedger
from connector.errors import AccountConfigError, PublishRefusedError
from connector.providers.base import BuiltRequest, OutcomeKind, ProviderOutcome
from tests.support.engine_fakes import FakeSender, FakeSettings, FakeSink

STAGES = ("decode", "route", "build", "send", "classify", "ledger", "record", "publish")
ROUTE_FAULT_ACCOUNT = "route-fault"


class InjectedFault(RuntimeError):  # noqa: N818 (what the tests call it)
    """The exception every fake raises, so a test can tell injected failures from real ones."""


def marked_event(order: str, seq: int, stage: str | None) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{order}-{seq}",
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            "order_id": order,
            "status": "processing",
            "sequence": seq,
            "account": ROUTE_FAULT_ACCOUNT if stage == "route" else "acct",
            "description": f"fault:{stage}" if stage else None,
        }
    )


def faulty_decode(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] = ()
) -> OrderStatusChanged:
    if value is not None and b"fault:decode" in value:
        raise InjectedFault("decode failed")
    return decode_event(value, headers)


class FaultyProviders(Mapping[str, Any]):
    """The engine's provider table; looking up ``route-fault`` raises (a broken route)."""

    def __init__(self, providers: dict[str, Any]) -> None:
        self._providers = providers

    def __getitem__(self, name: str) -> Any:
        if name == ROUTE_FAULT_ACCOUNT:
            raise InjectedFault("route lookup failed")
        return self._providers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)


class FaultyProvider:
    """Fails building or classifying marked events; a ``record`` fault answers with a
    message id no record can hold (the result record cannot be built)."""

    kind: ClassVar[str] = "fake"

    def __init__(self) -> None:
        self.settings = FakeSettings()

    @property
    def account(self) -> str:
        return "acct"

    def target_key(self, event: OrderStatusChanged) -> str:
        return f"fake:{event.order_id}"

    def build_request(self, event: OrderStatusChanged) -> BuiltRequest | ProviderOutcome:
        if event.description == "fault:build":
            raise InjectedFault("build failed")
        body = {"order": event.order_id, "event": event.event_id, "fault": event.description}
        return BuiltRequest(
            PlainRequest("POST", URL("http://fake.invalid/send"), (), orjson.dumps(body))
        )

    def classify(self, response: httpx.Response, *, attempt: int) -> ProviderOutcome:
        fault = orjson.loads(response.request.content)["fault"]
        if fault == "fault:classify":
            raise InjectedFault("classify failed")
        message_id: Any = object() if fault == "fault:record" else "m"
        return ProviderOutcome(OutcomeKind.ACCEPTED, message_id=message_id, http_status=200)


class FaultySender(FakeSender):
    """Raises for marked events: ``AccountConfigError`` and an unexpected error in turn."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__(seed=seed, max_latency=0.001)
        self._turn = 0

    async def send(self, request: PlainRequest, *, timeout: float) -> httpx.Response:
        if orjson.loads(request.content)["fault"] == "fault:send":
            self._turn += 1
            if self._turn % 2:
                raise AccountConfigError("the request URL cannot be sent (InvalidURL)")
            raise InjectedFault("send failed")
        return await super().send(request, timeout=timeout)


class FaultyLedger(PartitionLedger):
    """Writing the delivery of a ``fault:ledger`` event fails."""

    marked: ClassVar[set[str]] = set()

    def record(self, order_id: str, target: str, delivery: Delivery) -> bytes:
        if delivery.event_id in self.marked:
            raise InjectedFault("ledger write failed")
        return super().record(order_id, target, delivery)


class RefusingSink(FakeSink):
    """Refuses (for good) the first outcome of each event whose id ``refuse`` accepts, and
    every record on ``refuse_topic`` (to test the fallback failing too), raising ``error``."""

    def __init__(
        self,
        refuse: Callable[[str], bool] = lambda _: False,
        refuse_topic: str | None = None,
        error: type[Exception] = PublishRefusedError,
    ) -> None:
        super().__init__()
        self._refuse = refuse
        self._refuse_topic = refuse_topic
        self._error = error
        self._refused: set[str] = set()
        self.refusals = 0

    async def admit(
        self, topic: str, value: bytes, key: bytes | None
    ) -> asyncio.Future[object] | None:
        event_id = orjson.loads(value).get("event_id")
        first = isinstance(event_id, str) and event_id not in self._refused
        if topic == self._refuse_topic or (first and self._refuse(event_id)):
            self._refused.add(str(event_id))
            self.refusals += 1
            raise self._error(f"MessageSizeTooLargeError: {len(value)} bytes")
        return None
