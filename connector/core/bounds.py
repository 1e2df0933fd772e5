"""What the settings of ``core/`` share: a number finite and above a bound, a count, and the
base of settings that the daemon's configuration embeds as they are (one description each)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    """Immutable settings that refuse unknown keys, NaN and infinities. The configuration
    file's sections of these types are validated by these very classes, so a value the file
    accepts is one the rule accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def require_finite(
    name: str, value: float, *, above: float | None = None, at_least: float | None = None
) -> None:
    """Raise ``ValueError`` unless ``value`` is finite (not NaN, not infinite) and ``> above``
    or ``>= at_least`` (exactly one of the two bounds is given)."""
    if above is not None:
        ok, rule = value > above, f"> {above:g}"
    elif at_least is not None:
        ok, rule = value >= at_least, f">= {at_least:g}"
    else:
        raise TypeError("require_finite needs above= or at_least=")
    if not (ok and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and {rule}, got {value}")


def require_count(name: str, value: int, *, at_least: int = 1) -> None:
    """Raise ``ValueError`` unless the count ``value`` is at least ``at_least``."""
    if value < at_least:
        raise ValueError(f"{name} must be at least {at_least}, got {value}")
