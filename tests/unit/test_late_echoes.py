"""Late echoes (issue 11): a provider's refusal of going back (Meta 2046, Zonos "cannot be
moved ... while in" a terminal status) is the harmless echo of a late request when the order's
newest status was already accepted or ambiguously sent; otherwise it stays an error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import anyio
import orjson

from connector.config import LimitSettings
from connector.delivery.engine import Engine
from connector.delivery.flow import Sent
from connector.errors import TransportFailure
from connector.kafka.consumer import ConsumedRecord
from connector.providers.refusals import TransitionRefusal, sent_status, transition_refusal
from connector.providers.zonos import classify_zonos_error
from connector.webhooks import DeliveryStatus, StatusReport
from connector.webhooks.correlation import CorrelationCache
from connector.webhooks.model import ReportError
from connector.webhooks.sink import KafkaWebhookSink
from tests.support.engine_fakes import (
    INPUT,
    FakeProvider,
    FakeSink,
    FakeSource,
    FlakySender,
    event_bytes,
    make_engine,
)

# ------------------------------------------------------------------ pure classification


def test_meta_and_ycloud_2046_is_a_refusal_of_going_back() -> None:
    assert transition_refusal("meta", "2046") == TransitionRefusal()
    assert transition_refusal("meta", 2046) == TransitionRefusal()
    assert transition_refusal("ycloud", "2046") == TransitionRefusal()
    assert transition_refusal("meta", "2047") is None  # a refused cancel: a real error
    assert transition_refusal("meta", None) is None
    assert transition_refusal("zapi", "2046") is None


def test_zonos_cannot_be_moved_while_in_a_terminal_status_names_that_status() -> None:
    text = (
        "Order 99999 cannot be moved to order status: VENDOR_PREPARING_ORDER while in status: "
        "VENDOR_END_OF_DAY_COMPLETE"
    )
    outcome = classify_zonos_error(text)
    assert transition_refusal("zonos", outcome.error_code) == TransitionRefusal(
        "VENDOR_END_OF_DAY_COMPLETE"
    )
    on_hold = classify_zonos_error(
        text.replace("VENDOR_END_OF_DAY_COMPLETE", "IGLOBAL_ORDER_ON_HOLD")
    )
    assert transition_refusal("zonos", on_hold.error_code) is None  # it leaves that by itself
    assert transition_refusal("zonos", "order_cancelled") is None


def test_the_status_a_zonos_request_carries_is_read_from_its_body() -> None:
    body = orjson.dumps({"store": "s", "secret": "x", "orderId": "1", "orderStatus": "VENDOR_X"})
    assert sent_status("zonos", body) == "VENDOR_X"
    assert sent_status("zonos", b"not json") is None
    assert sent_status("meta", body) is None


# ------------------------------------------------------------------ the engine's per-order state


class MetaLikeProvider(FakeProvider):
    """The fake provider under Meta's transition rules (refuses anything after completed)."""

    kind: ClassVar[str] = "meta"


def _record(order: str, seq: int, status: str, offset: int) -> ConsumedRecord:
    return ConsumedRecord(INPUT, 0, offset, order.encode(), event_bytes(order, seq, status=status),
                          (), 0)  # fmt: skip


def _timeout() -> TransportFailure:
    return TransportFailure("timeout: no answer", kind="timeout", written=True)


@asynccontextmanager
async def _running(
    records: list[ConsumedRecord], raises: dict[str, list[Exception]]
) -> AsyncIterator[tuple[Engine, FakeSink]]:
    """The engine with every record's outcome out, still running (a stop forgets the
    partitions' per-order state, as a revocation does)."""
    source, sink = FakeSource({0: records}), FakeSink()
    sender = FlakySender(raises)
    limits = LimitSettings(commit_interval_s=0.01, drain_timeout_s=2, settle_window_s=0.2)
    providers = {"acct": MetaLikeProvider()}
    engine = make_engine(source, sink, sender, limits=limits, providers=providers)
    await engine.on_assigned(source.assignment())
    task = asyncio.create_task(engine.run())
    try:
        with anyio.fail_after(30):
            while len(sink.records) < len(records):
                await asyncio.sleep(0.005)
        yield engine, sink
    finally:
        engine.request_stop()
        with anyio.fail_after(10):
            await task


async def test_a_2046_for_an_older_ambiguous_request_after_completed_is_a_late_echo() -> None:
    records = [
        _record("a", 1, "processing", 0),
        _record("a", 2, "completed", 1),
        _record("b", 1, "completed", 2),
        _record("c", 1, "processing", 3),
        _record("c", 2, "shipped", 4),
        _record("d", 1, "completed", 5),
    ]
    raises: dict[str, list[Exception]] = {"a-1": [_timeout()], "b-1": [_timeout()],
                                          "c-1": [_timeout()]}  # fmt: skip
    async with _running(records, raises) as (engine, sink):
        flow = engine.flow
        outcomes = {r["event_id"]: r["outcome"] for r in sink.by_topic("res")}
        echoes = {
            (event_id, code): flow.late_echo(event_id, "meta", code)
            for event_id in ("a-1", "a-2", "b-1", "c-1", "d-1")
            for code in ("2046", "2047")
        }
        counted = flow.late_echoes
    assert not engine.flow.late_echo("a-1", "meta", "2046")  # forgotten with its partition
    assert outcomes["a-1"] == "superseded"
    # a-1 may land after completed: Meta refuses it, the customer sees "completed"
    assert echoes[("a-1", "2046")]
    # b-1 (completed) was retried after an ambiguous attempt: the second copy is refused
    assert echoes[("b-1", "2046")]
    # the newest status itself refused on its only write: a real error
    assert not echoes[("a-2", "2046")]
    assert not echoes[("d-1", "2046")]
    # the newest is not a status Meta refuses going back from: the refusal is unexplained
    assert not echoes[("c-1", "2046")]
    # a refused cancel is no transition refusal
    assert not any(echo for (_, code), echo in echoes.items() if code == "2047")
    assert counted == 2


class Echoes:
    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.asked: list[tuple[str, str, str | None]] = []

    def late_echo(self, event_id: str, provider_kind: str, error_code: str | None) -> bool:
        self.asked.append((event_id, provider_kind, error_code))
        return self.echo


class NoTemplates:
    def hold_template(self, name: str, language: str | None, reason: str) -> None: ...
    def release_template(self, name: str, language: str | None, *, reason: str) -> None: ...


async def _publish(echo: bool) -> tuple[FakeSink, Echoes]:
    sink, echoes = FakeSink(), Echoes(echo)
    webhooks = KafkaWebhookSink(sink, results_topic="res", errors_topic="err", cache=None,
                                templates=NoTemplates(), echoes=echoes)  # fmt: skip
    report = StatusReport(
        provider="meta", message_id="wamid.1", status=DeliveryStatus.FAILED, dedupe_key="k",
        event_id="a-1", errors=(ReportError("2046", "New order status was not correctly "
                                            "transitioned"),),
    )  # fmt: skip
    await webhooks.publish_reports([report])
    return sink, echoes


async def test_a_late_echo_webhook_is_a_result_and_no_error_record() -> None:
    sink, echoes = await _publish(echo=True)
    assert echoes.asked == [("a-1", "meta", "2046")]
    assert sink.by_topic("err") == []
    (result,) = sink.by_topic("res")
    assert result["report_status"] == "failed"
    assert str(result["detail"]).startswith("late echo")


async def test_a_refusal_that_is_no_echo_stays_an_async_provider_error() -> None:
    sink, _ = await _publish(echo=False)
    (error,) = sink.by_topic("err")
    assert error["error_class"] == "async_provider_error"
    assert error["provider_error_code"] == "2046"


# ------------------------------------------------------------------ a late original's report


class Origins:
    """The engine's remembered ambiguous attempts (``Flow.attempt_origin``) for one event."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id

    def attempt_origin(self, event_id: str) -> Sent | None:
        if event_id != self.event_id:
            return None
        return Sent((2, b"ord-a"), "processing", "acct", 0.0, "ord-a", (INPUT, 2, 7), "00-tp")


async def test_a_late_originals_report_is_keyed_and_sourced_like_its_order_at_once() -> None:
    """The late original's message id was never learned (the request timed out), so the
    correlation cache never sees it: the report is tied to its order through the engine's
    memory of the ambiguous attempt, at once, not after ``wait_s``."""
    sink = FakeSink()
    webhooks = KafkaWebhookSink(sink, results_topic="res", errors_topic="err",
                                cache=CorrelationCache(), templates=NoTemplates(), wait_s=30,
                                echoes=Echoes(True), origins=Origins("a-1"))  # fmt: skip
    report = StatusReport(
        provider="meta", message_id="wamid.never-seen", status=DeliveryStatus.FAILED,
        dedupe_key="k", event_id="a-1", errors=(ReportError("2046", "not transitioned"),),
    )  # fmt: skip
    with anyio.fail_after(2):  # well before wait_s
        await webhooks.publish_reports([report])
    ((topic, value, key),) = sink.records
    result = orjson.loads(value)
    assert (topic, key) == ("res", b"ord-a")
    assert result["order_id"] == "ord-a"
    assert result["source"] == {"topic": INPUT, "partition": 2, "offset": 7}
    assert result["traceparent"] == "00-tp"
    assert result["account"] == "acct"
    assert result["provider_message_id"] == "wamid.never-seen"
    assert str(result["detail"]).startswith("late echo")
    assert webhooks.uncorrelated == 0


async def test_a_report_of_an_event_without_a_remembered_attempt_still_waits_for_its_id() -> None:
    sink = FakeSink()
    webhooks = KafkaWebhookSink(sink, results_topic="res", errors_topic="err",
                                cache=CorrelationCache(), templates=NoTemplates(), wait_s=0.05,
                                echoes=Echoes(False), origins=Origins("other"))  # fmt: skip
    report = StatusReport(provider="meta", message_id="wamid.2", status=DeliveryStatus.DELIVERED,
                          dedupe_key="k2", event_id="b-1")  # fmt: skip
    await webhooks.publish_reports([report])
    ((_, value, key),) = sink.records
    assert key == b"b-1"
    assert orjson.loads(value)["order_id"] is None
    assert webhooks.uncorrelated == 1


async def test_the_engine_remembers_an_ambiguous_attempts_order_and_source() -> None:
    records = [_record("a", 1, "processing", 0), _record("a", 2, "completed", 1)]
    async with _running(records, {"a-1": [_timeout()]}) as (engine, _):
        origin = engine.flow.attempt_origin("a-1")
        accepted = engine.flow.attempt_origin("a-2")
    assert origin is not None
    assert (origin.order_id, origin.account) == ("a", "acct")
    assert origin.source == (INPUT, 0, 0)
    assert accepted is None  # never ambiguous: its message id is in the correlation cache
    assert engine.flow.attempt_origin("a-1") is None  # forgotten with its partition
