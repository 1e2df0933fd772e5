"""The account outage breaker: opening on a transient share, probing with backoff, recovery."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from connector.core.breaker import (
    AccountBreaker,
    Admission,
    AttemptResult,
    BreakerSettings,
    BreakerState,
    Transition,
    attempt_result,
)

OK = AttemptResult.SUCCESS
BAD = AttemptResult.SERVER_ERROR
SMALL = BreakerSettings(
    window=10, window_s=30.0, min_requests=4, failure_ratio=0.5, probe_interval_s=1.0,
    probe_backoff=2.0, probe_interval_cap_s=5.0,
)  # fmt: skip


def opened() -> AccountBreaker:
    """A breaker that opened at t=3 after four transient failures in a row."""
    breaker = AccountBreaker(SMALL)
    for t in range(4):
        breaker.record(BAD, float(t))
    assert breaker.state is BreakerState.OPEN
    return breaker


def test_transient_results_are_the_account_level_ones() -> None:
    transient = {r for r in AttemptResult if r.transient}
    assert transient == {
        AttemptResult.SERVER_ERROR,
        AttemptResult.TIMEOUT,
        AttemptResult.RESET,
        AttemptResult.RATE_LIMITED,
        AttemptResult.CONNECT_ERROR,
    }


def test_rate_limit_answers_a_sender_can_still_pace_never_open_the_account() -> None:
    """The demo's throttled accounts: a run of 429s while the adaptive rate can still slow down
    is pacing, not an outage (it tripped the breaker and stalled the demo before)."""
    breaker = AccountBreaker(SMALL)
    for t in range(20):
        assert breaker.record(AttemptResult.PACED, float(t)) is None
    assert breaker.state is BreakerState.CLOSED
    for t in range(5):  # at the floor the same answers are an outage sign
        breaker.record(AttemptResult.RATE_LIMITED, 20.0 + t)
    assert breaker.state is BreakerState.OPEN


def test_a_probe_answered_with_a_pacing_429_ends_the_outage() -> None:
    """The account answers (it only asks to slow down): its lanes resume, paced by the rate."""
    breaker = opened()
    assert breaker.admit(5.0) is Admission.PROBE
    assert breaker.record(AttemptResult.PACED, 5.1, probe=True) is Transition.CLOSED


def test_a_probe_refused_with_a_rate_limit_is_repeated_when_the_provider_allows() -> None:
    """At the floor a 429 probe fails, but the next one is due at the provider's hint and the
    backoff does not grow (a doubling wait outlasted the demo's throttle by minutes)."""
    breaker = AccountBreaker(SMALL)
    for t in range(4):
        breaker.record(AttemptResult.RATE_LIMITED, float(t))
    for n in range(5):
        now = 10.0 + n
        assert breaker.admit(now) is Admission.PROBE
        assert (
            breaker.record(AttemptResult.RATE_LIMITED, now, probe=True, retry_in=0.6)
            is Transition.PROBE_FAILED
        )
        assert breaker.next_probe_at == pytest.approx(now + 0.6)
    assert breaker.probe_interval_s == SMALL.probe_interval_s  # no backoff growth
    assert breaker.admit(15.0) is Admission.PROBE
    assert breaker.record(OK, 15.0, probe=True) is Transition.CLOSED


def test_stays_closed_below_the_minimum_number_of_requests() -> None:
    breaker = AccountBreaker(SMALL)
    for t in range(3):
        assert breaker.record(BAD, float(t)) is None
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit(3.0) is Admission.GO


def test_opens_at_the_failure_ratio_and_parks_everything() -> None:
    breaker = AccountBreaker(SMALL)
    assert breaker.record(OK, 0.0) is None
    assert breaker.record(OK, 0.1) is None
    assert breaker.record(BAD, 0.2) is None
    assert breaker.record(BAD, 0.3) is Transition.OPENED  # 2 of 4 = 0.5
    assert breaker.state is BreakerState.OPEN
    assert (breaker.opened_at, breaker.outages) == (0.3, 1)
    assert breaker.next_probe_at == pytest.approx(1.3)
    assert breaker.admit(1.2) is Admission.WAIT


def test_per_event_failures_keep_the_account_healthy() -> None:
    breaker = AccountBreaker(SMALL)
    for t in range(10):
        breaker.record(AttemptResult.EVENT_FAILURE, float(t))
    assert breaker.record(BAD, 10.0) is None
    assert breaker.failure_share(10.0) == (1, 10)
    assert breaker.state is BreakerState.CLOSED


def test_old_results_leave_the_window_by_age_and_by_count() -> None:
    breaker = AccountBreaker(SMALL)
    for t in range(3):
        breaker.record(BAD, float(t))
    # 31 s later the three failures are out of window_s: one more failure is 1 of 1
    assert breaker.record(BAD, 32.5) is None
    assert breaker.failure_share(32.5) == (1, 1)
    for t in range(10):
        breaker.record(OK, 40.0 + t)
    assert breaker.failure_share(50.0) == (0, 10)  # the count bound pushed the failure out


def test_one_probe_at_a_time_then_backoff_up_to_the_cap() -> None:
    breaker = AccountBreaker(SMALL)
    for t in range(4):
        breaker.record(BAD, t / 10)
    due = breaker.next_probe_at
    assert due == pytest.approx(1.3)
    intervals = []
    now = due
    for _ in range(5):
        assert breaker.admit(now) is Admission.PROBE
        assert breaker.state is BreakerState.PROBING
        assert breaker.next_probe_at is None
        assert breaker.admit(now + 100) is Admission.WAIT  # only one probe is ever out
        assert breaker.record(AttemptResult.TIMEOUT, now + 0.5, probe=True) is (
            Transition.PROBE_FAILED
        )
        nxt = breaker.next_probe_at
        assert nxt is not None
        intervals.append(round(nxt - (now + 0.5), 6))
        now = nxt
    assert intervals == [2.0, 4.0, 5.0, 5.0, 5.0]


def test_a_successful_probe_closes_and_resets_the_interval() -> None:
    breaker = opened()
    assert breaker.admit(10.0) is Admission.PROBE
    breaker.record(BAD, 10.0, probe=True)
    assert breaker.admit(20.0) is Admission.PROBE
    assert breaker.record(OK, 20.1, probe=True) is Transition.CLOSED
    assert breaker.state is BreakerState.CLOSED
    assert breaker.opened_at is None
    assert breaker.admit(20.1) is Admission.GO
    assert breaker.failure_share(20.1) == (0, 0)  # the outage's failures are forgotten
    for t in range(4):
        breaker.record(BAD, 21.0 + t)
    assert breaker.next_probe_at == pytest.approx(25.0)  # back to the first interval
    assert breaker.outages == 2


def test_a_probe_that_hits_a_per_event_failure_still_proves_recovery() -> None:
    breaker = opened()
    breaker.admit(5.0)
    assert breaker.record(AttemptResult.EVENT_FAILURE, 5.1, probe=True) is Transition.CLOSED


def test_results_of_requests_in_flight_at_opening_change_nothing() -> None:
    breaker = opened()
    assert breaker.record(OK, 3.1) is None
    assert breaker.state is BreakerState.OPEN
    breaker.admit(10.0)
    assert breaker.record(OK, 10.1) is None  # not the probe
    assert breaker.state is BreakerState.PROBING


def test_an_abandoned_probe_is_due_again_at_once() -> None:
    breaker = opened()
    assert breaker.admit(5.0) is Admission.PROBE
    breaker.probe_abandoned(6.0)
    assert breaker.state is BreakerState.OPEN
    assert breaker.next_probe_at == 6.0
    assert breaker.probe_interval_s == 1.0  # abandoning is not a failure
    assert breaker.admit(6.0) is Admission.PROBE


def test_a_probe_result_outside_probing_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="probe result"):
        AccountBreaker(SMALL).record(OK, 0.0, probe=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("window", 0),
        ("window_s", 0.0),
        ("min_requests", 0),
        ("min_requests", 11),
        ("failure_ratio", 0.0),
        ("failure_ratio", 1.5),
        ("probe_interval_s", float("inf")),
        ("probe_backoff", 0.5),
        ("probe_interval_cap_s", 0.5),
    ],
)
def test_settings_are_validated(field: str, value: float) -> None:
    base = {"window": 10, "min_requests": 4, "probe_interval_s": 1.0, "probe_interval_cap_s": 5.0}
    with pytest.raises(ValueError, match=field.split("_", maxsplit=1)[0]):
        BreakerSettings(**{**base, field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"success": True, "retryable": False, "http_status": 200}, AttemptResult.SUCCESS),
        ({"success": False, "retryable": False, "http_status": 400, "error_code": "100"},
         AttemptResult.EVENT_FAILURE),
        ({"success": False, "retryable": True, "http_status": 503}, AttemptResult.SERVER_ERROR),
        ({"success": False, "retryable": True, "http_status": 400, "error_code": "131000"},
         AttemptResult.SERVER_ERROR),
        ({"success": False, "retryable": True, "http_status": 400, "error_code": "130429"},
         AttemptResult.RATE_LIMITED),
        ({"success": False, "retryable": True, "http_status": 429,
          "error_code": "SENDER_RATE_LIMITED"}, AttemptResult.RATE_LIMITED),
        ({"success": False, "retryable": True, "http_status": 429}, AttemptResult.RATE_LIMITED),
        ({"success": False, "retryable": True, "http_status": 429, "can_slow_down": True},
         AttemptResult.PACED),
        ({"success": False, "retryable": True, "http_status": 400, "error_code": "130429",
          "can_slow_down": True}, AttemptResult.PACED),
        ({"success": False, "retryable": True, "http_status": 503, "can_slow_down": True},
         AttemptResult.SERVER_ERROR),
        ({"success": False, "retryable": True, "http_status": 400, "error_code": "131056"},
         AttemptResult.EVENT_FAILURE),
        ({"success": False, "retryable": True, "http_status": 200,
          "error_code": "blocked:IGLOBAL_FRAUD_REVIEW"}, AttemptResult.EVENT_FAILURE),
        ({"success": False, "retryable": True, "transport_kind": "timeout"},
         AttemptResult.TIMEOUT),
        ({"success": False, "retryable": True, "transport_kind": "dns"},
         AttemptResult.CONNECT_ERROR),
        ({"success": False, "retryable": True, "transport_kind": "disconnected"},
         AttemptResult.RESET),
    ],
)  # fmt: skip
def test_attempt_results_from_outcome_fields(
    fields: dict[str, object], expected: AttemptResult
) -> None:
    assert attempt_result(**fields) is expected  # type: ignore[arg-type]


class BreakerMachine(RuleBasedStateMachine):
    """The breaker against a reference model: a plain list of timed results and a probe flag."""

    def __init__(self) -> None:
        super().__init__()
        self.s = SMALL
        self.breaker = AccountBreaker(self.s)
        self.now = 0.0
        self.results: list[tuple[float, bool]] = []
        self.model_state = BreakerState.CLOSED
        self.due: float | None = None
        self.interval = self.s.probe_interval_s
        self.probe_out = False

    @rule(dt=st.floats(min_value=0.0, max_value=20.0, allow_nan=False))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(result=st.sampled_from(list(AttemptResult)))
    def record_regular(self, result: AttemptResult) -> None:
        got = self.breaker.record(result, self.now)
        expected = None
        if self.model_state is BreakerState.CLOSED:
            self.results.append((self.now, result.transient))
            window = [
                f for t, f in self.results[-self.s.window :] if t >= self.now - self.s.window_s
            ]
            if len(window) >= self.s.min_requests and sum(window) >= self.s.failure_ratio * len(
                window
            ):
                expected = Transition.OPENED
                self.model_state = BreakerState.OPEN
                self.interval = self.s.probe_interval_s
                self.due = self.now + self.interval
        assert got is expected

    @rule()
    def admit(self) -> None:
        got = self.breaker.admit(self.now)
        if self.model_state is BreakerState.CLOSED:
            assert got is Admission.GO
        elif (
            self.model_state is BreakerState.OPEN and self.due is not None and self.now >= self.due
        ):
            assert got is Admission.PROBE
            self.model_state = BreakerState.PROBING
            self.probe_out = True
        else:
            assert got is Admission.WAIT

    @precondition(lambda self: self.probe_out)
    @rule(result=st.sampled_from(list(AttemptResult)))
    def record_probe(self, result: AttemptResult) -> None:
        got = self.breaker.record(result, self.now, probe=True)
        self.probe_out = False
        if result.transient:
            assert got is Transition.PROBE_FAILED
            self.interval = min(self.s.probe_interval_cap_s, self.interval * self.s.probe_backoff)
            self.model_state = BreakerState.OPEN
            self.due = self.now + self.interval
        else:
            assert got is Transition.CLOSED
            self.model_state = BreakerState.CLOSED
            self.results = []
            self.due = None

    @precondition(lambda self: self.probe_out)
    @rule()
    def abandon(self) -> None:
        self.breaker.probe_abandoned(self.now)
        self.probe_out = False
        self.model_state = BreakerState.OPEN
        self.due = self.now

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.breaker.state is self.model_state
        assert self.breaker.in_outage == (self.model_state is not BreakerState.CLOSED)
        expected_due = self.due if self.model_state is BreakerState.OPEN else None
        assert self.breaker.next_probe_at == expected_due
        assert self.s.probe_interval_s <= self.breaker.probe_interval_s
        assert self.breaker.probe_interval_s <= self.s.probe_interval_cap_s


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
