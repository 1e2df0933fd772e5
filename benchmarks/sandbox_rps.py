"""Measure the provider sandbox's throughput: start it in its own process (pinned to one core
when possible), drive it from this process with an aiohttp client, print JSON.

    python benchmarks/sandbox_rps.py --duration 10 --concurrency 64 --provider meta
    python benchmarks/sandbox_rps.py --client wrk     # wrk (C) as the load generator

The aiohttp client saturates its own core first on a 2-core machine, so ``--client wrk``
(``apt-get install wrk``) gives the truer server number; ``server_cpu_cores_used`` and
``rps_per_server_core`` show how much of one core the sandbox needed either way.

Latency and faults are off and rate limits disabled, so this measures the server's hot path
(auth, JSON parse, validation, per-order state, recording).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
STATUSES = ("processing", "partially_shipped", "shipped")


def request_for(provider: str, base: str, n: int) -> tuple[str, dict[str, str], bytes]:
    order = f"ord-{n % 5000}"
    status = STATUSES[n % 3]
    if provider == "meta":
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": f"1555{n % 5000:07d}",
            "type": "template",
            "biz_opaque_callback_data": f"evt-{n}",
            "template": {
                "name": "order_status_update",
                "language": {"policy": "deterministic", "code": "en_US"},
                "components": [
                    {
                        "type": "order_status",
                        "parameters": [
                            {
                                "type": "order_status",
                                "order_status": {
                                    "reference_id": order,
                                    "order": {"status": status, "description": "On its way"},
                                },
                            }
                        ],
                    }
                ],
            },
        }
        headers = {"Authorization": "Bearer sandbox-meta-token"}
        url = f"{base}/meta/v21.0/106540352242922/messages"
    elif provider == "zonos":
        body = {
            "store": "999",
            "secret": "sandbox-zonos-secret",
            "orderId": f"999-{n}",
            "orderStatus": "VENDOR_PREPARING_ORDER",
        }
        headers = {"Accept": "application/json"}
        url = f"{base}/zonos/v1/updateVendorOrderStatus"
    else:
        raise SystemExit(f"unsupported provider {provider}")
    headers.update({"Content-Type": "application/json", "X-Request-Id": f"evt-{n}"})
    return url, headers, orjson.dumps(body)


def start_sandbox(cpu: int | None, loop: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-m",
        "connector.dev.sandbox",
        "--port",
        "0",
        "--no-rate-limits",
        "--loop",
        loop,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("sandbox listening on "):
        proc.kill()
        raise SystemExit(f"sandbox did not start: {line!r}")
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    return proc, line.split()[-1]


async def drive(
    base: str, provider: str, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    counter = 0
    measuring = False
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + warmup + duration

        async def worker() -> None:
            nonlocal counter
            while time.monotonic() < stop_at:
                counter += 1
                url, headers, body = request_for(provider, base, counter)
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if measuring:
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                        latencies.append(time.perf_counter() - started)

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring = True
        measured_from = time.monotonic()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - measured_from
    latencies.sort()
    total = sum(statuses.values())

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3)

    return {
        "requests": total,
        "elapsed_s": round(elapsed, 3),
        "rps": round(total / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
    }


WRK_SCRIPT = """
counter = 0
local template = [[%s]]
request = function()
  counter = counter + 1
  local body = string.gsub(template, "REFID", tostring(counter))
  return wrk.format("POST", nil, nil, body)
end
"""


def drive_wrk(
    base: str, provider: str, concurrency: int, duration: float, pin: bool
) -> dict[str, Any]:
    """wrk sends the same body with a fresh order id per request (no X-Request-Id variation)."""
    url, headers, body = request_for(provider, base, 1)
    marker = "ord-1" if provider == "meta" else "999-1"
    script = WRK_SCRIPT % body.decode().replace(marker, marker[:-1] + "REFID")
    for name, value in headers.items():
        script += f'wrk.headers["{name}"] = "{value}"\n'
    path = Path("/tmp") / f"sandbox-wrk-{os.getpid()}.lua"
    path.write_text(script)
    cmd = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{int(duration)}s",
        "--latency",
        "-s",
        str(path),
        url,
    ]
    if pin and shutil.which("taskset"):
        cmd = ["taskset", "-c", "1", *cmd]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        path.unlink(missing_ok=True)
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"([0-9]+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: ([0-9]+)", out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    return {
        "requests": total,
        "elapsed_s": duration,
        "rps": rps,
        "statuses": {"non_2xx": int(non2xx.group(1)) if non2xx else 0},
        "latency_ms": {"p50": latency.get("50"), "p99": latency.get("99")},
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", choices=["meta", "zonos"], default="meta")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--client", choices=["aiohttp", "wrk"], default="aiohttp")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    proc, base = start_sandbox(0 if pin else None, args.loop)
    try:
        if pin:
            os.sched_setaffinity(0, {1})
        server = psutil.Process(proc.pid)
        cpu_before = server.cpu_times()
        wall_before = time.monotonic()
        if args.client == "wrk":
            result = drive_wrk(base, args.provider, args.concurrency, args.duration, pin)
        else:
            result = asyncio.run(
                drive(base, args.provider, args.concurrency, args.duration, args.warmup)
            )
        wall = time.monotonic() - wall_before
        cpu_after = server.cpu_times()
        busy = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        result["server_cpu_cores_used"] = round(busy / wall, 3)
        result["rps_per_server_core"] = round(result["rps"] / max(busy / wall, 1e-9), 1)
        with aiohttp_stats(base) as stats:
            result["server_accepted"] = stats["accepted"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    result.update(
        {
            "provider": args.provider,
            "concurrency": args.concurrency,
            "loop": args.loop,
            "pinned": pin,
            "client": args.client,
            "load_average": os.getloadavg(),
        }
    )
    print(json.dumps(result))
    return 0


class aiohttp_stats:  # noqa: N801 - tiny context manager used like a function
    def __init__(self, base: str) -> None:
        self.base = base

    def __enter__(self) -> dict[str, Any]:
        async def fetch() -> dict[str, Any]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(self.base + "/_sandbox/stats") as resp,
            ):
                data: dict[str, Any] = await resp.json()
                return data

        return asyncio.run(fetch())

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
