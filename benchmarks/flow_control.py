"""Provider flow control (issue 11) end to end: rate-limit use, adaptive rate, outage, late.

Each scenario runs the real daemon (``python -m connector.cli run``, its own process) against
sandbox processes and a real local Kafka broker, then reads the outcome topics, the sandboxes'
request logs, counters (polled during the run for time series) and last-processed statuses.
Stdout carries one JSON document; progress goes to stderr. ``--quick`` shrinks every scenario
to seconds. It never runs in CI (see tests for the fast, asserted versions).

The engine applies the components of ``connector/core`` (breaker, AdaptiveRate, PairLimiter,
ambiguity) through ``connector/delivery/flow.py``; the JSON states each target of issue 11
beside the measured value (docs/benchmarks.md has the figures before and after wiring).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from benchmarks.harness import (
    ConnectorProcess,
    OutcomeReader,
    ResourceSampler,
    SandboxProcess,
    Workload,
    broker,
    command_line,
    create_topics,
    env_secrets,
    machine,
    print_json,
    produce_backlog,
    running,
)
from connector.dev.demo import sandbox_accounts
from connector.dev.sandbox.config import SandboxConfig
from connector.dev.workload import WorkloadSpec, build_orders

RATE_LIMIT_LABELS = ("130429", "SENDER_RATE_LIMITED", "ACCOUNT_RATE_LIMITED")
PAIR_LIMIT_LABELS = ("131056", "TOO_MANY_REQUESTS")
SCENARIOS = ("rate-use", "adaptive", "outage", "late-processing")


def progress(message: str) -> None:
    print(f"[flow {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- sandboxes


class Sandbox(SandboxProcess):
    """A sandbox process configured with ``patch`` at every start; ``stop`` and ``start`` again
    keep its port, so the daemon's accounts reach it again (the outage scenario)."""

    def __init__(self, name: str, patch: dict[str, Any]) -> None:
        super().__init__("--record-capacity", "400000", name=name, sampling_period_s=0.5)
        self.patch = patch
        self.counter_series: list[tuple[float, dict[str, dict[str, int]]]] = []

    async def start(self) -> ResourceSampler:
        sampler = await super().start()
        await self.control("POST", "/_sandbox/config", self.patch)
        return sampler

    async def poll_counters(self, period_s: float = 0.5) -> None:
        """Cumulative answer counters over time (refusals are not in the request log)."""
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/_sandbox/stats") as answer:
                        stats = orjson.loads(await answer.read())
                    self.counter_series.append((time.time(), stats["requests"]))
                await asyncio.sleep(period_s)

    async def counters(self) -> dict[str, dict[str, int]]:
        return dict((await self.control("GET", "/_sandbox/stats"))["requests"])

    async def processed(self) -> dict[str, dict[str, Any]]:
        return dict((await self.control("GET", "/_sandbox/processed"))["orders"])


def _labels(counters: dict[str, dict[str, int]], needles: tuple[str, ...]) -> int:
    return sum(
        n
        for per_provider in counters.values()
        for label, n in per_provider.items()
        if any(needle in label for needle in needles)
    )


# ----------------------------------------------------------------------------- workload


def build_workload(accounts: dict[str, str], events: int, orders: int, seed: int) -> Workload:
    """``orders`` orders spread over ``accounts`` (account name -> provider kind)."""
    per_order = max(1, events // orders)
    names = sorted(accounts)
    scripts = []
    for i, name in enumerate(names):
        share = orders // len(names) + (1 if i < orders % len(names) else 0)
        scripts += build_orders(
            WorkloadSpec(
                orders=share,
                accounts={accounts[name]: name},
                seed=seed * 100 + i,
                events_per_order=per_order,
            )
        )
    return Workload.interleaved(scripts, seed)


def _account_dicts(
    sandbox_of: dict[str, Sandbox], kinds: dict[str, str], *, rate: float, timeout_s: float
) -> list[dict[str, Any]]:
    """Connector account settings: one per name, each provider's template from the demo."""
    out = []
    for n, (name, kind) in enumerate(sorted(kinds.items())):
        box = sandbox_of[name]
        template = next(
            a
            for a in sandbox_accounts(
                box.provider_url,
                SandboxConfig(),
                rate_per_second=rate,
                max_in_flight=256,
                request_timeout_s=timeout_s,
            )
            if a["provider"] == kind
        )
        account = {**template, "name": name}
        if kind == "meta":
            account["phone_number_id"] = f"10654035224{n:04d}"
        elif kind == "ycloud":
            account["sender"] = f"+55119000{n:05d}"
        out.append(account)
    return out


def account_id(account: dict[str, Any]) -> str:
    """How the sandbox names an account (request log ``account``, outage ``account``)."""
    kind = account["provider"]
    if kind == "meta":
        return str(account["phone_number_id"])
    if kind == "ycloud":
        return str(account["sender"])
    if kind == "zapi":
        return str(account["instance_id"])
    return str(account["store"])


# ----------------------------------------------------------------------------- one run


@dataclass(slots=True)
class Run:
    """Everything a scenario's figures are computed from."""

    workload: Workload
    accounts: list[dict[str, Any]]
    sandboxes: list[Sandbox]
    reader: OutcomeReader
    requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per sandbox
    counters: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    processed: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    sampler: ResourceSampler | None = None
    started_at: float = 0.0
    exit_code: int | None = None
    marks: dict[str, float] = field(default_factory=dict)


async def run_daemon(
    args: argparse.Namespace,
    bootstrap: str,
    *,
    sandboxes: list[Sandbox],
    accounts: list[dict[str, Any]],
    workload: Workload,
    delivery: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    during: Callable[[Run], Coroutine[Any, Any, None]] | None = None,
    linger_s: float = 0.0,
) -> Run:
    """Produce the backlog, run the daemon until every event has an outcome, collect."""
    run_id = uuid.uuid4().hex[:6]
    topics = await create_topics(bootstrap, f"flow-{run_id}.", args.partitions)
    await produce_backlog(bootstrap, topics["input"], workload)
    env = env_secrets(accounts, "FLOW")
    config: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"flow-{run_id}"},
        "topics": topics,
        "accounts": accounts,
        "limits": {"max_in_flight": 512, "commit_interval_s": 0.5, **(limits or {})},
        "http": {"client": "aiohttp", "max_connections": 512},
        "server": {"enabled": False},
    }
    if delivery is not None:
        config["delivery"] = delivery
    workdir = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    config_path = workdir / "connector.yaml"
    config_path.write_text(yaml.safe_dump(config))
    reader = OutcomeReader(expected=len(workload.records))
    run = Run(workload, accounts, sandboxes, reader)
    log_path = workdir / "connector.log"
    progress(f"daemon: {len(workload.records)} events, log {log_path}")
    daemon = ConnectorProcess(config_path, env, log_path, sampling_period_s=0.25)
    run.sampler = daemon.start()
    run.started_at = time.time()
    side: asyncio.Task[None] | None = None
    try:
        async with running(
            *reader.reading(bootstrap, topics, args.timeout_s),
            *(box.poll_counters() for box in sandboxes),
            run.sampler.run(),
        ):
            side = asyncio.create_task(during(run)) if during is not None else None
            await daemon.wait_outcomes(reader, args.timeout_s, "daemon", progress)
            if side is not None:
                await side
            if linger_s:
                progress(f"waiting {linger_s:g} s for late requests to land")
                await asyncio.sleep(linger_s)
            run.sampler.sample_now()
    finally:
        if side is not None and not side.done():
            side.cancel()
        run.exit_code = await asyncio.to_thread(daemon.stop)
    for box in sandboxes:
        if box.proc is None:
            continue
        run.requests[box.name] = await box.requests()
        run.counters[box.name] = await box.counters()
        run.processed[box.name] = await box.processed()
    return run


# ----------------------------------------------------------------------------- figures


def per_account_rates(
    requests: list[dict[str, Any]], accounts: list[dict[str, Any]], bucket_s: float = 1.0
) -> dict[str, dict[str, Any]]:
    """Accepted requests per account: total, mean rate over its active span, per-bucket series."""
    by_id = {account_id(a): a["name"] for a in accounts}
    times: dict[str, list[float]] = defaultdict(list)
    for req in requests:
        name = by_id.get(req["account"])
        if name is not None:
            times[name].append(req["received_at"])
    out = {}
    for name, stamps in times.items():
        stamps.sort()
        span = max(1e-9, stamps[-1] - stamps[0])
        t0 = stamps[0]
        series = Counter(int((t - t0) // bucket_s) for t in stamps)
        out[name] = {
            "accepted": len(stamps),
            "span_s": round(span, 2),
            "accepted_per_s": round(len(stamps) / span, 1),
            "per_s_series": [series.get(i, 0) for i in range(int(span // bucket_s) + 1)],
        }
    return out


def ordering_and_loss(run: Run) -> dict[str, Any]:
    """Order violations in each sandbox's arrival log, lost statuses, outcome classes."""
    meta = run.workload.meta
    violations = 0
    seen: Counter[str] = Counter()
    for requests in run.requests.values():
        highest: dict[str, int] = {}
        for req in sorted(requests, key=lambda r: r["seq"]):
            eid = req.get("event_id")
            if eid not in meta:
                continue
            seen[eid] += 1
            if seen[eid] > 1:
                continue
            order_id, sequence = meta[eid]
            if sequence < highest.get(order_id, 0):
                violations += 1
            else:
                highest[order_id] = sequence
    outcomes = run.reader.outcomes
    lost = sum(1 for e in meta if e not in seen and e not in run.reader.ids)
    return {
        "outcomes": dict(outcomes),
        "ordering_violations": violations,
        "events_without_outcome": sum(1 for e in meta if e not in run.reader.ids),
        "retries_exhausted": outcomes.get("error:retries_exhausted", 0),
        # a status is lost when its event ended as an error or never reached the provider
        "statuses_lost": lost + sum(n for k, n in outcomes.items() if k.startswith("error:")),
        "duplicate_deliveries": sum(n - 1 for n in seen.values()),
    }


def counter_timeline(box: Sandbox, limit_labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per polling interval: requests answered and how many were rate-limit refusals."""
    out = []
    prev_total = prev_refused = 0
    t_prev = None
    for at, counters in box.counter_series:
        total = sum(sum(c.values()) for c in counters.values())
        refused = _labels(counters, limit_labels)
        if t_prev is not None and at > t_prev:
            dt = at - t_prev
            out.append(
                {
                    "t_s": round(at - box.counter_series[0][0], 2),
                    "sent_per_s": round((total - prev_total) / dt, 1),
                    "refused_per_s": round((refused - prev_refused) / dt, 1),
                }
            )
        prev_total, prev_refused, t_prev = total, refused, at
    return out


def sliding_send_rates(box: Sandbox, *, after_s: float, window_s: int = 5) -> dict[str, Any]:
    """The send rate (requests answered, refusals included) per 1-s window from ``after_s``
    seconds after the first request, while the backlog lasted, and its ``window_s``-s sliding
    means: the adaptive scenario's convergence measure."""
    series = box.counter_series
    totals = [(at, sum(sum(c.values()) for c in counters.values())) for at, counters in series]
    busy = [(at, n) for at, n in totals if n > 0]
    if len(busy) < 2:
        return {"per_s": [], "sliding_mean_per_s": [], "mean_per_s": None, "max_sliding": None}
    t0 = busy[0][0]
    final = totals[-1][1]
    # the backlog ended when the counter stopped moving
    end = next(at for at, n in totals if n >= final)

    def at_time(t: float) -> float:  # the cumulative count at t, linearly interpolated
        for (a, na), (b, nb) in itertools.pairwise(totals):
            if a <= t <= b:
                return na + (nb - na) * ((t - a) / (b - a) if b > a else 1.0)
        return float(final)

    per_s = [
        round(at_time(t0 + i + 1) - at_time(t0 + i), 1) for i in range(int(after_s), int(end - t0))
    ]
    sliding = [
        round(sum(per_s[i - window_s : i]) / window_s, 1) for i in range(window_s, len(per_s) + 1)
    ]
    return {
        "from_s": after_s,
        "until_s": round(end - t0, 1),
        "per_s": per_s,
        "sliding_mean_per_s": sliding,
        "mean_per_s": round(sum(per_s) / len(per_s), 1) if per_s else None,
        "max_sliding": max(sliding) if sliding else None,
    }


# ----------------------------------------------------------------------------- scenarios


async def scenario_rate_use(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    """Three Meta/YCloud accounts, sandbox limit 80/s each (and Meta's pair rule), a backlog."""
    limit = 80.0
    kinds = {"meta-a": "meta", "meta-b": "meta", "ycloud-a": "ycloud"}
    patch = {
        "limits": {
            "meta_per_sender": {"per_second": limit},
            "ycloud_send_directly_per_sender": {"per_second": limit},
            "pair": {"per_second": 1 / 6, "burst": 45},
        },
        "faults": {p: {"latency": {"kind": "fixed", "ms": 20}} for p in ("meta", "ycloud")},
    }
    box = Sandbox("all", patch)
    await box.start()
    try:
        accounts = _account_dicts(
            dict.fromkeys(kinds, box), kinds, rate=limit, timeout_s=args.request_timeout_s
        )
        workload = build_workload(kinds, args.rate_events, args.rate_orders, args.seed)
        run = await run_daemon(
            args,
            bootstrap,
            sandboxes=[box],
            accounts=accounts,
            workload=workload,
            delivery={"coalesce_providers": []},  # every event must reach the provider
        )
    finally:
        box.stop()
    rates = per_account_rates(run.requests["all"], accounts)
    counters = run.counters["all"]
    for figures in rates.values():
        figures["use_of_limit"] = round(figures["accepted_per_s"] / limit, 3)
    return {
        "events": len(workload.records),
        "orders": args.rate_orders,
        "sandbox_limit_per_s": limit,
        "per_account": {k: {**v, "per_s_series": None} for k, v in rates.items()},
        "rate_limit_answers": _labels(counters, RATE_LIMIT_LABELS),
        "pair_limit_answers": _labels(counters, PAIR_LIMIT_LABELS),
        "sandbox_answers": counters,
        **ordering_and_loss(run),
        "target": "each account >= 0.95 of 80/s; 0 rate-limit and 0 pair-limit answers",
    }


async def scenario_adaptive(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    """The account says 80/s, the sandbox allows 50/s: how fast and how cleanly it converges."""
    kinds = {"meta-a": "meta"}
    patch = {"limits": {"meta_per_sender": {"per_second": 50, "burst": 50}}}
    box = Sandbox("all", patch)
    await box.start()
    try:
        accounts = _account_dicts(
            dict.fromkeys(kinds, box), kinds, rate=80.0, timeout_s=args.request_timeout_s
        )
        workload = build_workload(kinds, args.adaptive_events, args.adaptive_events // 5, args.seed)
        run = await run_daemon(
            args,
            bootstrap,
            sandboxes=[box],
            accounts=accounts,
            workload=workload,
            delivery={"coalesce_providers": []},
        )
    finally:
        box.stop()
    timeline = counter_timeline(box, RATE_LIMIT_LABELS)
    # While the backlog lasts the sender is busy (at least 40/s); after the last such interval
    # the backlog ran out and low rates say nothing about convergence.
    last_busy = max((i for i, p in enumerate(timeline) if p["sent_per_s"] >= 40), default=-1)
    busy = timeline[: last_busy + 1]
    first_busy = next((i for i, p in enumerate(busy) if p["sent_per_s"] > 0), 0)
    converged_at = next(
        (
            round(p["t_s"] - busy[first_busy]["t_s"], 2)
            for i, p in enumerate(busy)
            if i >= first_busy
            and len(busy) - i >= 3  # at least three busy intervals confirm it
            and all(q["sent_per_s"] <= 52.5 for q in busy[i:])
        ),
        None,
    )
    counters = run.counters["all"]
    refused = _labels(counters, RATE_LIMIT_LABELS)
    total = sum(sum(c.values()) for c in counters.values())
    settled = sliding_send_rates(box, after_s=10.0)
    windows = settled["sliding_mean_per_s"]
    return {
        "events": len(workload.records),
        "configured_per_s": 80.0,
        "sandbox_limit_per_s": 50.0,
        "requests": total,
        "rate_limit_answers": refused,
        "rate_limit_share": round(refused / total, 4) if total else None,
        # seconds from the first busy interval; None: not within the backlog
        "sent_rate_at_or_below_limit_after_s": converged_at,
        # the measure: send rate per 1-s window from t = 10 s, and its 5-s sliding means
        "after_10_s": settled,
        "after_10_s_mean_per_s": settled["mean_per_s"],
        "after_10_s_max_5s_mean_per_s": settled["max_sliding"],
        "after_10_s_5s_windows_above_limit": sum(1 for w in windows if w > 50.0),
        "after_10_s_5s_windows": len(windows),
        "timeline": timeline,
        **ordering_and_loss(run),
        "target": "after 10 s the mean and the max of the 5-s sliding send rate below 50/s "
        "(upward probes, 60 s after settling and rarer after each, may cross it); rate-limit "
        "answers < 2% of requests",
    }


async def scenario_outage(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    """One account's provider answers 503 (or its sandbox process is down) for a while."""
    kinds = {"meta-br": "meta", "ycloud-br": "ycloud", "zapi-br": "zapi", "zonos-us": "zonos"}
    victim = Sandbox("victim", {"limits": {"meta_per_sender": {"per_second": 0}}})
    others = Sandbox(
        "others",
        {
            "limits": {
                "meta_per_sender": {"per_second": 0},
                "ycloud_send_directly_per_sender": {"per_second": 0},
            }
        },
    )
    await victim.start()
    await others.start()
    sandbox_of = {name: victim if name == "meta-br" else others for name in kinds}
    # A per-account rate keeps every account busy for longer than the outage.
    accounts = _account_dicts(
        sandbox_of, kinds, rate=args.outage_rate, timeout_s=args.request_timeout_s
    )
    victim_account = next(a for a in accounts if a["name"] == "meta-br")
    duration = args.outage_s

    async def outage(run: Run) -> None:
        # Start once the daemon is well under way (a fifth of the outcomes are out). ASYNC110:
        # the reader has no event for a fraction of the outcomes; polling is enough here.
        while sum(run.reader.outcomes.values()) < run.reader.expected // 5:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.outage_after_s)
        run.marks["outage_start"] = time.time()
        progress(f"outage ({args.outage_mode}) on meta-br for {duration:g} s")
        if args.outage_mode == "http-503":
            await victim.control(
                "POST",
                "/_sandbox/outages",
                {"provider": "meta", "account": account_id(victim_account)},
            )
            await asyncio.sleep(duration)
            await victim.control("DELETE", "/_sandbox/outages")
        else:
            requests_before = await victim.requests()
            victim.stop()
            await asyncio.sleep(duration)
            await victim.start()
            run.marks["victim_requests_before_stop"] = float(len(requests_before))
            run.requests["victim-before-stop"] = requests_before
        run.marks["outage_end"] = time.time()
        progress("outage over")

    try:
        workload = build_workload(kinds, args.outage_events, args.outage_orders, args.seed)
        run = await run_daemon(
            args,
            bootstrap,
            sandboxes=[victim, others],
            accounts=accounts,
            workload=workload,
            during=outage,
        )
    finally:
        victim.stop()
        others.stop()
    start, end = run.marks.get("outage_start"), run.marks.get("outage_end")
    others_rates = per_account_rates(run.requests["others"], accounts)
    during_outage = {}
    if start and end:
        for figures in others_rates.values():
            del figures["per_s_series"]
        stamps = sorted(r["received_at"] for r in run.requests["others"])
        until = min(end, stamps[-1]) if stamps else end  # the others may finish first
        others_in = [t for t in stamps if start <= t <= until]
        others_out = [t for t in stamps if t < start]
        first = others_out[0] if others_out else start
        during_outage = {
            "others_accepted_per_s_before": round(len(others_out) / max(1e-9, start - first), 1),
            "others_accepted_per_s_during": round(len(others_in) / max(1e-9, until - start), 1),
            "others_busy_during_outage_s": round(max(0.0, until - start), 1),
        }
    victim_answers = {
        box: _labels(run.counters.get(box, {}), ("outage",)) for box in ("victim", "others")
    }
    return {
        "mode": args.outage_mode,
        "outage_s": duration,
        "events": len(workload.records),
        "orders": args.outage_orders,
        "outage_answers": victim_answers,
        **during_outage,
        **ordering_and_loss(run),
        "connector_peak_rss_mb": round(run.sampler.peak_rss / 2**20, 1) if run.sampler else None,
        "target": "0 statuses lost, 0 order violations, 0 retries_exhausted, others unchanged",
    }


async def scenario_late(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    """2% of requests are processed 3-15 s after the client timed out."""
    kinds = {"meta-br": "meta", "ycloud-br": "ycloud", "zapi-br": "zapi", "zonos-us": "zonos"}
    timeout = args.late_timeout_s
    late = {
        "late_rate": args.late_rate,
        "late_min_s": timeout + 3.0,
        "late_max_s": timeout + args.late_max_after_s,
    }
    patch = {
        "faults": dict.fromkeys(kinds.values(), late),
        "limits": {
            "meta_per_sender": {"per_second": 0},
            "ycloud_send_directly_per_sender": {"per_second": 0},
        },
    }
    box = Sandbox("all", patch)
    await box.start()
    try:
        accounts = _account_dicts(dict.fromkeys(kinds, box), kinds, rate=1000.0, timeout_s=timeout)
        workload = build_workload(kinds, args.late_events, args.late_orders, args.seed)
        run = await run_daemon(
            args,
            bootstrap,
            sandboxes=[box],
            accounts=accounts,
            workload=workload,
            limits={"late_guard": dict.fromkeys(("zapi", "zonos"), args.late_guard)},
            linger_s=timeout + args.late_max_after_s + 1.0,
        )
    finally:
        box.stop()
    requests = run.requests["all"]
    # the newest event of each order, and the status string the sandbox recorded for it
    newest: dict[str, tuple[int, str]] = {}
    for eid, (order_id, seq) in run.workload.meta.items():
        if seq > newest.get(order_id, (0, ""))[0]:
            newest[order_id] = (seq, eid)
    status_of_event: dict[str, tuple[str, str]] = {}  # event id -> (provider/order_ref, status)
    for req in requests:
        if req.get("event_id"):
            status_of_event[req["event_id"]] = (
                f"{req['provider']}/{req['order_ref']}",
                req["status"],
            )
    processed = run.processed["all"]
    wrong = unknown = 0
    for _, eid in newest.values():
        found = status_of_event.get(eid)
        if found is None:
            unknown += 1  # the newest status never reached the sandbox (superseded or lost)
            continue
        ref, status = found
        if processed.get(ref, {}).get("status") != status:
            wrong += 1
    counters = run.counters["all"]
    accepted = len(requests)
    distinct = len({r["event_id"] for r in requests if r.get("event_id")})
    return {
        "events": len(workload.records),
        "orders": len(newest),
        "late_rate": args.late_rate,
        "client_timeout_s": timeout,
        "late_guard_zapi_zonos": args.late_guard,
        "late_taken_in": _labels(counters, ("late",)) - _labels(counters, ("late_applied",)),
        "late_applied": _labels(counters, ("late_applied",)),
        "orders_whose_last_processed_is_not_newest": wrong,
        "orders_whose_newest_never_reached_the_provider": unknown,
        # requests the sandbox took in beyond one per event: ambiguous retries and re-asserts
        "extra_messages": accepted - distinct,
        "extra_messages_per_provider": _extras_per_provider(requests),
        **ordering_and_loss(run),
        "target": "0 orders whose last processed status is not their newest; report extras",
    }


def _extras_per_provider(requests: list[dict[str, Any]]) -> dict[str, int]:
    seen: Counter[tuple[str, str]] = Counter(
        (r["provider"], r["event_id"]) for r in requests if r.get("event_id")
    )
    out: Counter[str] = Counter()
    for (provider, _), n in seen.items():
        out[provider] += n - 1
    return dict(out)


RUNNERS: dict[str, Callable[[argparse.Namespace, str], Awaitable[dict[str, Any]]]] = {
    "rate-use": scenario_rate_use,
    "adaptive": scenario_adaptive,
    "outage": scenario_outage,
    "late-processing": scenario_late,
}


# ----------------------------------------------------------------------------- main


async def benchmark(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {}
    for name in args.scenario:
        progress(f"scenario {name}")
        t0 = time.monotonic()
        results[name] = await RUNNERS[name](args, bootstrap)
        results[name]["wall_s"] = round(time.monotonic() - t0, 1)
    return {
        "benchmark": "flow_control",
        "command": command_line("benchmarks.flow_control", args.argv),
        "quick": args.quick,
        "machine": {**machine(), "load_average_1m": round(os.getloadavg()[0], 2)},
        "scenarios": results,
        "wall_s": round(time.monotonic() - started, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flow_control",
        description="Issue 11 flow-control scenarios against the real daemon; prints JSON.",
    )
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all"
    )
    parser.add_argument("--quick", action="store_true", help="seconds per scenario")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--request-timeout-s", type=float, default=5.0)
    parser.add_argument("--rate-events", type=int, default=20_000)
    parser.add_argument("--rate-orders", type=int, default=2_000)
    parser.add_argument("--adaptive-events", type=int, default=3_000)
    parser.add_argument("--outage-events", type=int, default=5_000)
    parser.add_argument("--outage-orders", type=int, default=1_000)
    parser.add_argument("--outage-s", type=float, default=120.0)
    parser.add_argument("--outage-rate", type=float, default=10.0, help="per account, per s")
    parser.add_argument(
        "--outage-after-s", type=float, default=0.0, help="after a fifth of the outcomes"
    )
    parser.add_argument(
        "--outage-mode", choices=["http-503", "process-stopped"], default="http-503"
    )
    parser.add_argument("--late-events", type=int, default=5_000)
    parser.add_argument("--late-orders", type=int, default=1_000)
    parser.add_argument("--late-rate", type=float, default=0.02)
    parser.add_argument("--late-timeout-s", type=float, default=2.0)
    parser.add_argument("--late-max-after-s", type=float, default=15.0)
    parser.add_argument(
        "--late-guard",
        choices=["hold", "reassert"],
        default="hold",
        help="limits.late_guard for Z-API and Zonos (Meta/YCloud keep hold)",
    )
    return parser


QUICK = {
    "rate_events": 1_500,
    "rate_orders": 300,
    "adaptive_events": 600,
    "outage_events": 1_000,
    "outage_orders": 200,
    "outage_s": 8.0,
    "outage_rate": 20.0,
    "late_events": 1_000,
    "late_orders": 200,
    "late_rate": 0.05,
    "late_timeout_s": 1.0,
    "late_max_after_s": 4.0,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.scenario = args.scenario or list(SCENARIOS)
    if args.quick:
        defaults = build_parser().parse_args([])
        for name, value in QUICK.items():
            if getattr(args, name) == getattr(defaults, name):  # explicit flags win
                setattr(args, name, value)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with broker(progress) as bootstrap:
        result = asyncio.run(benchmark(args, bootstrap))
    print_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
