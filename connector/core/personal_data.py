"""What an error record keeps of the input record's value: the ``errors.original_value`` policy.

``keep`` (the default) keeps it whole for redrive; ``redact`` masks phone numbers and email
addresses (redrive then refuses the record); ``encrypt`` seals it with AES-GCM under a key from
the environment or a file (redrive decrypts). Pure functions of bytes; no settings, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from connector.core.redaction import PHONE_KEYS, mask_phone, mask_phones_in_text

PolicyMode = Literal["keep", "redact", "encrypt"]
Protection = Literal["redacted", "encrypted"]

_NONCE_BYTES: Final = 12
#: Authenticated with every sealed value: a sealed value only opens as an original value.
_AAD: Final = b"order-status-connector error-record original_value v1"
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_KEY_SIZES: Final = (16, 24, 32)


class OriginalValueKeyError(ValueError):
    """The encryption key is not base64 of 16, 24 or 32 bytes (the key is never quoted)."""


class OriginalValueSealError(ValueError):
    """A sealed original value does not open with this key (wrong key or altered bytes)."""


def parse_key(text: str) -> bytes:
    """The AES key from its base64 text (``openssl rand -base64 32``)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise OriginalValueKeyError("the encryption key is not valid base64") from None
    if len(key) not in _KEY_SIZES:
        raise OriginalValueKeyError(
            f"the encryption key is {len(key)} bytes; AES-GCM needs 16, 24 or 32"
        )
    return key


def mask_email(text: str) -> str:
    """Every email address in ``text`` with its local part masked: ``j***@example.com``."""
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)


def _redact_json(value: Any, key: str | None = None) -> Any:
    if isinstance(value, str):
        if key in PHONE_KEYS:
            return mask_phone(value)
        return mask_email(mask_phones_in_text(value))
    if isinstance(value, int) and not isinstance(value, bool) and key in PHONE_KEYS:
        return mask_phone(str(value))
    if isinstance(value, dict):
        return {k: _redact_json(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_json(v, key) for v in value]
    return value


def redact_personal_data(value: bytes) -> bytes:
    """``value`` with phone numbers and email addresses masked.

    JSON (an event) is walked: phone fields (``phone``, ``to``, ``wa_id``...) are masked
    whatever their spelling, and ``+``-numbers and emails inside any text; other bytes are
    treated as text the same way.
    """
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        text = value.decode("utf-8", errors="replace")
        return mask_email(mask_phones_in_text(text)).encode("utf-8")
    return orjson.dumps(_redact_json(parsed))


def seal(value: bytes, key: bytes, *, nonce: bytes | None = None) -> bytes:
    """AES-GCM: the 12-byte nonce followed by the ciphertext and its tag."""
    nonce = os.urandom(_NONCE_BYTES) if nonce is None else nonce
    return nonce + AESGCM(key).encrypt(nonce, value, _AAD)


def unseal(sealed: bytes, key: bytes) -> bytes:
    """The value ``seal`` sealed; ``OriginalValueSealError`` when it does not open."""
    if len(sealed) < _NONCE_BYTES + 16:
        raise OriginalValueSealError("the sealed value is too short")
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _AAD)
    except InvalidTag:
        raise OriginalValueSealError(
            "the original value does not decrypt with this key (another key, or altered)"
        ) from None


@dataclass(frozen=True, slots=True)
class OriginalValuePolicy:
    """How the input value is kept in an error record; ``key`` is set exactly for ``encrypt``."""

    mode: PolicyMode = "keep"
    key: bytes | None = None

    def __post_init__(self) -> None:
        if (self.mode == "encrypt") != (self.key is not None):
            raise ValueError("a key is given exactly for the encrypt policy")
        if self.key is not None and len(self.key) not in _KEY_SIZES:
            raise OriginalValueKeyError("AES-GCM needs a 16, 24 or 32 byte key")

    def __repr__(self) -> str:  # never show the key
        return f"OriginalValuePolicy(mode={self.mode!r})"

    def protect(self, value: bytes) -> tuple[bytes, Protection | None]:
        """The bytes to keep and how they were protected (None: kept as they were)."""
        if self.mode == "redact":
            return redact_personal_data(value), "redacted"
        if self.mode == "encrypt":
            assert self.key is not None
            return seal(value, self.key), "encrypted"
        return value, None


__all__ = [
    "OriginalValueKeyError",
    "OriginalValuePolicy",
    "OriginalValueSealError",
    "PolicyMode",
    "Protection",
    "mask_email",
    "parse_key",
    "redact_personal_data",
    "seal",
    "unseal",
]


class ErrorRecordSettings(BaseModel):
    """The ``errors:`` section: what error records keep of the input value (personal data:
    phones, emails)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # keep: whole, for redrive; redact: phones and emails masked (redrive refuses the record);
    # encrypt: AES-GCM under ``encryption_key`` (base64 of 16/24/32 bytes; redrive decrypts).
    original_value: PolicyMode = "keep"
    encryption_key: SecretStr | None = None

    @field_validator("encryption_key", mode="after")
    @classmethod
    def _key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key(value.get_secret_value())  # raises a ValueError that never quotes it
        return value

    @model_validator(mode="after")
    def _encrypt_needs_key(self) -> ErrorRecordSettings:
        if self.original_value == "encrypt" and self.encryption_key is None:
            raise ValueError(
                "errors.original_value 'encrypt' needs errors.encryption_key (env: or file:)"
            )
        return self

    def policy(self) -> OriginalValuePolicy:
        """The pure policy the engine applies where an error record is built."""
        if self.original_value == "encrypt":
            assert self.encryption_key is not None  # _encrypt_needs_key
            return OriginalValuePolicy("encrypt", parse_key(self.encryption_key.get_secret_value()))
        return OriginalValuePolicy(self.original_value)
