"""Micro-benchmark of the ordering core's per-record cost; prints one JSON object.

Run from the repository root: ``python -m benchmarks.ordering_micro [--records N]``.
Patterns mimic the engine: ~``window`` records in flight, finishing out of order.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable

from connector.core.ordering import LaneTable, OffsetTracker


def tracker_run(offsets: list[int], done_order: list[int], window: int) -> float:
    """Track offsets one window at a time, completing each window in shuffled order."""
    tracker = OffsetTracker(0)
    start = time.perf_counter()
    for base in range(0, len(offsets), window):
        for offset in offsets[base : base + window]:
            tracker.track(offset)
        for offset in done_order[base : base + window]:
            tracker.done(offset)
        _ = tracker.commit_point
    elapsed = time.perf_counter() - start
    assert tracker.outstanding == 0
    assert tracker.commit_point == offsets[-1] + 1
    return elapsed


def lane_run(keys: list[int], window: int, *, coalescing: bool) -> float:
    """Push every record; while more than ``window`` records are buffered (in flight or
    queued), complete the lane that started longest ago."""
    lanes: LaneTable[int, int] = LaneTable()
    busy: deque[int] = deque()
    buffered = 0
    finished = 0
    start = time.perf_counter()
    for item, key in enumerate(keys):
        buffered += 1
        if lanes.push(key, item) is not None:
            busy.append(key)
        while buffered > window:
            done_key = busy.popleft()
            if coalescing:
                nxt, superseded = lanes.complete_coalescing(done_key)
                buffered -= 1 + len(superseded)
                finished += 1 + len(superseded)
            else:
                nxt = lanes.complete(done_key)
                buffered -= 1
                finished += 1
            if nxt is not None:
                busy.append(done_key)
    while busy:
        done_key = busy.popleft()
        if lanes.complete(done_key) is not None:
            busy.append(done_key)
        finished += 1
    elapsed = time.perf_counter() - start
    assert len(lanes) == 0
    assert finished == len(keys)
    return elapsed


def measure(run: Callable[[], float], records: int, repeats: int) -> dict[str, float]:
    rates = [records / run() for _ in range(repeats)]
    return {
        "ops_per_s_best": round(max(rates)),
        "ops_per_s_median": round(statistics.median(rates)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=200, help="records in flight")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    offsets = list(range(args.records))
    done_order: list[int] = []
    for base in range(0, args.records, args.window):
        chunk = offsets[base : base + args.window]
        rng.shuffle(chunk)
        done_order.extend(chunk)
    keys = [rng.randrange(args.keys) for _ in range(args.records)]

    result = {
        "benchmark": "ordering_micro",
        "python": platform.python_version(),
        "records": args.records,
        "keys": args.keys,
        "window": args.window,
        "repeats": args.repeats,
        "track_plus_done": measure(
            lambda: tracker_run(offsets, done_order, args.window), args.records, args.repeats
        ),
        "push_plus_complete": measure(
            lambda: lane_run(keys, args.window, coalescing=False), args.records, args.repeats
        ),
        "push_plus_complete_coalescing": measure(
            lambda: lane_run(keys, args.window, coalescing=True), args.records, args.repeats
        ),
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
