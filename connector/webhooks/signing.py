"""Constant-time HMAC-SHA256 checks shared by the webhook receivers. Pure; never logs."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr


def hmac_sha256_hex(secret: SecretStr, message: bytes) -> str:
    return hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()


def same_text(expected: str, presented: str) -> bool:
    """Constant-time equality of two texts (any characters; lengths may differ)."""
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogatepass"))


def same_secret(secret: SecretStr, presented: str) -> bool:
    return same_text(secret.get_secret_value(), presented)
