"""CPU cost per event of decoding and of each adapter's build_request + classify (one core).

Measures process CPU time (not wall time, so other load on the machine matters less), best of 7.
Run: python -m benchmarks.event_and_adapter_cost [iterations]; prints one JSON document (µs).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence

import httpx
import orjson

from connector.contract.events import decode_event
from connector.providers import Provider, build_provider, parse_account
from tests.support.providers import ACCOUNTS, event_dict

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ANSWERS = {
    "meta": {"messaging_product": "whatsapp", "messages": [{"id": "wamid.X"}]},
    "ycloud": {"id": "y1", "status": "accepted", "externalId": "e"},
    "zapi": {"zaapId": "z", "messageId": "m", "id": "m"},
    "zonos": {"success": "Updated Order: 1 to new order status: X"},
}


def cpu_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 2000)):
        fn()
    best = float("inf")
    for _ in range(7):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - start) / n)
    return best * 1e6


def decode_cost(value: bytes, headers: Sequence[tuple[str, bytes | None]], n: int) -> float:
    return cpu_us(lambda: decode_event(value, headers), n)


def adapter_costs(provider: Provider, response: httpx.Response, n: int) -> dict[str, float]:
    event = decode_event(orjson.dumps(event_dict()))
    build = cpu_us(lambda: provider.build_request(event), n)
    classify = cpu_us(lambda: provider.classify(response, attempt=0), n)
    return {"build_us": round(build, 2), "classify_us": round(classify, 2)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    data = event_dict()
    plain = orjson.dumps(data)
    tp = [("traceparent", TRACEPARENT)]
    envelope = {"specversion": "1.0", "id": "x", "type": "t", "source": "s", "data": data}
    structured = orjson.dumps(envelope)
    ce_headers = [("content-type", b"application/cloudevents+json")]
    binary_headers = [("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_type", b"t"), *tp]
    cases = {
        "plain JSON": (plain, []),
        "plain + traceparent header": (plain, tp),
        "CloudEvents structured": (structured, ce_headers),
        "CloudEvents binary": (plain, binary_headers),
    }
    result: dict[str, object] = {
        "benchmark": "event_and_adapter_cost",
        "event_bytes": len(plain),
        "iterations": n,
        "decode_us": {
            name: round(decode_cost(value, headers, n), 2)
            for name, (value, headers) in cases.items()
        },
        "adapters": {
            kind: adapter_costs(
                build_provider(parse_account(account)),
                httpx.Response(200, json=ANSWERS[kind]),
                n,
            )
            for kind, account in ACCOUNTS.items()
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
