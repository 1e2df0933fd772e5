"""The ordering core: lanes and offset watermarks, by example and against reference models."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.core.ordering import LaneTable, OffsetTracker, offsets_to_commit

PROPERTY = settings(deadline=None, max_examples=300)


# --------------------------------------------------------------------------- OffsetTracker


def test_tracker_is_empty_before_anything_is_tracked() -> None:
    tracker = OffsetTracker(3)
    assert tracker.partition == 3
    assert tracker.commit_point is None
    assert tracker.outstanding == 0
    assert tracker.last_tracked is None
    assert tracker.committed is None
    assert not tracker.needs_commit


def test_commit_point_is_lowest_outstanding_offset() -> None:
    tracker = OffsetTracker(0)
    for offset in (10, 11, 12):
        tracker.track(offset)
    assert tracker.commit_point == 10
    assert tracker.outstanding == 3

    tracker.done(11)  # finished out of order: 10 still holds the watermark
    assert tracker.commit_point == 10
    assert tracker.outstanding == 2

    tracker.done(10)  # 10 and 11 done: the point jumps past both
    assert tracker.commit_point == 12

    tracker.done(12)
    assert tracker.commit_point == 13  # last tracked + 1 when nothing is outstanding
    assert tracker.outstanding == 0


def test_gaps_in_offsets_are_skipped_over() -> None:
    # Compaction and transaction markers leave holes; the point jumps over them.
    tracker = OffsetTracker(0)
    tracker.track(5)
    tracker.track(9)
    tracker.track(20)
    tracker.done(9)
    assert tracker.commit_point == 5
    tracker.done(5)
    assert tracker.commit_point == 20
    tracker.done(20)
    assert tracker.commit_point == 21


def test_tracking_resumes_after_everything_was_done() -> None:
    tracker = OffsetTracker(0)
    tracker.track(1)
    tracker.done(1)
    assert tracker.commit_point == 2
    tracker.track(7)
    assert tracker.commit_point == 7
    tracker.done(7)
    assert tracker.commit_point == 8


@pytest.mark.parametrize("offset", [4, 3])
def test_track_rejects_offsets_that_do_not_increase(offset: int) -> None:
    tracker = OffsetTracker(2)
    tracker.track(4)
    with pytest.raises(ValueError, match="strictly increase"):
        tracker.track(offset)
    assert tracker.last_tracked == 4
    assert tracker.outstanding == 1


def test_done_rejects_untracked_offset() -> None:
    tracker = OffsetTracker(0)
    with pytest.raises(ValueError, match="not outstanding"):
        tracker.done(0)
    tracker.track(1)
    tracker.track(3)
    with pytest.raises(ValueError, match="not outstanding"):
        tracker.done(2)  # a gap, never tracked
    assert tracker.outstanding == 2


@pytest.mark.parametrize("order", [(1, 1), (2, 2), (2, 1, 2)])
def test_done_twice_is_an_error(order: tuple[int, ...]) -> None:
    tracker = OffsetTracker(0)
    tracker.track(1)
    tracker.track(2)
    *first, again = order
    for offset in first:
        tracker.done(offset)
    point = tracker.commit_point
    with pytest.raises(ValueError, match="not outstanding"):
        tracker.done(again)
    assert tracker.commit_point == point


def test_committed_records_what_was_committed() -> None:
    tracker = OffsetTracker(0)
    for offset in range(5):
        tracker.track(offset)
    assert tracker.needs_commit  # nothing committed yet; point 0 is worth committing once
    tracker.advance_committed(0)
    assert not tracker.needs_commit
    tracker.done(0)
    tracker.done(1)
    assert tracker.needs_commit
    tracker.advance_committed(2)
    assert tracker.committed == 2
    assert not tracker.needs_commit
    tracker.advance_committed(2)  # re-recording the same commit is harmless
    assert tracker.committed == 2


def test_advance_committed_refuses_to_pass_the_commit_point() -> None:
    tracker = OffsetTracker(0)
    with pytest.raises(ValueError, match="beyond the commit point"):
        tracker.advance_committed(0)  # nothing tracked
    tracker.track(0)
    tracker.track(1)
    tracker.done(1)
    with pytest.raises(ValueError, match="beyond the commit point"):
        tracker.advance_committed(1)  # 0 is still outstanding
    assert tracker.committed is None


def test_advance_committed_refuses_to_go_back() -> None:
    tracker = OffsetTracker(0, committed=10)
    tracker.track(10)
    tracker.track(11)
    tracker.done(10)
    tracker.advance_committed(11)
    with pytest.raises(ValueError, match="behind"):
        tracker.advance_committed(10)
    assert tracker.committed == 11


def test_initial_committed_position_suppresses_a_useless_commit() -> None:
    tracker = OffsetTracker(0, committed=100)
    tracker.track(100)
    assert tracker.commit_point == 100
    assert not tracker.needs_commit
    tracker.done(100)
    assert tracker.needs_commit


def test_repr_shows_the_watermark() -> None:
    tracker = OffsetTracker(4)
    tracker.track(7)
    assert repr(tracker) == (
        "OffsetTracker(partition=4, commit_point=7, outstanding=1, committed=None)"
    )


def test_offsets_to_commit_lists_only_partitions_that_moved() -> None:
    idle = OffsetTracker(0)  # nothing tracked
    moved = OffsetTracker(1, committed=5)
    stuck = OffsetTracker(2, committed=5)
    fresh = OffsetTracker(3)
    for offset in (5, 6, 7):
        moved.track(offset)
        stuck.track(offset)
    moved.done(5)
    moved.done(6)
    stuck.done(6)  # 5 still outstanding: the point stays at the committed 5
    fresh.track(0)
    trackers = {0: idle, 1: moved, 2: stuck, 3: fresh}

    plan = offsets_to_commit(trackers)
    assert plan == {1: 7, 3: 0}

    for partition, offset in plan.items():
        trackers[partition].advance_committed(offset)
    assert offsets_to_commit(trackers) == {}


@st.composite
def offset_runs(draw: st.DrawFn) -> list[int]:
    start = draw(st.integers(min_value=0, max_value=10**12))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=60))
    offsets = []
    current = start
    for gap in gaps:
        offsets.append(current)
        current += gap
    return offsets


@PROPERTY
@given(offsets=offset_runs(), data=st.data())
def test_tracker_matches_reference_under_random_completion(
    offsets: list[int], data: st.DataObject
) -> None:
    """Interleave tracking and completing in any order; the watermark never passes an
    outstanding offset, never moves back, and reaches last + 1 when everything is done."""
    tracker = OffsetTracker(0)
    outstanding: set[int] = set()
    to_track = list(offsets)
    previous_point: int | None = None

    while to_track or outstanding:
        take_next = to_track and (not outstanding or data.draw(st.booleans(), label="track next"))
        if take_next:
            offset = to_track.pop(0)
            tracker.track(offset)
            outstanding.add(offset)
        else:
            offset = data.draw(st.sampled_from(sorted(outstanding)), label="done")
            tracker.done(offset)
            outstanding.remove(offset)

        point = tracker.commit_point
        assert point is not None
        last = tracker.last_tracked
        assert last is not None
        expected = min(outstanding) if outstanding else last + 1
        assert point == expected
        assert all(point <= o for o in outstanding)
        # every tracked offset below the point is done
        assert not any(o < point for o in outstanding)
        if previous_point is not None:
            assert point >= previous_point
        previous_point = point
        assert tracker.outstanding == len(outstanding)

        if data.draw(st.booleans(), label="commit now"):
            plan = offsets_to_commit({0: tracker})
            if plan:
                assert plan[0] == point
                tracker.advance_committed(plan[0])
            assert tracker.committed is None or tracker.committed <= point
            assert not tracker.needs_commit

    assert tracker.commit_point == offsets[-1] + 1
    assert tracker.outstanding == 0


# --------------------------------------------------------------------------- LaneTable


def test_push_to_idle_lane_starts_it_and_busy_lane_queues() -> None:
    lanes: LaneTable[str, str] = LaneTable()
    assert lanes.push("order-1", "a") == "a"
    assert lanes.push("order-1", "b") is None
    assert lanes.push("order-1", "c") is None
    assert lanes.push("order-2", "x") == "x"
    assert len(lanes) == 2
    assert lanes.total_queued == 2
    assert lanes.queued("order-1") == 2
    assert lanes.queued("order-2") == 0
    assert lanes.queued("order-3") == 0
    assert lanes.in_flight("order-1")
    assert not lanes.in_flight("order-3")
    assert lanes.in_flight_item("order-1") == "a"
    assert "order-2" in lanes
    assert list(lanes) == ["order-1", "order-2"]


def test_complete_starts_the_next_in_push_order_then_closes() -> None:
    lanes: LaneTable[str, int] = LaneTable()
    for item in (1, 2, 3):
        lanes.push("k", item)
    assert lanes.complete("k") == 2
    assert lanes.in_flight_item("k") == 2
    assert lanes.complete("k") == 3
    assert lanes.total_queued == 0
    assert lanes.complete("k") is None
    assert len(lanes) == 0
    assert not lanes.in_flight("k")
    assert lanes.push("k", 4) == 4  # a closed lane reopens on the next push


def test_complete_of_an_idle_key_raises() -> None:
    lanes: LaneTable[str, int] = LaneTable()
    with pytest.raises(KeyError):
        lanes.complete("nope")
    with pytest.raises(KeyError):
        lanes.complete_coalescing("nope")
    with pytest.raises(KeyError):
        lanes.in_flight_item("nope")
    lanes.push("k", 1)
    lanes.complete("k")
    with pytest.raises(KeyError):
        lanes.complete("k")


def test_coalescing_starts_the_newest_and_supersedes_the_rest() -> None:
    lanes: LaneTable[str, str] = LaneTable()
    for item in ("paid", "packed", "shipped", "out_for_delivery"):
        lanes.push("k", item)
    lanes.push("other", "z")
    assert lanes.complete_coalescing("k") == ("out_for_delivery", ["packed", "shipped"])
    assert lanes.in_flight_item("k") == "out_for_delivery"
    assert lanes.total_queued == 0
    assert lanes.complete_coalescing("k") == (None, [])
    assert not lanes.in_flight("k")
    assert lanes.in_flight("other")


def test_coalescing_with_one_waiting_item_supersedes_nothing() -> None:
    lanes: LaneTable[str, str] = LaneTable()
    lanes.push("k", "a")
    lanes.push("k", "b")
    assert lanes.complete_coalescing("k") == ("b", [])
    assert lanes.in_flight("k")


def test_remove_where_drops_matching_lanes_and_returns_their_queued_items() -> None:
    lanes: LaneTable[tuple[int, str], str] = LaneTable()
    lanes.push((0, "a"), "a1")
    lanes.push((1, "b"), "b1")
    lanes.push((0, "a"), "a2")
    lanes.push((0, "c"), "c1")
    lanes.push((1, "b"), "b2")
    lanes.push((0, "a"), "a3")

    removed = lanes.remove_where(lambda key: key[0] == 0)

    assert removed == ["a2", "a3"]  # in-flight a1 and c1 are the caller's to abandon
    assert list(lanes) == [(1, "b")]
    assert lanes.total_queued == 1
    assert not lanes.in_flight((0, "a"))
    assert lanes.remove_where(lambda key: key[0] == 0) == []
    assert lanes.push((0, "a"), "a4") == "a4"  # a revoked key can start afresh


def test_repr_counts_lanes_and_queue() -> None:
    lanes: LaneTable[int, int] = LaneTable()
    lanes.push(1, 1)
    lanes.push(1, 2)
    assert repr(lanes) == "LaneTable(open=1, queued=1)"


Key = tuple[int, int]  # (partition, order), as the engine keys lanes

keys = st.tuples(st.integers(0, 2), st.integers(0, 4))
lane_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), keys),
        st.tuples(st.just("complete"), keys),
        st.tuples(st.just("coalesce"), keys),
        st.tuples(st.just("revoke"), st.integers(0, 2)),
    ),
    max_size=200,
)


class LaneHarness:
    """Drives a LaneTable like the engine would and checks it against a list-based model."""

    def __init__(self) -> None:
        self.table: LaneTable[Key, int] = LaneTable()
        self.model: dict[Key, list[int]] = {}  # [in flight, *queued]
        self.pushed: dict[Key, list[int]] = defaultdict(list)
        self.started: dict[Key, list[int]] = defaultdict(list)
        self.superseded: list[int] = []
        self.removed: list[int] = []
        self.abandoned: list[int] = []
        self.flying: dict[Key, int] = {}  # what the caller believes is in flight
        self.next_item = 0

    def start(self, key: Key, item: int) -> None:
        assert key not in self.flying, f"two items in flight on {key}"
        self.flying[key] = item
        self.started[key].append(item)

    def finish(self, key: Key) -> None:
        del self.flying[key]

    def push(self, key: Key) -> None:
        item = self.next_item
        self.next_item += 1
        self.pushed[key].append(item)
        got = self.table.push(key, item)
        if key in self.model:
            assert got is None
            self.model[key].append(item)
        else:
            assert got == item
            self.model[key] = [item]
            self.start(key, item)

    def complete(self, key: Key) -> None:
        if key not in self.model:
            with pytest.raises(KeyError):
                self.table.complete(key)
            return
        self.finish(key)
        got = self.table.complete(key)
        lane = self.model[key]
        lane.pop(0)
        if lane:
            assert got == lane[0]
            self.start(key, lane[0])
        else:
            assert got is None
            del self.model[key]

    def coalesce(self, key: Key) -> None:
        if key not in self.model:
            with pytest.raises(KeyError):
                self.table.complete_coalescing(key)
            return
        self.finish(key)
        got, superseded = self.table.complete_coalescing(key)
        lane = self.model[key]
        lane.pop(0)
        if lane:
            assert got == lane[-1], "coalescing must start the newest"
            assert superseded == lane[:-1]
            self.model[key] = [lane[-1]]
            self.superseded.extend(superseded)
            self.start(key, lane[-1])
        else:
            assert (got, superseded) == (None, [])
            del self.model[key]

    def revoke(self, partition: int) -> None:
        removed = self.table.remove_where(lambda key: key[0] == partition)
        expected = []
        for key in [k for k in self.model if k[0] == partition]:
            expected.extend(self.model.pop(key)[1:])
            self.abandoned.append(self.flying.pop(key))
        assert sorted(removed) == sorted(expected)
        self.removed.extend(removed)

    def check(self) -> None:
        assert len(self.table) == len(self.model)
        # White-box on purpose: a closed lane must leave nothing behind (bounded memory).
        assert set(self.table._waiting) <= set(self.table._head)
        assert self.table.total_queued == sum(len(lane) - 1 for lane in self.model.values())
        assert set(self.table) == set(self.model)
        for key, lane in self.model.items():
            assert self.table.in_flight(key)
            assert self.table.queued(key) == len(lane) - 1
            assert self.table.in_flight_item(key) == lane[0] == self.flying[key]

    def drain(self) -> None:
        while self.model:
            self.complete(next(iter(self.model)))

    def account(self) -> None:
        every = [i for items in self.started.values() for i in items]
        every += self.superseded + self.removed
        assert sorted(every) == list(range(self.next_item)), "an item was lost or duplicated"
        assert set(self.abandoned) <= {i for items in self.started.values() for i in items}
        for key, started in self.started.items():
            assert started == sorted(started), f"{key} started out of push order"
            assert set(started) <= set(self.pushed[key])


def run_ops(harness: LaneHarness, ops: list[tuple[str, object]]) -> None:
    for op, arg in ops:
        if op == "push":
            harness.push(arg)  # type: ignore[arg-type]
        elif op == "complete":
            harness.complete(arg)  # type: ignore[arg-type]
        elif op == "coalesce":
            harness.coalesce(arg)  # type: ignore[arg-type]
        else:
            harness.revoke(arg)  # type: ignore[arg-type]
        harness.check()
    harness.drain()
    harness.check()
    harness.account()


@PROPERTY
@given(ops=lane_ops)
def test_lanes_match_reference_under_random_interleavings(ops: list[tuple[str, object]]) -> None:
    run_ops(LaneHarness(), ops)


@PROPERTY
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("push"), keys),
            st.tuples(st.just("complete"), keys),
        ),
        max_size=200,
    )
)
def test_without_coalescing_or_revocation_every_item_starts_in_push_order(
    ops: list[tuple[str, object]],
) -> None:
    harness = LaneHarness()
    run_ops(harness, ops)
    assert harness.superseded == harness.removed == []
    assert dict(harness.started) == dict(harness.pushed)


@PROPERTY
@given(
    bursts=st.lists(st.tuples(keys, st.integers(min_value=1, max_value=6)), min_size=1, max_size=30)
)
def test_coalescing_a_backlog_sends_only_the_first_and_the_newest(
    bursts: list[tuple[Key, int]],
) -> None:
    """A backlog pushed while one item is in flight collapses to that item plus the newest."""
    harness = LaneHarness()
    for key, size in bursts:
        for _ in range(size):
            harness.push(key)
    while harness.model:
        harness.coalesce(next(iter(harness.model)))
        harness.check()
    harness.account()
    for key, started in harness.started.items():
        assert started[0] == harness.pushed[key][0]
        assert started[-1] == harness.pushed[key][-1]
        assert len(started) == min(2, len(harness.pushed[key]))


def test_many_keys_keep_their_own_order() -> None:
    lanes: LaneTable[int, tuple[int, int]] = LaneTable()
    started: dict[int, list[int]] = defaultdict(list)
    for seq in range(20):
        for key in range(1000):
            got = lanes.push(key, (key, seq))
            if got is not None:
                started[key].append(got[1])
    assert len(lanes) == 1000
    assert lanes.total_queued == 1000 * 19
    while len(lanes):
        for key in list(lanes):
            got = lanes.complete(key)
            if got is not None:
                started[key].append(got[1])
    assert all(seqs == list(range(20)) for seqs in started.values())
    assert lanes.total_queued == 0
