"""Measure what should send our provider requests: requests/s and client CPU per 1,000 requests.

Starts a fast raw-protocol HTTP/1.1 server (uvloop) in a separate process pinned to one core,
then runs each client case in its own process pinned to the other core, so the client is the
bottleneck. Small JSON POSTs shaped like a Meta order_status template send. Prints JSON.

    /work/venv/bin/python benchmarks/http_transport.py [--duration 5] [--repeat 1]

Clients (every httpx-based case builds one ``httpx.Request`` per request, as adapters do):
  httpx            stock httpx 0.28 AsyncClient, Limits = concurrency, sniffio installed
  httpx-aiohttp    httpx AsyncClient over the httpx-aiohttp transport
  aiohttp-convert  aiohttp ClientSession, httpx.Request -> aiohttp -> httpx.Response by hand
  sender-aiohttp   connector.http.sender.AiohttpSender (what the connector ships)
  sender-httpx     connector.http.sender.HttpxSender (the fallback)
  sender-native    connector.http.native.NativeSender (``http.client: native``)
  plain-aiohttp    AiohttpSender sent the adapters' PlainRequest plus a per-request
                   X-Request-Id (what the connector sends)
  plain-native     NativeSender sent the same
  aiohttp-native   aiohttp with no httpx objects at all: the ceiling
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from httpx_aiohttp import AiohttpTransport

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from connector.http.sender import create_sender
from connector.providers.request import Endpoint

CLIENTS = (
    "httpx",
    "httpx-aiohttp",
    "aiohttp-convert",
    "sender-aiohttp",
    "sender-httpx",
    "sender-native",
    "plain-aiohttp",
    "plain-native",
    "aiohttp-native",
)
REQUEST_TIMEOUT = 30.0

# A Meta WhatsApp Cloud API order_status template send, ~600 bytes on the wire as JSON.
PAYLOAD = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "5511987654321",
    "type": "template",
    "biz_opaque_callback_data": "evt-6f1c2d9e-4b7a-4f0e-9c51-2a8d3e7b9f10",
    "template": {
        "name": "order_status_update_v2",
        "language": {"policy": "deterministic", "code": "pt_BR"},
        "components": [
            {
                "type": "order_status",
                "parameters": [
                    {
                        "type": "order_status",
                        "order_status": {
                            "reference_id": "ORD-2025-000123456-BR",
                            "order": {
                                "status": "shipped",
                                "description": (
                                    "Seu pedido saiu do centro de distribuicao e foi entregue "
                                    "a transportadora. Previsao de entrega: 3 dias uteis."
                                ),
                            },
                        },
                    }
                ],
            },
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Maria"},
                    {"type": "text", "text": "ORD-2025-000123456-BR"},
                    {"type": "text", "text": "Transportadora Rapida, rastreio BR123456789XX"},
                ],
            },
        ],
    },
}
BODY = json.dumps(PAYLOAD, separators=(",", ":")).encode()
HEADERS = {
    "Authorization": "Bearer EAAG" + "x" * 180,  # Meta system-user tokens are ~200 characters
    "Content-Type": "application/json",
}
PATH = "/v21.0/106540352242922/messages"

ANSWER_BODY = (
    b'{"messaging_product":"whatsapp","contacts":[{"input":"5511987654321",'
    b'"wa_id":"5511987654321"}],"messages":[{"id":"wamid.HBgNNTUxMTk4NzY1NDMyMRUCABEYEj'
    b'RGMzdCNDJDNTRFODZBOUZFAA==","message_status":"accepted"}]}'
)
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=UTF-8\r\n"
    b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(ANSWER_BODY)
) + ANSWER_BODY


# --------------------------------------------------------------------------- server process


class _AnswerEveryRequest(asyncio.Protocol):
    """Answers each complete HTTP/1.1 request (headers + Content-Length body) with ANSWER."""

    def connection_made(self, transport: Any) -> None:  # uvloop's is no asyncio.Transport
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        answered = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buffer[:end]).lower()
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(buffer) < total:
                break
            del buffer[:total]
            answered += 1
        if answered:
            self.transport.write(ANSWER * answered)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_AnswerEveryRequest, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


def serve() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve())


# --------------------------------------------------------------------------- client cases

SendOne = Callable[[], Awaitable[int]]


async def _make_client(
    name: str, url: str, concurrency: int
) -> tuple[SendOne, Callable[[], Awaitable[None]]]:
    def request() -> httpx.Request:
        return httpx.Request("POST", url, headers=HEADERS, content=BODY)

    if name == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT)

        async def send() -> int:
            answer = await client.send(request())
            answer.json()
            return answer.status_code

        return send, client.aclose

    if name == "httpx-aiohttp":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits), timeout=REQUEST_TIMEOUT
        )

        async def send() -> int:
            answer = await client.send(request())
            answer.json()
            return answer.status_code

        return send, client.aclose

    if name in ("aiohttp-convert", "aiohttp-native"):
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        )
        if name == "aiohttp-native":

            async def send() -> int:
                async with session.post(url, headers=HEADERS, data=BODY) as answer:
                    await answer.json()
                    return answer.status

            return send, session.close

        async def send() -> int:
            req = request()
            async with session.request(
                req.method,
                str(req.url),
                headers=req.headers.multi_items(),
                data=req.content,
                allow_redirects=False,
            ) as raw:
                content = await raw.read()
                answer = httpx.Response(
                    raw.status, headers=raw.raw_headers, content=content, request=req
                )
            answer.json()
            return answer.status_code

        return send, session.close

    if name in ("plain-aiohttp", "plain-native"):  # the adapters' value, one per request
        plain_sender = create_sender(
            "aiohttp" if name == "plain-aiohttp" else "native", max_connections=concurrency
        )
        endpoint = Endpoint(url, HEADERS.items())
        numbers = itertools.count()

        async def send() -> int:  # each with its own X-Request-Id, as delivery.jobs adds it
            request = endpoint.post(BODY).with_headers(("X-Request-Id", f"evt-{next(numbers)}"))
            answer = await plain_sender.send(request, timeout=REQUEST_TIMEOUT)
            answer.json()
            return answer.status_code

        return send, plain_sender.aclose

    if name in ("sender-aiohttp", "sender-httpx", "sender-native"):
        kinds = {"sender-aiohttp": "aiohttp", "sender-httpx": "httpx", "sender-native": "native"}
        sender = create_sender(kinds[name], max_connections=concurrency)  # type: ignore[arg-type]

        async def send() -> int:
            answer = await sender.send(request(), timeout=REQUEST_TIMEOUT)
            answer.json()
            return answer.status_code

        return send, sender.aclose

    raise SystemExit(f"unknown client {name!r}")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def _run_case(
    name: str, url: str, concurrency: int, warmup: float, duration: float, server_pid: int
) -> dict[str, Any]:
    send, close = await _make_client(name, url, concurrency)
    done = 0
    errors = 0
    first_error: str | None = None
    measuring = False
    latencies: list[float] = []
    stopping = False

    async def worker() -> None:
        nonlocal done, errors, first_error
        clock = time.perf_counter
        while not stopping:
            started = clock()
            try:
                status = await send()
            except Exception as exc:  # count, keep going: the case reports them
                errors += 1
                first_error = first_error or type(exc).__name__
                await asyncio.sleep(0.01)
                continue
            if status != 200:
                errors += 1
                continue
            done += 1
            if measuring:
                latencies.append(clock() - started)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring = True
    wall0, cpu0, srv0, done0 = time.perf_counter(), _cpu_seconds(), 0.0, done
    srv0 = _process_cpu_seconds(server_pid)
    await asyncio.sleep(duration)
    wall1, cpu1, done1 = time.perf_counter(), _cpu_seconds(), done
    srv1 = _process_cpu_seconds(server_pid)
    measuring = False
    stopping = True
    _, pending = await asyncio.wait(tasks, timeout=5)  # measured already: cut the tail
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await close()

    wall, cpu, count = wall1 - wall0, cpu1 - cpu0, done1 - done0
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "requests": count,
        "seconds": round(wall, 3),
        "requests_per_s": round(count / wall, 1),
        "client_cpu_s_per_1k": round(cpu / count * 1000, 4) if count else None,
        "client_cpu_util": round(cpu / wall, 3),
        "server_cpu_util": round((srv1 - srv0) / wall, 3),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
        "first_error": first_error,
    }


def client_case(args: argparse.Namespace) -> None:
    spec = json.loads(args.client_case)
    coro = _run_case(
        spec["client"],
        spec["url"],
        spec["concurrency"],
        spec["warmup"],
        spec["duration"],
        spec["server_pid"],
    )
    if spec["loop"] == "uvloop":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(coro)
    else:
        with asyncio.Runner() as runner:
            result = runner.run(coro)
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- orchestration


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for dist in ("httpx", "httpcore", "anyio", "sniffio", "aiohttp", "httpx-aiohttp", "uvloop"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _run_one(spec: dict[str, Any], cpu: int | None, limit: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--client-case", json.dumps(spec)]
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=preexec,
        timeout=limit,
    )
    if out.returncode != 0:
        return {"failed": out.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _summarise(case: tuple[str, str, int], runs: list[dict[str, Any]]) -> dict[str, Any]:
    client, loop, concurrency = case
    row: dict[str, Any] = {"client": client, "loop": loop, "concurrency": concurrency}
    ok = [r for r in runs if r.get("requests")]
    if not ok:
        row["failed"] = runs
        return row
    for key in ("requests_per_s", "client_cpu_s_per_1k", "client_cpu_util", "server_cpu_util"):
        row[key] = _median([r[key] for r in ok])
    # what one fully available core would sustain: robust to other load on a shared machine
    row["requests_per_cpu_s"] = round(1000 / row["client_cpu_s_per_1k"])
    for key in ("p50_ms", "p99_ms"):
        row[key] = _median([r[key] for r in ok if r[key] is not None])
    row["errors"] = sum(r["errors"] for r in ok)
    row["runs_with_completions"] = f"{len(ok)}/{len(runs)}"
    row["runs"] = [
        {k: r[k] for k in ("requests_per_s", "client_cpu_s_per_1k", "client_cpu_util")} for r in ok
    ]
    return row


def _markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| client | loop | c=10 req/s | c=10 CPU-s/1k | c=100 req/s | c=100 CPU-s/1k "
        "| c=500 req/s | c=500 CPU-s/1k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in results:
        rows.setdefault((r["client"], r["loop"]), {})[r["concurrency"]] = r
    for (client, loop), by_c in rows.items():
        cells = []
        for c in (10, 100, 500):
            r = by_c.get(c, {})
            rps, cpu = r.get("requests_per_s"), r.get("client_cpu_s_per_1k")
            cells += [f"{rps:,.0f}" if rps else "-", f"{cpu:.3f}" if cpu else "-"]
        lines.append(f"| {client} | {loop} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    cases = [
        (client, loop, concurrency)
        for concurrency in args.concurrency
        for client in args.clients
        for loop in args.loops
    ]
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {case: [] for case in cases}
    limit = args.warmup + args.duration + REQUEST_TIMEOUT + 60
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        if pin:
            os.sched_setaffinity(server.pid, {cpus[0]})
        url = f"http://127.0.0.1:{port}{PATH}"
        load_before = os.getloadavg()
        # Repeats go round all cases so that load from other users hits every case alike.
        for round_no in range(args.repeat):
            for client, loop, concurrency in cases:
                spec = {
                    "client": client,
                    "loop": loop,
                    "concurrency": concurrency,
                    "url": url,
                    "warmup": args.warmup,
                    "duration": args.duration,
                    "server_pid": server.pid,
                }
                one = _run_one(spec, cpus[1] if pin else None, limit)
                runs[(client, loop, concurrency)].append(one)
                print(
                    f"round {round_no + 1} {client:16} {loop:8} c={concurrency:<4} "
                    f"{one.get('requests_per_s')} req/s "
                    f"cpu/1k={one.get('client_cpu_s_per_1k')} "
                    f"client_util={one.get('client_cpu_util')} "
                    f"server_util={one.get('server_cpu_util')}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(timeout=10)
    results = [_summarise(case, case_runs) for case, case_runs in runs.items()]
    print(_markdown(results), file=sys.stderr)

    report = {
        "benchmark": "http_transport",
        "machine": {
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": _versions(),
        "settings": {
            "request_body_bytes": len(BODY),
            "response_body_bytes": len(ANSWER_BODY),
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "repeat": args.repeat,
            "aggregate": "median over repeats, rounds interleaved",
            "pinned": pin,
            "server": "raw asyncio protocol on uvloop, separate process",
            "per_request_timeout_s": REQUEST_TIMEOUT,
        },
        "results": results,
    }
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median kept)")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 500]
    )
    parser.add_argument("--clients", type=lambda s: s.split(","), default=list(CLIENTS))
    parser.add_argument("--loops", type=lambda s: s.split(","), default=["asyncio", "uvloop"])
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/client to CPUs")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
    elif args.client_case:
        client_case(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
