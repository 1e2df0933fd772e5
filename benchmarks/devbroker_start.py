"""Measure the local broker's cold start: jars not cached (empty cache + empty Maven repo, so
Maven Central downloads really happen) versus cached, and a restart on the same data.

    python -m benchmarks.devbroker_start [--runs N]

Prints one JSON document (seconds); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from connector.dev.devbroker import LocalKafka


def _timed_start(broker: LocalKafka) -> float:
    began = time.monotonic()
    broker.start()
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="devbroker-bench-"))
    result: dict[str, object] = {
        "benchmark": "devbroker_start",
        "load_average_1m": os.getloadavg()[0],
    }
    try:
        print("not cached: empty jar cache and Maven repository...", file=sys.stderr)
        cold = LocalKafka(cache_dir=scratch / "cache", maven_repo=scratch / "m2")
        total = _timed_start(cold)
        timings = cold.last_timings
        cold.stop()
        result["not_cached"] = {"start_s": round(total, 2), **_phases(timings)}
        cached = []
        for run in range(args.runs):
            print(f"cached run {run + 1}/{args.runs}...", file=sys.stderr)
            warm = LocalKafka(cache_dir=scratch / "cache")
            total = _timed_start(warm)
            timings = warm.last_timings
            began = time.monotonic()
            warm.stop(keep_data=True)
            stopped = time.monotonic() - began
            restart = _timed_start(warm)
            warm.stop()
            cached.append(
                {
                    "start_s": round(total, 2),
                    **_phases(timings),
                    "stop_s": round(stopped, 2),
                    "restart_same_data_s": round(restart, 2),
                }
            )
        result["cached"] = cached
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result))


def _phases(timings: object) -> dict[str, float]:
    if timings is None or not dataclasses.is_dataclass(timings):
        return {}
    return {f"{k}": round(float(v), 2) for k, v in dataclasses.asdict(timings).items()}  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
