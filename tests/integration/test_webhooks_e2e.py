"""End to end with the real broker and the sandbox: async provider failures (Meta 2046/2047,
YCloud failed) and delivery reports come back by signed webhook and land on the results and
errors topics tied to their event and order; trace context, /metrics and webhook rejection."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import anyio
import orjson

from connector.dev.sandbox.webhooks import StatusReport as SandboxReport
from connector.dev.sandbox.webhooks import (
    meta_signature,
    meta_status_payload,
    ycloud_signature,
    ycloud_status_payload,
)
from tests.support.webhook_stack import (
    META_VERIFY_TOKEN,
    ZAPI_HOOK_TOKEN,
    Running,
    event,
    produce,
    read_json,
    running_connector,
    total,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
META_PHONE_ID = "106540352242922"


def by_event(records: list[dict[str, Any]], **match: Any) -> dict[str, dict[str, Any]]:
    return {r["event_id"]: r for r in records if all(r.get(k) == v for k, v in match.items())}


async def test_async_failures_and_reports_are_correlated_to_event_and_order(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    async with running_connector(
        kafka_bootstrap, unique_name("wh") + ".", status_reports=["delivered"]
    ) as run:
        # B's payment succeeded, so Meta refuses to cancel it (2047), after answering 200.
        run.sandbox.seed_order({"provider": "meta", "key": "ref.ord-B", "payment_status": "paid"})
        await produce(
            run.kafka,
            run.topics.input,
            [
                (event("ord-A", 1, "completed", "meta"), {"traceparent": TRACEPARENT}),
                (event("ord-A", 2, "shipped", "meta"), {}),  # after completed: 2046
                (event("ord-B", 1, "canceled", "meta"), {}),  # paid: 2047
                (event("ord-C", 1, "completed", "ycloud"), {}),
                (event("ord-C", 2, "processing", "ycloud"), {}),  # YCloud failed, 2046
                (event("ord-D", 1, "processing", "zapi", payment_status="pending"), {}),
            ],
        )
        errors = await read_json(run.kafka, run.topics.errors, expected=3)
        # 6 accepted sends, 2 delivered reports (A-e1, C-e1), 3 failed reports.
        results = await read_json(run.kafka, run.topics.results, expected=11)

        # (a) each async failure is an errors record tied to its event and order
        failed = by_event(errors, error_class="async_provider_error")
        assert set(failed) == {"ord-A-e2", "ord-B-e1", "ord-C-e2"}, errors
        expected = {
            "ord-A-e2": ("ord-A", "meta", "meta-br", "2046"),
            "ord-B-e1": ("ord-B", "meta", "meta-br", "2047"),
            "ord-C-e2": ("ord-C", "ycloud", "ycloud-br", "2046"),
        }
        for event_id, (order_id, provider, account, code) in expected.items():
            record = failed[event_id]
            assert (record["order_id"], record["provider"], record["account"]) == (
                order_id, provider, account,
            )  # fmt: skip
            assert record["provider_error_code"] == code
            assert record["source"]["topic"] == run.topics.input
            assert record["original_value"] is None

        accepted = by_event(results, outcome="accepted")
        sends = [("A", 1), ("A", 2), ("B", 1), ("C", 1), ("C", 2), ("D", 1)]
        assert set(accepted) == {f"ord-{o}-e{n}" for o, n in sends}
        reports = [r for r in results if r["outcome"] == "status_report"]
        failed_reports = by_event(reports, report_status="failed")
        assert {
            e: (r["order_id"], r["provider_error_code"]) for e, r in failed_reports.items()
        } == {
            "ord-A-e2": ("ord-A", "2046"),
            "ord-B-e1": ("ord-B", "2047"),
            "ord-C-e2": ("ord-C", "2046"),
        }
        delivered = by_event(reports, report_status="delivered")
        assert {e: r["order_id"] for e, r in delivered.items()} == {
            "ord-A-e1": "ord-A",
            "ord-C-e1": "ord-C",
        }
        for event_id, report in [*failed_reports.items(), *delivered.items()]:
            assert report["provider_message_id"] == accepted[event_id]["provider_message_id"]

        # Z-API echoes nothing: the report is tied to its event through the correlation topic.
        zapi_message = accepted["ord-D-e1"]["provider_message_id"]
        assert zapi_message
        callback = {
            "type": "MessageStatusCallback",
            "status": "RECEIVED",
            "ids": [zapi_message],
            "phone": "5511987654321",
            "instanceId": "3C0FFEE0DEMO",
            "momment": 1767225600000,
        }
        async with run.http.post(
            f"{run.url}/webhooks/zapi/{ZAPI_HOOK_TOKEN}", data=orjson.dumps(callback)
        ) as response:
            assert response.status == 200
            assert (await response.json())["reports"] == 1
        results = await read_json(run.kafka, run.topics.results, expected=12)
        zapi_report = by_event(results, outcome="status_report", provider="zapi")
        assert {
            e: (r["order_id"], r["report_status"], r["account"]) for e, r in zapi_report.items()
        } == {"ord-D-e1": ("ord-D", "delivered", "zapi-br")}

        # (5) trace context: input header -> provider request -> result record (and reports)
        sent = {r.event_id: r for r in run.sandbox.requests()}
        assert sent["ord-A-e1"].traceparent == TRACEPARENT
        assert accepted["ord-A-e1"]["traceparent"] == TRACEPARENT
        assert delivered["ord-A-e1"]["traceparent"] == TRACEPARENT
        assert accepted["ord-A-e2"]["traceparent"] is None

        # (c) /metrics during the run agrees with the records produced and read back
        samples = await wait_for_zero_lag(run)
        assert total(samples, "connector_records_consumed_total") == 6
        assert total(samples, "connector_records_consumed_total", topic=run.topics.input) == 6
        assert total(samples, "connector_outcomes_total") == len(accepted) == 6
        assert total(samples, "connector_outcomes_total", outcome="accepted", provider="meta") == 3
        assert total(samples, "connector_provider_request_seconds_count") == 6
        assert total(samples, "connector_inflight_requests") == 0
        assert total(samples, "connector_webhook_reports_total") == len(reports) + 1 == 6
        assert total(samples, "connector_webhook_reports_total", status="failed") == 3
        assert total(samples, "connector_open_lanes") == 0
        assert total(samples, "connector_buffered_records") == 0

        await check_rejections(run, accepted["ord-A-e1"]["provider_message_id"], errors)


async def wait_for_zero_lag(run: Running) -> dict[str, float]:
    """Scrape until the run has settled: no lag, and the gauges (sampled once per poll cycle,
    so up to one cycle behind the last outcome) show no open lane or buffered record."""
    with anyio.fail_after(20):
        while True:
            samples = await run.metrics()
            lag_series = [k for k in samples if k.startswith("connector_consumer_lag{")]
            if (
                lag_series
                and total(samples, "connector_consumer_lag") == 0
                and total(samples, "connector_open_lanes") == 0
                and total(samples, "connector_buffered_records") == 0
            ):
                return samples
            await anyio.sleep(0.1)


async def check_rejections(run: Running, wamid: str, errors_before: list[dict[str, Any]]) -> None:
    """(b) against the daemon's real server: every bad webhook is refused, nothing published."""
    creds = run.sandbox.config.credentials
    meta_secret = creds.meta_app_secret.get_secret_value().encode()
    ycloud_secret = creds.ycloud_webhook_secret.get_secret_value().encode()
    failed = SandboxReport(
        "meta", "failed", wamid, wamid, META_PHONE_ID, "5511987654321", "ord-A-e1", 2046
    )
    body = meta_status_payload(failed, "100000000000001", time.time())

    async def post(path: str, data: bytes | io.BytesIO, headers: dict[str, str]) -> tuple[int, Any]:
        async with run.http.post(f"{run.url}{path}", data=data, headers=headers) as response:
            return response.status, await response.json()

    bad = {"X-Hub-Signature-256": meta_signature(b"not-the-app-secret", body)}
    assert await post("/webhooks/meta", body, bad) == (401, {"error": "signature"})
    assert await post("/webhooks/meta", body, {}) == (401, {"error": "signature"})

    y_report = SandboxReport(
        "ycloud", "failed", "yc-1", None, "+5511900000001", "5511987654321", "ord-C-e1", 2046
    )
    y_body = ycloud_status_payload(y_report, "evt_1", "100000000000001", time.time())
    stale = {"YCloud-Signature": ycloud_signature(ycloud_secret, y_body, int(time.time()) - 3600)}
    assert await post("/webhooks/ycloud", y_body, stale) == (401, {"error": "stale"})

    junk = b"{not json"
    signed_junk = {"X-Hub-Signature-256": meta_signature(meta_secret, junk)}
    assert await post("/webhooks/meta", junk, signed_junk) == (400, {"error": "malformed"})

    huge = b"{" + b" " * (1024 * 1024) + b"}"
    signed_huge = {"X-Hub-Signature-256": meta_signature(meta_secret, huge)}
    status, answer = await post("/webhooks/meta", io.BytesIO(huge), signed_huge)
    assert (status, answer) == (413, {"error": "too_large"})

    wrong_token = await run.http.post(f"{run.url}/webhooks/zapi/guess", data=b"{}")
    assert wrong_token.status == 401
    wrong_token.release()

    handshake = {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": "nope"}
    async with run.http.get(f"{run.url}/webhooks/meta", params=handshake) as response:
        assert response.status == 403
    handshake["hub.verify_token"] = META_VERIFY_TOKEN
    async with run.http.get(f"{run.url}/webhooks/meta", params=handshake) as response:
        assert (response.status, await response.text()) == (200, "42")

    # A provider retry of a report already handled: 200, counted as a duplicate, not republished.
    read = SandboxReport("meta", "read", wamid, wamid, META_PHONE_ID, "5511987654321", "ord-A-e1")
    read_body = meta_status_payload(read, "100000000000001", time.time())
    signed = {"X-Hub-Signature-256": meta_signature(meta_secret, read_body)}
    first = await post("/webhooks/meta", read_body, signed)
    again = await post("/webhooks/meta", read_body, signed)
    assert first == (200, {"reports": 1, "template_changes": 0, "duplicates": 0})
    assert again == (200, {"reports": 0, "template_changes": 0, "duplicates": 1})

    # Every answer above came after the sink's acks (or before the sink): the topics are final.
    results = await read_json(run.kafka, run.topics.results, expected=None)
    errors = await read_json(run.kafka, run.topics.errors, expected=None)
    assert len(errors) == len(errors_before) == 3
    assert len(results) == 13
    assert [r["order_id"] for r in results if r.get("report_status") == "read"] == ["ord-A"]
    samples = await run.metrics()
    for reason in ("signature", "stale", "malformed", "too_large"):
        want = 3 if reason == "signature" else 1  # two Meta + one Z-API token
        assert total(samples, "connector_webhooks_rejected_total", reason=reason) == want, reason
    assert total(samples, "connector_webhook_duplicates_total") == 1
