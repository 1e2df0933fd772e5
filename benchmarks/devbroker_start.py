"""Measure the local broker's cold start: jars not cached (empty cache + empty Maven repo, so
Maven Central downloads really happen) versus cached, and a restart on the same data.

    python benchmarks/devbroker_start.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from connector.devbroker import LocalKafka


def _timed_start(broker: LocalKafka) -> float:
    began = time.monotonic()
    broker.start()
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="devbroker-bench-"))
    try:
        cold = LocalKafka(cache_dir=scratch / "cache", maven_repo=scratch / "m2")
        total = _timed_start(cold)
        timings = cold.last_timings
        cold.stop()
        print(f"not cached: start() {total:.1f}s ({timings})")
        for run in range(args.runs):
            warm = LocalKafka(cache_dir=scratch / "cache")
            total = _timed_start(warm)
            timings = warm.last_timings
            began = time.monotonic()
            warm.stop(keep_data=True)
            stopped = time.monotonic() - began
            restart = _timed_start(warm)
            warm.stop()
            print(
                f"cached #{run + 1}: start() {total:.1f}s ({timings}); stop {stopped:.1f}s; "
                f"restart on same data {restart:.1f}s"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
