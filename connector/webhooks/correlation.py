"""Provider message id -> (event, order, account) correlation, so a webhook that reaches any
replica can be tied to the event and order that caused the message.

Written to the compacted ``order.status.correlation`` topic (key = provider message id) when a
send is accepted; every replica with webhook routes follows that topic from the beginning into
a bounded in-memory cache. This module holds the record, the cache and the writer; it does not
consume Kafka itself (``connector.kafka.tail.TopicTail`` feeds ``CorrelationCache.load``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import Final

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from connector.contract.records import ResultRecord, SourceCoordinates
from connector.kafka.consumer import ConsumedRecord
from connector.kafka.record_sink import RecordSink

CORRELATION_SCHEMA_VERSION: Final = 1
# The fields a correlation record takes unchanged from the accepted send's result record.
_FROM_RESULT: Final = ("provider", "account", "event_id", "order_id", "source", "traceparent")

log = structlog.get_logger("connector.webhooks.correlation")


class CorrelationRecord(BaseModel):
    """One record on ``order.status.correlation`` (key = ``message_id``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = CORRELATION_SCHEMA_VERSION
    message_id: str
    provider: str
    account: str
    event_id: str
    order_id: str
    source: SourceCoordinates | None = None
    traceparent: str | None = None
    recorded_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of_result(cls, result: ResultRecord) -> CorrelationRecord | None:
        if not (result.provider_message_id and result.provider and result.account):
            return None
        if result.event_id is None or result.order_id is None:
            return None
        copied = {name: getattr(result, name) for name in _FROM_RESULT}
        return cls(message_id=result.provider_message_id, **copied)

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


class CorrelationCache:
    """Bounded (oldest dropped first) map of message id -> ``CorrelationRecord``.

    ``wait_for`` lets a webhook that overtook its own correlation record wait for it briefly.
    """

    def __init__(self, *, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CorrelationRecord] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[CorrelationRecord]]] = {}
        self.undecodable = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, message_id: str) -> CorrelationRecord | None:
        return self._entries.get(message_id)

    def put(self, record: CorrelationRecord) -> None:
        entries = self._entries
        entries[record.message_id] = record
        entries.move_to_end(record.message_id)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        for waiter in self._waiters.pop(record.message_id, ()):
            if not waiter.done():
                waiter.set_result(record)

    def load(self, batch: Iterable[ConsumedRecord]) -> None:
        """Feed records read from the correlation topic (tombstones and junk are skipped)."""
        for consumed in batch:
            if consumed.value is None:
                continue
            try:
                self.put(CorrelationRecord.model_validate_json(consumed.value))
            except ValidationError:
                self.undecodable += 1

    async def wait_for(
        self, message_ids: Sequence[str], timeout_s: float
    ) -> CorrelationRecord | None:
        """The record of the first of ``message_ids`` known now or within ``timeout_s``."""
        for message_id in message_ids:
            found = self._entries.get(message_id)
            if found is not None:
                return found
        if timeout_s <= 0 or not message_ids:
            return None
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[CorrelationRecord]] = []
        for message_id in message_ids:
            future: asyncio.Future[CorrelationRecord] = loop.create_future()
            self._waiters.setdefault(message_id, []).append(future)
            futures.append(future)
        try:
            done, _ = await asyncio.wait(
                futures, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            return next(iter(done)).result() if done else None
        finally:
            for message_id, future in zip(message_ids, futures, strict=True):
                future.cancel()
                waiters = self._waiters.get(message_id)
                if waiters is not None:
                    waiters[:] = [w for w in waiters if w is not future]
                    if not waiters:
                        del self._waiters[message_id]


@dataclass(slots=True, eq=False)
class CorrelationWriter:
    """``Engine(on_accepted=writer.record)``: writes the correlation of an accepted send and
    waits for the broker's ack (a few tries), before the result record is published.

    It never raises: a correlation that cannot be written is logged and counted; the webhook
    then still carries the event id (Meta, YCloud) but may lack the order id.
    """

    sink: RecordSink
    topic: str
    _: KW_ONLY
    cache: CorrelationCache | None = None
    attempts: int = 3
    written: int = field(default=0, init=False)
    failed: int = field(default=0, init=False)

    async def record(self, result: ResultRecord) -> None:
        correlation = CorrelationRecord.of_result(result)
        if correlation is None:
            return
        if self.cache is not None:
            self.cache.put(correlation)  # this replica knows at once; others via the topic
        value, key = correlation.to_bytes(), correlation.message_id.encode()
        for attempt in range(1, self.attempts + 1):
            try:
                await asyncio.shield(await self.sink.send(self.topic, value, key=key))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "correlation_write_failed", attempt=attempt, error=type(exc).__name__,
                    event_id=correlation.event_id, message_id=correlation.message_id,
                )  # fmt: skip
                await asyncio.sleep(0.2 * attempt)
                continue
            self.written += 1
            return
        self.failed += 1
