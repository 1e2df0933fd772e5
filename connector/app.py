"""Composition root: wires configuration, Kafka I/O, the engine, HTTP sending and the web server.

Owns process lifecycle: start-up preflight (wait for the broker, check every topic it reads or
writes, size the producers by the written topics' limits), start order, SIGTERM/SIGINT drain,
background probes (broker reachable, consumer lag, commit progress) and closing everything it
opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Awaitable, Callable

import structlog

from connector.config import ConnectorConfig
from connector.contract.records import ResultRecord
from connector.core.redaction import SecretScrubber
from connector.delivery.engine import Engine
from connector.delivery.ports import EngineObserver, RecordSource
from connector.http.sender import HttpSender, create_sender
from connector.kafka.admin import PublishLimits, read_publish_limits
from connector.kafka.consumer import TP, KafkaConsumer, KafkaUnreachableError
from connector.kafka.ledger_store import LedgerReader
from connector.kafka.producer import KafkaProducer, TransactionalProducer
from connector.kafka.startup import BrokerAttempt, check_topics, wait_for_broker
from connector.kafka.tail import TopicTail
from connector.logs import flush_suppressed_logs
from connector.providers import MetaAccount, YCloudAccount, build_provider
from connector.server.delivery_metrics import EngineMetrics
from connector.server.health import CheckResult, HealthModel
from connector.server.metrics import ConnectorMetrics
from connector.server.web import WebhookHandlers, WebServer, build_web_app
from connector.webhooks import (
    MetaWebhookReceiver,
    SeenWebhooks,
    YCloudWebhookReceiver,
    ZapiWebhookReceiver,
)
from connector.webhooks.correlation import CorrelationCache, CorrelationWriter
from connector.webhooks.sink import KafkaWebhookSink

log = structlog.get_logger("connector.app")


class ConnectorApp:
    """One connector process: ``await app.run()`` until ``app.request_stop()`` or a signal.

    With ``server.enabled`` it serves /healthz, /readyz, /metrics and the configured webhook
    routes on ``server.host:server.port`` (``web_url`` once ``started`` is set).
    """

    def __init__(
        self,
        config: ConnectorConfig,
        *,
        observer: EngineObserver | None = None,
        source_filter: Callable[[KafkaConsumer], RecordSource] | None = None,
    ) -> None:
        """``source_filter`` wraps the consumer the engine reads from (replay bounds)."""
        self.config = config
        self.metrics = ConnectorMetrics()
        self.health = HealthModel()
        self.providers = {a.name: build_provider(a) for a in config.accounts}
        delivery = config.delivery
        self.producer: KafkaProducer | TransactionalProducer
        if delivery.transactional:
            self.producer = TransactionalProducer(
                config.kafka,
                transactional_id=delivery.transactional_id
                or f"{config.kafka.group_id}-{config.kafka.client_id}",
                group_id=config.kafka.group_id,
                transaction_timeout_ms=delivery.transaction_timeout_ms,
            )
        else:
            self.producer = KafkaProducer(config.kafka)
        # In transactional mode the ledger (and correlation) entries of a delivery go out at
        # once through a plain idempotent producer: a crash before the transaction commits then
        # still knows what the provider got, and replays it as skipped_duplicate, not a resend.
        self.ledger_producer: KafkaProducer | None = (
            KafkaProducer(config.kafka) if delivery.transactional else None
        )
        self.ledger_reader = (
            LedgerReader(config.kafka, config.topics.ledger) if config.topics.ledger else None
        )
        self.sender: HttpSender = create_sender(
            config.http.client,
            max_connections=config.http.max_connections,
            egress=config.egress_plan(),  # http.proxy / ca_bundle, per account (issue 14)
        )
        self.consumer = KafkaConsumer(
            config.kafka,
            topics=[config.topics.input],
            group_id=config.kafka.group_id,
            on_revoked=self._on_revoked,
            on_assigned=self._on_assigned,
        )
        serves_webhooks = config.server.enabled and config.webhooks.any
        self.correlations: CorrelationCache | None = None
        if serves_webhooks and config.correlation_active:
            self.correlations = CorrelationCache(max_entries=config.correlation.cache_max_entries)
        self.correlation_writer: CorrelationWriter | None = None
        if config.correlation_active:
            self.correlation_writer = CorrelationWriter(
                self.ledger_producer or self.producer,
                config.topics.correlation,
                cache=self.correlations,
            )
        self.engine = Engine(
            source=source_filter(self.consumer) if source_filter else self.consumer,
            sink=self.producer,
            sender=self.sender,
            providers=self.providers,
            routing=config.routing,
            topics=config.topics,
            limits=config.limits,
            retry=config.retry,
            observer=observer or EngineMetrics(self.metrics),
            delivery=delivery,
            ledger_loader=self.ledger_reader.load if self.ledger_reader is not None else None,
            transactions=(
                self.producer if isinstance(self.producer, TransactionalProducer) else None
            ),
            on_accepted=self._record_correlation if self.correlation_writer else None,
            ledger_sink=self.ledger_producer,
            original_value=config.errors.policy(),  # issue 14: personal data in error records
            scrubber=SecretScrubber(config.secret_values()),
        )
        self.webhook_sink: KafkaWebhookSink | None = None
        self._web: WebServer | None = None
        if config.server.enabled:
            handlers = self._webhook_handlers() if serves_webhooks else None
            self._web = WebServer(
                build_web_app(
                    health=self.health,
                    metrics=self.metrics,
                    webhook_handlers=handlers,
                    max_body_bytes=config.server.max_body_bytes,
                    body_timeout_s=config.server.body_timeout_s,
                ),
                header_timeout_s=config.server.header_timeout_s,
                max_connections=config.server.max_connections,
            )
        self._tail: TopicTail | None = None
        self.publish_limits: PublishLimits | None = None  # read by ``preflight``
        self._kafka_ok = False
        self._register_checks()
        self.started = asyncio.Event()

    # ------------------------------------------------------------------ wiring

    def _webhook_handlers(self) -> WebhookHandlers:
        cfg, server = self.config.webhooks, self.config.server
        self.webhook_sink = KafkaWebhookSink(
            self.producer,
            results_topic=self.config.topics.results,
            errors_topic=self.config.topics.errors,
            cache=self.correlations,
            templates=self.engine,
            wait_s=self.config.correlation.wait_s,
            echoes=self.engine.flow,
            origins=self.engine.flow,
        )
        accounts = self.config.accounts
        meta = None
        if cfg.meta is not None:
            meta = MetaWebhookReceiver(
                app_secret=cfg.meta.app_secret,
                verify_token=cfg.meta.verify_token,
                accounts={
                    a.phone_number_id: a.name for a in accounts if isinstance(a, MetaAccount)
                },
            )
        ycloud = None
        if cfg.ycloud is not None:
            ycloud = YCloudWebhookReceiver(
                secret=cfg.ycloud.secret,
                tolerance_s=cfg.ycloud.tolerance_s,
                accounts={a.sender: a.name for a in accounts if isinstance(a, YCloudAccount)},
            )
        zapi = None
        if cfg.zapi:
            zapi = ZapiWebhookReceiver(tokens={t.account: t.token for t in cfg.zapi})
        return WebhookHandlers(
            sink=self.webhook_sink,
            meta=meta,
            ycloud=ycloud,
            zapi=zapi,
            seen=SeenWebhooks(max_entries=server.dedupe_max_entries, ttl_s=server.dedupe_ttl_s),
            sink_timeout_s=server.sink_timeout_s,
        )

    async def _record_correlation(self, result: ResultRecord) -> None:
        if self.correlation_writer is not None:
            await self.correlation_writer.record(result)

    def _register_checks(self) -> None:
        health, engine = self.health, self.engine
        health.set("kafka_connected", False, "not checked yet")

        def partitions_assigned() -> CheckResult:
            count = len(engine.assigned)
            return (count > 0, f"{count} input partitions" if count else "none assigned")

        def accounts_not_stopped() -> CheckResult:
            stopped = engine.stopped_accounts
            detail = "; ".join(f"{name}: {why}" for name, why in sorted(stopped.items()))
            return (not stopped, detail or None)

        def accounts_not_in_outage() -> CheckResult:
            # Their sends park until a probe succeeds (docs/engine.md, "Account outage mode").
            outages = engine.accounts_in_outage
            detail = "; ".join(
                f"{name}: in outage for {s:.0f} s" for name, s in sorted(outages.items())
            )
            return (not outages, detail or None)

        def paused_templates() -> CheckResult:
            # Informational: a paused template must not take the replica out of service
            # (the webhook that resumes it has to reach us).
            held = engine.held_templates
            names = ", ".join(f"{n}/{lang or '*'}" for n, lang in sorted(held, key=str))
            return (True, f"parked: {names}" if names else None)

        def outcomes_publishable() -> CheckResult:
            stalled = engine.publish_outage_s
            if stalled is None:
                return True
            return (False, f"no outcome acknowledged for {stalled:.0f} s; dispatch paused")

        stall_alert_s = self.config.limits.stall_alert_s

        def commits_moving() -> CheckResult:
            if not stall_alert_s:
                return True
            stalled = {
                tp: p.point_stalled_s
                for tp, p in engine.progress().items()
                if p.point_stalled_s >= stall_alert_s
            }
            if not stalled:
                return True
            worst = ", ".join(
                f"{tp.topic}:{tp.partition} for {s:.0f} s"
                for tp, s in sorted(stalled.items(), key=lambda i: -i[1])[:5]
            )
            return (False, f"commit point not moving while records wait: {worst}")

        health.register("partitions_assigned", partitions_assigned)
        health.register("outcomes_publishable", outcomes_publishable)
        health.register("commits_moving", commits_moving)
        health.register("accounts_not_stopped", accounts_not_stopped)
        health.register("accounts_not_in_outage", accounts_not_in_outage)
        health.register("paused_templates", paused_templates)

    @property
    def web_url(self) -> str:
        if self._web is None:
            raise RuntimeError("the web server is disabled (server.enabled = false)")
        return self._web.url

    # ------------------------------------------------------------------ lifecycle

    async def _on_revoked(self, revoked: set[TP]) -> None:
        await self.engine.on_revoked(revoked)
        for tp in revoked:
            self.metrics.forget_partition(tp.topic, tp.partition)

    async def _on_assigned(self, assigned: set[TP]) -> None:
        await self.engine.on_assigned(assigned)

    def request_stop(self) -> None:
        self.health.set("not_stopping", False, "shutting down")
        self.engine.request_stop()

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._run_inside()
        finally:
            await self.sender.aclose()
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            if self.started.is_set():  # a failed start says so in one line, elsewhere
                log.info("connector_stopped", **dataclasses.asdict(self.engine.stats))

    def required_topics(self) -> dict[str, str]:
        """Role -> name of every topic this process reads or writes (checked at start)."""
        topics = self.config.topics
        required = {"input": topics.input, "results": topics.results, "errors": topics.errors}
        if topics.ledger:
            required["ledger"] = topics.ledger
        if self.correlation_writer is not None:
            required["correlation"] = topics.correlation
        return required

    async def preflight(self) -> None:
        """Wait for the broker (``kafka.startup_timeout_s``), then check every topic.

        Raises ``BrokerUnreachableError`` (runtime: exit 1) or ``ConfigError`` naming the
        missing, unauthorized or mis-partitioned topic (configuration: exit 2). Nothing is
        started before it passes, so no provider request goes out whose outcome has nowhere
        to go.
        """
        kafka = self.config.kafka

        def waiting(attempt: BrokerAttempt) -> None:
            log.warning(
                "kafka_waiting",
                bootstrap_servers=kafka.bootstrap_servers,
                startup_timeout_s=kafka.startup_timeout_s,
                **dataclasses.asdict(attempt),  # attempt, error, elapsed_s, retry_in_s
            )

        await wait_for_broker(kafka, on_attempt=waiting)
        required = self.required_topics()
        await check_topics(
            kafka,
            required,
            co_partitioned=("input", "ledger") if "ledger" in required else None,
            timeout_s=max(self.config.server.kafka_check_timeout_s, 10.0),
        )
        await self._apply_publish_limits(required)

    async def _apply_publish_limits(self, required: dict[str, str]) -> None:
        """Size the producers and error records by what the written topics accept: a batch
        never exceeds any written topic's ``max.message.bytes`` (the broker would refuse it and
        break the producer's sequence), and an error record always fits the errors topic."""
        written = [name for role, name in required.items() if role != "input"]
        async with asyncio.timeout(max(self.config.server.kafka_check_timeout_s, 10.0)):
            limits = await read_publish_limits(
                self.config.kafka, written=written, errors=self.config.topics.errors
            )
        for producer in (self.producer, self.ledger_producer):
            if producer is not None:
                producer.limit_request_size(limits.max_request_size)
        self.engine.limit_error_records(limits.error_record_max_bytes)
        self.publish_limits = limits
        log.info(
            "publish_limits",
            max_request_size=limits.max_request_size,
            error_record_max_bytes=limits.error_record_max_bytes,
        )

    async def _run_inside(self) -> None:
        background: list[asyncio.Task[None]] = []
        try:
            await self.preflight()
            if self.ledger_reader is not None:
                await self.ledger_reader.start()
            await self.producer.start()
            if self.ledger_producer is not None:
                await self.ledger_producer.start()
            if self._web is not None:
                await self._web.start(self.config.server.host, self.config.server.port)
            await self.consumer.start()
            await self._check_kafka()
            await self._start_correlation()
            background = [
                self._every(self.config.server.kafka_check_interval_s, self._check_kafka),
                self._every(self.config.server.lag_interval_s, self._update_lag),
                self._every(1.0, self._update_progress),
                self._every(1.0, self._flush_logs),
            ]
            self.started.set()
            log.info(
                "connector_started",
                group_id=self.config.kafka.group_id,
                input_topic=self.config.topics.input,
                accounts=sorted(self.providers),
                web=self._web.url if self._web is not None else None,
            )
            await self.engine.run()
        finally:
            # Everything is closed whether or not it got started (aiokafka clients warn
            # about objects that were built but never stopped).
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._tail is not None:
                await self._tail.stop()
            await self.consumer.stop()
            if self._web is not None:
                await self._web.stop()
            for producer in (self.producer, self.ledger_producer):
                if producer is None:
                    continue
                with contextlib.suppress(Exception):
                    await producer.flush()
                await producer.stop()
            if self.ledger_reader is not None:
                await self.ledger_reader.stop()

    async def _start_correlation(self) -> None:
        """Follow the correlation topic (webhook replicas); ``preflight`` checked it exists."""
        topic = self.config.topics.correlation
        if self.correlation_writer is None:
            return
        if self.correlations is not None:
            self._tail = TopicTail(self.config.kafka, topic, self.correlations.load)
            await self._tail.start()

    def _every(self, interval_s: float, step: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await step()
                except Exception as exc:  # a probe must never end the loop
                    log.warning("background_step_failed", step=step.__name__, error=repr(exc))

        return asyncio.create_task(loop(), name=f"every-{step.__name__}")

    async def _flush_logs(self) -> None:
        flush_suppressed_logs()  # counts of rate-limited aiokafka lines, once a window ends

    async def _check_kafka(self) -> None:
        try:
            await self.consumer.ping(self.config.server.kafka_check_timeout_s)
        except KafkaUnreachableError as exc:
            if self._kafka_ok:
                log.warning("kafka_unreachable", error=str(exc))
            self._kafka_ok = False
            self.health.set("kafka_connected", False, f"no broker answered ({exc})")
            return
        if not self._kafka_ok:
            log.info("kafka_reachable")
        self._kafka_ok = True
        self.health.set("kafka_connected", True)

    async def _update_lag(self) -> None:
        async with asyncio.timeout(self.config.server.kafka_check_timeout_s):
            lag = await self.consumer.lag()
        for tp, records in lag.items():
            self.metrics.set_consumer_lag(tp.topic, tp.partition, records)

    async def _update_progress(self) -> None:
        for tp, progress in self.engine.progress().items():
            self.metrics.set_partition_progress(
                tp.topic,
                tp.partition,
                oldest_pending_s=progress.oldest_pending_s,
                point_stalled_s=progress.point_stalled_s,
            )
        self.metrics.publish_outage.set(0 if self.engine.publish_outage_s is None else 1)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("shutdown_requested", signal=sig.name)
        self.request_stop()
