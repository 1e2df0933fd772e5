"""Composition root: wires configuration, Kafka I/O, the engine, HTTP sending and the web server.

Owns process lifecycle: start order, SIGTERM/SIGINT drain, and closing everything it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal

import structlog

from connector.config import ConnectorConfig
from connector.engine import Engine, EngineObserver
from connector.kafka.consumer import TP, KafkaConsumer
from connector.kafka.producer import KafkaProducer
from connector.providers import build_provider
from connector.retry import RetryPolicy
from connector.sender import HttpSender, create_sender

log = structlog.get_logger("connector.app")


def retry_policy(config: ConnectorConfig) -> RetryPolicy:
    r = config.retry
    return RetryPolicy(
        max_attempts=r.max_attempts,
        max_elapsed_s=r.max_elapsed_s,
        base_s=r.base_s,
        cap_s=r.cap_s,
        jitter=r.jitter,
    )


class ConnectorApp:
    """One connector process: ``await app.run()`` until ``app.request_stop()`` or a signal."""

    def __init__(self, config: ConnectorConfig, *, observer: EngineObserver | None = None) -> None:
        self.config = config
        self.providers = {a.name: build_provider(a) for a in config.accounts}
        self.producer = KafkaProducer(config.kafka)
        self.sender: HttpSender = create_sender(
            config.http.client, max_connections=config.http.max_connections
        )
        self.consumer = KafkaConsumer(
            config.kafka,
            topics=[config.topics.input],
            group_id=config.kafka.group_id,
            on_revoked=self._on_revoked,
            on_assigned=self._on_assigned,
        )
        self.engine = Engine(
            source=self.consumer,
            sink=self.producer,
            sender=self.sender,
            providers=self.providers,
            routing=config.routing,
            topics=config.topics,
            limits=config.limits,
            retry=retry_policy(config),
            observer=observer,
        )
        self.started = asyncio.Event()

    async def _on_revoked(self, revoked: set[TP]) -> None:
        await self.engine.on_revoked(revoked)

    async def _on_assigned(self, assigned: set[TP]) -> None:
        await self.engine.on_assigned(assigned)

    def request_stop(self) -> None:
        self.engine.request_stop()

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        await self.producer.start()
        try:
            await self.consumer.start()
            try:
                self.started.set()
                log.info(
                    "connector_started",
                    group_id=self.config.kafka.group_id,
                    input_topic=self.config.topics.input,
                    accounts=sorted(self.providers),
                )
                await self.engine.run()
            finally:
                await self.consumer.stop()
        finally:
            with contextlib.suppress(Exception):
                await self.producer.flush()
            await self.producer.stop()
            await self.sender.aclose()
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("connector_stopped", **dataclasses.asdict(self.engine.stats))

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("shutdown_requested", signal=sig.name)
        self.request_stop()
