"""Backpressure as a pure rule: which partitions to pause and which to resume, from buffer
counts. No I/O, no Kafka: the engine gathers the numbers and applies the plan.

Each partition gets a fair share of the record, byte and uncommitted-span limits. A partition
over its share is paused; when the totals are over the limits every partition with
outstanding work is paused. A paused partition resumes once it is under half its share and
the totals are under half the limits.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class BufferLimits:
    max_records: int
    max_bytes: int
    max_uncommitted: int


@dataclass(frozen=True, slots=True)
class PartitionLoad(Generic[K]):
    key: K
    outstanding: int  # records taken in whose outcome is not acknowledged yet
    buffered_bytes: int
    uncommitted: int  # records taken in since the commit point
    paused: bool


@dataclass(frozen=True, slots=True)
class BufferState(Generic[K]):
    partitions: Sequence[PartitionLoad[K]]  # the live (assigned, not draining) partitions
    buffered_records: int
    buffered_bytes: int
    limits: BufferLimits


def plan(state: BufferState[K]) -> tuple[set[K], set[K]]:
    """``(pause, resume)``: partitions to pause now and paused partitions to resume now."""
    limits, live = state.limits, state.partitions
    n = max(1, len(live))
    share_records = max(1, limits.max_records // n)
    share_bytes = max(1, limits.max_bytes // n)
    share_span = max(1, limits.max_uncommitted // n)
    over = state.buffered_records >= limits.max_records or state.buffered_bytes >= limits.max_bytes
    low = (
        state.buffered_records <= limits.max_records // 2
        and state.buffered_bytes <= limits.max_bytes // 2
    )
    pause: set[K] = set()
    resume: set[K] = set()
    for p in live:
        full = (
            p.outstanding >= share_records
            or p.buffered_bytes >= share_bytes
            or p.uncommitted >= share_span
        )
        if p.paused:
            if not (full or p.outstanding >= share_records // 2 or not low):
                resume.add(p.key)
        elif full or (over and p.outstanding > 0):
            pause.add(p.key)
    return pause, resume
