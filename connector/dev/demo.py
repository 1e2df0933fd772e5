"""``order-connector demo``: a local broker, the provider sandbox, the connector and a realistic
stream of order events, with live progress and a per-provider summary. Stops all it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from connector.app import ConnectorApp
from connector.config import (
    ConnectorConfig,
    KafkaSettings,
    LimitSettings,
    ServerSettings,
    TopicNames,
)
from connector.contract.events import OrderStatusChanged, encode_event
from connector.core.retry import RetryPolicy
from connector.dev.sandbox.config import SandboxConfig
from connector.dev.workload import OrderScript, WorkloadSpec, build_orders, interleave
from connector.kafka.consumer import ConsumedRecord, read_topic
from connector.kafka.producer import KafkaProducer

if TYPE_CHECKING:
    from connector.dev.sandbox.server import SandboxServer

ASYNC_ERROR = "async_provider_error"
DEMO_ACCOUNTS = {"meta": "meta-br", "ycloud": "ycloud-br", "zapi": "zapi-br", "zonos": "zonos-us"}


def sandbox_accounts(
    provider_url: Callable[[str], str],
    sandbox: SandboxConfig,
    *,
    names: Mapping[str, str] = DEMO_ACCOUNTS,
    rate_per_second: float | None = None,
    max_in_flight: int = 64,
    request_timeout_s: float = 5.0,
) -> list[dict[str, Any]]:
    """Account settings that point each provider at the sandbox with its credentials."""
    creds = sandbox.credentials
    common: dict[str, Any] = {
        "max_in_flight": max_in_flight,
        "request_timeout_s": request_timeout_s,
    }
    if rate_per_second is not None:
        common["rate_per_second"] = rate_per_second
    return [
        {
            "provider": "meta",
            "name": names["meta"],
            "base_url": provider_url("meta"),
            "phone_number_id": "106540352242922",
            "access_token": creds.meta_access_token.get_secret_value(),
            "template_name": "order_status_update",
            "language": "pt_BR",
            **common,
        },
        {
            "provider": "ycloud",
            "name": names["ycloud"],
            "base_url": provider_url("ycloud"),
            "api_key": creds.ycloud_api_key.get_secret_value(),
            "sender": "+5511900000001",
            "template_name": "order_status_update",
            "language": "pt_BR",
            **common,
        },
        {
            "provider": "zapi",
            "name": names["zapi"],
            "base_url": provider_url("zapi"),
            "instance_id": "3C0FFEE0DEMO",
            "instance_token": creds.zapi_instance_token.get_secret_value(),
            "client_token": creds.zapi_client_token.get_secret_value(),
            **common,
        },
        {
            "provider": "zonos",
            "name": names["zonos"],
            "base_url": provider_url("zonos"),
            "store": "9999",
            "secret": creds.zonos_secret.get_secret_value(),
            **common,
        },
    ]


async def produce(
    kafka: KafkaSettings,
    topic: str,
    events: Iterable[OrderStatusChanged | tuple[bytes | None, bytes]],
) -> int:
    """Produce events keyed by order id (raw ``(key, value)`` pairs pass through); wait for acks."""
    producer = KafkaProducer(kafka)
    await producer.start()
    count = 0
    try:
        futures = []
        for item in events:
            key: bytes | None
            if isinstance(item, OrderStatusChanged):
                key, value = item.order_id.encode(), encode_event(item)
            else:
                key, value = item
            futures.append(await producer.send(topic, value, key=key))
            count += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count


def invalid_records() -> list[tuple[bytes | None, bytes]]:
    """A few broken inputs, as real upstreams produce them."""
    return [
        (b"ord-broken-1", b"{not json"),
        (b"ord-broken-2", b'{"event_id": "e-x", "order_id": "ord-broken-2"}'),
        (
            b"ord-broken-3",
            orjson.dumps(
                {
                    "event_id": "e-teleport",
                    "occurred_at": "2026-01-01T00:00:00Z",
                    "order_id": "ord-broken-3",
                    "status": "teleported",
                    "account": DEMO_ACCOUNTS["meta"],
                }
            ),
        ),
        (
            b"ord-broken-4",
            orjson.dumps(
                {
                    "event_id": "e-noref",
                    "occurred_at": "2026-01-01T00:00:00Z",
                    "order_id": "ord-broken-4",
                    "status": "shipped",
                    "account": DEMO_ACCOUNTS["meta"],
                    "recipient": {"phone": "+5511999990000"},
                }
            ),
        ),
        (None, b"\xff\xfe binary garbage"),
    ]


def _demo_sandbox() -> SandboxConfig:
    return SandboxConfig.model_validate(
        {
            "faults": {
                name: {
                    "latency": {"kind": "lognormal", "p50_ms": 15, "p99_ms": 120},
                    "server_error_rate": 0.01,
                }
                for name in ("meta", "ycloud", "zapi", "zonos")
            },
            "limits": {
                "meta_per_sender": {"per_second": 0},
                "ycloud_send_directly_per_sender": {"per_second": 0},
            },
        }
    )


class Progress:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.results: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    def on_results(self, batch: list[ConsumedRecord]) -> None:
        self.results.extend(orjson.loads(r.value or b"{}") for r in batch)

    def on_errors(self, batch: list[ConsumedRecord]) -> None:
        self.errors.extend(orjson.loads(r.value or b"{}") for r in batch)

    @property
    def reports(self) -> list[dict[str, Any]]:
        """Delivery reports that came back by webhook (not outcomes of input records)."""
        return [r for r in self.results if r.get("outcome") == "status_report"]

    @property
    def done(self) -> int:
        """Outcomes of input records: webhook reports and async failures are extra."""
        async_errors = sum(1 for e in self.errors if e.get("error_class") == ASYNC_ERROR)
        return len(self.results) - len(self.reports) + len(self.errors) - async_errors


def summary(progress: Progress, elapsed: float) -> str:
    by_provider: dict[str, Counter[str]] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    reports: dict[str, Counter[str]] = defaultdict(Counter)
    for r in progress.results:
        provider = r.get("provider") or "-"
        if r["outcome"] == "status_report":
            reports[provider][r["report_status"]] += 1
            continue
        by_provider[provider][r["outcome"]] += 1
        if r.get("latency_ms") is not None and r["outcome"] in ("accepted", "delivered"):
            latencies[provider].append(float(r["latency_ms"]))
    for e in progress.errors:
        name = e["error_class"]
        if name == ASYNC_ERROR:
            name = f"{name}:{e.get('provider_error_code')}"  # 2046 / 2047 / ...
        by_provider[e.get("provider") or "(no provider)"][f"error:{name}"] += 1
    lines = [
        "",
        f"{'provider':<14}{'delivered':>10}{'other ok':>10}{'errors':>8}"
        f"{'p50 ms':>9}{'p99 ms':>9}  error classes",
    ]
    for provider in sorted(by_provider):
        counts = by_provider[provider]
        delivered = counts["accepted"] + counts["delivered"]
        errors = {k[6:]: v for k, v in counts.items() if k.startswith("error:")}
        other = sum(counts.values()) - delivered - sum(errors.values())
        lat = sorted(latencies.get(provider, []))
        p50 = f"{statistics.median(lat):.0f}" if lat else "-"
        p99 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.0f}" if lat else "-"
        classes = ", ".join(f"{k}={v}" for k, v in sorted(errors.items())) or "-"
        lines.append(
            f"{provider:<14}{delivered:>10}{other:>10}{sum(errors.values()):>8}"
            f"{p50:>9}{p99:>9}  {classes}"
        )
    if reports:
        lines.append("\ndelivery reports by webhook (sandbox -> connector -> results topic):")
        for provider in sorted(reports):
            shown = ", ".join(f"{k}={v}" for k, v in sorted(reports[provider].items()))
            lines.append(f"  {provider:<12}{shown}")
    lines.append(
        f"\n{progress.done} outcomes for {progress.expected} input records in {elapsed:.1f}s"
    )
    return "\n".join(lines)


def _demo_config(
    kafka: KafkaSettings,
    topics: TopicNames,
    provider_url: Callable[[str], str],
    sandbox_config: SandboxConfig,
) -> ConnectorConfig:
    """The connector's configuration: sandbox accounts, quick commits and retries, webhooks."""
    return ConnectorConfig.model_validate(
        {
            "kafka": kafka.model_dump(),
            "topics": topics.model_dump(),
            "accounts": sandbox_accounts(provider_url, sandbox_config),
            # Outage mode on (the default): the scripted 429s are pacing signals for the
            # adaptive rate and count towards an outage only once it is at its floor.
            "limits": LimitSettings(commit_interval_s=0.5, drain_timeout_s=10).model_dump(),
            "retry": RetryPolicy(max_attempts=6, max_elapsed_s=20, base_s=0.2).model_dump(),
            "server": ServerSettings(port=0).model_dump(),
            "webhooks": {
                "meta": {
                    "app_secret": sandbox_config.credentials.meta_app_secret,
                    "verify_token": "demo-verify-token",
                },
                "ycloud": {"secret": sandbox_config.credentials.ycloud_webhook_secret},
            },
        }
    )


def _with_invalid_records(
    events: list[OrderStatusChanged],
) -> tuple[list[OrderStatusChanged | tuple[bytes | None, bytes]], int]:
    """``events`` with the invalid records spread evenly among them, and how many those are."""
    bad = invalid_records()
    mixed: list[OrderStatusChanged | tuple[bytes | None, bytes]] = list(events)
    for i, record in enumerate(bad):
        mixed.insert((i + 1) * len(mixed) // (len(bad) + 1), record)
    return mixed, len(bad)


def _seed_trouble(sandbox: SandboxServer, scripts: Sequence[OrderScript]) -> None:
    """Zonos orders on fraud review (ending in 3) and paid Meta orders that get canceled:
    Meta accepts their cancel, then refuses it (2047)."""
    for script in scripts:
        zonos = script.events[0].zonos
        if zonos is not None and script.order_id.endswith("3"):
            sandbox.seed_order(
                {"provider": "zonos", "key": zonos.order_id, "status": "IGLOBAL_FRAUD_REVIEW"}
            )
        refs = script.events[0].whatsapp
        canceled = any(e.status == "canceled" for e in script.events)
        paid = script.order_id.endswith(("0", "8"))
        if script.provider == "meta" and refs and canceled and paid:
            sandbox.seed_order(
                {"provider": "meta", "key": refs.reference_id, "payment_status": "paid"}
            )


async def demo_main(bootstrap: str, orders: int, *, out: Any = sys.stdout) -> int:
    from connector.contract.topics import load_spec
    from connector.dev.sandbox.server import SandboxServer
    from connector.kafka.admin import apply_topics

    run = uuid.uuid4().hex[:6]
    topics = TopicNames(
        input=f"demo-{run}.order.status.changed",
        results=f"demo-{run}.order.status.results",
        errors=f"demo-{run}.order.status.errors",
        ledger=f"demo-{run}.order.status.ledger",
        correlation=f"demo-{run}.order.status.correlation",
    )
    kafka = KafkaSettings(bootstrap_servers=bootstrap, group_id=f"demo-{run}")
    print(f"kafka {bootstrap}: applying topic contracts (prefix demo-{run}.)", file=out)
    await apply_topics(
        bootstrap,
        load_spec(),  # the spec shipped in the package
        dry_run=False,
        prefix=f"demo-{run}.",
        replication_factor=1,
    )
    sandbox_config = _demo_sandbox()
    async with SandboxServer(sandbox_config) as sandbox:
        print(f"provider sandbox at {sandbox.url}", file=out)
        # Scripted trouble: throttling on YCloud, an undeliverable Meta number, Zonos on hold.
        sandbox.add_rule({"provider": "ycloud", "action": "rate_limit", "count": 25})
        sandbox.add_rule({"provider": "meta", "action": "rate_limit", "count": 25})
        scripts = build_orders(
            WorkloadSpec(orders=orders, accounts=DEMO_ACCOUNTS, invalid_transition_share=0.05)
        )
        _seed_trouble(sandbox, scripts[:400])
        config = _demo_config(kafka, topics, sandbox.provider_url, sandbox_config)
        app = ConnectorApp(config)
        runner = asyncio.create_task(app.run())
        await asyncio.wait_for(app.started.wait(), 60)
        # The sandbox reports 2046/2047 and delivery by signed webhook to the connector.
        sandbox.set_config(
            {
                "webhooks": {
                    "meta_url": f"{app.web_url}/webhooks/meta",
                    "ycloud_url": f"{app.web_url}/webhooks/ycloud",
                    "status_reports": ["delivered"],
                }
            }
        )
        print(f"connector web server at {app.web_url} (/readyz, /metrics, /webhooks/*)", file=out)
        events = list(interleave(scripts))
        mixed, invalid = _with_invalid_records(events)
        started = time.monotonic()
        total = await produce(kafka, topics.input, mixed)
        print(
            f"produced {total} records ({len(events)} events for {orders} orders over "
            f"{len(DEMO_ACCOUNTS)} providers, {invalid} invalid)",
            file=out,
        )
        progress = Progress(total)
        outputs = ((topics.results, progress.on_results), (topics.errors, progress.on_errors))
        readers = asyncio.gather(
            *(
                read_topic(kafka, topic, idle_timeout_s=1e9, deadline_s=600, on_batch=on_batch)
                for topic, on_batch in outputs
            )
        )
        try:
            deadline = started + 600
            while progress.done < total and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                elapsed = time.monotonic() - started
                print(
                    f"  {elapsed:6.1f}s  outcomes {progress.done:>6}/{total}  "
                    f"results {len(progress.results):>6}  errors {len(progress.errors):>4}  "
                    f"provider requests {app.engine.stats.sent_requests:>6}  "
                    f"retries {app.engine.stats.retries:>4}",
                    file=out,
                    flush=True,
                )
            await _wait_for_webhooks(sandbox, progress, deadline)
        finally:
            readers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await readers
            app.request_stop()
            await runner
        elapsed = time.monotonic() - started
        print(summary(progress, elapsed), file=out)
        stats = sandbox.stats()
        print(f"sandbox answers: {orjson.dumps(stats.get('answers', stats)).decode()}", file=out)
        ok = progress.done == total
        print("demo finished cleanly" if ok else "demo timed out", file=out)
        return 0 if ok else 1


async def _wait_for_webhooks(sandbox: Any, progress: Progress, deadline: float) -> None:
    """Until every webhook the sandbox delivered is on the results topic (or the deadline)."""
    while time.monotonic() < deadline:
        hooks = sandbox.stats().get("webhooks", {})
        if hooks.get("pending", 0) == 0 and len(progress.reports) >= hooks.get("delivered", 0):
            return
        await asyncio.sleep(0.2)


def run_demo(orders: int = 1_200) -> int:
    from connector.dev.kafka_selection import select_kafka
    from connector.logs import configure_logging

    configure_logging(level="error", secrets=(), json=False)
    # aiokafka reports the fresh broker's first seconds (coordinator not elected yet, leaders
    # moving) as errors and retries them itself; the demo's own output says what matters.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    print("starting a local Kafka broker (first run downloads the jars through Maven)...")
    with select_kafka() as bootstrap:
        return asyncio.run(demo_main(bootstrap, orders))
