"""The daemon's ``WebhookSink``: delivery reports become ``order.status.results`` records,
failed ones also ``order.status.errors`` records, template changes pause or resume sends.

Correlates each report with its event and order (the message-id correlation cache, then the
engine's remembered ambiguous attempt of the echoed event id, then a short wait for the
cache). It publishes and waits for acks; raising makes the server answer 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Protocol

import structlog

from connector.contract.records import (
    ErrorRecord,
    ResultOutcome,
    ResultRecord,
    SourceCoordinates,
)
from connector.errors import ErrorClass
from connector.kafka.record_sink import RecordSink
from connector.webhooks import DeliveryStatus, StatusReport, TemplateStatusChange
from connector.webhooks.correlation import CorrelationCache, CorrelationRecord

log = structlog.get_logger("connector.webhooks.sink")


class LateEchoes(Protocol):
    """Whether a refusal reported for an event only echoes a late request of its order."""

    def late_echo(self, event_id: str, provider_kind: str, error_code: str | None) -> bool: ...


class AttemptOrigin(Protocol):
    """What the engine remembers of an ambiguous attempt: what its outcome records carry."""

    @property
    def order_id(self) -> str: ...
    @property
    def account(self) -> str: ...
    @property
    def source(self) -> tuple[str, int, int]: ...  # topic, partition, offset
    @property
    def traceparent(self) -> str | None: ...


class AttemptOrigins(Protocol):
    """The engine's ambiguous attempts by event id (``Flow.attempt_origin``): a late original's
    report names a message id the connector never learned, but echoes the event id."""

    def attempt_origin(self, event_id: str) -> AttemptOrigin | None: ...


class TemplateControl(Protocol):
    """What the sink needs from the engine."""

    def hold_template(self, name: str, language: str | None, reason: str) -> None: ...
    def release_template(self, name: str, language: str | None, *, reason: str) -> None: ...


@dataclass(slots=True, eq=False)
class KafkaWebhookSink:
    """Publishes verified, deduplicated webhook content. ``results_topic``/``errors_topic`` are
    real topic names; ``wait_s`` bounds the wait for a correlation not yet seen."""

    producer: RecordSink
    _: KW_ONLY
    results_topic: str
    errors_topic: str
    cache: CorrelationCache | None
    templates: TemplateControl
    wait_s: float = 5.0
    # Meta 2046 for a request that landed after the order's newest status: a result, no error.
    echoes: LateEchoes | None = None
    # The ambiguous attempts this replica's engine remembers: their reports go at once.
    origins: AttemptOrigins | None = None
    uncorrelated: int = field(default=0, init=False)

    async def publish_reports(self, reports: Sequence[StatusReport]) -> None:
        found = await asyncio.gather(*(self._correlate(r) for r in reports))
        acks: list[asyncio.Future[object]] = []
        for report, correlation in zip(reports, found, strict=True):
            for topic, key, value in self._records(report, correlation):
                headers = [("dedupe_key", report.dedupe_key.encode())]
                if report.timestamp is not None:
                    headers.append(("provider_timestamp", report.timestamp.isoformat().encode()))
                if correlation is not None and correlation.traceparent:
                    headers.append(("traceparent", correlation.traceparent.encode()))
                acks.append(await self.producer.send(topic, value, key=key, headers=headers))
        await asyncio.gather(*acks)

    async def template_status(self, change: TemplateStatusChange) -> None:
        reason = f"{change.provider} template {change.event}"
        if change.reason:
            reason = f"{reason}: {change.reason}"
        if change.pauses_sending:
            self.templates.hold_template(change.template_name, change.language, reason)
        elif change.resumes_sending:
            self.templates.release_template(change.template_name, change.language, reason=reason)

    async def _correlate(self, report: StatusReport) -> CorrelationRecord | None:
        ids = [i for i in (report.provider_message_id, report.message_id) if i]
        found = None if self.cache is None else await self.cache.wait_for(ids, 0)
        if found is None:
            found = self._of_attempt(report)
        if found is not None or self.cache is None:
            return found
        found = await self.cache.wait_for(ids, self.wait_s)
        if found is None:
            self.uncorrelated += 1
            log.warning("webhook_report_uncorrelated", **report.log_fields())
        return found

    def _of_attempt(self, report: StatusReport) -> CorrelationRecord | None:
        """The correlation of a report whose event had an ambiguous attempt this replica
        remembers (same event, so the same order, source and trace as any send of it)."""
        if self.origins is None or report.event_id is None:
            return None
        origin = self.origins.attempt_origin(report.event_id)
        if origin is None:
            return None
        topic, partition, offset = origin.source
        return CorrelationRecord(
            message_id=report.provider_message_id or report.message_id,
            provider=report.provider,
            account=origin.account,
            event_id=report.event_id,
            order_id=origin.order_id,
            source=SourceCoordinates(topic=topic, partition=partition, offset=offset),
            traceparent=origin.traceparent,
        )

    def _records(
        self, report: StatusReport, correlation: CorrelationRecord | None
    ) -> list[tuple[str, bytes, bytes]]:
        event_id = report.event_id or (correlation.event_id if correlation else None)
        order_id = correlation.order_id if correlation else None
        account = report.account or (correlation.account if correlation else None)
        source = correlation.source if correlation else None
        traceparent = correlation.traceparent if correlation else None
        first = report.errors[0] if report.errors else None
        detail = None
        if first is not None:
            detail = f"{first.code}: {first.title}" + (f" ({first.detail})" if first.detail else "")
        echo = (
            report.status is DeliveryStatus.FAILED
            and first is not None
            and event_id is not None
            and self.echoes is not None
            and self.echoes.late_echo(event_id, report.provider, first.code)
        )
        if echo:
            detail = f"late echo (the provider holds the newest status): {detail}"
        key = (order_id or event_id or report.message_id).encode()
        result = ResultRecord(
            event_id=event_id,
            order_id=order_id,
            outcome=ResultOutcome.STATUS_REPORT,
            report_status=report.status,
            provider=report.provider,
            account=account,
            # The id the send answered with (YCloud: its own id, not the wamid).
            provider_message_id=report.provider_message_id or report.message_id,
            provider_error_code=first.code if first else None,
            source=source,
            traceparent=traceparent,
            detail=detail,
        )
        out = [(self.results_topic, key, result.to_bytes())]
        if echo:
            log.info("late_echo", order_id=order_id, code=first.code if first else None,
                     **report.log_fields())  # fmt: skip
        elif report.status is DeliveryStatus.FAILED:
            error = ErrorRecord(
                event_id=event_id,
                order_id=order_id,
                error_class=ErrorClass.ASYNC_PROVIDER_ERROR,
                reason=f"{report.provider} reported the message failed: {detail or 'no code'}",
                provider=report.provider,
                account=account,
                provider_error_code=first.code if first else None,
                source=source,
                traceparent=traceparent,
            )
            out.append((self.errors_topic, key, error.to_bytes()))
            log.warning(
                "async_provider_error", order_id=order_id, code=error.provider_error_code,
                **report.log_fields(),
            )  # fmt: skip
        return out
