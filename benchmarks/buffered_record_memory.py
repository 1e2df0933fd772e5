"""What one buffered record costs in memory: its value, the decoded event, the built request.

    python -m benchmarks.buffered_record_memory [--events 20000]

Decodes and builds the pipeline benchmark's workload in this process under ``tracemalloc`` and
prints one JSON document (bytes per record). The engine keeps the value and the decoded event
from intake until the record's outcome, for up to ``limits.max_buffered_records`` records; the
request only from the job's first run on (from intake where the account coalesces), so
``buffered_bytes_per_record`` (value + event) is what a record waiting for its turn costs.
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc

from pydantic import TypeAdapter

from connector.contract.events import decode_event, encode_event
from connector.dev.demo import DEMO_ACCOUNTS, sandbox_accounts
from connector.dev.sandbox.config import SandboxConfig
from connector.dev.workload import WorkloadSpec, build_orders, interleave
from connector.providers import AccountConfig, build_provider


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.buffered_record_memory")
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    n = args.events - args.events % 10
    scripts = build_orders(
        WorkloadSpec(orders=n // 10, accounts=DEMO_ACCOUNTS, seed=7, events_per_order=10)
    )
    values = [encode_event(e) for e in interleave(scripts, seed=11)]
    accounts = TypeAdapter(list[AccountConfig]).validate_python(
        sandbox_accounts(lambda p: f"http://127.0.0.1:1/{p}", SandboxConfig())
    )
    providers = {a.name: build_provider(a) for a in accounts}
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    events = [decode_event(v) for v in values]
    gc.collect()
    decoded = tracemalloc.get_traced_memory()[0]
    built = [providers[e.account or ""].build_request(e) for e in events]
    gc.collect()
    requests = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "benchmark": "buffered_record_memory",
                "events": len(built),
                "value_bytes_per_record": round(sum(map(len, values)) / n, 1),
                "decoded_event_bytes_per_record": round((decoded - start) / n, 1),
                "built_request_bytes_per_record": round((requests - decoded) / n, 1),
                "buffered_bytes_per_record": round(
                    (sum(map(len, values)) + decoded - start) / n, 1
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
