"""The sans-I/O ordering core: per-order FIFO lanes and per-partition commit watermarks.

Pure, synchronous bookkeeping the engine drives; it never awaits, sleeps, reads clocks or does I/O.
Rules and their reasons: ``docs/ordering.md``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["LaneTable", "OffsetTracker", "offsets_to_commit"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class OffsetTracker:
    """Per partition: which offsets are outstanding and the commit point.

    ``track`` every record taken in (offsets strictly increasing, gaps allowed: compaction
    and transaction markers leave holes), ``done`` it once its outcome is published. The
    commit point is the offset to commit: every tracked offset below it is done. Each call
    is O(1) amortised.
    """

    __slots__ = ("_committed", "_last", "_order", "_pending", "partition")

    def __init__(self, partition: int, *, committed: int | None = None) -> None:
        self.partition = partition
        # Tracked offsets not yet popped, oldest first; the head is always outstanding.
        self._order: deque[int] = deque()
        # Tracked offsets whose outcome is not yet published.
        self._pending: set[int] = set()
        self._last: int | None = None
        self._committed = committed

    def __repr__(self) -> str:
        return (
            f"OffsetTracker(partition={self.partition}, commit_point={self.commit_point}, "
            f"outstanding={self.outstanding}, committed={self._committed})"
        )

    def track(self, offset: int) -> None:
        """Record that the record at ``offset`` was taken in and has no outcome yet."""
        if self._last is not None and offset <= self._last:
            raise ValueError(
                f"partition {self.partition}: offset {offset} tracked after {self._last}; "
                "offsets must strictly increase (after a seek back, start a new tracker)"
            )
        self._last = offset
        self._order.append(offset)
        self._pending.add(offset)

    def done(self, offset: int) -> None:
        """Record that the outcome of the record at ``offset`` is published.

        Raises ``ValueError`` when ``offset`` is not outstanding (never tracked, or already
        done): each record has exactly one outcome, so a second ``done`` is an engine bug.
        """
        try:
            self._pending.remove(offset)
        except KeyError:
            raise ValueError(
                f"partition {self.partition}: offset {offset} is not outstanding "
                "(never tracked or already done)"
            ) from None
        order = self._order
        if order[0] == offset:
            pending = self._pending
            order.popleft()
            while order and order[0] not in pending:
                order.popleft()

    @property
    def commit_point(self) -> int | None:
        """The offset to commit: the lowest outstanding offset, or last tracked + 1 when none
        is outstanding; ``None`` before anything was tracked."""
        if self._order:
            return self._order[0]
        if self._last is None:
            return None
        return self._last + 1

    @property
    def outstanding(self) -> int:
        """How many tracked records have no published outcome yet."""
        return len(self._pending)

    @property
    def last_tracked(self) -> int | None:
        """The highest offset tracked so far, or ``None``."""
        return self._last

    @property
    def committed(self) -> int | None:
        """The offset last recorded as committed (``advance_committed``), or ``None``."""
        return self._committed

    @property
    def needs_commit(self) -> bool:
        """Whether the commit point has moved past what was last committed."""
        point = self.commit_point
        if point is None:
            return False
        return self._committed is None or point > self._committed

    def advance_committed(self, offset: int) -> None:
        """Record that ``offset`` was committed (after the broker acknowledged it).

        Raises ``ValueError`` if ``offset`` is beyond the commit point (that would commit past
        an outstanding record) or behind what was already recorded as committed.
        """
        point = self.commit_point
        if point is None or offset > point:
            raise ValueError(
                f"partition {self.partition}: cannot record commit of {offset} "
                f"beyond the commit point {point}"
            )
        if self._committed is not None and offset < self._committed:
            raise ValueError(
                f"partition {self.partition}: commit of {offset} is behind "
                f"the recorded commit {self._committed}"
            )
        self._committed = offset


def offsets_to_commit(trackers: Mapping[int, OffsetTracker]) -> dict[int, int]:
    """The offsets to commit now, by partition: only partitions whose commit point moved past
    the last recorded commit. Call ``advance_committed`` once the broker has acknowledged."""
    plan: dict[int, int] = {}
    for partition, tracker in trackers.items():
        point = tracker.commit_point
        if point is not None and (tracker.committed is None or point > tracker.committed):
            plan[partition] = point
    return plan


class LaneTable(Generic[K, T]):
    """Per-key FIFO lanes: at most one item per key in flight; items of one key start in push
    order. A lane is open while it has an item in flight and closes when it runs dry.

    ``push``/``complete`` return the item the caller must start now; the table never starts
    anything itself. Unknown keys in ``complete`` raise ``KeyError``.
    """

    # Two dicts rather than one lane object per key: most pushes hit an idle lane, and then
    # the cost is one dict store (measured about 2x faster than allocating a lane object).
    __slots__ = ("_head", "_queued", "_waiting")

    def __init__(self) -> None:
        self._head: dict[K, T] = {}  # open lanes: the item in flight
        self._waiting: dict[K, deque[T]] = {}  # items behind it, oldest first (may be empty)
        self._queued = 0

    def __len__(self) -> int:
        """Open lanes, which is also the number of items in flight."""
        return len(self._head)

    def __contains__(self, key: object) -> bool:
        return key in self._head

    def __iter__(self) -> Iterator[K]:
        """Keys of the open lanes, in the order the lanes opened."""
        return iter(self._head)

    def __repr__(self) -> str:
        return f"LaneTable(open={len(self._head)}, queued={self._queued})"

    @property
    def total_queued(self) -> int:
        """Items waiting behind an in-flight item, over all lanes."""
        return self._queued

    def push(self, key: K, item: T) -> T | None:
        """Add ``item`` to ``key``'s lane. Returns ``item`` if the lane was idle (the caller
        starts it now), else queues it and returns ``None``."""
        head = self._head
        if key not in head:
            head[key] = item
            return item
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = deque()
        waiting.append(item)
        self._queued += 1
        return None

    def complete(self, key: K) -> T | None:
        """The in-flight item of ``key`` finished. Returns the next item to start, or ``None``
        when the lane ran dry (it is closed)."""
        waiting = self._waiting.get(key)
        if not waiting:
            self._close(key)
            return None
        nxt = waiting.popleft()
        self._head[key] = nxt
        self._queued -= 1
        return nxt

    def complete_coalescing(self, key: K) -> tuple[T | None, list[T]]:
        """Like ``complete``, but only the newest queued item starts; the older queued ones are
        returned as superseded, oldest first. ``(None, [])`` when the lane ran dry."""
        waiting = self._waiting.get(key)
        if not waiting:
            self._close(key)
            return None, []
        newest = waiting.pop()
        superseded = list(waiting)
        waiting.clear()
        self._head[key] = newest
        self._queued -= len(superseded) + 1
        return newest, superseded

    def _close(self, key: K) -> None:
        del self._head[key]  # KeyError for a key with nothing in flight
        self._waiting.pop(key, None)

    def remove_where(self, pred: Callable[[K], bool]) -> list[T]:
        """Close every lane whose key matches ``pred`` (e.g. keys of revoked partitions).

        Returns their queued items (lane by lane in opening order, push order within a lane).
        Their in-flight items are not returned: the caller owns and abandons those, and must
        not ``complete`` these keys afterwards (a new ``push`` opens a fresh lane).
        """
        doomed = [key for key in self._head if pred(key)]
        removed: list[T] = []
        for key in doomed:
            del self._head[key]
            waiting = self._waiting.pop(key, None)
            if waiting:
                removed.extend(waiting)
        self._queued -= len(removed)
        return removed

    def queued(self, key: K) -> int:
        """Items waiting behind ``key``'s in-flight item (0 when the lane is closed)."""
        waiting = self._waiting.get(key)
        return 0 if waiting is None else len(waiting)

    def in_flight(self, key: K) -> bool:
        """Whether ``key`` has an item in flight (its lane is open)."""
        return key in self._head

    def in_flight_item(self, key: K) -> T:
        """The item in flight on ``key``'s lane; ``KeyError`` when the lane is closed."""
        return self._head[key]
