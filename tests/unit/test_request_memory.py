"""A built request keeps only its body's bytes, not orjson's 4 KiB output buffer (issue 12:
every buffered record holds its request until it is sent)."""

from __future__ import annotations

import gc
import tracemalloc

import orjson

from connector.providers.request import Endpoint


def test_a_built_request_holds_an_exact_size_body() -> None:
    endpoint = Endpoint("https://graph.example/v21.0/123/messages", [("Authorization", "x")])
    payloads = [{"order": i, "text": "shipped " * 20} for i in range(500)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        requests = [endpoint.post(orjson.dumps(p)) for p in payloads]
        gc.collect()
        per_request = (tracemalloc.get_traced_memory()[0] - before) / len(requests)
    finally:
        tracemalloc.stop()
    assert orjson.loads(requests[7].content) == payloads[7]
    body = len(requests[0].content)
    assert body < 400
    # The body, the request object and the list slot; orjson's own buffer alone is 4 KiB.
    assert per_request < body + 400, per_request
