"""Backpressure's pure rule (``connector.core.backpressure.plan``) with plain numbers: fair
shares, the totals, and the hysteresis that keeps a partition from flapping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connector.core.backpressure import BufferLimits, BufferState, PartitionLoad, plan

LIMITS = BufferLimits(max_records=100, max_bytes=10_000, max_uncommitted=1_000)


def load(
    key: str,
    outstanding: int = 0,
    *,
    buffered_bytes: int = 0,
    uncommitted: int = 0,
    paused: bool = False,
) -> PartitionLoad[str]:
    return PartitionLoad(key, outstanding, buffered_bytes, uncommitted, paused)


def state(
    *loads: PartitionLoad[str], records: int | None = None, nbytes: int = 0
) -> BufferState[str]:
    total = sum(p.outstanding for p in loads) if records is None else records
    return BufferState(list(loads), total, nbytes, LIMITS)


def test_a_partition_over_its_record_share_pauses_alone() -> None:
    # Two partitions: a share of 50 records each.
    assert plan(state(load("a", 50), load("b", 10))) == ({"a"}, set())


def test_bytes_and_uncommitted_span_count_against_the_share_too() -> None:
    by_bytes = state(load("a", 1, buffered_bytes=5_000), load("b", 1), nbytes=5_000)
    assert plan(by_bytes) == ({"a"}, set())
    by_span = state(load("a", 1, uncommitted=500), load("b", 1))
    assert plan(by_span) == ({"a"}, set())


def test_totals_over_the_limit_pause_every_partition_with_work_but_not_idle_ones() -> None:
    loads = (load("a", 30), load("b", 30), load("c", 0))
    assert plan(state(*loads, records=100)) == ({"a", "b"}, set())


def test_a_paused_partition_resumes_only_under_half_its_share_with_low_totals() -> None:
    # Share 50: at 25 outstanding it is still at half its share, so it stays paused.
    assert plan(state(load("a", 25, paused=True), load("b", 0))) == (set(), set())
    assert plan(state(load("a", 24, paused=True), load("b", 0))) == (set(), {"a"})
    # Under half its share, but the totals are above half the limits: stays paused.
    assert plan(state(load("a", 10, paused=True), load("b", 45), records=55)) == (set(), set())


def test_no_live_partitions_plans_nothing() -> None:
    assert plan(state()) == (set(), set())


@given(
    st.lists(
        st.tuples(
            st.integers(0, 200), st.integers(0, 20_000), st.integers(0, 2_000), st.booleans()
        ),
        max_size=8,
    )
)
def test_plan_pauses_only_running_and_resumes_only_paused_partitions(
    rows: list[tuple[int, int, int, bool]],
) -> None:
    loads = [
        load(f"p{i}", o, buffered_bytes=b, uncommitted=u, paused=p)
        for i, (o, b, u, p) in enumerate(rows)
    ]
    pause, resume = plan(state(*loads, nbytes=sum(b for _, b, _, _ in rows)))
    paused = {p.key for p in loads if p.paused}
    assert pause.isdisjoint(paused)
    assert resume <= paused
    # A partition over any of its shares is never left running.
    share = LIMITS.max_records // max(1, len(loads))
    for p in loads:
        if p.outstanding >= max(1, share):
            assert p.key in pause or (p.paused and p.key not in resume)
