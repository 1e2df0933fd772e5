"""The checks the settings of ``core/`` share: a number finite and above a bound, a count."""

from __future__ import annotations

import math


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
