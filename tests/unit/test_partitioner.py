"""The memoising partitioner chooses exactly what aiokafka's default partitioner chooses."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from connector.kafka.partitioner import CachedPartitioner


def test_same_partition_as_the_default_partitioner_for_repeated_and_new_keys() -> None:
    rng = random.Random(12)
    keys = [f"order-{rng.randrange(10**9)}".encode() for _ in range(500)]
    keys += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(500)]
    default = DefaultPartitioner()
    cached = CachedPartitioner(max_keys=300)  # smaller than the key set: it starts over
    for count in (1, 3, 12, 50):
        partitions = list(range(count))
        for key in keys * 2:
            assert cached(key, partitions, partitions) == default(key, partitions, partitions)
    assert 0 < cached.remembered <= 300


def test_unkeyed_records_go_to_an_available_partition() -> None:
    cached = CachedPartitioner()
    assert {cached(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert {cached(None, [0, 1], []) for _ in range(50)} <= {0, 1}
    assert cached.remembered == 0
