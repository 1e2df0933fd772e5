"""The retry policy: exact waits, jitter bounds, hints as lower bounds, and the budget."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.core.retry import RetryPolicy

MID = 0.5  # rand = 0.5 means no jitter either way


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.max_elapsed_s) == (8, 300.0)
    assert (policy.base_s, policy.cap_s, policy.jitter) == (0.5, 60.0, 0.2)


def test_waits_double_from_base_until_the_cap() -> None:
    policy = RetryPolicy(max_attempts=100, max_elapsed_s=10_000, base_s=0.5, cap_s=10.0)
    waits = [policy.next_delay(n, 0.0, None, MID) for n in range(1, 9)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_jitter_spreads_the_wait_both_ways() -> None:
    policy = RetryPolicy(base_s=1.0, jitter=0.2)
    assert policy.next_delay(1, 0.0, None, 0.0) == pytest.approx(0.8)
    assert policy.next_delay(1, 0.0, None, 0.75) == pytest.approx(1.1)
    assert policy.next_delay(1, 0.0, None, math.nextafter(1.0, 0.0)) == pytest.approx(1.2)


def test_jitter_is_kept_at_the_cap() -> None:
    policy = RetryPolicy(max_attempts=50, max_elapsed_s=1e6, base_s=1.0, cap_s=8.0, jitter=0.25)
    assert policy.next_delay(20, 0.0, None, 0.0) == pytest.approx(6.0)
    assert policy.next_delay(20, 0.0, None, 0.99) == pytest.approx(9.96)


def test_zero_jitter_ignores_rand() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.next_delay(3, 0.0, None, 0.0) == policy.next_delay(3, 0.0, None, 0.999) == 2.0


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.next_delay(2, 0.0, None, MID) == 1.0
    assert policy.next_delay(3, 0.0, None, MID) is None
    assert policy.next_delay(4, 0.0, None, MID) is None
    assert RetryPolicy(max_attempts=1).next_delay(1, 0.0, None, MID) is None


def test_gives_up_when_the_wait_would_end_past_the_elapsed_budget() -> None:
    policy = RetryPolicy(max_elapsed_s=10.0, jitter=0.0)
    assert policy.next_delay(4, 6.0, None, MID) == 4.0  # ends exactly at the budget
    assert policy.next_delay(4, 6.5, None, MID) is None
    assert policy.next_delay(1, 10.0, None, MID) is None


def test_hint_is_a_lower_bound() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.next_delay(1, 0.0, 3.0, MID) == 3.0  # longer than the backoff: honoured
    assert policy.next_delay(5, 0.0, 3.0, MID) == 8.0  # shorter than the backoff: backoff wins
    assert policy.next_delay(1, 0.0, 0.0, MID) == 0.5


def test_hint_is_not_capped() -> None:
    # Meta's 4^X rule can ask for minutes; waiting less would only earn another 429.
    policy = RetryPolicy(cap_s=60.0)
    assert policy.next_delay(1, 0.0, 256.0, MID) == 256.0


def test_hint_beyond_the_remaining_budget_gives_up() -> None:
    policy = RetryPolicy(max_elapsed_s=300.0)
    assert policy.next_delay(1, 100.0, 200.0, MID) == 200.0
    assert policy.next_delay(1, 100.0, 201.0, MID) is None
    assert policy.next_delay(1, 0.0, math.inf, MID) is None


def test_negative_hint_counts_as_no_hint() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.next_delay(2, 0.0, -5.0, MID) == 1.0


def test_huge_attempt_counts_do_not_overflow() -> None:
    policy = RetryPolicy(max_attempts=10**6, max_elapsed_s=1e9, cap_s=60.0, jitter=0.0)
    assert policy.next_delay(5000, 0.0, None, MID) == 60.0


@pytest.mark.parametrize(
    ("attempt", "rand", "hint", "match"),
    [
        (0, MID, None, "attempt"),
        (-1, MID, None, "attempt"),
        (1, 1.0, None, "rand"),
        (1, -0.1, None, "rand"),
        (1, MID, math.nan, "NaN"),
    ],
)
def test_rejects_bad_arguments(attempt: int, rand: float, hint: float | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy().next_delay(attempt, 0.0, hint, rand)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_elapsed_s": -1.0}, "max_elapsed_s"),
        ({"max_elapsed_s": math.inf}, "max_elapsed_s"),
        ({"base_s": 0.0}, "base_s"),
        ({"base_s": 2.0, "cap_s": 1.0}, "cap_s"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_rejects_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)


policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 20),
    max_elapsed_s=st.floats(0.0, 1000.0),
    base_s=st.floats(0.01, 5.0),
    cap_s=st.floats(5.0, 120.0),
    jitter=st.floats(0.0, 0.5),
)
rands = st.floats(0.0, 1.0, exclude_max=True)


@settings(deadline=None, max_examples=500)
@given(
    policy=policies,
    attempt=st.integers(1, 40),
    elapsed=st.floats(0.0, 1000.0),
    hint=st.none() | st.floats(0.0, 2000.0),
    rand=rands,
)
def test_delay_respects_budget_hint_and_jitter_bounds(
    policy: RetryPolicy, attempt: int, elapsed: float, hint: float | None, rand: float
) -> None:
    delay = policy.next_delay(attempt, elapsed, hint, rand)
    raw = min(policy.cap_s, policy.base_s * 2.0 ** (attempt - 1))
    jittered = raw * (1 + policy.jitter * (2 * rand - 1))
    assert raw * (1 - policy.jitter) <= jittered <= raw * (1 + policy.jitter)
    wanted = jittered if hint is None else max(jittered, hint)
    if attempt >= policy.max_attempts or elapsed + wanted > policy.max_elapsed_s:
        assert delay is None
        return
    assert delay is not None
    assert delay == pytest.approx(wanted)
    assert elapsed + delay <= policy.max_elapsed_s
    if hint is not None:
        assert delay >= hint


@settings(deadline=None, max_examples=200)
@given(policy=policies, rand=rands)
def test_waits_never_shrink_as_attempts_grow(policy: RetryPolicy, rand: float) -> None:
    unbounded = RetryPolicy(
        max_attempts=1000,
        max_elapsed_s=1e9,
        base_s=policy.base_s,
        cap_s=policy.cap_s,
        jitter=policy.jitter,
    )
    waits = [unbounded.next_delay(n, 0.0, None, rand) for n in range(1, 30)]
    assert all(w is not None for w in waits)
    assert waits == sorted(waits)  # type: ignore[type-var]
