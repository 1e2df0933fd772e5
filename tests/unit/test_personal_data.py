"""``errors.original_value``: keep, redact or encrypt the input value kept in error records,
and what redrive does with each (issue 14, personal data)."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from connector.config import LimitSettings, RoutingSettings, TopicNames, load_config
from connector.contract.records import ErrorRecord
from connector.core.personal_data import (
    OriginalValueKeyError,
    OriginalValuePolicy,
    OriginalValueSealError,
    mask_email,
    parse_key,
    redact_personal_data,
    seal,
    unseal,
)
from connector.core.retry import RetryPolicy
from connector.delivery.engine import Engine
from connector.errors import ConfigError
from connector.kafka.consumer import ConsumedRecord
from connector.ops.redrive import REFUSED_REDACTED, REFUSED_UNDECRYPTABLE, original_value_of
from tests.support.engine_fakes import (
    INPUT,
    FakeProvider,
    FakeSender,
    FakeSink,
    FakeSource,
    event_bytes,
    run_until,
)

KEY = bytes(range(32))
KEY_TEXT = base64.b64encode(KEY).decode()
EVENT = orjson.dumps(
    {
        "event_id": "e-1",
        "order_id": "o-1",
        "status": "shipped",
        "recipient": {"phone": "+5511987654321", "locale": "pt_BR"},
        "description": "call +4915112345678 or mail ana.souza@example.com",
        "contact": {"to": "5511912345678", "email": "x@shop.example.org"},
    }
)


def test_redact_masks_phone_fields_phones_in_text_and_emails() -> None:
    redacted = orjson.loads(redact_personal_data(EVENT))
    assert redacted["recipient"]["phone"] == "+55*********21"
    assert redacted["description"] == "call +49*********78 or mail a***@example.com"
    assert redacted["contact"] == {"to": "55*********78", "email": "x***@shop.example.org"}
    assert redacted["order_id"] == "o-1"
    text = redact_personal_data(b"not json +5511987654321 bob@example.com")
    assert text == b"not json +55*********21 b***@example.com"
    assert mask_email("no address here") == "no address here"


def test_encrypt_round_trips_and_refuses_another_key_or_altered_bytes() -> None:
    sealed = seal(EVENT, KEY)
    assert EVENT not in sealed
    assert b"5511987654321" not in sealed
    assert unseal(sealed, KEY) == EVENT
    with pytest.raises(OriginalValueSealError):
        unseal(sealed, bytes(32))
    with pytest.raises(OriginalValueSealError):
        unseal(sealed[:-1] + bytes([sealed[-1] ^ 1]), KEY)
    assert seal(EVENT, KEY) != sealed  # a fresh nonce each time


def test_keys_are_base64_of_an_aes_key_size() -> None:
    assert parse_key(KEY_TEXT) == KEY
    with pytest.raises(OriginalValueKeyError, match="not valid base64"):
        parse_key("not base64!")
    with pytest.raises(OriginalValueKeyError, match="10 bytes"):
        parse_key(base64.b64encode(b"0123456789").decode())
    assert "key=" not in repr(OriginalValuePolicy("encrypt", KEY))
    assert OriginalValuePolicy().protect(EVENT) == (EVENT, None)


def _error_from(policy: OriginalValuePolicy) -> dict[str, object]:
    kept, protection = policy.protect(EVENT)
    record = ErrorRecord(
        event_id="e-1", order_id="o-1", error_class="permanent", reason="x",
        original_value=base64.b64encode(kept).decode(), original_value_protection=protection,
    )  # fmt: skip
    loaded: dict[str, object] = orjson.loads(record.to_bytes())
    return loaded


def test_redrive_uses_kept_values_decrypts_encrypted_ones_and_refuses_redacted() -> None:
    keep, encrypt = OriginalValuePolicy(), OriginalValuePolicy("encrypt", KEY)
    assert original_value_of(_error_from(keep), keep) == EVENT
    assert original_value_of(_error_from(encrypt), encrypt) == EVENT
    assert original_value_of(_error_from(OriginalValuePolicy("redact")), keep) == REFUSED_REDACTED
    assert original_value_of(_error_from(encrypt), keep) == REFUSED_UNDECRYPTABLE
    other = OriginalValuePolicy("encrypt", bytes(32))
    assert original_value_of(_error_from(encrypt), other) == REFUSED_UNDECRYPTABLE


@pytest.mark.parametrize("mode", ["redact", "encrypt"])
async def test_the_engine_applies_the_policy_where_the_error_record_is_built(mode: str) -> None:
    value = orjson.dumps(
        {**orjson.loads(event_bytes("o1", 1)), "recipient": {"phone": "+5511987654321"}}
    )
    source = FakeSource({0: [ConsumedRecord(INPUT, 0, 0, b"o1", value, (), 0)]})
    sink, sender = FakeSink(), FakeSender()
    sender.script["o1-1"] = [400]
    policy = (
        OriginalValuePolicy("encrypt", KEY) if mode == "encrypt" else OriginalValuePolicy("redact")
    )
    engine = Engine(
        source=source,
        sink=sink,
        sender=sender,
        providers={"acct": FakeProvider()},
        routing=RoutingSettings(),
        topics=TopicNames(input=INPUT, results="res", errors="err"),
        limits=LimitSettings(commit_interval_s=0.01, drain_timeout_s=2),
        retry=RetryPolicy(max_attempts=2, base_s=0.001, cap_s=0.01, max_elapsed_s=5),
        original_value=policy,
    )
    await run_until(engine, source, sink, 1)
    (error,) = sink.by_topic("err")
    kept = base64.b64decode(str(error["original_value"]))
    assert b"5511987654321" not in kept
    if mode == "redact":
        assert error["original_value_protection"] == "redacted"
        assert orjson.loads(kept)["recipient"]["phone"] == "+55*********21"
    else:
        assert error["original_value_protection"] == "encrypted"
        assert unseal(kept, KEY) == value


def test_config_reads_the_policy_and_requires_a_valid_key(tmp_path: Path) -> None:
    base = "accounts:\n  - {provider: zonos, name: z, store: '1', secret: env:Z}\n"
    path = tmp_path / "c.yaml"
    path.write_text(base + "errors:\n  original_value: encrypt\n  encryption_key: env:K\n")
    config = load_config(path, {"Z": "zz", "K": KEY_TEXT})
    assert config.errors.policy().key == KEY
    assert KEY_TEXT in config.secret_values()
    with pytest.raises(ConfigError, match="encryption key is 3 bytes") as info:
        load_config(path, {"Z": "zz", "K": "YWJj"})
    assert "YWJj" not in str(info.value)
    path.write_text(base + "errors:\n  original_value: encrypt\n")
    with pytest.raises(ConfigError, match=r"needs errors\.encryption_key"):
        load_config(path, {"Z": "zz"})
    path.write_text(base + "errors:\n  encryption_key: " + KEY_TEXT + "\n")
    with pytest.raises(ConfigError, match=r"errors\.encryption_key: secrets may not be written"):
        load_config(path, {"Z": "zz"})
