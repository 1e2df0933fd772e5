"""Masking of phone numbers and scrubbing of secret values from text and nested values.

Pure functions and one immutable scrubber; it must not configure logging or read settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr

REDACTED = "[REDACTED]"
SECRET_PLACEHOLDER = "**********"  # noqa: S105  (what SecretStr prints; not a secret)

# E.164 country codes of one and two digits; every other code has three digits.
_CC1 = frozenset({"1", "7"})
_CC2 = frozenset(
    {
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45",
        "46", "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61",
        "62", "63", "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94",
        "95", "98",
    }
)  # fmt: skip

# Keys whose values are phone numbers wherever they appear in a log event or record.
PHONE_KEYS = frozenset(
    {"phone", "recipient", "recipient_id", "to", "from", "wa_id", "msisdn", "sender_phone"}
)
# A "+"-prefixed E.164 number inside free text (bare digit runs are left alone: order ids
# and timestamps look the same).
_E164_IN_TEXT = re.compile(r"\+\d{8,15}\b")


def _country_code_length(digits: str) -> int:
    if digits[:1] in _CC1:
        return 1
    if digits[:2] in _CC2:
        return 2
    return 3


def mask_phone(value: str) -> str:
    """Keep the country code and the last two digits: ``+5511987654321`` -> ``+55*********21``.

    Values with fewer than six digits are masked entirely; non-digit characters are dropped.
    """
    if "*" in value:  # already masked
        return value
    digits = "".join(ch for ch in value if ch.isdigit())
    plus = "+" if value.strip().startswith("+") else ""
    if len(digits) < 6:
        return "*" * len(digits) if digits else value
    cc = _country_code_length(digits)
    return plus + digits[:cc] + "*" * (len(digits) - cc - 2) + digits[-2:]


def mask_phones_in_text(text: str) -> str:
    """Mask every ``+``-prefixed E.164 number inside ``text``."""
    return _E164_IN_TEXT.sub(lambda m: mask_phone(m.group(0)), text)


_PHONE_LIKE = re.compile(r"^\+?\d{8,15}$")
_KEY_CHARS = 64


def mask_key(key: bytes | None) -> str | None:
    """A record key as it may be logged: text (undecodable bytes replaced), phone numbers
    masked (a key that is a whole phone number too), at most 64 characters."""
    if key is None:
        return None
    text = key.decode("utf-8", errors="replace")
    text = mask_phone(text) if _PHONE_LIKE.match(text) else mask_phones_in_text(text)
    return text if len(text) <= _KEY_CHARS else text[: _KEY_CHARS - 1] + "…"


class SecretScrubber:
    """Replaces every occurrence of the registered secret values with ``[REDACTED]``.

    The one scrubber: log lines, provider outcome details and exception messages all use it.
    Also matches the JSON-escaped spelling of each secret, so a rendered JSON line is safe.
    Values shorter than ``min_length`` are not searched for (provider accounts pass 4: tiny
    values would mangle ordinary text and cannot be meaningful secrets).
    """

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str | SecretStr], *, min_length: int = 1) -> None:
        plain: set[str] = set()
        for secret in secrets:
            value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
            if len(value) < max(min_length, 1):
                continue
            plain.add(value)
            plain.add(json.dumps(value)[1:-1])  # as it appears inside a JSON string
            plain.add(json.dumps(value, ensure_ascii=False)[1:-1])
        # Longest first, so a secret that contains another is removed whole.
        ordered = sorted(plain, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None

    @property
    def active(self) -> bool:
        return self._pattern is not None

    def scrub_text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def scrub(self, value: Any, *, key: str | None = None) -> Any:
        """Return ``value`` with secrets removed and phone numbers masked, recursively.

        ``SecretStr`` becomes a placeholder; exceptions become their scrubbed text.
        """
        if isinstance(value, SecretStr):
            return SECRET_PLACEHOLDER
        if isinstance(value, str):
            text = self.scrub_text(value)
            if key is not None and key in PHONE_KEYS:
                return mask_phone(text)
            return mask_phones_in_text(text)
        if isinstance(value, Mapping):
            return {k: self.scrub(v, key=str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub(v, key=key) for v in value]
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}", key=key)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            if key is not None and key in PHONE_KEYS and isinstance(value, int):
                return mask_phone(str(value))
            return value
        # Anything else is rendered by the logger with str()/repr(): scrub that text now.
        return self.scrub(str(value), key=key)
