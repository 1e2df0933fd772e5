"""aiokafka's default partitioner (the Java client's murmur2) with the hashes of recent keys
remembered. Outcome records are keyed by order id and an order has several events, so most
keys repeat within a backlog or a busy minute; murmur2 in pure Python cost about 20 us per
record (issue 12's profile). The partition chosen is exactly the default partitioner's.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

from aiokafka.partitioner import murmur2

#: Keys remembered before the memo starts over (about 150 bytes each: 2.5 MB at most).
DEFAULT_MAX_KEYS: Final = 16_384


class CachedPartitioner:
    """Callable as aiokafka's ``partitioner``: same choice as ``DefaultPartitioner``."""

    __slots__ = ("_hashes", "_max_keys")

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:  # the default partitioner's rule for unkeyed records
            return random.choice(available or all_partitions)
        positive = self._hashes.get(key)
        if positive is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            positive = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[positive % len(all_partitions)]

    @property
    def remembered(self) -> int:
        return len(self._hashes)


__all__ = ["DEFAULT_MAX_KEYS", "CachedPartitioner"]
