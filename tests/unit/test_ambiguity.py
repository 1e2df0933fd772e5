"""Ambiguous outcomes: the decisions, and the invariant they keep under late processing."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.core.ambiguity import (
    PROVIDER_TRAITS,
    AmbiguityAction,
    Gate,
    LateGuard,
    ProviderTraits,
    decide_ambiguous,
    gate_next,
    is_ambiguous,
    refusal_is_late_echo,
    traits_for,
)
from connector.errors import PermanentDeliveryError, RetryableDeliveryError, TransportFailure

META = PROVIDER_TRAITS["meta"]
ZAPI = PROVIDER_TRAITS["zapi"]
ZONOS = PROVIDER_TRAITS["zonos"]


def test_only_a_written_transport_failure_is_ambiguous() -> None:
    assert is_ambiguous(TransportFailure("timeout", kind="timeout", written=True))
    assert not is_ambiguous(TransportFailure("timeout", kind="timeout", written=False))
    assert not is_ambiguous(TransportFailure("refused", kind="connect", written=False))
    assert not is_ambiguous(RetryableDeliveryError("503"))
    assert not is_ambiguous(PermanentDeliveryError("400"))


def test_no_provider_we_target_has_an_idempotency_key() -> None:
    assert not any(t.idempotency_key for t in PROVIDER_TRAITS.values())
    assert PROVIDER_TRAITS["ycloud"] == META


def test_a_newer_queued_status_supersedes_the_ambiguous_request() -> None:
    decision = decide_ambiguous(now=100.0, newer_queued=True, status="processing", traits=META)
    assert decision.action is AmbiguityAction.SUPERSEDE
    assert decision.settle_until == 120.0
    assert not decision.extra_message


def test_the_newest_status_is_retried_and_may_cost_a_second_message() -> None:
    decision = decide_ambiguous(now=100.0, newer_queued=False, status="shipped", traits=ZAPI)
    assert decision.action is AmbiguityAction.RETRY
    assert decision.settle_until == 120.0
    assert decision.extra_message


@pytest.mark.parametrize(
    ("traits", "status"),
    [(ZONOS, "VENDOR_PREPARING_ORDER"), (META, "completed")],
)
def test_a_resend_that_the_provider_ignores_or_refuses_costs_no_message(
    traits: ProviderTraits, status: str
) -> None:
    decision = decide_ambiguous(now=0.0, newer_queued=False, status=status, traits=traits)
    assert decision.action is AmbiguityAction.RETRY
    assert not decision.extra_message


def test_with_an_idempotency_key_the_request_is_retried_without_a_window() -> None:
    keyed = ProviderTraits(idempotency_key=True)
    decision = decide_ambiguous(now=5.0, newer_queued=True, status="processing", traits=keyed)
    assert decision.action is AmbiguityAction.RETRY
    assert decision.settle_until is None
    assert not decision.extra_message


def test_the_settle_window_only_grows() -> None:
    decision = decide_ambiguous(
        now=10.0, newer_queued=True, status="processing", traits=META, settle_until=50.0
    )
    assert decision.settle_until == 50.0


def test_the_next_request_is_held_until_the_window_has_passed() -> None:
    assert gate_next(now=5.0, settle_until=20.0, next_status="shipped", traits=META) == Gate(20.0)
    assert gate_next(now=25.0, settle_until=20.0, next_status="shipped", traits=META) == Gate(25.0)
    assert gate_next(now=5.0, settle_until=None, next_status="shipped", traits=ZAPI) == Gate(5.0)


def test_a_status_that_refuses_going_back_goes_at_once() -> None:
    assert gate_next(now=5.0, settle_until=20.0, next_status="completed", traits=META) == Gate(5.0)
    zonos_done = gate_next(
        now=5.0, settle_until=20.0, next_status="VENDOR_END_OF_DAY_COMPLETE", traits=ZONOS
    )
    assert zonos_done == Gate(5.0)
    # Z-API documents no such rule: completed waits like any other status
    assert gate_next(now=5.0, settle_until=20.0, next_status="completed", traits=ZAPI) == Gate(20.0)


def test_reassert_sends_now_and_again_after_the_window() -> None:
    eager = traits_for("zapi", guard=LateGuard.REASSERT, settle_window_s=30.0)
    assert eager.settle_window_s == 30.0
    assert gate_next(now=5.0, settle_until=20.0, next_status="shipped", traits=eager) == Gate(
        5.0, reassert_at=20.0
    )


def test_unknown_providers_get_no_traits_and_settings_are_checked() -> None:
    assert traits_for("new-provider") == ProviderTraits()
    with pytest.raises(ValueError, match="settle_window_s"):
        ProviderTraits(settle_window_s=-1.0)


def test_a_late_older_request_refused_after_a_terminal_status_is_an_echo() -> None:
    assert refusal_is_late_echo(
        refused_status="processing",
        newest_status="completed",
        refused_is_newest=False,
        newest_was_ambiguous=False,
        traits=META,
    )
    # after a non-terminal newest status Meta would not refuse: a refusal is a real problem
    assert not refusal_is_late_echo(
        refused_status="processing",
        newest_status="shipped",
        refused_is_newest=False,
        newest_was_ambiguous=False,
        traits=META,
    )


def test_the_resend_of_an_ambiguous_newest_status_refused_is_an_echo() -> None:
    kwargs = {"refused_status": "completed", "newest_status": "completed", "traits": META}
    assert refusal_is_late_echo(refused_is_newest=True, newest_was_ambiguous=True, **kwargs)
    # the newest status refused on its only write is a real invalid transition
    assert not refusal_is_late_echo(refused_is_newest=True, newest_was_ambiguous=False, **kwargs)


def test_zonos_names_the_status_it_holds() -> None:
    kwargs = {
        "refused_status": "VENDOR_PREPARING_ORDER",
        "refused_is_newest": False,
        "newest_was_ambiguous": False,
        "traits": ZONOS,
    }
    assert refusal_is_late_echo(
        newest_status="VENDOR_END_OF_DAY_COMPLETE",
        provider_status="VENDOR_END_OF_DAY_COMPLETE",
        **kwargs,
    )
    assert not refusal_is_late_echo(
        newest_status="VENDOR_END_OF_DAY_COMPLETE",
        provider_status="IGLOBAL_FRAUD_REVIEW",
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# The invariant under late processing: a simulated lane against a simulated provider.

TIMEOUT = 10.0


class _Provider:
    """Applies requests in the order it processes them, with the traits' transition rules."""

    def __init__(self, traits: ProviderTraits) -> None:
        self.traits = traits
        self.status: str | None = None
        self.messages = 0  # what the customer was shown

    def process(self, status: str) -> None:
        current = self.status
        if current in self.traits.refuses_after and status != current:
            return  # refused (2046 / "cannot be moved")
        if current in self.traits.refuses_after and status == current:
            return  # Meta refuses a terminal status twice; Zonos has it already
        if status == current and self.traits.same_status_is_noop:
            return
        self.status = status
        self.messages += 1


def _run_lane(
    traits: ProviderTraits,
    statuses: list[str],
    gaps: list[float],
    fates: list[tuple[bool, float | None]],
) -> tuple[_Provider, int]:
    """One order's lane with HOLD gates; ``fates`` say per attempt (ambiguous?, late delay)."""
    provider = _Provider(traits)
    arrivals = []
    t = 0.0
    for gap in gaps[: len(statuses)]:
        t += gap
        arrivals.append(t)
    arrivals += [t] * (len(statuses) - len(arrivals))
    late: list[tuple[float, int, str]] = []  # (processing time, seq, status)
    seq = 0
    now = 0.0
    settle_until: float | None = None
    extra = 0
    fate_iter = iter(fates)
    i = 0
    retrying = False
    while i < len(statuses):
        now = max(now, arrivals[i])
        status = statuses[i]
        if not retrying:
            gate = gate_next(now=now, settle_until=settle_until, next_status=status, traits=traits)
            now = gate.send_at
        # everything that lands before this request is processed first
        while late and late[0][0] <= now:
            provider.process(heapq.heappop(late)[2])
        ambiguous, delay = next(fate_iter, (False, None))
        if not ambiguous:
            provider.process(status)
            now += 0.01
            i += 1
            retrying = False
            continue
        failed_at = now + TIMEOUT
        if delay is not None:  # the provider processes it after the client gave up
            seq += 1
            heapq.heappush(late, (failed_at + delay, seq, status))
        while late and late[0][0] <= failed_at:
            provider.process(heapq.heappop(late)[2])
        now = failed_at
        newer = i + 1 < len(statuses) and arrivals[i + 1] <= now
        decision = decide_ambiguous(
            now=now, newer_queued=newer, status=status, traits=traits, settle_until=settle_until
        )
        settle_until = decision.settle_until
        if decision.action is AmbiguityAction.SUPERSEDE:
            i += 1
            retrying = False
        else:
            extra += decision.extra_message
            retrying = True
    while late:
        provider.process(heapq.heappop(late)[2])
    return provider, extra


WHATSAPP = ["pending", "processing", "partially_shipped", "shipped", "completed"]
ZONOS_FLOW = ["VENDOR_PREPARING_ORDER", "VENDOR_SHIPMENT_READY", "VENDOR_END_OF_DAY_COMPLETE"]


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(["meta", "zapi", "zonos"]),
    length=st.integers(min_value=1, max_value=5),
    gaps=st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=5, max_size=5),
    fates=st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.none(), st.floats(min_value=0.0, max_value=19.99)),
        ),
        max_size=12,
    ),
)
def test_the_last_status_processed_is_the_orders_newest(
    kind: str,
    length: int,
    gaps: list[float],
    fates: list[tuple[bool, float | None]],
) -> None:
    traits = PROVIDER_TRAITS[kind]
    flow = ZONOS_FLOW if kind == "zonos" else WHATSAPP
    statuses = [flow[i % len(flow)] for i in range(length)]
    if kind != "zapi":  # transition rules: a terminal status ends the flow
        cut = next((n for n, s in enumerate(statuses) if s in traits.refuses_after), None)
        statuses = statuses if cut is None else statuses[: cut + 1]
    provider, _ = _run_lane(traits, statuses, gaps, fates)
    assert provider.status == statuses[-1]


def test_without_the_gate_a_late_request_overtakes_the_newest() -> None:
    """The simulation can fail: with no settle window the issue's overtake happens."""
    no_window = ProviderTraits(settle_window_s=0.0)
    provider, extra = _run_lane(
        no_window,
        ["pending", "processing", "shipped"],
        [0.0, 0.0, 0.0],
        [(True, 15.0), (False, None), (False, None)],  # pending lands 15 s after the timeout
    )
    assert provider.status == "pending"
    provider, extra = _run_lane(
        ZAPI,
        ["pending", "processing", "shipped"],
        [0.0, 0.0, 0.0],
        [(True, 15.0), (False, None), (False, None)],
    )
    assert provider.status == "shipped"
    assert extra == 0  # pending was superseded, not retried
