"""One contract suite run over every provider adapter (the faststream habit: same tests, every
backend). Adapters are pure, so everything here is plain values: no network, no sleeps."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.contract.events import CanonicalStatus
from connector.contract.outbound import PlainRequest
from connector.errors import InvalidEventError, MissingFieldError, UnmappedStatusError
from connector.providers import OutcomeKind, ProviderOutcome
from connector.providers.base import BuiltRequest
from tests.support.providers import SECRETS, event_dict, event_from, make_event, make_provider

# For each provider, the event fields it cannot send without.
REQUIRED_FIELDS = {
    "meta": ["recipient", "whatsapp"],
    "ycloud": ["recipient", "whatsapp"],
    "zapi": ["recipient", "zapi", "payment_status", "order"],
    "zonos": ["zonos"],
}


def all_secret_forms(kind: str) -> list[str]:
    return SECRETS[kind]


def test_builds_a_valid_json_request_for_a_full_event(kind: str) -> None:
    provider = make_provider(kind)
    built = provider.build_request(make_event())
    assert isinstance(built, BuiltRequest)
    request = built.request
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.content)
    assert isinstance(body, dict)
    assert body  # something was sent


def test_provider_kind_and_account(kind: str) -> None:
    provider = make_provider(kind)
    assert provider.kind == kind
    assert provider.account == f"{kind}-main"


@pytest.mark.parametrize("status", list(CanonicalStatus))
def test_every_canonical_status_is_sent_or_explicitly_skipped(
    kind: str, status: CanonicalStatus
) -> None:
    outcome = make_provider(kind).build_request(make_event(status=status.value))
    if isinstance(outcome, ProviderOutcome):
        assert outcome.kind is OutcomeKind.SKIPPED
        assert outcome.detail is not None
        assert status.value in outcome.detail
    else:
        assert isinstance(outcome, BuiltRequest)
        assert isinstance(outcome.request, PlainRequest)


def test_status_mapped_to_error_raises_a_typed_invalid_event(kind: str) -> None:
    provider = make_provider(kind, status_map={"shipped": "error"})
    with pytest.raises(UnmappedStatusError, match="shipped"):
        provider.build_request(make_event(status="shipped"))


def test_status_mapped_to_skip_gives_a_skipped_outcome(kind: str) -> None:
    provider = make_provider(kind, status_map={"processing": "skip"})
    outcome = provider.build_request(make_event(status="processing"))
    assert isinstance(outcome, ProviderOutcome)
    assert outcome.kind is OutcomeKind.SKIPPED


@pytest.mark.parametrize(
    ("provider_kind", "field"),
    [(k, f) for k, fields in REQUIRED_FIELDS.items() for f in fields],
)
def test_missing_field_is_named(provider_kind: str, field: str) -> None:
    data = event_dict()
    del data[field]
    with pytest.raises(MissingFieldError) as caught:
        make_provider(provider_kind).build_request(event_from(data))
    assert caught.value.field is not None
    assert caught.value.field.split(".")[0] == field
    assert field in caught.value.reason


def test_target_key_is_stable_per_order_and_distinct_across_orders(kind: str) -> None:
    provider = make_provider(kind)
    first = provider.target_key(make_event(status="processing", event_id="a"))
    again = provider.target_key(make_event(status="shipped", event_id="b", sequence=9))
    assert first == again
    assert first.startswith(f"{kind}:")
    other = event_dict(
        order_id="order-2002",
        whatsapp={"reference_id": "order-2002"},
        zapi={"message_id": "M2", "reference_id": "R2", "order_request_id": "Q2"},
        zonos={"order_id": "999-2002"},
    )
    assert provider.target_key(event_from(other)) != first
    for secret in all_secret_forms(kind):
        assert secret not in first


def test_target_key_never_raises_on_a_minimal_event(kind: str) -> None:
    minimal = {
        "event_id": "e",
        "occurred_at": "2025-01-01T00:00:00Z",
        "order_id": "o-1",
        "status": "shipped",
    }
    key = make_provider(kind).target_key(event_from(minimal))
    assert key.startswith(f"{kind}:")


def test_no_secret_in_repr_of_provider_settings_or_request(kind: str) -> None:
    provider = make_provider(kind)
    built = provider.build_request(make_event())
    assert isinstance(built, BuiltRequest)
    request = built.request
    texts = [repr(provider), repr(request), repr(provider.settings), str(provider.settings)]  # type: ignore[attr-defined]
    for text in texts:
        for secret in all_secret_forms(kind):
            assert secret not in text, text


@pytest.mark.parametrize(
    "data",
    [event_dict(status="shipped"), {**event_dict(), "recipient": None, "zonos": None}],
    ids=["mapped-to-error", "missing-fields"],
)
def test_no_secret_in_build_errors(kind: str, data: dict[str, object]) -> None:
    provider = make_provider(kind, status_map={"shipped": "error"})
    event = event_from(data)
    with pytest.raises(InvalidEventError) as caught:
        provider.build_request(event)
    for secret in all_secret_forms(kind):
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value)


def test_no_secret_in_outcomes_even_when_the_provider_echoes_it(kind: str) -> None:
    provider = make_provider(kind)
    for secret in all_secret_forms(kind):
        echoes = [
            {"error": f"cannot parse input {secret}"},
            {"error": {"code": 100, "message": f"bad token {secret}"}},
            {"error": {"status": 400, "code": "BAD_REQUEST", "message": secret}},
            {"success": f"Updated Order with {secret}"},
        ]
        for status in (200, 400, 401, 500):
            for body in echoes:
                outcome = provider.classify(httpx.Response(status, json=body), attempt=0)
                assert secret not in repr(outcome)


# An answer whose body was never read classifies as if it had no body: by its HTTP status. A 200
# is accepted (without a message id) where errors come as non-2xx; Zonos reports errors inside
# HTTP 200 answers, so an unreadable 200 from Zonos is an unknown outcome, retried.
UNREAD_200 = {
    "meta": OutcomeKind.ACCEPTED,
    "ycloud": OutcomeKind.ACCEPTED,
    "zapi": OutcomeKind.ACCEPTED,
    "zonos": OutcomeKind.RETRYABLE,
}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (400, OutcomeKind.PERMANENT),
        (401, OutcomeKind.CONFIGURATION),
        (429, OutcomeKind.RETRYABLE),
        (503, OutcomeKind.RETRYABLE),
    ],
)
def test_classify_never_raises_on_unread_streams(
    kind: str, status: int, expected: OutcomeKind | None
) -> None:
    response = httpx.Response(status, stream=httpx.ByteStream(b'{"messages":[{"id":"x"}]}'))
    outcome = make_provider(kind).classify(response, attempt=0)
    assert outcome.kind is (expected or UNREAD_200[kind])
    assert outcome.http_status == status
    assert outcome.message_id is None  # the unread body is not guessed at


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
shaped_bodies = st.fixed_dictionaries(
    {},
    optional={
        "error": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "code": json_values | st.sampled_from([131056, "131056", "ALREADY_EXISTS", 190]),
                "message": json_values,
                "whatsappApiError": json_values,
                "error_subcode": json_values,
            },
        ),
        "messages": json_values,
        "success": json_values,
        "status": json_values,
        "id": json_values,
        "errorCode": json_values,
    },
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.binary(max_size=64) | shaped_bodies.map(lambda b: json.dumps(b).encode()),
    attempt=st.integers(min_value=-3, max_value=10_000),
    retry_after=st.none()
    | st.text(max_size=30)
    | st.sampled_from(["5", "-1", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"]),
)
def test_classify_never_raises_on_garbage(
    kind: str, status: int, body: bytes, attempt: int, retry_after: str | None
) -> None:
    headers = {}
    if retry_after is not None and retry_after.isprintable() and retry_after.isascii():
        headers["Retry-After"] = retry_after
    response = httpx.Response(status, content=body, headers=headers)
    outcome = make_provider(kind).classify(response, attempt=attempt)
    assert isinstance(outcome, ProviderOutcome)
    assert outcome.kind is not OutcomeKind.SKIPPED
    if outcome.retry_after is not None:
        assert 0 <= outcome.retry_after <= 24 * 3600 * 4
    if outcome.detail is not None:
        assert len(outcome.detail) <= 300


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_plain_5xx_is_retryable_everywhere(kind: str, status: int) -> None:
    outcome = make_provider(kind).classify(httpx.Response(status, text="oops"), attempt=0)
    assert outcome.kind is OutcomeKind.RETRYABLE
    assert outcome.http_status == status


@pytest.mark.parametrize("status", [401, 403])
def test_plain_auth_failures_are_configuration_everywhere(kind: str, status: int) -> None:
    outcome = make_provider(kind).classify(
        httpx.Response(status, text="<html>no</html>"), attempt=0
    )
    assert outcome.kind is OutcomeKind.CONFIGURATION
